"""The calibration's pure part: the engine's records and the simulator's trace become errors,
a row per concurrency level, a verdict, and the table (no I/O, no processes).

Definitions are in ``benchmark.calibration``'s docstring and in ``Calibration.to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

from ..core.calibration_note import RUN_KIND, verdict_for
from ..core.records import NS_PER_MS, RequestRecord
from ..core.results import finite
from ..core.stats import percentile

__all__ = ["CalibrationSettings", "Row", "Verdict", "DEFAULT_LEVELS", "QUICK_LEVELS",
           "SERVER_BEHIND_FACTOR", "match_errors", "summarize_level", "is_accurate",
           "stop_reason", "decide", "verdict_for", "markdown_table", "NOTE", "RUN_KIND",
           "DEFAULT_RATES", "QUICK_RATES", "ScheduleRow", "summarize_schedule",
           "schedule_verdict", "schedule_table"]

DEFAULT_LEVELS = (1, 16, 64, 128, 256, 512, 1024)
QUICK_LEVELS = (1, 16, 64)
# The simulated server counts as "behind" when its median step is this much above the model.
SERVER_BEHIND_FACTOR = 1.2


@dataclass(frozen=True)
class CalibrationSettings:
    """What is measured: the levels, the simulated server's timing, and the limits."""

    levels: tuple[int, ...] = DEFAULT_LEVELS
    token_ms: float = 10.0          # one decode step of the simulated server, any batch size
    prefill_ms: float = 10.0        # one prefill step, any number of prompt tokens
    sequence_length: int = 32
    decode_length: int = 64
    runs: int = 5
    warmups: int = 1
    tolerance_ms: float = 1.0       # "measures within 1 ms"
    max_error_ms: float = 10.0      # stop climbing once an error passes this
    max_cpu_pct: float = 90.0       # ... or the client uses this much of one core
    quick: bool = False
    workers: tuple[int, ...] = (1,)  # engine worker processes: the climb is made for each
    simulator_workers: int = 1      # simulator processes sharing its port
    # The run's telemetry sampler, as in real runs (0 = off: tests/perf/telemetry_overhead.py
    # measures the difference).
    telemetry_interval_s: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    """One concurrency level: client vs server, errors in ms (client minus server)."""

    concurrency: int
    requests: int                     # measured requests (warm-ups excluded)
    matched: int                      # ... found in the server's trace
    failed: int                       # ... with an error
    ttft_client_p50_ms: float | None
    ttft_server_p50_ms: float | None
    ttft_error_p50_ms: float | None
    ttft_error_p99_ms: float | None
    send_to_server_p50_ms: float | None    # server arrival stamp minus client send stamp
    send_to_server_p99_ms: float | None
    first_delivery_p50_ms: float | None    # client first-token stamp minus server write stamp
    first_delivery_p99_ms: float | None
    token_client_p50_ms: float | None
    token_server_p50_ms: float | None
    token_error_p50_ms: float | None
    token_error_p99_ms: float | None
    itl_server_p50_ms: float | None   # the server's own median gap between tokens
    itl_error_p50_ms: float | None    # per token gap, client gap minus server gap
    itl_error_p99_ms: float | None
    delivery_p50_ms: float | None     # client stamp minus server stamp of the same token
    delivery_p99_ms: float | None
    dispatch_p50_ms: float | None
    dispatch_p99_ms: float | None
    token_events_per_s: float | None
    client_cpu_pct: float | None      # % of one core, during the measured rounds
    server_cpu_pct: float | None
    server_read_wait_p50_ms: float | None = None  # kernel arrival to the server's read
    server_read_wait_p99_ms: float | None = None
    arrival_clock: str | None = None  # the server's arrival stamps: "kernel" or "read"
    accurate: bool = False
    workers: int = 1                  # the engine's worker processes (--workers)

    def to_dict(self) -> dict[str, Any]:
        return {k: finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Verdict:
    accurate_concurrency: int | None
    accurate_token_rate: float | None
    highest_measured: int | None
    stopped_because: str | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {k: finite(v) for k, v in asdict(self).items()}




@dataclass
class _Samples:
    ttft_client: list[float] = field(default_factory=list)
    ttft_server: list[float] = field(default_factory=list)
    ttft_error: list[float] = field(default_factory=list)
    send_to_server: list[float] = field(default_factory=list)
    first_delivery: list[float] = field(default_factory=list)
    token_client: list[float] = field(default_factory=list)
    token_server: list[float] = field(default_factory=list)
    token_error: list[float] = field(default_factory=list)
    itl_server: list[float] = field(default_factory=list)
    itl_error: list[float] = field(default_factory=list)
    read_wait: list[float] = field(default_factory=list)
    delivery: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    matched: int = 0


def _server_token_latency_ms(row: dict[str, Any]) -> float | None:
    stamps = row.get("token_ns") or []
    tokens = row.get("output_tokens") or len(stamps)
    if len(stamps) < 2 or tokens < 2:
        return None
    return (stamps[-1] - stamps[0]) / NS_PER_MS / (tokens - 1)


def match_errors(records: Iterable[RequestRecord],
                 trace: dict[str, dict[str, Any]]) -> _Samples:
    """Client-minus-server samples for every successful record found in ``trace`` (by id)."""
    out = _Samples()
    for record in records:
        if record.dispatch_lag_ms is not None:
            out.dispatch.append(record.dispatch_lag_ms)
        row = trace.get(record.request_id or "")
        if row is None or not record.ok or row.get("status") != 200:
            continue
        stamps = row.get("token_ns") or []
        out.matched += 1
        client_ttft = record.ttft_ms
        if client_ttft is not None and stamps:
            server_ttft = (stamps[0] - row["arrived_ns"]) / NS_PER_MS
            out.ttft_client.append(client_ttft)
            out.ttft_server.append(server_ttft)
            out.ttft_error.append(client_ttft - server_ttft)
            if record.sent_ns is not None:
                out.send_to_server.append((row["arrived_ns"] - record.sent_ns) / NS_PER_MS)
            if row.get("read_ns") is not None:
                out.read_wait.append((row["read_ns"] - row["arrived_ns"]) / NS_PER_MS)
            out.first_delivery.append((record.token_ns[0] - stamps[0]) / NS_PER_MS)
        client_token = record.token_latency_ms
        server_token = _server_token_latency_ms(row)
        if client_token is not None and server_token is not None:
            out.token_client.append(client_token)
            out.token_server.append(server_token)
            out.token_error.append(client_token - server_token)
        if len(record.token_ns) == len(stamps):  # one token per event (TGI's stream)
            out.delivery.extend((c - s) / NS_PER_MS for c, s in zip(record.token_ns, stamps))
            for i in range(1, len(stamps)):
                client_gap = record.token_ns[i] - record.token_ns[i - 1]
                server_gap = stamps[i] - stamps[i - 1]
                out.itl_server.append(server_gap / NS_PER_MS)
                out.itl_error.append((client_gap - server_gap) / NS_PER_MS)
    return out


def _streaming_s(records: Sequence[RequestRecord], pattern: str = "rounds") -> float:
    """Seconds the rounds were streaming: per round, first scheduled to last end, summed (the
    engine's work between rounds, such as building the next prompts, is left out). In the
    concurrency pattern the whole step is one span (``run`` numbers users there, not rounds)."""
    spans: dict[int, tuple[int, int]] = {}
    for r in records:
        if r.end_ns is None:
            continue
        key = r.run if pattern == "rounds" else 0
        start, end = spans.get(key, (r.scheduled_ns, r.end_ns))
        spans[key] = (min(start, r.scheduled_ns), max(end, r.end_ns))
    return sum(end - start for start, end in spans.values()) / 1e9


def _p(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 4) if values else None


def summarize_level(concurrency: int, records: Sequence[RequestRecord],
                    trace: dict[str, dict[str, Any]], *, window_s: float | None,
                    client_cpu_s: float | None, server_cpu_s: float | None,
                    tolerance_ms: float = 1.0, arrival_clock: str | None = None,
                    pattern: str = "rounds") -> Row:
    """One table row from the measured records, the server's trace and the CPU samples
    (``pattern``: the engine's load pattern that made the records, rounds or concurrency)."""
    s = match_errors(records, trace)
    events = sum(len(r.token_ns) for r in records)
    streaming_s = _streaming_s(records, pattern)
    rate = events / streaming_s if streaming_s else (events / window_s if window_s else None)
    cpu = (lambda v: round(100.0 * v / window_s, 1) if v is not None and window_s else None)
    row = Row(
        concurrency=concurrency, requests=len(records), matched=s.matched,
        failed=sum(1 for r in records if not r.ok),
        ttft_client_p50_ms=_p(s.ttft_client, 50), ttft_server_p50_ms=_p(s.ttft_server, 50),
        ttft_error_p50_ms=_p(s.ttft_error, 50), ttft_error_p99_ms=_p(s.ttft_error, 99),
        send_to_server_p50_ms=_p(s.send_to_server, 50),
        send_to_server_p99_ms=_p(s.send_to_server, 99),
        first_delivery_p50_ms=_p(s.first_delivery, 50),
        first_delivery_p99_ms=_p(s.first_delivery, 99),
        token_client_p50_ms=_p(s.token_client, 50), token_server_p50_ms=_p(s.token_server, 50),
        token_error_p50_ms=_p(s.token_error, 50), token_error_p99_ms=_p(s.token_error, 99),
        itl_server_p50_ms=_p(s.itl_server, 50),
        itl_error_p50_ms=_p(s.itl_error, 50), itl_error_p99_ms=_p(s.itl_error, 99),
        delivery_p50_ms=_p(s.delivery, 50), delivery_p99_ms=_p(s.delivery, 99),
        dispatch_p50_ms=_p(s.dispatch, 50), dispatch_p99_ms=_p(s.dispatch, 99),
        token_events_per_s=round(rate, 1) if rate is not None else None,
        client_cpu_pct=cpu(client_cpu_s), server_cpu_pct=cpu(server_cpu_s),
        server_read_wait_p50_ms=_p(s.read_wait, 50), server_read_wait_p99_ms=_p(s.read_wait, 99),
        arrival_clock=arrival_clock,
    )
    return replace(row, accurate=is_accurate(row, tolerance_ms))


def is_accurate(row: Row, tolerance_ms: float = 1.0) -> bool:
    """Within tolerance: every request measured and matched, and the TTFT error p50 and the
    token latency error p50 and p99 all within ``tolerance_ms``.

    The TTFT error is judged end to end (send->server plus first-token delivery). With kernel
    arrival stamps, send->server is the transit and the accuracy of the client's send stamp.
    Without them (``arrival_clock`` "read": not Linux) it also holds the server's own wait
    before it read the request, so the judgement errs on the strict side. Dispatch lag is
    reported apart by the engine and is not judged."""
    if row.requests == 0 or row.failed or row.matched < row.requests:
        return False
    errors = (row.ttft_error_p50_ms, row.token_error_p50_ms, row.token_error_p99_ms)
    return all(e is not None and abs(e) <= tolerance_ms for e in errors)


def stop_reason(row: Row, settings: CalibrationSettings) -> str | None:
    """Why climbing should stop after ``row`` (a phrase), or None to go on."""
    if row.failed:
        return f"{row.failed} requests failed at concurrency {row.concurrency}"
    if row.matched < row.requests:
        return (f"{row.requests - row.matched} requests at concurrency {row.concurrency} were "
                f"missing from the server's trace")
    server = row.itl_server_p50_ms
    if server is not None and server > settings.token_ms * SERVER_BEHIND_FACTOR:
        return (f"the simulated server itself fell behind at concurrency {row.concurrency} "
                f"(a median {server:.1f} ms between tokens instead of {settings.token_ms:g}): "
                f"this machine cannot run both sides at this load")
    worst = max((abs(e) for e in (row.ttft_error_p50_ms, row.token_error_p99_ms)
                 if e is not None), default=0.0)
    if worst > settings.max_error_ms:
        return (f"the error reached {worst:.1f} ms at concurrency {row.concurrency} (limit "
                f"{settings.max_error_ms:g} ms)")
    if row.client_cpu_pct is not None and row.client_cpu_pct > settings.max_cpu_pct:
        return (f"the client used {row.client_cpu_pct:.0f}% of a core at concurrency "
                f"{row.concurrency} (limit {settings.max_cpu_pct:g}%)")
    return None


def decide(rows: Sequence[Row], *, tolerance_ms: float = 1.0,
           stopped_because: str | None = None, quick: bool = False) -> Verdict:
    """The verdict: the highest level of the unbroken accurate run from the lowest level up."""
    best: Row | None = None
    for row in sorted(rows, key=lambda r: r.concurrency):
        if not row.accurate:
            break
        best = row
    highest = max((r.concurrency for r in rows), default=None)
    tol = f"{tolerance_ms:g} ms"
    if best is None:
        sentence = (f"This machine did not measure within {tol} even at concurrency "
                    f"{min((r.concurrency for r in rows), default=1)}: treat latencies from it "
                    f"with care and use a quieter or bigger machine for the client.")
        return Verdict(None, None, highest, stopped_because, sentence)
    rate = best.token_events_per_s
    rate_text = f" ({rate:,.0f} token events/s)" if rate else ""
    if best.concurrency == highest and stopped_because is None:
        how = "without --quick" if quick else "with higher --concurrency levels"
        above = (f"higher concurrency was not measured: run `python -m benchmark calibrate` "
                 f"{how} before trusting results above it")
    else:
        above = ("above it, spread the load over more client processes or use a bigger "
                 "client machine")
    sentence = (f"This machine measures within {tol} up to {best.concurrency} concurrent "
                f"streams{rate_text}; {above}.")
    return Verdict(best.concurrency, rate, highest, stopped_because, sentence)


# ---------------------------------------------------------------------------------------------
# Text output

_COLUMNS = (
    ("concurrency", "users", "{:d}"),
    ("ttft_client_p50_ms", "TTFT client p50", "{:.2f}"),
    ("ttft_server_p50_ms", "TTFT server p50", "{:.2f}"),
    ("ttft_error_p50_ms", "TTFT err p50", "{:+.2f}"),
    ("ttft_error_p99_ms", "TTFT err p99", "{:+.2f}"),
    ("send_to_server_p50_ms", "send→server p50", "{:.2f}"),
    ("first_delivery_p50_ms", "1st token delivery p50", "{:.2f}"),
    ("server_read_wait_p50_ms", "server read wait p50", "{:.2f}"),
    ("token_client_p50_ms", "token client p50", "{:.3f}"),
    ("token_server_p50_ms", "token server p50", "{:.3f}"),
    ("token_error_p50_ms", "token err p50", "{:+.3f}"),
    ("token_error_p99_ms", "token err p99", "{:+.3f}"),
    ("dispatch_p99_ms", "dispatch p99", "{:.2f}"),
    ("token_events_per_s", "token events/s", "{:,.0f}"),
    ("client_cpu_pct", "client CPU %", "{:.0f}"),
    ("server_cpu_pct", "server CPU %", "{:.0f}"),
    ("accurate", "within", None),
)


NOTE = (
    "Times in ms; error = client-measured minus server-traced (same clock), matched by "
    "X-Request-Id. The server stamps a request's arrival with the kernel's receive time of its "
    "first bytes. TTFT error = send→server (client send stamp to that arrival) + 1st token "
    "delivery (server write to client stamp). Server read wait = arrival to the moment the "
    "simulator's event loop read the request: server latency, part of both TTFTs, not an "
    "error. \"within\" judges TTFT error p50 and token latency error p50 and p99. Dispatch = "
    "wait in the client before a request went out (reported apart by the engine, not part of "
    "TTFT). Token events/s: while streaming (rounds summed). CPU % of one core, from the end "
    "of the warm-up to the last round.")


def _cell(value: Any, fmt: str | None, tolerance_ms: float) -> str:
    if fmt is None:
        return f"yes (≤{tolerance_ms:g} ms)" if value else "no"
    if value is None:
        return "-"
    return fmt.format(value)


def markdown_table(rows: Sequence[Row], tolerance_ms: float = 1.0) -> str:
    """The calibration table (times in ms; errors = client minus server)."""
    head = "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---:" for _ in _COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(getattr(r, key), fmt, tolerance_ms)
                              for key, _, fmt in _COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])




# ---------------------------------------------------------------------------------------------
# The rate mode's schedule (open loop): how well this machine keeps send times

DEFAULT_RATES = (100, 500, 1000)
QUICK_RATES = (100,)
SCHEDULE_RATE_TOLERANCE = 0.01      # achieved send rate within 1 % of the drawn schedule's
SCHEDULE_LAG_P50_MS = 0.5
SCHEDULE_LAG_P99_MS = 5.0
# Server-measured inter-arrival coefficient of variation that counts as kept, per arrival kind.
SCHEDULE_CV_BOUNDS = {"poisson": (0.95, 1.05), "constant": (0.0, 0.02)}


@dataclass(frozen=True)
class ScheduleRow:
    """One (rate, arrivals) measurement of the rate mode against the simulated server.

    ``scheduled_rate``: the drawn send times' own rate ((n - 1) / first-to-last intended time);
    ``sent_rate``: the same count over the first-to-last real send; ``lag_*``: real minus
    intended send, ms; ``server_cv``: coefficient of variation of the gaps between the
    server's kernel arrival stamps of the same requests; ``schedule_cv``: the same of the drawn
    times (what a perfect client would give)."""

    rate: float
    arrivals: str
    requests: int
    matched: int
    failed: int
    scheduled_rate: float | None
    sent_rate: float | None
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    server_cv: float | None
    schedule_cv: float | None
    client_cpu_pct: float | None = None

    @property
    def rate_ratio(self) -> float | None:
        if self.sent_rate is None or not self.scheduled_rate:
            return None
        return self.sent_rate / self.scheduled_rate

    def missed(self) -> list[str]:
        """The bounds this measurement missed (empty: the schedule was kept)."""
        out = []
        ratio = self.rate_ratio
        if ratio is None or abs(ratio - 1) > SCHEDULE_RATE_TOLERANCE:
            out.append("send rate")
        if self.lag_p50_ms is None or self.lag_p50_ms >= SCHEDULE_LAG_P50_MS:
            out.append("lag p50")
        if self.lag_p99_ms is None or self.lag_p99_ms >= SCHEDULE_LAG_P99_MS:
            out.append("lag p99")
        low, high = SCHEDULE_CV_BOUNDS.get(self.arrivals, (0.0, float("inf")))
        if self.server_cv is None or not low <= self.server_cv <= high:
            out.append("server CV")
        if self.failed or self.matched != self.requests:
            out.append("failed requests")
        return out

    @property
    def kept(self) -> bool:
        return not self.missed()

    def to_dict(self) -> dict[str, Any]:
        return finite({**asdict(self), "rate_ratio": self.rate_ratio, "missed": self.missed(),
                       "kept": self.kept})


def _cv(stamps: Sequence[int]) -> float | None:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if len(gaps) < 2:
        return None
    mean = sum(gaps) / len(gaps)
    if mean <= 0:
        return None
    variance = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    return variance ** 0.5 / mean


def summarize_schedule(rate: float, arrivals: str, records: Sequence[RequestRecord],
                       trace: dict[str, dict[str, Any]], *,
                       client_cpu_pct: float | None = None) -> ScheduleRow:
    """The row of one rate-mode run: its records and the server's trace rows by request id."""
    sent = sorted((r for r in records if r.sent_ns is not None), key=lambda r: r.scheduled_ns)
    lags = [r.dispatch_lag_ms for r in sent if r.dispatch_lag_ms is not None]
    arrived = sorted(int(trace[r.request_id]["arrived_ns"]) for r in sent
                     if r.request_id in trace and isinstance(
                         trace[r.request_id].get("arrived_ns"), int))
    scheduled_rate = sent_rate = None
    if len(sent) >= 2:
        span = sent[-1].scheduled_ns - sent[0].scheduled_ns
        scheduled_rate = (len(sent) - 1) * 1e9 / span if span > 0 else None
        stamps = [r.sent_ns for r in sent]
        real = max(stamps) - min(stamps)  # type: ignore[type-var,operator]
        sent_rate = (len(sent) - 1) * 1e9 / real if real > 0 else None
    return ScheduleRow(
        rate=rate, arrivals=arrivals, requests=len(records), matched=len(arrived),
        failed=sum(1 for r in records if not r.ok), scheduled_rate=scheduled_rate,
        sent_rate=sent_rate, lag_p50_ms=_p(lags, 50), lag_p99_ms=_p(lags, 99),
        lag_max_ms=max(lags) if lags else None, server_cv=_cv(arrived),
        schedule_cv=_cv([r.scheduled_ns for r in sent]), client_cpu_pct=client_cpu_pct)


def schedule_verdict(rows: Sequence[ScheduleRow]) -> tuple[float | None, str]:
    """The highest rate kept by every arrival kind measured at it (and at every lower rate),
    and a sentence saying so."""
    best: float | None = None
    for rate in sorted({r.rate for r in rows}):
        at = [r for r in rows if r.rate == rate]
        if not all(r.kept for r in at):
            break
        best = rate
    bounds = (f"send rate within {SCHEDULE_RATE_TOLERANCE:.0%}, schedule lag p50 under "
              f"{SCHEDULE_LAG_P50_MS:g} ms and p99 under {SCHEDULE_LAG_P99_MS:g} ms, "
              f"server-measured arrival spread as drawn")
    if best is None:
        return None, (f"This machine kept no measured request rate within the bounds ({bounds});"
                      f" treat rate-mode results from it with care.")
    return best, (f"This machine keeps a request-rate schedule up to {best:g} requests/s "
                  f"({bounds}).")


_SCHEDULE_COLUMNS = (
    ("rate", "rate", "{:g}"), ("arrivals", "arrivals", "{}"), ("requests", "requests", "{:d}"),
    ("rate_ratio", "sent / scheduled", "{:.4f}"), ("lag_p50_ms", "lag p50", "{:.3f}"),
    ("lag_p99_ms", "lag p99", "{:.3f}"), ("lag_max_ms", "lag max", "{:.2f}"),
    ("server_cv", "server CV", "{:.4f}"), ("schedule_cv", "drawn CV", "{:.4f}"),
    ("client_cpu_pct", "client CPU %", "{:.0f}"),
)


def schedule_table(rows: Sequence[ScheduleRow]) -> str:
    """The schedule measurements as markdown (lags in ms)."""
    head = "| " + " | ".join(t for _, t, _ in _SCHEDULE_COLUMNS) + " | kept |"
    rule = "|" + "|".join("---:" for _ in _SCHEDULE_COLUMNS) + "|---|"
    body = []
    for r in rows:
        cells = []
        for key, _, fmt in _SCHEDULE_COLUMNS:
            value = getattr(r, key)
            cells.append("-" if value is None else fmt.format(value))
        kept = "yes" if r.kept else "no: " + ", ".join(r.missed())
        body.append("| " + " | ".join(cells) + f" | {kept} |")
    return "\n".join([head, rule, *body])


# ---------------------------------------------------------------------------------------------
# Worker processes: which count this machine needs


def workers_verdict(rows: Sequence[Row], *, tolerance_ms: float = 1.0
                    ) -> tuple[dict[int, int | None], str]:
    """For each worker count climbed, the highest level of its unbroken accurate run from the
    lowest level (None: not even the lowest), and a sentence saying which worker count a load
    needs: the fewest workers that measured it within the tolerance."""
    counts = sorted({r.workers for r in rows})
    best: dict[int, int | None] = {}
    for count in counts:
        best[count] = decide([r for r in rows if r.workers == count],
                             tolerance_ms=tolerance_ms).accurate_concurrency
    parts: list[str] = []
    reached = 0
    for count in counts:
        level = best[count]
        if level is not None and level > reached:
            word = "worker" if count == 1 else "workers"
            parts.append(f"up to {level} streams: {count} {word}")
            reached = level
    if not parts:
        return best, (f"No worker count measured within {tolerance_ms:g} ms even at the "
                      f"lowest level: use a quieter or bigger client machine.")
    highest = max((r.concurrency for r in rows), default=reached)
    tail = (f"; above {reached} streams none of {', '.join(map(str, counts))} workers was "
            f"within {tolerance_ms:g} ms" if reached < highest
            else f"; above {reached} streams was not measured")
    return best, f"This machine needs, for {'; '.join(parts)}{tail}."
