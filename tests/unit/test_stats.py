"""Statistics checked against values computed by hand (no server needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from benchmark.config import RunConfig
from benchmark.core.records import RequestRecord
from benchmark.core.stats import METRIC_KEYS, describe, percentile, summarize, summarize_step

MS = 1_000_000


def rec(step: int, run: int, request: int, sent: float, tokens: list[float], end: float, *,
        input_tokens: int | None = 10, output_tokens: int | None = -1, requested: int = 4,
        error: str | None = None, kind: str | None = None, warmup: bool = False,
        lag: float = 0.0) -> RequestRecord:
    """A record with stamps given in milliseconds."""
    return RequestRecord(
        step=step, run=run, request=request, warmup=warmup,
        scheduled_ns=int((sent - lag) * MS), sent_ns=int(sent * MS),
        token_ns=[int(t * MS) for t in tokens], end_ns=int(end * MS),
        input_tokens=input_tokens,
        output_tokens=len(tokens) if output_tokens == -1 else output_tokens,
        requested_output_tokens=requested, finish_reason=None if error else "length",
        status=None if kind == "timeout" else 200, error=error, error_kind=kind,
    )


def two_rounds() -> list[RequestRecord]:
    """Batch size 2, two rounds; the second round has one timeout."""
    return [
        rec(2, 0, 0, 0, [100, 110, 120, 130], 135, lag=1.0),
        rec(2, 0, 1, 0, [120, 140, 160, 180], 180),
        rec(2, 1, 0, 1000, [1050, 1060, 1070, 1080], 1080),
        rec(2, 1, 1, 1000, [], 1500, output_tokens=None, error="timeout after 0.5 s",
            kind="timeout"),
        # a warm-up that must not count anywhere
        rec(2, 0, 0, 5000, [9000, 9900], 9900, warmup=True),
    ]


# -- percentile --------------------------------------------------------------------------------

def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)   # h = 2.7 -> 3 + 0.7 * 1
    assert percentile([4, 1, 3, 2], 99) == pytest.approx(3.97)  # order of input does not matter
    assert percentile([1, 2, 3, 4], 0) == 1
    assert percentile([1, 2, 3, 4], 100) == 4
    assert percentile([10, 20, 30], 25) == pytest.approx(15.0)


def test_percentile_of_one_value_is_that_value():
    for q in (0, 50, 90, 99, 100):
        assert percentile([7.5], q) == 7.5


def test_percentile_matches_numpy_default():
    rng = random.Random(3)
    for n in (2, 3, 5, 10, 101):
        values = [rng.uniform(0, 100) for _ in range(n)]
        for q in (1, 10, 50, 90, 99):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_refuses_no_values_and_bad_q():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_describe_small_sample():
    stats = describe([50, 120, None, 100])
    assert stats is not None
    assert (stats.avg, stats.min, stats.max, stats.count) == (90, 50, 120, 3)
    assert stats.p50 == 100
    assert stats.p90 == pytest.approx(116.0)   # h = 1.8 -> 100 + 0.8 * 20
    assert stats.p99 == pytest.approx(119.6)
    assert describe([]) is None
    assert describe([None, float("nan")]) is None


# -- one step, rounds mode ---------------------------------------------------------------------

def test_step_latencies_by_hand():
    s = summarize_step(two_rounds(), step=2, mode="rounds", sequence_length=10, decode_length=4)
    ttft = s.metric("prefill_latency_ms")
    assert (ttft.avg, ttft.min, ttft.max, ttft.count) == (90, 50, 120, 3)  # failed one excluded
    assert ttft.p90 == pytest.approx(116.0)
    token = s.metric("decode_token_latency_ms")
    assert token.avg == pytest.approx(40 / 3)      # 30/3, 60/3, 30/3
    assert (token.min, token.max, token.p50) == (10, 20, 10)
    assert token.p90 == pytest.approx(18.0)
    total = s.metric("decode_total_latency_ms")
    assert (total.avg, total.min, total.max) == (40, 30, 60)
    e2e = s.metric("e2e_latency_ms")
    assert (e2e.min, e2e.max, e2e.p50) == (80, 180, 135)
    itl = s.metric("inter_token_latency_ms")
    assert itl.count == 9 and itl.p50 == 10 and itl.p90 == 20
    assert itl.avg == pytest.approx(120 / 9)
    assert s.metric("output_tokens").avg == 4
    lag = s.metric("dispatch_lag_ms")
    assert (lag.max, lag.min) == (1, 0)


def test_step_throughputs_per_round_by_hand():
    s = summarize_step(two_rounds(), step=2, mode="rounds", sequence_length=10, decode_length=4)
    # round 0: 20 prompt tokens in 120 ms; round 1: 10 prompt tokens (one ok request) in 50 ms
    prefill = s.metric("prefill_throughput_tok_s")
    assert prefill.count == 2
    assert prefill.min == pytest.approx(20 / 0.120)
    assert prefill.max == pytest.approx(200.0)
    assert prefill.avg == pytest.approx((20 / 0.120 + 200) / 2)
    # round 0: 3 + 3 tokens after the first, from 100 ms to 180 ms; round 1: 3 in 30 ms
    decode = s.metric("decode_throughput_tok_s")
    assert (decode.min, decode.max) == (pytest.approx(75.0), pytest.approx(100.0))
    assert decode.avg == pytest.approx(87.5)
    rps = s.metric("requests_per_s")
    assert rps.min == pytest.approx(2 / 0.180) and rps.max == pytest.approx(1 / 0.080)


def test_step_counts_failures_without_dropping_them():
    s = summarize_step(two_rounds(), step=2, mode="rounds", sequence_length=10, decode_length=4)
    assert s.counts() == {"requests": 4, "ok": 3, "errors": 1, "timeouts": 1, "cancelled": 0,
                          "short_outputs": 0, "incomplete": 0, "retried": 0,
                          "coalesced_events": 0, "tokens_from_events": 0}
    assert s.rounds == 2
    assert s.input_tokens == 30 and s.output_tokens == 12
    assert s.duration_s == pytest.approx(1.5)


def test_short_outputs_count_only_tokens_that_came():
    records = [
        rec(1, 0, 0, 0, [100, 110], 110, requested=4),              # EOS after 2 of 4 tokens
        rec(1, 1, 0, 200, [300, 310, 320, 330], 330, requested=4),
    ]
    s = summarize_step(records, step=1, mode="rounds", sequence_length=10, decode_length=4)
    assert s.short_outputs == 1
    assert s.output_tokens == 6
    # round 0 decodes 1 token in 10 ms: 100 tokens/s, not 3 tokens in 10 ms
    assert s.metric("decode_throughput_tok_s").min == pytest.approx(100.0)


def test_output_tokens_fall_back_to_token_events_and_input_to_sequence_length():
    r = rec(1, 0, 0, 0, [50, 60, 70], 70, output_tokens=None, input_tokens=None)
    s = summarize_step([r], step=1, mode="rounds", sequence_length=8, decode_length=3)
    assert s.metric("output_tokens").avg == 3
    assert s.metric("prefill_throughput_tok_s").avg == pytest.approx(8 / 0.050)


def test_openai_event_with_several_tokens_uses_reported_count():
    # 2 events but the server reported 5 tokens: token latency = 20 ms / 4
    r = rec(1, 0, 0, 0, [40, 60], 60, output_tokens=5, requested=5)
    s = summarize_step([r], step=1, mode="rounds", sequence_length=10, decode_length=5)
    assert s.metric("decode_token_latency_ms").avg == pytest.approx(5.0)
    assert s.metric("decode_throughput_tok_s").avg == pytest.approx(4 / 0.020)


def test_single_token_outputs_give_no_decode_samples():
    r = rec(1, 0, 0, 0, [40], 40, requested=1)
    s = summarize_step([r], step=1, mode="rounds", sequence_length=10, decode_length=1)
    assert s.metric("prefill_latency_ms").avg == 40
    assert s.metric("decode_token_latency_ms") is None
    assert s.metric("decode_total_latency_ms") is None
    assert s.metric("decode_throughput_tok_s") is None


def test_all_failed_step_has_counts_and_no_samples():
    records = [rec(4, 0, i, 0, [], 10, output_tokens=None, error="HTTP 422: too long",
                   kind="http") for i in range(4)]
    s = summarize_step(records, step=4, mode="rounds", sequence_length=10, decode_length=4)
    assert (s.requests, s.ok, s.errors, s.timeouts) == (4, 0, 4, 0)
    assert all(s.metric(k) is None for k in METRIC_KEYS)


def test_cancelled_requests_are_not_errors():
    records = [rec(1, 0, 0, 0, [10, 20], 20, requested=2),
               rec(1, 1, 0, 30, [], 35, output_tokens=None, error="cancelled", kind="cancelled")]
    s = summarize_step(records, step=1, mode="rounds", sequence_length=10, decode_length=2)
    assert (s.requests, s.ok, s.errors, s.cancelled) == (2, 1, 0, 1)


def test_a_round_stopped_midway_gives_latencies_but_no_throughput():
    records = [rec(2, 0, 0, 0, [10, 20], 20, requested=2),
               rec(2, 0, 1, 0, [12, 22], 22, requested=2),
               rec(2, 1, 0, 100, [110, 120], 120, requested=2),
               rec(2, 1, 1, 100, [], 115, output_tokens=None, error="cancelled",
                   kind="cancelled")]
    s = summarize_step(records, step=2, mode="rounds", sequence_length=10, decode_length=2)
    assert s.metric("prefill_latency_ms").count == 3
    assert s.metric("decode_throughput_tok_s").count == 1      # round 0 only
    assert s.metric("decode_throughput_tok_s").avg == pytest.approx(2 / 0.012)


# -- concurrency mode --------------------------------------------------------------------------

def test_concurrency_step_is_one_window():
    records = [
        rec(2, 0, 0, 0, [100, 200, 300], 300, requested=3),
        rec(2, 1, 0, 50, [250, 300, 350], 350, requested=3),
        rec(2, 0, 1, 300, [400, 450, 500], 500, requested=3),
    ]
    s = summarize_step(records, step=2, mode="concurrency", sequence_length=10, decode_length=3)
    prefill = s.metric("prefill_throughput_tok_s")
    assert prefill.count == 1
    assert prefill.avg == pytest.approx(30 / 0.400)        # first send 0, last first token 400
    decode = s.metric("decode_throughput_tok_s")
    assert decode.avg == pytest.approx(6 / 0.400)          # 100 ms .. 500 ms
    assert s.metric("requests_per_s").avg == pytest.approx(3 / 0.500)
    assert s.metric("prefill_latency_ms").count == 3
    assert s.rounds == 1


# -- whole run ---------------------------------------------------------------------------------

def test_summarize_orders_steps_by_config_and_skips_warmups():
    config = RunConfig(tokenizer_name="t", batch_sizes=(1, 2, 4), decode_length=4,
                       sequence_length=10)
    records = two_rounds() + [rec(1, 0, 0, 0, [10, 20, 30, 40], 40)]
    steps = summarize(records, config)
    assert [s.step for s in steps] == [1, 2]                # batch size 4 never ran
    assert steps[1].metric("prefill_latency_ms").max == 120  # warm-up (9000 ms) not counted
    only_warmups = [r for r in records if r.warmup]
    assert summarize(only_warmups, config) == []


def test_step_summary_round_trips_through_dict():
    s = summarize_step(two_rounds(), step=2, mode="rounds", sequence_length=10, decode_length=4)
    from benchmark.core.stats import StepSummary
    assert StepSummary.from_dict(s.to_dict()) == s
    assert s.value("prefill_latency_ms", "p50") == 100
    with pytest.raises(KeyError):
        s.metric("no_such_metric")


def test_events_of_one_read_give_no_zero_inter_token_gap_and_are_counted():
    # tokens 2 and 3 arrived in one read (same stamp), as did 4 and 5 of the second request
    records = [rec(1, 0, 0, 0, [100, 110, 110, 130], 130),
               rec(1, 0, 1, 0, [100, 120, 140, 140, 150], 150, requested=5)]
    s = summarize_step(records, step=1, mode="rounds", sequence_length=10, decode_length=4)
    itl = s.metric("inter_token_latency_ms")
    assert itl.min == pytest.approx(10.0) and itl.count == 5
    assert s.coalesced_events == 2
    assert [r.coalesced_events for r in records] == [1, 1]
    # decode token latency still divides by the tokens the server counted
    assert records[0].token_latency_ms == pytest.approx(30 / 3)
