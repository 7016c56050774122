"""``python -m benchmark calibrate``: how accurately this machine measures, and up to where.

    python -m benchmark calibrate            # 1, 16, 64, 128, 256, ... concurrent streams
    python -m benchmark calibrate --quick    # a few seconds (CI)

It starts the simulated TGI server (``python -m benchmark.simulator --trace FILE``) on a free
port with a fixed timing model (10 ms per prefill, exactly 10 ms per decode step whatever the
batch), then runs the real engine (``engine.run``, TGI's round pattern) against it at increasing
concurrency. The server stamps, on the same monotonic clock (``perf_counter_ns``, shared by every
process of the machine), when each request arrived and when each token's bytes were written to
the socket. Arrival is the kernel's receive time of the request's first bytes (Linux), so the
reference does not depend on how busy the simulator's own event loop is. Every request the
engine measured is matched to the server's trace row by its ``X-Request-Id``, and the error is
**client-measured minus server-traced**:

- TTFT error: (first token arrived - request sent, as the engine reports it) minus (first token
  written - request arrived, in the server); it is send->server (client send stamp to kernel
  arrival) plus first-token delivery (server write to client stamp);
- token latency error: the engine's decode token latency ((last - first token) / (tokens - 1))
  minus the same from the server's stamps;
- dispatch lag (shown, not an error of the reported numbers): how long requests of a round
  waited in the client before their bytes went out; the engine reports it separately.

The table has one row per concurrency; the run stops at the first level where an error passes
``--max-error-ms``, the client process uses more than ``--max-cpu`` % of a core, requests fail, or
the simulated server itself falls behind its 10 ms step. It ends with one sentence: the highest
concurrency (and token rate) measured within ``--tolerance-ms`` (1 ms), and a warning to use more
client processes or a bigger machine above it.

Files: ``calibration.json`` in ``--output-dir`` (default ``$RESULTS_DIR/calibration-<date>``),
and a copy of the latest one at ``$RESULTS_DIR/calibration.json`` for the app, which calls
``verdict_for(concurrency, load_latest())`` to show a warning beside runs beyond the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import __version__
from .config import RunConfig, parse_batch_sizes, parse_float, parse_int
from .errors import BenchmarkError, ConfigError, ServerStartError, redact
from .prompts import build_tiny_tokenizer
from .records import NS_PER_MS, RequestRecord
from .results import (TOOL_NAME, _atomic_write, _finite, environment_info, now_iso,
                      results_root)
from .simulator.process import SimulatorProcess
from .stats import percentile

__all__ = [
    "CalibrationSettings", "Row", "Verdict", "DEFAULT_LEVELS", "QUICK_LEVELS",
    "CALIBRATION_FILE", "KIND", "match_errors", "summarize_level", "is_accurate", "decide",
    "verdict_for", "run_calibration", "markdown_table", "load_latest", "latest_path", "calibrate", "main",
]

KIND = "calibration"
RUN_KIND = "calibration-summary"  # the block a run.json carries (run_calibration)
SCHEMA_VERSION = 1
CALIBRATION_FILE = "calibration.json"
DEFAULT_LEVELS = (1, 16, 64, 128, 256, 512, 1024)
QUICK_LEVELS = (1, 16, 64)
SERVER_START_TIMEOUT_S = 60.0
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

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Verdict:
    accurate_concurrency: int | None
    accurate_token_rate: float | None
    highest_measured: int | None
    stopped_because: str | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# Pure part: records + trace -> errors -> a row -> a verdict


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


def _streaming_s(records: Sequence[RequestRecord]) -> float:
    """Seconds the rounds were streaming: per round, first scheduled to last end, summed (the
    engine's work between rounds, such as building the next prompts, is left out)."""
    spans: dict[int, tuple[int, int]] = {}
    for r in records:
        if r.end_ns is None:
            continue
        start, end = spans.get(r.run, (r.scheduled_ns, r.end_ns))
        spans[r.run] = (min(start, r.scheduled_ns), max(end, r.end_ns))
    return sum(end - start for start, end in spans.values()) / 1e9


def _p(values: list[float], q: float) -> float | None:
    return round(percentile(values, q), 4) if values else None


def summarize_level(concurrency: int, records: Sequence[RequestRecord],
                    trace: dict[str, dict[str, Any]], *, window_s: float | None,
                    client_cpu_s: float | None, server_cpu_s: float | None,
                    tolerance_ms: float = 1.0, arrival_clock: str | None = None) -> Row:
    """One table row from the measured records, the server's trace and the CPU samples."""
    s = match_errors(records, trace)
    events = sum(len(r.token_ns) for r in records)
    streaming_s = _streaming_s(records)
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


def verdict_for(concurrency: int, calibration: dict[str, Any] | None) -> str | None:
    """A warning for a run at ``concurrency`` when it is beyond what ``calibration`` (the dict
    of a calibration.json, e.g. ``load_latest()``, or the block of a run.json made by
    ``run_calibration``) measured as accurate; None when within it or when there is no
    calibration. Pure: the app shows the sentence next to the results."""
    if not isinstance(calibration, dict):
        return None
    if calibration.get("kind") == RUN_KIND:
        calibration = _from_run_block(calibration)
    verdict = calibration.get("verdict")
    if not isinstance(verdict, dict):
        return None
    accurate = verdict.get("accurate_concurrency")
    tol = (calibration.get("settings") or {}).get("tolerance_ms", 1.0)
    when = str(calibration.get("ended_at") or calibration.get("started_at") or "")[:10]
    where = f"the calibration of this machine{f' ({when})' if when else ''}"
    if accurate is None:
        return (f"Client accuracy not confirmed: {where} did not measure within {tol:g} ms at "
                f"any concurrency. Latencies may include the client's own delays.")
    if concurrency <= int(accurate):
        return None
    highest = verdict.get("highest_measured")
    if highest is not None and concurrency > int(highest) and verdict.get("stopped_because") \
            is None and int(highest) == int(accurate):
        return (f"Concurrency {concurrency} is above what {where} measured ({accurate} "
                f"streams, accurate within {tol:g} ms); run `python -m benchmark calibrate` "
                f"to check the client keeps up.")
    return (f"Concurrency {concurrency} is beyond what {where} measured as accurate "
            f"({accurate} streams within {tol:g} ms): latencies here may include the client's "
            f"own delays. Use more client processes or a bigger machine.")


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
def run_calibration(concurrency: int, calibration: dict[str, Any] | None
                    ) -> dict[str, Any] | None:
    """What a run's ``run.json`` says about the client's accuracy (``RunResult.calibration``):
    when and where ``calibration`` was measured, up to which concurrency and token rate it found
    the client accurate, and ``verdict_for(concurrency, calibration)`` for the run's largest
    step (None when within). None without a calibration; fields it lacks are None. Pure."""
    if not isinstance(calibration, dict) or not isinstance(calibration.get("verdict"), dict):
        return None

    def part(name: str) -> dict[str, Any]:
        value = calibration.get(name)
        return value if isinstance(value, dict) else {}

    verdict = part("verdict")
    try:
        sentence = verdict_for(concurrency, calibration)
    except (TypeError, ValueError):  # a hand-edited file with odd values: no verdict
        sentence = None
    return {
        "kind": RUN_KIND,
        "measured_at": _text(calibration.get("ended_at") or calibration.get("started_at")),
        "cpu_count": _count(part("environment").get("cpu_count")),
        "platform": _text(part("environment").get("platform")),
        "tool_version": _text(part("tool").get("version")),
        "tolerance_ms": _number(part("settings").get("tolerance_ms")),
        "accurate_concurrency": _count(verdict.get("accurate_concurrency")),
        "accurate_token_rate": _number(verdict.get("accurate_token_rate")),
        "highest_measured": _count(verdict.get("highest_measured")),
        "stopped_because": _text(verdict.get("stopped_because")),
        "concurrency": concurrency,
        "verdict": _text(sentence),
    }


def _from_run_block(block: dict[str, Any]) -> dict[str, Any]:
    """The parts of a calibration that ``verdict_for`` reads, from a run.json block."""
    return {"ended_at": block.get("measured_at"),
            "settings": {"tolerance_ms": block.get("tolerance_ms") or 1.0},
            "verdict": {"accurate_concurrency": block.get("accurate_concurrency"),
                        "highest_measured": block.get("highest_measured"),
                        "stopped_because": block.get("stopped_because")}}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return _finite(float(value))


# Files


def latest_path(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the latest calibration is kept: ``$RESULTS_DIR/calibration.json``."""
    return (Path(root) if root is not None else results_root()) / CALIBRATION_FILE


def load_latest(root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The latest calibration (a dict), or None when there is none or it cannot be read."""
    try:
        data = json.loads(latest_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    return data


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# The simulated server, as a subprocess


class SimulatedServer:
    """``python -m benchmark.simulator`` with the calibration's timing and a trace file."""

    def __init__(self, settings: CalibrationSettings, trace: Path):
        self.trace = trace
        top = max(settings.levels)
        self.process = SimulatorProcess([
            "--trace", str(trace),
            "--prefill-base-ms", f"{settings.prefill_ms:g}", "--prefill-per-token-ms", "0",
            "--decode-base-ms", f"{settings.token_ms:g}", "--decode-per-seq-ms", "0",
            "--decode-per-context-token-us", "0",
            "--max-concurrent-requests", str(max(top * 2, 128)),
            "--max-batch-total-tokens", str(max(top * 2, 128) * 8192),
            "--max-batch-prefill-tokens", str(max(top * 2, 128) * 4096),
        ], keep_lines=50)
        self.url = ""

    def start(self) -> "SimulatedServer":
        try:
            self.url = self.process.start(SERVER_START_TIMEOUT_S)
        except ServerStartError as err:
            raise ServerStartError(
                "no-ready-line", "The simulated server did not start for the calibration. "
                "Check that `python -m benchmark.simulator` runs on this machine.",
                err.log_tail[-10:]) from None
        return self

    def cpu_s(self) -> float | None:
        proc = self.process.proc
        return _cpu_seconds(proc.pid) if proc is not None else None

    def rows(self, wait_for: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """The trace rows by request id; with ``wait_for``, read again for up to a second until
        every one of those ids is in (a request's line is written as its last token is sent)."""
        ids = list(wait_for)
        rows = self._read()
        for _ in range(20):
            if all(i in rows for i in ids):
                break
            time.sleep(0.05)
            rows = self._read()
        return rows

    def _read(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(OSError):
            for line in self.trace.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("request_id"):
                        rows[str(row["request_id"])] = row
        return rows

    def stop(self) -> None:
        self.process.stop()


def _cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of process ``pid`` (default: this one, every thread; not its
    children: the simulated server is one). None when unknown."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        import psutil
    except ImportError:
        return _proc_stat_cpu_s(pid)
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def _proc_stat_cpu_s(pid: int) -> float | None:
    """Linux without psutil: utime + stime from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Running one level with the engine


class _Sampler:
    """Progress callback: stamps time and CPU at the end of the warm-ups and of the last round."""

    def __init__(self, server: SimulatedServer):
        self.server = server
        self.marks: list[tuple[int, float | None, float | None]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") != "round_done":
            return
        if event.get("run") == event.get("runs"):  # the last warm-up or the last measured round
            self.marks.append((time.perf_counter_ns(), _cpu_seconds(),
                               self.server.cpu_s()))

    def window(self) -> tuple[float | None, float | None, float | None]:
        if len(self.marks) < 2:
            return None, None, None
        (t0, c0, s0), (t1, c1, s1) = self.marks[0], self.marks[-1]
        diff = (lambda a, b: b - a if a is not None and b is not None else None)
        return (t1 - t0) / 1e9, diff(c0, c1), diff(s0, s1)


@dataclass
class Level:
    """One measured level: the engine's records, the server's trace rows, the table row."""

    row: Row
    records: list[RequestRecord]
    trace: dict[str, dict[str, Any]]


def measure_level(level: int, settings: CalibrationSettings, server: SimulatedServer,
                  tokenizer: str, work: Path) -> Level:
    from .engine import run

    config = RunConfig(tokenizer_name=tokenizer, url=server.url, batch_sizes=(level,),
                       sequence_length=settings.sequence_length,
                       decode_length=settings.decode_length, runs=settings.runs,
                       warmups=max(1, settings.warmups), timeout_s=120.0,
                       output_dir=str(work / f"c{level}"))
    sampler = _Sampler(server)
    result = run(config, on_progress=sampler)
    if result.status == "cancelled":
        raise KeyboardInterrupt
    if result.status != "complete":
        raise BenchmarkError(f"The calibration run at concurrency {level} did not complete: "
                             f"{result.message or result.status}.")
    trace = server.rows(wait_for=[r.request_id for r in result.records if r.ok])
    window_s, client_cpu, server_cpu = sampler.window()
    simulator = result.server_info.get("simulator")
    clock = simulator.get("arrival_clock") if isinstance(simulator, dict) else None
    row = summarize_level(level, result.records, trace, window_s=window_s,
                          client_cpu_s=client_cpu, server_cpu_s=server_cpu,
                          tolerance_ms=settings.tolerance_ms,
                          arrival_clock=clock if isinstance(clock, str) else None)
    return Level(row, list(result.records), trace)


# ---------------------------------------------------------------------------------------------
# The whole calibration


@dataclass
class Calibration:
    settings: CalibrationSettings
    started_at: str
    rows: list[Row] = field(default_factory=list)
    ended_at: str | None = None
    stopped_because: str | None = None
    server_argv: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return decide(self.rows, tolerance_ms=self.settings.tolerance_ms,
                      stopped_because=self.stopped_because, quick=self.settings.quick)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": KIND,
            "tool": {"name": TOOL_NAME, "version": __version__},
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "environment": environment_info(),
            "settings": self.settings.to_dict(),
            "server": {"argv": ["<trace>" if a.endswith(".jsonl") else a
                                for a in self.server_argv[1:]]},
            "definitions": {
                "error": "client-measured minus server-traced, per request matched by "
                         "X-Request-Id, in ms",
                "ttft": "client: first token arrived - request sent; server: first token "
                        "written - request arrived",
                "token_latency": "(last token - first token) / (tokens - 1)",
                "itl": "per token gap, client gap minus server gap",
                "delivery": "client arrival stamp minus server write stamp of the same token",
                "arrival": "the kernel's receive time of the request's first bytes "
                           "(SO_TIMESTAMPNS, moved onto the monotonic clock) when a row's "
                           "arrival_clock is \"kernel\"; when the server's event loop read "
                           "them when it is \"read\"",
                "send_to_server": "server arrival stamp minus client send stamp: request "
                                  "transit and the accuracy of the client's send stamp; part "
                                  "of the TTFT error",
                "server_read_wait": "server read stamp minus arrival stamp: the simulator's "
                                    "own wait before its event loop read the request (server "
                                    "latency, in both TTFTs; not an error)",
                "first_delivery": "client first-token stamp minus server first-token write "
                                  "stamp; the other part of the TTFT error",
                "dispatch": "request sent - round scheduled (client only)",
                "token_events_per_s": "token events received / seconds of streaming (per "
                                      "round: first request scheduled to last response end, "
                                      "summed over the measured rounds)",
                "cpu_pct": "CPU seconds / wall seconds from the end of the warm-up to the end "
                           "of the last round x 100 (one core = 100; includes the engine's "
                           "work between rounds)",
            },
            "rows": [r.to_dict() for r in self.rows],
            "verdict": self.verdict.to_dict(),
        }


def calibrate(settings: CalibrationSettings, *, tokenizer: str | None = None,
              on_row: Any = None, work_dir: str | os.PathLike[str] | None = None
              ) -> Calibration:
    """Run the calibration; ``on_row(row)`` is called after each level."""
    result = Calibration(settings=settings, started_at=now_iso())
    with _workspace(work_dir) as work:
        name = tokenizer or str(build_tiny_tokenizer(work / "tokenizer"))
        server = SimulatedServer(settings, work / "trace.jsonl")
        result.server_argv = list(server.process.argv)
        server.start()
        try:
            for level in sorted(set(settings.levels)):
                row = measure_level(level, settings, server, name, work).row
                result.rows.append(row)
                if on_row is not None:
                    on_row(row)
                reason = stop_reason(row, settings)
                if reason is not None:
                    result.stopped_because = reason
                    break
        finally:
            server.stop()
    result.ended_at = now_iso()
    return result


@contextlib.contextmanager
def _workspace(path: str | os.PathLike[str] | None) -> Iterator[Path]:
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="tgi-calibration-") as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------------------------
# CLI


def _checked(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``parse(*args, **kwargs)`` (a parser of config.py), its ConfigError as argparse's error."""
    try:
        return parse(*args, **kwargs)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _levels(text: str) -> tuple[int, ...]:
    return _checked(parse_batch_sizes, text, "concurrency")  # 1..MAX_BATCH_SIZE (1024)


def _positive(text: str) -> float:
    return _checked(parse_float, "value", text, minimum=0.0, exclusive_minimum=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark calibrate",
        description="Measure this machine's own measurement error: a simulated TGI server "
                    "with a known timing and a trace, the engine at increasing concurrency, "
                    "client minus server per request.")
    p.add_argument("--quick", action="store_true",
                   help=f"short version for CI: concurrency {','.join(map(str, QUICK_LEVELS))},"
                        f" 16 tokens, 2 rounds (a few seconds)")
    p.add_argument("--concurrency", type=_levels, default=None, metavar="N[,N...]",
                   help=f"levels to climb (default {','.join(map(str, DEFAULT_LEVELS))})")
    p.add_argument("--decode-length", type=int, default=None, help="tokens per request "
                   "(default 64; --quick 16)")
    p.add_argument("--runs", type=int, default=None, help="measured rounds per level "
                   "(default 5; --quick 2)")
    p.add_argument("--token-ms", type=_positive, default=10.0,
                   help="the simulated server's decode step in ms (default 10)")
    p.add_argument("--tolerance-ms", type=_positive, default=1.0,
                   help="what counts as accurate (default 1 ms)")
    p.add_argument("--max-error-ms", type=_positive, default=10.0,
                   help="stop climbing once an error passes this (default 10 ms)")
    p.add_argument("--max-cpu", type=_positive, default=90.0, metavar="PCT",
                   help="stop climbing once the client uses this %% of a core (default 90)")
    p.add_argument("--tokenizer-name", default=None,
                   help="tokenizer for the prompts (default: a tiny one built offline)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="folder for calibration.json (default $RESULTS_DIR/calibration-<date>)")
    p.add_argument("--no-latest", action="store_true",
                   help="do not update $RESULTS_DIR/calibration.json (the app's copy)")
    return p


def settings_from_args(args: argparse.Namespace) -> CalibrationSettings:
    quick = bool(args.quick)
    levels = args.concurrency or (QUICK_LEVELS if quick else DEFAULT_LEVELS)
    decode = _checked(parse_int, "decode_length", args.decode_length or (16 if quick else 64),
                      minimum=2, maximum=4096)
    runs = _checked(parse_int, "runs", args.runs or (2 if quick else 5), minimum=1, maximum=100)
    return CalibrationSettings(levels=tuple(levels), token_ms=args.token_ms,
                               prefill_ms=args.token_ms, decode_length=decode, runs=runs,
                               tolerance_ms=args.tolerance_ms, max_error_ms=args.max_error_ms,
                               max_cpu_pct=args.max_cpu, quick=quick)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = settings_from_args(args)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(args.output_dir) if args.output_dir else results_root() / f"calibration-{stamp}"
    print(f"Calibrating: simulated TGI server ({settings.token_ms:g} ms per token) on this "
          f"machine, concurrency {', '.join(map(str, settings.levels))} ...", file=sys.stderr,
          flush=True)

    def on_row(row: Row) -> None:
        print(f"  {row.concurrency:>5} streams: TTFT error p50 {_fmt(row.ttft_error_p50_ms)} ms "
              f"(send→server {_fmt(row.send_to_server_p50_ms)}, first token delivery "
              f"{_fmt(row.first_delivery_p50_ms)}), "
              f"token latency error p99 {_fmt(row.token_error_p99_ms)} ms, "
              f"{_fmt(row.token_events_per_s, '{:,.0f}')} token events/s, client CPU "
              f"{_fmt(row.client_cpu_pct, '{:.0f}')}%", file=sys.stderr, flush=True)

    try:
        result = calibrate(settings, tokenizer=args.tokenizer_name, on_row=on_row)
    except BenchmarkError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Calibration interrupted; nothing was saved.", file=sys.stderr)
        return 130
    document = result.to_dict()
    try:
        _write_json(folder / CALIBRATION_FILE, document)
        if not args.no_latest:
            _write_json(latest_path(), document)
    except OSError as err:
        print(markdown_table(result.rows, settings.tolerance_ms))
        print(f"error: could not save the calibration ({err.strerror or err}: "
              f"{err.filename or folder}); choose a writable --output-dir or RESULTS_DIR.",
              file=sys.stderr)
        return 1
    print(markdown_table(result.rows, settings.tolerance_ms))
    print()
    print(NOTE)
    if result.stopped_because:
        print(f"Stopped climbing: {result.stopped_because}.")
    print(result.verdict.sentence)
    print(f"Saved: {folder / CALIBRATION_FILE}")
    return 0


def _fmt(value: float | None, fmt: str = "{:+.3f}") -> str:
    return "-" if value is None else fmt.format(value)
