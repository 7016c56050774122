"""The capacity search: the highest request rate a server keeps within its latency targets.

Pure: no clock, no HTTP. The engine runs the probes and hands each one's numbers to these
functions; tests drive them with a fake server model.

    single = Probe(...)                                # 1. one request at a time
    why = too_slow_alone(single, slo)                  #    a sentence when even that misses
    saturation = Probe(...)                            # 2. many users: max throughput
    search = search_capacity(measure, low=single.rate_rps, high=saturation.rate_rps, ...)
    capacity = Capacity.from_search(slo, single, saturation, search)   # 3. the answer

The search is a bisection on the request rate between a rate taken to pass (the
one-at-a-time probe's pace; a passing probe raises it) and one taken to fail (the saturation
throughput: above it the queue grows without end, so no rate beyond it can be kept; a failing
probe lowers it). It ends when the bracket is within ``tolerance`` of its middle (±5%:
``hi - lo <= 0.05 * (hi + lo)``), after ``max_probes`` probes, or when time is up; the answer
is the highest rate that passed (conservative: the true capacity lies in the bracket).

The top is an estimate (a short saturation probe may undercount), so it is never trusted
blindly: when the bracket closes on it without any probe failing, it is probed itself, and if
it passes the top doubles and the search goes on.

It splits the bracket at its geometric middle ``sqrt(lo * hi)``: the end condition is relative,
so halving ``log(hi / lo)`` is what halves the work left wherever the capacity lies, and a
bracket of ratio ``hi / lo`` closes in ``ceil(log2(ln(hi / lo) / ln(1.105)))`` probes: 6 for a
server that takes 40 times the one-at-a-time rate, 7 up to 1,000 times. (Halving the bracket
arithmetically needs 4 when the capacity is near the top but 9 when it is near the bottom.)

A probe is long enough to reach a steady state: requests sent in its first ``warmup_s``
seconds are not counted, then at least ``min_s`` seconds and ``min_requests`` requests are
(``probe_plan``). It stops early, as failed, when it is clearly over the limit: more
requests have missed than the target allows out of all planned (``certainly_failed``), or the
requests in flight keep growing, which no steady state does (``queue_growing``). The probe
says which (``Probe.stopped_why``).

A probe counts ``min_s`` = 30 s at least: near the limit, a server's misses come in bursts (a
cluster of Poisson arrivals fills the batch, and every request sent during it misses), so a
10 s window holds only two or three independent bursts: on the simulator at 7 requests/s its
share of good requests scattered from 54% to 100%, 30 s windows from 65% to 100% (README:
"Capacity", tests/perf/capacity_windows.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .records import NS_PER_MS, RequestRecord
from .slo import Slo, duration_words
from .stats import StepSummary

__all__ = ["Probe", "ProbePlan", "Search", "SearchState", "Capacity", "probe_plan",
           "probe_from_step", "too_slow_alone", "search_capacity", "next_rate", "record_probe",
           "finish", "certainly_failed", "known_bad", "Load", "queue_growing", "miss_words",
           "within_tolerance", "TOLERANCE", "MAX_PROBES"]

TOLERANCE = 0.05       # the bracket's half width, relative to its middle
MAX_PROBES = 8         # one-at-a-time + saturation + search
WARMUP_S = 3.0         # first seconds of a probe not counted (queues fill, batches form)
MIN_PROBE_S = 30.0     # counted seconds of a probe, at least (see the module's docstring)
MIN_PROBE_REQUESTS = 60
# A probe whose requests in flight keep growing is over the limit (``queue_growing``):
QUEUE_MIN_S = 5.0      # seconds watched past the warm-up and the longest request, at least
QUEUE_MIN_SENT = 30    # requests sent since the warm-up, at least
QUEUE_GROWTH = 2.5     # in flight now >= this x the median of the first half, ...
QUEUE_MARGIN = 20      # ... and at least this many more, ...
QUEUE_LITTLE = 1.5     # ... and >= this x rate x mean latency (what a steady state holds)
MAX_PROBE_S = 45.0     # counted seconds of a probe, at most (a slow rate gets fewer requests)

KINDS = ("one at a time", "saturation", "rate")


@dataclass(frozen=True)
class ProbePlan:
    """How long a probe at ``rate_rps`` runs: ``warmup_s`` not counted, then ``measure_s``."""

    rate_rps: float
    warmup_s: float
    measure_s: float

    @property
    def duration_s(self) -> float:
        return self.warmup_s + self.measure_s

    @property
    def planned_requests(self) -> int:
        """Requests expected in the counted part (the schedule draws the real number)."""
        return max(1, round(self.rate_rps * self.measure_s))


def probe_plan(rate_rps: float, *, warmup_s: float = WARMUP_S, min_s: float = MIN_PROBE_S,
               min_requests: int = MIN_PROBE_REQUESTS, max_s: float = MAX_PROBE_S,
               time_left_s: float | None = None) -> ProbePlan:
    """The probe at ``rate_rps``: long enough for ``min_requests`` counted requests and
    ``min_s`` seconds, at most ``max_s`` counted seconds, and never past ``time_left_s``."""
    if not rate_rps > 0:
        raise ValueError(f"rate must be positive, got {rate_rps!r}")
    measure = min(max(min_s, min_requests / rate_rps), max_s)
    if time_left_s is not None:
        measure = max(0.0, min(measure, time_left_s - warmup_s))
    return ProbePlan(rate_rps=rate_rps, warmup_s=warmup_s, measure_s=measure)


def saturation_rate(ended_in_window: int, window_s: float, users: int,
                    e2e_ms: Iterable[float]) -> float | None:
    """The saturation probe's maximum throughput (requests/s): the steady completion rate
    (requests that ended within the counted window / its length); when none ended there (a
    slow server: each request outlasts the window), Little's law over the requests that did
    finish: ``users`` in flight / mean end-to-end seconds. None when nothing finished."""
    if ended_in_window and window_s > 0:
        return ended_in_window / window_s
    times = [t for t in e2e_ms if t and t > 0]
    if not times or users <= 0:
        return None
    return users / (sum(times) / len(times) / 1000.0)


# Longest text a probe or a search keeps from a run.json read back (a file may say anything).
MAX_TEXT_CHARS = 1000


def one_line(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters (the last one "…" when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def server_failing(where: str, failed: int, requests: int, first_error: str) -> str:
    """The sentence a capacity search ends with when the server broke during a probe (most of
    its requests failed: errors, not missed targets), with the server's first error, cut."""
    error = one_line(first_error, 300)
    return (f"The search stopped: the server failed {failed} of {requests} requests {where} "
            f"(first error: {error}). Its capacity cannot "
            f"be measured while it fails; check the server's log, restart it and search again.")


def _percentiles(stats: Any) -> dict[str, float] | None:
    return None if stats is None else {"p50": stats.p50, "p90": stats.p90, "p99": stats.p99}


@dataclass(frozen=True)
class Probe:
    """One measured load level.

    kind: "one at a time", "saturation" or "rate"; step: its step number in the run's files;
    rate_rps: the offered Poisson rate ("rate"), or the completed requests/s (the other two);
    attainment: good / counted requests (None when none counted); passed: attainment reached
    the target; ttft_ms / tpot_ms: p50, p90, p99 (None without a sample); mean_e2e_ms;
    goodput_rps; output_tokens_per_s: tokens of all successful requests per second;
    stopped_early: ended before its plan, as failed, because it was clearly over the limit;
    stopped_why: why, in words ("requests in flight grew from 12 to 85 in 6 s").
    """

    kind: str
    step: int
    rate_rps: float
    attainment: float | None
    passed: bool
    requests: int = 0
    good: int = 0
    errors: int = 0
    ttft_ms: dict[str, float] | None = None
    tpot_ms: dict[str, float] | None = None
    mean_e2e_ms: float | None = None
    mean_output_tokens: float | None = None
    goodput_rps: float | None = None
    output_tokens_per_s: float | None = None
    duration_s: float | None = None
    stopped_early: bool = False
    stopped_why: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Probe":
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name in ("kind", "stopped_why"):  # texts from a file: one line, bounded
            if fields.get(name) is not None:
                fields[name] = one_line(fields[name])
        return cls(**fields)


def probe_from_step(summary: StepSummary, *, kind: str, rate_rps: float | None = None,
                    stopped_why: str | None = None) -> Probe:
    """A ``Probe`` from the summary of the step that measured it (which must carry an SLO
    outcome). ``rate_rps``: the offered rate; None takes the completed requests/s."""
    outcome = summary.slo
    if outcome is None:
        raise ValueError("a capacity probe needs latency targets")
    duration = summary.duration_s
    completed = (summary.ok / duration) if duration else None
    rate = rate_rps if rate_rps is not None else (completed or 0.0)
    return Probe(
        kind=kind, step=summary.step, rate_rps=float(rate), attainment=outcome.attainment,
        passed=outcome.passed, requests=outcome.sent, good=outcome.good, errors=summary.errors,
        ttft_ms=_percentiles(summary.metric("prefill_latency_ms")),
        tpot_ms=_percentiles(summary.metric("decode_token_latency_ms")),
        mean_e2e_ms=summary.value("e2e_latency_ms", "avg"),
        mean_output_tokens=summary.value("output_tokens", "avg"),
        goodput_rps=outcome.goodput_rps,
        output_tokens_per_s=(summary.output_tokens / duration) if duration else None,
        duration_s=duration, stopped_early=stopped_why is not None, stopped_why=stopped_why,
    )


def too_slow_alone(single: Probe, slo: Slo, values: dict[str, list[float]]) -> str | None:
    """A plain sentence when one request at a time already misses a target, else None.

    ``values``: the one-at-a-time probe's per-request "ttft", "tpot" and "e2e" in ms. The
    value compared is the one the target share of requests stays within (the 90th percentile
    for 90%): if that is over the target alone, no load can do better."""
    if single.passed:
        return None
    words = {"ttft": "to the first token", "tpot": "per token",
             "e2e": "for the whole answer"}
    for name, limit in slo.targets().items():
        data = sorted(values.get(name) or [])
        if not data:
            continue
        index = min(len(data) - 1, max(0, math.ceil(slo.attainment * len(data)) - 1))
        seen = data[index]
        if seen > limit:
            return (f"One request at a time already takes {duration_words(seen)} "
                    f"{words[name]}; your target is {duration_words(limit)}. No request rate "
                    f"can do better: relax the target, or use a faster server or model.")
    if single.errors:
        return (f"{single.errors} of {single.requests} requests failed even one at a time; fix "
                f"the server (see requests.csv) before searching its capacity.")
    return (f"Even one request at a time, only {single.attainment or 0:.0%} of requests met "
            f"the targets (target {slo.attainment:.0%}).")


def within_tolerance(lo: float, hi: float, tolerance: float = TOLERANCE) -> bool:
    """True when ``[lo, hi]`` is within ±tolerance of its middle."""
    return hi - lo <= tolerance * (hi + lo)


@dataclass(frozen=True)
class Search:
    """The outcome of ``search_capacity``: the highest passing rate (``rate_rps``; None when
    none passed), the final bracket, the probes in order, and why it ended ("converged",
    "probes" = out of probes, "time" = out of time)."""

    rate_rps: float | None
    low: float
    high: float
    probes: tuple[Probe, ...]
    ended: str

    @property
    def converged(self) -> bool:
        return self.ended == "converged"


@dataclass(frozen=True)
class SearchState:
    """Where a search stands: ``lo`` taken (or seen) to pass, ``hi`` taken (or seen) to fail,
    ``best`` the highest rate seen to pass (None so far), and the probes so far."""

    lo: float
    hi: float
    best: float | None = None
    probes: tuple[Probe, ...] = ()
    hi_seen: bool = False   # True once a probe at ``hi`` failed (not only taken to)

    @classmethod
    def start(cls, low: float, high: float) -> "SearchState":
        if not (low > 0 and math.isfinite(high)):
            raise ValueError("the search needs 0 < low and a finite high")
        return cls(lo=float(low), hi=float(max(high, low)))


def next_rate(state: SearchState, *, tolerance: float = TOLERANCE,
              max_probes: int = MAX_PROBES - 2,
              out_of_time: bool = False) -> tuple[float | None, str | None]:
    """``(rate, None)``: probe this rate next; ``(None, why)``: the search is over, because it
    "converged", ran out of "probes" or of "time". When the bracket has closed on ``lo``
    without any probe passing, ``lo`` itself is measured once, so that the answer is always a
    rate seen to pass (or none)."""
    if within_tolerance(state.lo, state.hi, tolerance):
        if state.best is None and not any(p.rate_rps == state.lo for p in state.probes):
            rate: float = state.lo
        elif state.best is not None and not state.hi_seen:
            # Closed on the saturation estimate, which no probe has failed yet: check it.
            rate = state.hi
        else:
            return None, "converged"
    else:
        rate = math.sqrt(state.lo * state.hi)
    if len(state.probes) >= max_probes:
        return None, "probes"
    if out_of_time:
        return None, "time"
    return rate, None


def record_probe(state: SearchState, rate: float, probe: Probe) -> SearchState:
    """The state after ``probe`` measured at ``rate``: a pass raises ``lo``, a fail lowers
    ``hi``. A pass at ``hi`` itself (the saturation estimate was low) doubles ``hi``."""
    probes = state.probes + (probe,)
    if probe.passed:
        best = rate if state.best is None else max(state.best, rate)
        if rate >= state.hi:
            return SearchState(lo=rate, hi=2 * rate, best=best, probes=probes)
        return SearchState(lo=max(state.lo, rate), hi=state.hi, best=best, probes=probes,
                           hi_seen=state.hi_seen)
    return SearchState(lo=min(state.lo, rate), hi=rate, best=state.best, probes=probes,
                       hi_seen=True)


def finish(state: SearchState, ended: str) -> Search:
    return Search(rate_rps=state.best, low=state.lo, high=state.hi, probes=state.probes,
                  ended=ended)


def search_capacity(measure: Callable[[float], Probe], *, low: float, high: float,
                    tolerance: float = TOLERANCE, max_probes: int = MAX_PROBES - 2,
                    out_of_time: Callable[[], bool] = lambda: False) -> Search:
    """Bisect the request rate between ``low`` (taken to pass) and ``high`` (taken to fail):
    ``next_rate`` and ``record_probe`` in a loop. ``measure(rate)`` runs one probe and returns
    it; ``out_of_time()`` is asked before each probe."""
    state = SearchState.start(low, high)
    while True:
        rate, ended = next_rate(state, tolerance=tolerance, max_probes=max_probes,
                                out_of_time=out_of_time())
        if rate is None:
            return finish(state, ended or "converged")
        state = record_probe(state, rate, measure(rate))


def known_bad(records: Iterable[RequestRecord], slo: Slo, now_ns: int) -> int:
    """Requests of a running probe already certain to miss: finished ones that missed, and
    unfinished ones past a target (no first token after the TTFT target, or running longer
    than the end-to-end target)."""
    bad = 0
    for record in records:
        if record.warmup or record.sent_ns is None:
            continue
        if record.end_ns is not None:
            bad += 0 if slo.is_good(record) else 1
            continue
        age_ms = (now_ns - record.sent_ns) / NS_PER_MS
        late_first = slo.ttft_ms is not None and not record.token_ns and age_ms > slo.ttft_ms
        late_end = slo.e2e_ms is not None and age_ms > slo.e2e_ms
        bad += 1 if late_first or late_end else 0
    return bad


def certainly_failed(bad: int, planned: int, attainment: float) -> bool:
    """True when ``bad`` misses out of ``planned`` counted requests already rule out reaching
    ``attainment``: the rest of the probe cannot change its verdict."""
    return bad > (1.0 - attainment) * planned + 1e-9


def miss_words(bad: int, planned: int, attainment: float) -> str:
    """Why ``certainly_failed`` stopped a probe, in words."""
    return (f"{bad} requests already missed the targets, more than the "
            f"{1.0 - attainment:.0%} of {planned} planned that the target allows")


@dataclass(frozen=True)
class Load:
    """A running probe at one instant: seconds since its start, requests sent so far, and
    those in flight (sent, not ended)."""

    at_s: float
    sent: int
    in_flight: int


def queue_growing(samples: list[Load], *, rate_rps: float, mean_latency_s: float | None,
                  longest_latency_s: float | None, warmup_s: float = WARMUP_S,
                  min_s: float = QUEUE_MIN_S, min_sent: int = QUEUE_MIN_SENT,
                  growth: float = QUEUE_GROWTH, margin: int = QUEUE_MARGIN,
                  little: float = QUEUE_LITTLE) -> str | None:
    """Why a running probe is clearly over the limit because its queue keeps growing
    ("requests in flight grew from about 12 to 85 in 14 s"), or None.

    In a steady state the requests in flight hover around rate x mean latency (Little's law);
    past the limit they grow without end (sent minus ended rises by the excess rate every
    second). Two things look alike for a while and must not cut a healthy probe: the ramp-up
    (in flight rises until requests start to end, for about the longest request's latency)
    and a batching server's wander (a cluster of Poisson arrivals; measured on the simulator
    at 7 requests/s, about 30 in flight on average: from 9 to 58 and back within 20 s).

    So a probe is judged only once it has run ``min_s`` seconds past its warm-up plus its
    longest finished request's latency (never before any request finished), with ``min_sent``
    requests sent since the warm-up, and it is over the limit when all of these hold over the
    samples since the warm-up: the mean in flight rises from each third to the next; in flight
    now is at least ``growth`` times the median of the first half, and ``margin`` more; and it
    is at least ``little`` times rate x the mean latency of the finished requests (more than
    a steady state at this rate would hold)."""
    if mean_latency_s is None or longest_latency_s is None or not samples:
        return None
    window = [s for s in samples if s.at_s >= warmup_s]
    if len(window) < 6:
        return None
    span = window[-1].at_s - window[0].at_s
    if span < longest_latency_s + min_s or window[-1].sent - window[0].sent < min_sent:
        return None
    cut1, cut2 = window[0].at_s + span / 3, window[0].at_s + 2 * span / 3
    thirds = ([s.in_flight for s in window if s.at_s < cut1],
              [s.in_flight for s in window if cut1 <= s.at_s < cut2],
              [s.in_flight for s in window if s.at_s >= cut2])
    if not all(thirds):
        return None
    first, middle, last = (sum(t) / len(t) for t in thirds)
    if not (first < middle < last):
        return None
    half = sorted(s.in_flight for s in window if s.at_s <= window[0].at_s + span / 2)
    reference = half[len(half) // 2]
    now = window[-1].in_flight
    if now < growth * reference or now - reference < margin:
        return None
    if now < little * rate_rps * mean_latency_s:
        return None
    return (f"requests in flight grew from about {reference} to {now} in {span:.0f} s "
            f"(a steady state at this rate holds about {rate_rps * mean_latency_s:.0f})")


@dataclass(frozen=True)
class Capacity:
    """The answer of a capacity run, as run.json's ``capacity`` object holds it.

    rate_rps: the highest request rate that kept the target (None: none did, see
    ``message``); in_flight: requests in flight there (rate x mean end-to-end latency, Little's
    law); output_tokens_per_s: the tokens/s that rate delivers in a steady state (rate x mean
    output tokens of its probe, whose requests nearly all finished in time); bracket: [low, high] requests/s;
    max_throughput_rps: the saturation probe's completed requests/s; best_latency: the
    one-at-a-time probe's TTFT/TPOT p50 (ms); probes: every probe in order.
    """

    slo: Slo
    rate_rps: float | None
    in_flight: float | None
    output_tokens_per_s: float | None
    bracket: tuple[float, float] | None
    converged: bool
    ended: str
    max_throughput_rps: float | None
    probes: tuple[Probe, ...] = field(default_factory=tuple)
    message: str | None = None

    @classmethod
    def from_search(cls, slo: Slo, single: Probe, saturation: Probe | None,
                    search: Search | None, *, message: str | None = None) -> "Capacity":
        probes = (single,) + (() if saturation is None else (saturation,)) + (
            () if search is None else search.probes)
        at = None
        if search is not None and search.rate_rps is not None:
            at = next(p for p in search.probes if p.rate_rps == search.rate_rps and p.passed)
        in_flight = (at.rate_rps * at.mean_e2e_ms / 1000.0
                     if at is not None and at.mean_e2e_ms is not None else None)
        tokens = None
        if at is not None:
            tokens = (at.rate_rps * at.mean_output_tokens if at.mean_output_tokens is not None
                      else at.output_tokens_per_s)
        return cls(
            slo=slo, rate_rps=None if at is None else at.rate_rps, in_flight=in_flight,
            output_tokens_per_s=tokens,
            bracket=None if search is None else (search.low, search.high),
            converged=search is not None and search.converged,
            ended="stopped" if search is None else search.ended,
            max_throughput_rps=None if saturation is None else saturation.rate_rps,
            probes=probes, message=message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_rps": self.rate_rps,
            "in_flight": self.in_flight,
            "output_tokens_per_s": self.output_tokens_per_s,
            "slo": {k: v for k, v in self.slo.to_dict().items() if k != "attainment"},
            "attainment_target": self.slo.attainment,
            "bracket": None if self.bracket is None else list(self.bracket),
            "converged": self.converged,
            "ended": self.ended,
            "max_throughput_rps": self.max_throughput_rps,
            "message": self.message,
            "probes": [p.to_dict() for p in self.probes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Capacity":
        slo = Slo.from_dict({**(data.get("slo") or {}),
                             "attainment": data.get("attainment_target", 0.9)})
        bracket = data.get("bracket")
        return cls(slo=slo, rate_rps=data.get("rate_rps"), in_flight=data.get("in_flight"),
                   output_tokens_per_s=data.get("output_tokens_per_s"),
                   bracket=None if not bracket else (float(bracket[0]), float(bracket[1])),
                   converged=bool(data.get("converged")), ended=str(data.get("ended") or ""),
                   max_throughput_rps=data.get("max_throughput_rps"),
                   probes=tuple(Probe.from_dict(p) for p in data.get("probes") or ()),
                   message=None if data.get("message") is None else one_line(data["message"]))
