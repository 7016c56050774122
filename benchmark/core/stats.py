"""Statistics of a run: pure functions over ``RequestRecord`` lists, nothing else.

    steps = summarize(result.records, config)           # one StepSummary per batch size
    steps[0].metric("decode_throughput_tok_s").avg      # tokens/s, average over rounds
    describe([1.0, 2.0, 4.0]).p90                       # 3.6

A *step* is one batch size (``mode="rounds"``, TGI's pattern), one number of concurrent users
(``mode="concurrency"``) or one request rate (``mode="rate"``, open loop). Only measured requests count: warm-ups are dropped here. Failed
requests (any ``error``) are counted (``errors``, ``timeouts``, ``cancelled``) but give no
latency or throughput samples. Token counts are the ones the server reported
(``RequestRecord.output_tokens``, else the number of token events received), never the length
that was asked.

Percentiles use linear interpolation between closest ranks (Hyndman & Fan type 7, numpy's
default): for sorted values ``x[0..n-1]`` and ``q`` in [0, 100], ``h = (n - 1) * q / 100`` and
``P = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. With one value every
percentile is that value.

Metric keys (also the ``metric`` column of summary.csv), see ``METRICS`` for labels and units:

    prefill_latency_ms        per request: first token - send (time to first token)
    decode_token_latency_ms   per request: (last token - first token) / (output tokens - 1)
    decode_total_latency_ms   per request: last token - first token
    e2e_latency_ms            per request: end of response - send
    inter_token_latency_ms    every gap between consecutive token events that arrived in
                              different reads, all requests pooled (events that came in one
                              read share a stamp: no gap; ``coalesced_events`` counts them)
    output_tokens             per request: tokens the server reported
    dispatch_lag_ms           per request: send - scheduled (the client's own delay)
    prefill_throughput_tok_s  per round: prompt tokens / (last first token - first send)
    decode_throughput_tok_s   per round: sum(output tokens - 1) / (last token - first 1st token)
    requests_per_s            per round: successful requests / (last end - first send)

In concurrency and rate modes the whole step is one window, so the three throughputs have one
sample. Rate mode adds (empty in the other modes):

    schedule_lag_ms           per sent request (failed ones too): send - intended send time
    client_queue_ms           per sent request: wait behind --max-concurrency
    queued_e2e_latency_ms     per request: end of response - intended send time
    offered_rate_per_s        the rate asked for (one sample)
    scheduled_rate_per_s      the schedule's own rate: (n - 1) / (last - first intended time)
    sent_rate_per_s           achieved: (n - 1) / (last - first real send), same n requests
    completed_rate_per_s      successful requests / (last response end - first send)

``incomplete`` counts the requests still running when a step's time was up that never ended
(they are errors, and timeouts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .records import RequestRecord
from .slo import Slo, SloOutcome, evaluate, slo_of

__all__ = [
    "METRICS",
    "METRIC_KEYS",
    "SOURCE_METRICS",
    "ALL_METRICS",
    "COUNT_KEYS",
    "STAT_KEYS",
    "MetricInfo",
    "MetricStats",
    "StepSummary",
    "percentile",
    "describe",
    "output_token_count",
    "summarize_step",
    "summarize",
]

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is named and measured: ``per`` is "request", "gap" or "round"."""

    key: str
    label: str
    unit: str
    per: str
    description: str


METRICS: dict[str, MetricInfo] = {m.key: m for m in (
    MetricInfo("prefill_latency_ms", "Prefill latency (time to first token)", "ms", "request",
               "Time from sending the request to receiving its first token."),
    MetricInfo("prefill_throughput_tok_s", "Prefill throughput", "tokens/s", "round",
               "Prompt tokens of a round's successful requests divided by the time from the "
               "round's first send to its last first token."),
    MetricInfo("decode_token_latency_ms", "Decode token latency (time per output token)", "ms",
               "request",
               "Time from the first to the last token divided by the output tokens minus one."),
    MetricInfo("decode_total_latency_ms", "Decode total latency", "ms", "request",
               "Time from the first to the last token of a request."),
    MetricInfo("decode_throughput_tok_s", "Decode throughput", "tokens/s", "round",
               "Output tokens after the first of a round's successful requests divided by the "
               "time from the round's first first-token to its last token."),
    MetricInfo("e2e_latency_ms", "End-to-end latency", "ms", "request",
               "Time from sending the request to the end of its response."),
    MetricInfo("inter_token_latency_ms", "Inter-token latency", "ms", "gap",
               "Every gap between two consecutive token events that arrived in different "
               "reads, all requests pooled; events that arrived together in one read give no "
               "gap (counted as coalesced events)."),
    MetricInfo("output_tokens", "Output tokens", "tokens", "request",
               "Tokens the server reported generating for a request."),
    MetricInfo("dispatch_lag_ms", "Dispatch lag (client delay)", "ms", "request",
               "Time between when a request should have been sent and when it was sent."),
    MetricInfo("requests_per_s", "Requests per second", "requests/s", "round",
               "Successful requests of a round divided by the time from its first send to its "
               "last response end."),
    MetricInfo("schedule_lag_ms", "Schedule lag", "ms", "request",
               "Rate mode: time from a request's intended send time to its real send, the wait "
               "behind the concurrency cap included."),
    MetricInfo("client_queue_ms", "Client queue wait", "ms", "request",
               "Rate mode: time a request waited in the client for a place under the "
               "concurrency cap."),
    MetricInfo("queued_e2e_latency_ms", "End-to-end latency from the intended send", "ms",
               "request",
               "Rate mode: time from a request's intended send time to the end of its "
               "response (what a user arriving on schedule waited)."),
    MetricInfo("offered_rate_per_s", "Offered rate", "requests/s", "round",
               "Rate mode: the request rate asked for."),
    MetricInfo("scheduled_rate_per_s", "Scheduled rate", "requests/s", "round",
               "Rate mode: the schedule's own rate, requests after the first divided by the "
               "time from the first to the last intended send."),
    MetricInfo("sent_rate_per_s", "Achieved send rate", "requests/s", "round",
               "Rate mode: requests after the first divided by the time from the first to the "
               "last real send."),
    MetricInfo("completed_rate_per_s", "Completed rate", "requests/s", "round",
               "Rate mode: successful requests divided by the time from the first send to the "
               "last response end."),
)}
METRIC_KEYS: tuple[str, ...] = tuple(METRICS)

# Metrics that only runs imported from another tool carry (``benchmark.core.importers``): their
# definitions differ from ours, so they get their own keys rather than borrowing one of ours.
SOURCE_METRICS: dict[str, MetricInfo] = {m.key: m for m in (
    MetricInfo("output_throughput_tok_s", "Output throughput (whole run)", "tokens/s", "run",
               "Output tokens of all successful requests divided by the run's duration, as the "
               "source tool computed it."),
    MetricInfo("total_throughput_tok_s", "Total token throughput (whole run)", "tokens/s", "run",
               "Prompt plus output tokens divided by the run's duration, as the source tool "
               "computed it."),
    MetricInfo("time_per_output_token_incl_ttft_ms", "Time per output token, TTFT included",
               "ms", "request",
               "End-to-end latency divided by output tokens (GuideLLM's time per output token; "
               "llmperf's inter-token latency): it includes the wait for the first token."),
    MetricInfo("input_tokens", "Prompt tokens", "tokens", "request",
               "Prompt tokens of a request, as the source tool counted them."),
)}
ALL_METRICS: dict[str, MetricInfo] = {**METRICS, **SOURCE_METRICS}
STAT_KEYS: tuple[str, ...] = ("avg", "min", "max", "p50", "p90", "p99")
COUNT_KEYS: tuple[str, ...] = (
    "requests", "ok", "errors", "timeouts", "cancelled", "short_outputs", "incomplete",
    "retried", "coalesced_events", "tokens_from_events",
)
INCOMPLETE = "incomplete"  # error_kind of a request still running when its step's time was up


# ---------------------------------------------------------------------------------------------
# Plain statistics


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks (type 7).

    Raises ValueError for no values or ``q`` outside [0, 100].
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("percentile of no values")
    return _percentile_sorted(data, q)


def _percentile_sorted(data: list[float], q: float) -> float:
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"percentile q must be within [0, 100], got {q!r}")
    h = (len(data) - 1) * q / 100.0
    lo = math.floor(h)
    if lo >= len(data) - 1:
        return data[-1]
    return data[lo] + (h - lo) * (data[lo + 1] - data[lo])


@dataclass(frozen=True)
class MetricStats:
    """Average, lowest, highest, p50, p90, p99 and the number of samples of one metric.

    Our own runs always have every number (``describe``). A run imported from another tool has
    only the numbers its file held: the others are ``None`` ("not in the source file"), never 0.
    """

    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    count: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetricStats":
        def value(key: str) -> float | int | None:
            raw = data.get(key)
            if raw is None:
                return None
            return int(raw) if key == "count" else float(raw)
        return cls(**{k: value(k) for k in (*STAT_KEYS, "count")})


def describe(values: Iterable[float | None]) -> MetricStats | None:
    """Summary of the finite values (``None`` and NaN dropped); ``None`` when there are none."""
    data = [float(v) for v in values if v is not None]
    data = sorted(v for v in data if math.isfinite(v))
    if not data:
        return None
    return MetricStats(
        avg=math.fsum(data) / len(data),
        min=data[0],
        max=data[-1],
        p50=_percentile_sorted(data, 50),
        p90=_percentile_sorted(data, 90),
        p99=_percentile_sorted(data, 99),
        count=len(data),
    )


# ---------------------------------------------------------------------------------------------
# One step


@dataclass
class StepSummary:
    """Statistics of one step (batch size or number of users).

    ``metrics`` maps every key of ``METRIC_KEYS`` to its ``MetricStats`` or ``None`` when no
    sample exists (for instance when every request failed). Counts: ``requests`` measured,
    ``ok`` succeeded, ``errors`` failed (timeouts included), ``timeouts`` the part of ``errors``
    that timed out, ``cancelled`` stopped by the user (not errors), ``short_outputs``
    successful requests that produced fewer tokens than asked, ``incomplete`` (rate mode)
    still running when the step's time was up and never ended (also errors and timeouts),
    ``retried`` requests sent again after their kept-alive connection was found dead,
    ``coalesced_events`` token events of successful requests that arrived in the same read as
    the one before (no inter-token gap sample), ``tokens_from_events`` successful requests whose
    output tokens were counted from stream events because the server did not report a count.
    """

    step: float
    mode: str
    sequence_length: int
    decode_length: int
    metrics: dict[str, MetricStats | None] = field(default_factory=dict)
    requests: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    cancelled: int = 0
    short_outputs: int = 0
    incomplete: int = 0
    retried: int = 0
    coalesced_events: int = 0
    tokens_from_events: int = 0
    rounds: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_s: float | None = None
    # How the step did against the run's latency targets (None when the run set none).
    slo: SloOutcome | None = None

    def metric(self, key: str) -> MetricStats | None:
        if key not in ALL_METRICS:
            raise KeyError(f"unknown metric {key!r}")
        return self.metrics.get(key)

    def value(self, key: str, stat: str = "avg") -> float | None:
        """One number, e.g. ``value("decode_token_latency_ms", "p50")``; None without samples."""
        stats = self.metric(key)
        return None if stats is None else getattr(stats, stat)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNT_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "mode": self.mode,
            "sequence_length": self.sequence_length,
            "decode_length": self.decode_length,
            **self.counts(),
            "rounds": self.rounds,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "duration_s": self.duration_s,
            "metrics": {k: (None if v is None else v.to_dict()) for k, v in self.metrics.items()},
            "slo": None if self.slo is None else self.slo.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepSummary":
        metrics = {k: (None if v is None else MetricStats.from_dict(v))
                   for k, v in (data.get("metrics") or {}).items()}
        known = {"step", "mode", "sequence_length", "decode_length", *COUNT_KEYS, "rounds",
                 "input_tokens", "output_tokens", "duration_s"}
        slo = data.get("slo")
        return cls(metrics=metrics, slo=None if not slo else SloOutcome.from_dict(slo),
                   **{k: v for k, v in data.items() if k in known})


def output_token_count(record: RequestRecord) -> int:
    """Tokens the server reported for ``record``, else the number of token events it sent."""
    return record.output_token_count


def _input_token_count(record: RequestRecord, sequence_length: int) -> int:
    """Prompt tokens the server reported for ``record``, else ``sequence_length``."""
    return record.input_tokens if record.input_tokens is not None else sequence_length


def _is_cancelled(record: RequestRecord) -> bool:
    return record.error is not None and record.error_kind == "cancelled"


def _is_timeout(record: RequestRecord) -> bool:
    return record.error is not None and record.error_kind in ("timeout", INCOMPLETE)


def _group_throughputs(group: Sequence[RequestRecord], sequence_length: int) -> dict[str, float]:
    """Throughputs of one round (or one concurrency window) from its successful requests."""
    out: dict[str, float] = {}
    sent = [r for r in group if r.sent_ns is not None and r.token_ns]
    if sent:
        start = min(r.sent_ns for r in sent)  # type: ignore[type-var]
        first_tokens = max(r.token_ns[0] for r in sent)
        prompt = sum(_input_token_count(r, sequence_length) for r in sent)
        if first_tokens > start:
            out["prefill_throughput_tok_s"] = prompt * NS_PER_S / (first_tokens - start)
        decode_start = min(r.token_ns[0] for r in sent)
        decode_end = max(r.token_ns[-1] for r in sent)
        decoded = sum(max(output_token_count(r) - 1, 0) for r in sent)
        if decode_end > decode_start and decoded > 0:
            out["decode_throughput_tok_s"] = decoded * NS_PER_S / (decode_end - decode_start)
    ended = [r for r in group if r.sent_ns is not None and r.end_ns is not None]
    if ended:
        start = min(r.sent_ns for r in ended)  # type: ignore[type-var]
        end = max(r.end_ns for r in ended)  # type: ignore[type-var]
        if end > start:
            out["requests_per_s"] = len(ended) * NS_PER_S / (end - start)
    return out


def _rate_samples(measured: Sequence[RequestRecord], ok: Sequence[RequestRecord],
                  step: float) -> dict[str, list[float | None]]:
    """Rate mode's own samples (see the module docstring)."""
    sent = sorted((r for r in measured if r.sent_ns is not None), key=lambda r: r.scheduled_ns)
    out: dict[str, list[float | None]] = {
        "schedule_lag_ms": [r.dispatch_lag_ms for r in sent],
        "client_queue_ms": [r.client_queue_ms for r in sent],
        "queued_e2e_latency_ms": [r.queued_e2e_ms for r in ok],
        "offered_rate_per_s": [float(step)],
        "scheduled_rate_per_s": [], "sent_rate_per_s": [], "completed_rate_per_s": [],
    }
    if len(sent) >= 2:
        first, last = sent[0].scheduled_ns, sent[-1].scheduled_ns
        if last > first:
            out["scheduled_rate_per_s"].append((len(sent) - 1) * NS_PER_S / (last - first))
        stamps = [r.sent_ns for r in sent]
        span = max(stamps) - min(stamps)  # type: ignore[type-var,operator]
        if span > 0:
            out["sent_rate_per_s"].append((len(sent) - 1) * NS_PER_S / span)
    ended = [r for r in ok if r.end_ns is not None and r.sent_ns is not None]
    if ended:
        start = min(r.sent_ns for r in ended)  # type: ignore[type-var]
        end = max(r.end_ns for r in ended)  # type: ignore[type-var]
        if end > start:
            out["completed_rate_per_s"].append(len(ended) * NS_PER_S / (end - start))
    return out


def summarize_step(records: Iterable[RequestRecord], *, step: float, mode: str,
                   sequence_length: int, decode_length: int,
                   slo: Slo | None = None) -> StepSummary:
    """Statistics of the measured (non-warm-up) records of ``step``.

    Rounds mode: throughputs are computed per round (``record.run``) and summarised over rounds;
    a round with a cancelled request (the user stopped the run) gives no throughput sample.
    Concurrency mode: the whole step is one window and gives one throughput sample.
    With ``slo``, the step's attainment and goodput (``core.slo.evaluate``) over its duration.
    A prompt length the server did not report is taken as ``sequence_length`` (the engine
    builds prompts of exactly that many tokens); a requested output length the record does not
    carry is taken as ``decode_length``.
    """
    measured = [r for r in records if not r.warmup and r.step == step]
    ok = [r for r in measured if r.ok]
    failed = [r for r in measured if not r.ok]
    summary = StepSummary(step=step, mode=mode, sequence_length=sequence_length,
                          decode_length=decode_length)
    summary.requests = len(measured)
    summary.ok = len(ok)
    summary.cancelled = sum(1 for r in failed if _is_cancelled(r))
    summary.errors = len(failed) - summary.cancelled
    summary.timeouts = sum(1 for r in failed if _is_timeout(r))
    summary.incomplete = sum(1 for r in failed if r.error_kind == INCOMPLETE)
    summary.short_outputs = sum(
        1 for r in ok
        if output_token_count(r) < (r.requested_output_tokens or decode_length)
    )
    summary.retried = sum(1 for r in measured if r.retried)
    summary.coalesced_events = sum(r.coalesced_events for r in ok)
    summary.tokens_from_events = sum(1 for r in ok if r.tokens_from_events)
    summary.input_tokens = sum(_input_token_count(r, sequence_length) for r in ok)
    summary.output_tokens = sum(output_token_count(r) for r in ok)

    # Requests that succeeded but have enough tokens for a decode measurement.
    decoded = [r for r in ok if r.token_latency_ms is not None]
    samples: dict[str, list[float | None]] = {
        "prefill_latency_ms": [r.ttft_ms for r in ok],
        "decode_token_latency_ms": [r.token_latency_ms for r in decoded],
        "decode_total_latency_ms": [r.decode_ms for r in decoded],
        "e2e_latency_ms": [r.e2e_ms for r in ok],
        "inter_token_latency_ms": [gap for r in ok for gap in r.itl_ms],
        "output_tokens": [float(output_token_count(r)) for r in ok],
        "dispatch_lag_ms": [r.dispatch_lag_ms for r in ok],
    }

    if mode == "rate":
        samples.update(_rate_samples(measured, ok, step))
    if mode in ("concurrency", "rate", "capacity"):   # one window per step (capacity: probe)
        groups = [ok]
    else:
        # A round the user stopped midway is not a full batch: its latencies count, its
        # throughput does not.
        by_round: dict[int, list[RequestRecord]] = {}
        stopped: set[int] = {r.run for r in measured if _is_cancelled(r)}
        for record in ok:
            if record.run not in stopped:
                by_round.setdefault(record.run, []).append(record)
        groups = [by_round[k] for k in sorted(by_round)]
    summary.rounds = len({r.run for r in measured}) if mode == "rounds" else (
        1 if measured else 0)
    throughputs: dict[str, list[float | None]] = {
        "prefill_throughput_tok_s": [], "decode_throughput_tok_s": [], "requests_per_s": []}
    for group in groups:
        for key, value in _group_throughputs(group, sequence_length).items():
            throughputs[key].append(value)
    samples.update(throughputs)

    summary.metrics = {key: describe(samples.get(key, [])) for key in METRIC_KEYS}
    spans = [r for r in measured if r.sent_ns is not None and r.end_ns is not None]
    if spans:
        start = min(r.sent_ns for r in spans)  # type: ignore[type-var]
        end = max(r.end_ns for r in spans)  # type: ignore[type-var]
        summary.duration_s = (end - start) / NS_PER_S
    if slo is not None:
        summary.slo = evaluate(measured, slo, summary.duration_s)
    return summary


def summarize(records: Iterable[RequestRecord], config: Any) -> list[StepSummary]:
    """One ``StepSummary`` per step that has measured records, in the config's batch-size order.

    ``config`` is a ``RunConfig`` (only ``steps``, ``mode``, ``sequence_length``,
    ``decode_length`` and the ``slo_*`` targets are read). Steps with records but absent from
    the config come last.
    """
    measured = [r for r in records if not r.warmup]
    present = {r.step for r in measured}
    order = [s for s in config.steps if s in present]
    order += sorted(present - set(order))
    slo = slo_of(config)
    return [
        summarize_step(measured, step=step, mode=config.mode,
                       sequence_length=config.sequence_length, decode_length=config.decode_length,
                       slo=slo)
        for step in order
    ]

