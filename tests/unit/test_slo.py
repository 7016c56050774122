"""Latency targets: which requests are good, attainment, goodput, checked on fixed records."""

from __future__ import annotations

import csv
import io

import pytest

from benchmark.config import RunConfig, parse_attainment
from benchmark.core.records import RequestRecord
from benchmark.core.results import SLO_COLUMNS, summary_csv
from benchmark.core.slo import Slo, evaluate, slo_of
from benchmark.core.stats import StepSummary, summarize
from benchmark.errors import ConfigError

MS = 1_000_000


def rec(sent: float, tokens: list[float], end: float, *, error: str | None = None,
        kind: str | None = None, step: int = 4) -> RequestRecord:
    """A record with stamps in ms; the server reports as many tokens as events."""
    return RequestRecord(step=step, run=1, request=1, sent_ns=int(sent * MS),
                         token_ns=[int(t * MS) for t in tokens], end_ns=int(end * MS),
                         output_tokens=None if error else len(tokens), error=error,
                         error_kind=kind)


# first token at 300 ms, then 3 tokens 20 ms apart (20 ms per token), end at 360 ms
FAST = rec(0, [300, 320, 340, 360], 360)
# first token at 1200 ms (slow start), 20 ms per token
SLOW_START = rec(0, [1200, 1220, 1240, 1260], 1260)
# first token at 100 ms, 80 ms per token
SLOW_DECODE = rec(0, [100, 180, 260, 340], 340)
TIMEOUT = rec(0, [], 5000, error="timeout after 5 s", kind="timeout")
REFUSED = rec(0, [], 3, error="HTTP 429: too many requests", kind="http")
CANCELLED = rec(0, [100], 150, error="cancelled", kind="cancelled")
ONE_TOKEN = rec(0, [200], 200)


def test_a_request_is_good_only_when_it_meets_every_target_given():
    slo = Slo(ttft_ms=1000, tpot_ms=50)
    assert slo.misses(FAST) == []
    assert slo.misses(SLOW_START) == ["ttft"]
    assert slo.misses(SLOW_DECODE) == ["tpot"]
    # only the targets given count: without a time-per-token target the slow decoder is good
    assert Slo(ttft_ms=1000).is_good(SLOW_DECODE)
    assert Slo(e2e_ms=300).misses(SLOW_DECODE) == ["e2e"]


def test_failed_requests_are_never_good_and_a_single_token_cannot_miss_time_per_token():
    slo = Slo(ttft_ms=1000, tpot_ms=50, e2e_ms=10_000)
    assert slo.misses(TIMEOUT) == ["error"]
    assert slo.misses(REFUSED) == ["error"]   # answered fast, but refused: not good
    assert slo.is_good(ONE_TOKEN)


def test_attainment_counts_errors_as_sent_and_leaves_cancelled_out():
    slo = Slo(ttft_ms=1000, tpot_ms=50, attainment=0.5)
    records = [FAST, FAST, SLOW_START, SLOW_DECODE, TIMEOUT, CANCELLED]
    outcome = evaluate(records, slo, duration_s=2.0)
    assert (outcome.sent, outcome.good) == (5, 2)
    assert outcome.attainment == pytest.approx(0.4)
    assert not outcome.passed
    assert outcome.missed == {"ttft": 1, "tpot": 1, "error": 1}
    assert outcome.goodput_rps == pytest.approx(1.0)             # 2 good in 2 s
    assert outcome.good_output_tokens_per_s == pytest.approx(4.0)  # 2 x 4 tokens in 2 s


def test_attainment_exactly_at_the_target_passes():
    outcome = evaluate([FAST] * 9 + [SLOW_START], Slo(ttft_ms=1000, attainment=0.9), 1.0)
    assert outcome.attainment == pytest.approx(0.9)
    assert outcome.passed


def test_no_request_means_no_attainment_and_no_pass():
    outcome = evaluate([], Slo(ttft_ms=1), None)
    assert outcome.attainment is None and outcome.goodput_rps is None and not outcome.passed


def test_slo_words_read_like_a_sentence():
    assert Slo(ttft_ms=1000, tpot_ms=50).words() == "1 s to the first token and 50 ms per token"
    assert Slo(e2e_ms=2500).words() == "2.5 s for the whole answer"


def test_step_summary_carries_the_outcome_into_summary_csv_and_back():
    config = RunConfig(tokenizer_name="t", batch_sizes=(4,), mode="concurrency", duration_s=1,
                       slo_ttft_ms=1000, slo_tpot_ms=50)
    steps = summarize([FAST, SLOW_START, TIMEOUT, FAST], config)
    outcome = steps[0].slo
    assert outcome is not None and (outcome.sent, outcome.good) == (4, 2)
    assert StepSummary.from_dict(steps[0].to_dict()).slo == outcome
    rows = list(csv.DictReader(io.StringIO(summary_csv(steps))))
    assert rows[0]["good"] == "2" and float(rows[0]["slo_attainment"]) == pytest.approx(0.5)
    assert float(rows[0]["goodput_rps"]) == pytest.approx(2 / 5.0)  # 2 good, 0 .. 5000 ms


def test_without_targets_there_is_no_outcome_and_the_csv_cells_are_empty():
    config = RunConfig(tokenizer_name="t", batch_sizes=(4,))
    assert slo_of(config) is None
    steps = summarize([FAST], config)
    assert steps[0].slo is None
    row = next(csv.DictReader(io.StringIO(summary_csv(steps))))
    assert all(row[c] == "" for c in SLO_COLUMNS)


@pytest.mark.parametrize("field, value, words", [
    ("slo_ttft_ms", 0, "positive number of milliseconds"),
    ("slo_tpot_ms", -5, "positive number of milliseconds"),
    ("slo_e2e_ms", "fast", "must be a number"),
    ("slo_attainment", 0, "above 0 and at most 100%"),
    ("slo_attainment", 1.5, "such as 0.9"),
])
def test_bad_targets_are_refused_naming_the_field(field, value, words):
    config = RunConfig(tokenizer_name="t", **{field: value})
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert caught.value.field == field
    assert words in caught.value.message


def test_attainment_takes_a_fraction_or_a_percentage_but_not_a_bare_90():
    assert parse_attainment("0.95") == pytest.approx(0.95)
    assert parse_attainment("90%") == pytest.approx(0.9)
    assert parse_attainment(1) == 1.0
    with pytest.raises(ConfigError, match="90%"):
        parse_attainment("90")
    with pytest.raises(ConfigError):
        parse_attainment("0%")
