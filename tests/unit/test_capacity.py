"""The capacity search, driven by a fake server model instead of a server (no network)."""

from __future__ import annotations

import random

import pytest

from benchmark.config import RunConfig
from benchmark.core.capacity import (
    Capacity,
    Load,
    Probe,
    certainly_failed,
    known_bad,
    probe_from_step,
    probe_plan,
    queue_growing,
    search_capacity,
    too_slow_alone,
    within_tolerance,
)
from benchmark.core.records import RequestRecord
from benchmark.core.slo import Slo
from benchmark.core.stats import summarize

MS = 1_000_000
SLO = Slo(ttft_ms=1000, tpot_ms=50, attainment=0.9)


class FakeServer:
    """A server whose attainment is 1 below ``capacity`` req/s and falls off a cliff past it
    (the way a batching server's queue blows up), with optional noise on the attainment."""

    def __init__(self, capacity: float, *, noise: float = 0.0, seed: int = 1):
        self.capacity = capacity
        self.noise = noise
        self.rng = random.Random(seed)
        self.rates: list[float] = []

    def attainment(self, rate: float) -> float:
        if rate <= self.capacity:
            # all good up to 80% of capacity, then down to 90% exactly at capacity (passes)
            base = min(1.0, 1.0 - 0.5 * (rate / self.capacity - 0.8))
        else:
            base = max(0.0, 0.9 - 3.0 * (rate / self.capacity - 1.0) - 1e-9)
        return min(1.0, max(0.0, base + self.rng.uniform(-self.noise, self.noise)))

    def measure(self, rate: float) -> Probe:
        self.rates.append(rate)
        got = self.attainment(rate)
        return Probe(kind="rate", step=len(self.rates) + 2, rate_rps=rate, attainment=got,
                     passed=got >= SLO.attainment, requests=100, good=round(100 * got),
                     mean_e2e_ms=2000.0, mean_output_tokens=128.0)


@pytest.mark.parametrize("capacity, probes", [(1.0, 6), (3.0, 6), (7.5, 6), (12.4, 6),
                                              (18.0, 6), (19.5, 7)])
def test_the_search_brackets_the_capacity_within_5_percent_in_6_or_7_probes(capacity, probes):
    # a bracket of ratio 40: 6 bisections; a capacity within 5% of the top costs one more
    # probe, at the top itself, which no probe had failed yet
    server = FakeServer(capacity)
    search = search_capacity(server.measure, low=0.5, high=20.0, max_probes=8)
    assert search.converged and len(search.probes) <= probes
    assert within_tolerance(search.low, search.high)
    assert search.low <= capacity <= search.high * 1.0001
    # the answer is a rate that was seen to pass, never above the true capacity
    assert search.rate_rps is not None and search.rate_rps <= capacity
    assert search.rate_rps >= capacity * 0.9


def test_the_search_survives_noisy_probes_and_still_answers_near_the_cliff():
    for seed in range(20):
        server = FakeServer(10.0, noise=0.03, seed=seed)
        search = search_capacity(server.measure, low=0.5, high=20.0)
        assert search.rate_rps is not None
        assert 8.5 <= search.rate_rps <= 10.6, seed   # a noisy fail costs a step, not more


def test_when_nothing_passes_the_low_end_is_measured_and_the_answer_is_none():
    server = FakeServer(0.1)
    search = search_capacity(server.measure, low=0.5, high=20.0, max_probes=10)
    assert search.rate_rps is None
    assert server.rates[-1] == 0.5            # the low end itself was tried last


def test_the_search_stops_when_time_or_probes_run_out_and_says_so():
    server = FakeServer(12.4)
    calls = iter([False, False, True])
    search = search_capacity(server.measure, low=0.5, high=20.0, out_of_time=lambda: next(calls))
    assert search.ended == "time" and len(search.probes) == 2 and not search.converged
    search = search_capacity(FakeServer(12.4).measure, low=0.5, high=20.0, max_probes=2)
    assert search.ended == "probes" and len(search.probes) == 2
    assert search.low < 12.4 < search.high     # the bracket is still true, only wider


def test_capacity_object_holds_the_fields_run_json_promises():
    server = FakeServer(12.4)
    search = search_capacity(server.measure, low=0.5, high=20.0)
    single = Probe(kind="one at a time", step=1, rate_rps=0.5, attainment=1.0, passed=True)
    saturation = Probe(kind="saturation", step=2, rate_rps=20.0, attainment=0.1, passed=False)
    capacity = Capacity.from_search(SLO, single, saturation, search)
    data = capacity.to_dict()
    assert data["rate_rps"] == search.rate_rps
    assert data["in_flight"] == pytest.approx(search.rate_rps * 2.0)    # rate x 2 s e2e
    assert data["output_tokens_per_s"] == pytest.approx(search.rate_rps * 128)
    assert data["slo"] == {"ttft_ms": 1000, "tpot_ms": 50, "e2e_ms": None}
    assert data["attainment_target"] == 0.9
    assert [p["kind"] for p in data["probes"][:2]] == ["one at a time", "saturation"]
    assert all({"rate_rps", "attainment", "passed"} <= set(p) for p in data["probes"])
    assert Capacity.from_dict(data) == capacity


def test_probe_plan_is_long_enough_for_a_steady_state_and_never_past_the_time_left():
    slow = probe_plan(1.0)
    assert slow.warmup_s == 3.0 and slow.measure_s == 45.0       # capped
    fast = probe_plan(100.0)
    assert fast.measure_s == 30.0 and fast.planned_requests == 3000
    mid = probe_plan(1.5)
    assert mid.measure_s == pytest.approx(40.0) and mid.planned_requests == 60
    assert probe_plan(3.0, time_left_s=8.0).measure_s == pytest.approx(5.0)


def rec(sent: float, tokens: list[float], end: float | None, **kw) -> RequestRecord:
    return RequestRecord(step=3, run=1, request=1, sent_ns=int(sent * MS),
                         token_ns=[int(t * MS) for t in tokens],
                         end_ns=None if end is None else int(end * MS),
                         output_tokens=None if end is None else len(tokens), **kw)


def test_known_bad_counts_finished_misses_and_requests_already_past_a_target():
    records = [
        rec(0, [100, 120], 120),               # good
        rec(0, [1500, 1520], 1520),            # finished, missed TTFT
        rec(0, [], None),                      # running for 2 s, no first token: missed
        rec(1900, [], None),                   # running for 100 ms: not known yet
        rec(0, [], None, warmup=True),         # warm-up: not counted
    ]
    assert known_bad(records, Slo(ttft_ms=1000), now_ns=2000 * MS) == 2


def test_certainly_failed_only_once_the_target_is_out_of_reach():
    # 100 planned at 90%: 10 misses still allow 90 good; the 11th rules it out
    assert not certainly_failed(10, 100, 0.9)
    assert certainly_failed(11, 100, 0.9)


def loads(in_flight, *, rate: float, until_s: float, every_s: float = 0.25) -> list[Load]:
    """A probe's samples: ``in_flight(t)`` requests in flight, ``rate`` sent per second."""
    return [Load(at_s=i * every_s, sent=round(rate * i * every_s), in_flight=in_flight(i * every_s))
            for i in range(int(until_s / every_s) + 1)]


def test_a_queue_that_keeps_growing_stops_the_probe_and_says_how_much():
    # 20 req/s offered, 10 ended per second: in flight grows by 10 every second
    samples = loads(lambda t: round(2 + 10 * t), rate=20.0, until_s=30.0)
    first = next(i for i in range(len(samples)) if queue_growing(
        samples[:i + 1], rate_rps=20.0, mean_latency_s=1.5, longest_latency_s=3.0))
    # noticed about half way through the probe's 3 + 30 s, not at the first look
    assert 12.0 <= samples[first].at_s <= 18.0
    why = queue_growing(samples[:first + 1], rate_rps=20.0, mean_latency_s=1.5,
                        longest_latency_s=3.0)
    assert why == (f"requests in flight grew from about 64 to {samples[first].in_flight} in "
                   f"{samples[first].at_s - 3:.0f} s (a steady state at this rate holds about 30)")


# Requests in flight every 2 s of two healthy 43 s probes of the simulator (default timing
# model, 512-token prompts, 128 new tokens) at 7 requests/s, mean latency about 4.5 s: a
# batching server's in-flight count wanders far from its mean (9 to 58) and comes back.
MEASURED = ([0, 21, 19, 18, 32, 35, 29, 32, 36, 44, 44, 35, 26, 9, 22, 32, 33, 37, 39, 54, 58,
             56],
            [0, 5, 17, 32, 32, 46, 49, 55, 56, 46, 47, 40, 42, 27, 31, 44, 51, 49, 37, 26, 34,
             47, 53])


@pytest.mark.parametrize("series", MEASURED)
def test_a_healthy_probe_whose_queue_wanders_is_never_cut(series):
    def in_flight(t: float) -> int:     # linear between the measured points
        i = min(int(t // 2), len(series) - 2)
        return round(series[i] + (series[i + 1] - series[i]) * (t / 2 - i))

    samples = loads(in_flight, rate=7.0, until_s=2.0 * (len(series) - 1))
    for end in range(1, len(samples) + 1):
        assert queue_growing(samples[:end], rate_rps=7.0, mean_latency_s=4.5,
                             longest_latency_s=6.0) is None


def test_a_steady_noisy_probe_is_never_cut():
    # a ramp-up to ~40 in flight over the first 4 s (4 s per request), then noise of +-12
    rng = random.Random(7)
    noise = [rng.gauss(0, 6) for _ in range(400)]
    samples = loads(lambda t: max(0, round(min(t, 4.0) * 10 + noise[int(t * 4)])),
                    rate=10.0, until_s=60.0)
    for end in range(1, len(samples) + 1):
        assert queue_growing(samples[:end], rate_rps=10.0, mean_latency_s=4.0,
                             longest_latency_s=5.0) is None


def test_too_little_seen_is_not_judged():
    growing = loads(lambda t: round(2 + 10 * t), rate=20.0, until_s=30.0)
    # 5 s past the warm-up only, which is not 5 s past the longest request (1 s)
    assert queue_growing(growing[:33], rate_rps=20.0, mean_latency_s=1.0,
                         longest_latency_s=1.0) is None
    assert queue_growing(growing[:81], rate_rps=20.0, mean_latency_s=1.0,
                         longest_latency_s=1.0) is not None
    # nothing finished yet: no latency to compare with
    assert queue_growing(growing, rate_rps=20.0, mean_latency_s=None,
                         longest_latency_s=None) is None
    # a slow server's ramp-up: every request lasts longer than the probe so far
    assert queue_growing(growing, rate_rps=20.0, mean_latency_s=20.0,
                         longest_latency_s=29.0) is None
    # too few requests sent (0.5 per second) to tell a queue from chance
    slow = loads(lambda t: round(2 + 10 * t), rate=0.5, until_s=30.0)
    assert queue_growing(slow, rate_rps=0.5, mean_latency_s=1.0, longest_latency_s=2.0) is None


def test_one_request_at_a_time_too_slow_is_said_plainly():
    single = Probe(kind="one at a time", step=1, rate_rps=1.5, attainment=0.0, passed=False,
                   requests=10)
    text = too_slow_alone(single, Slo(ttft_ms=500, tpot_ms=50),
                          {"ttft": [640.0] * 10, "tpot": [20.0] * 10})
    assert text.startswith("One request at a time already takes 640 ms to the first token; "
                           "your target is 500 ms.")
    passing = Probe(kind="one at a time", step=1, rate_rps=1.5, attainment=1.0, passed=True)
    assert too_slow_alone(passing, SLO, {}) is None


def test_a_probe_is_read_from_its_step_summary():
    config = RunConfig(tokenizer_name="t", batch_sizes=(3,), mode="concurrency", duration_s=1,
                       slo_ttft_ms=1000)
    records = [rec(0, [100, 150, 200], 200), rec(0, [1200, 1250], 1250)]
    probe = probe_from_step(summarize(records, config)[0], kind="rate", rate_rps=4.0)
    assert (probe.rate_rps, probe.requests, probe.good, probe.passed) == (4.0, 2, 1, False)
    assert probe.attainment == pytest.approx(0.5)
    assert probe.ttft_ms["p50"] == pytest.approx(650.0)
    assert probe.tpot_ms["p50"] == pytest.approx(50.0)
    assert probe.output_tokens_per_s == pytest.approx(5 / 1.25)


def test_the_headline_answers_in_plain_words_and_the_table_lists_every_probe():
    from benchmark.report.tables import capacity_headline, capacity_table

    probes = (Probe(kind="one at a time", step=1, rate_rps=1.2, attainment=1.0, passed=True),
              Probe(kind="rate", step=3, rate_rps=12.4, attainment=0.93, passed=True,
                    ttft_ms={"p50": 210.0, "p90": 640.0, "p99": 990.0},
                    tpot_ms={"p50": 31.0, "p90": 42.5, "p99": 49.0}))
    capacity = Capacity(slo=SLO, rate_rps=12.4, in_flight=37.2, output_tokens_per_s=1590.4,
                        bracket=(12.4, 13.0), converged=True, ended="converged",
                        max_throughput_rps=20.0, probes=probes)
    text = capacity_headline(capacity)
    assert text.startswith("This server keeps 90% of requests within 1 s to the first token "
                           "and 50 ms per token up to **12.4 requests per second**: about 37 "
                           "requests in flight, 1,590 tokens/s.")
    assert "between 12.4 and 13.0 requests per second" in text
    table = capacity_table(capacity)
    assert "| 3 " in table and "93.0%" in table and "210 / 640 / 990" in table
    assert "31.0 / 42.5 / 49.0" in table
    stopped = Capacity(slo=SLO, rate_rps=None, in_flight=None, output_tokens_per_s=None,
                       bracket=None, converged=False, ended="stopped", max_throughput_rps=None,
                       probes=probes[:1], message="One request at a time already takes 2 s.")
    assert capacity_headline(stopped) == "One request at a time already takes 2 s."


def test_a_saturation_estimate_that_was_too_low_is_checked_and_the_top_doubled():
    server = FakeServer(30.0)            # the saturation probe said 20: it undercounted
    search = search_capacity(server.measure, low=0.5, high=20.0, max_probes=12)
    assert 20.0 in server.rates          # the top was probed and passed
    assert search.converged and search.low <= 30.0 <= search.high
    assert 27.0 <= search.rate_rps <= 30.0


def test_a_slow_servers_saturation_is_estimated_when_nothing_ended_in_the_window():
    """Found on an H200 (an 8B model under transformers serve): with 128 users each request
    outlasted the saturation window, the probe read "0 req/s, no request counted", and the
    search had no upper bound. Then Little's law over the requests that did finish gives it."""
    from benchmark.core.capacity import saturation_rate

    assert saturation_rate(30, 10.0, 128, [1000.0]) == 3.0        # the steady rate first
    assert saturation_rate(0, 15.0, 128, [20_000.0, 30_000.0]) == pytest.approx(128 / 25.0)
    assert saturation_rate(0, 15.0, 128, []) is None               # nothing finished at all


def test_when_only_one_request_at_a_time_kept_the_target_the_headline_says_so():
    from benchmark.report.tables import capacity_headline

    probes = (Probe(kind="one at a time", step=1, rate_rps=0.179, attainment=1.0, passed=True),
              Probe(kind="rate", step=3, rate_rps=0.179, attainment=0.5, passed=False))
    capacity = Capacity(slo=SLO, rate_rps=None, in_flight=None, output_tokens_per_s=None,
                        bracket=(0.179, 0.179), converged=True, ended="converged",
                        max_throughput_rps=None, probes=probes)
    text = capacity_headline(capacity)
    assert "only one request at a time did (0.179 requests per second" in text
    assert "No request rate with overlapping requests kept 90% of requests" in text


def test_texts_of_a_capacity_read_from_a_file_are_one_bounded_line():
    from benchmark.core.capacity import MAX_TEXT_CHARS, Capacity

    long = "why\n" * 100_000
    capacity = Capacity.from_dict({
        "slo": {"ttft_ms": 500}, "attainment_target": 0.9, "message": long,
        "probes": [{"kind": "rate", "step": 3, "rate_rps": 2.0, "attainment": 0.5,
                    "passed": False, "stopped_early": True, "stopped_why": long}]})
    for text in (capacity.message, capacity.probes[0].stopped_why):
        assert len(text) == MAX_TEXT_CHARS and "\n" not in text and text.endswith("…")
