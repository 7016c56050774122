"""The calibration's measuring part: the simulated server as a child process with a trace,
the engine run at each concurrency level against it, CPU sampling, and the whole climb.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import tempfile
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .._version import __version__
from ..config import RunConfig
from ..core.calibration_note import CALIBRATION_FILE, KIND, latest_path
from ..core.engine import run
from ..core.progress import ProgressEvent, RoundDone
from ..core.prompts import build_tiny_tokenizer
from ..core.records import RequestRecord
from ..core.results import TOOL_NAME, atomic_write, environment_info, now_iso
from ..errors import BenchmarkError, ServerStartError
from ..simulator.process import SimulatorProcess
from .analysis import (CalibrationSettings, Row, ScheduleRow, Verdict, decide,
                       schedule_verdict, stop_reason, summarize_level, summarize_schedule,
                       workers_verdict)

__all__ = ["SimulatedServer", "cpu_seconds", "measure_level", "Calibration", "calibrate",
           "write_json", "CALIBRATION_FILE", "latest_path", "ZeroCostServer", "measure_schedule",
           "measure_schedules", "measure_concurrency"]

SCHEMA_VERSION = 1
SERVER_START_TIMEOUT_S = 60.0


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# The simulated server, as a subprocess


class SimulatedServer:
    """``python -m benchmark.simulator`` with the calibration's timing and a trace file."""

    def __init__(self, settings: CalibrationSettings, trace: Path):
        self.trace = trace
        top = max(settings.levels)
        self.process = SimulatorProcess([
            "--trace", str(trace), "--workers", str(settings.simulator_workers),
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
        """CPU seconds of the server's busiest process (with --workers, its worker
        processes: each is one core)."""
        proc = self.process.proc
        return busiest_cpu_seconds(proc.pid) if proc is not None else None

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


class ZeroCostServer(SimulatedServer):
    """The simulator with no simulated GPU time (``--zero-cost``) and a trace: only the HTTP
    path costs anything, so the rate mode's schedule is measured, not the server's batching."""

    def __init__(self, trace: Path):
        self.trace = trace
        self.process = SimulatorProcess(["--zero-cost", "--trace", str(trace),
                                         "--max-concurrent-requests", "100000"], keep_lines=50)
        self.url = ""


def cpu_seconds(pid: int | None = None) -> float | None:
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


def busiest_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` or, when it has child processes (worker processes), of the
    busiest of them: one process is one core, so the busiest one is where the limit is."""
    try:
        import psutil
        children = [c.pid for c in psutil.Process(pid).children()]
    except Exception:  # noqa: BLE001 - psutil missing or the process gone: the process alone
        children = []
    values = [v for v in (cpu_seconds(c) for c in children) if v is not None]
    return max(values) if values else cpu_seconds(pid)


def client_cpu_seconds() -> dict[int, float]:
    """CPU seconds of this process and of each engine worker process alive, by pid."""
    out: dict[int, float] = {}
    own = cpu_seconds()
    if own is not None:
        out[os.getpid()] = own
    for child in multiprocessing.active_children():
        if child.name.startswith("benchmark-worker-") and child.pid is not None:
            value = cpu_seconds(child.pid)
            if value is not None:
                out[child.pid] = value
    return out


def _busiest(before: dict[int, float], after: dict[int, float]) -> float | None:
    """The largest CPU seconds spent by one client process between two samples."""
    spent = [after[pid] - before[pid] for pid in after if pid in before]
    return max(spent) if spent else None


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
        self.marks: list[tuple[int, dict[int, float], float | None]] = []

    def __call__(self, event: ProgressEvent) -> None:
        if not isinstance(event, RoundDone):
            return
        if event.run == event.runs:  # the last warm-up or the last measured round
            self.marks.append((time.perf_counter_ns(), client_cpu_seconds(),
                               self.server.cpu_s()))

    def window(self) -> tuple[float | None, float | None, float | None]:
        """Seconds, the busiest client process's CPU seconds (the engine, or its busiest
        worker), the server's, between the end of the warm-up and of the last round."""
        if len(self.marks) < 2:
            return None, None, None
        (t0, c0, s0), (t1, c1, s1) = self.marks[0], self.marks[-1]
        diff = (lambda a, b: b - a if a is not None and b is not None else None)
        return (t1 - t0) / 1e9, _busiest(c0, c1), diff(s0, s1)


@dataclass
class Level:
    """One measured level: the engine's records, the server's trace rows, the table row."""

    row: Row
    records: list[RequestRecord]
    trace: dict[str, dict[str, Any]]


def measure_level(level: int, settings: CalibrationSettings, server: SimulatedServer,
                  tokenizer: str, work: Path, workers: int = 1) -> Level:
    config = RunConfig(tokenizer_name=tokenizer, url=server.url, batch_sizes=(level,),
                       sequence_length=settings.sequence_length,
                       decode_length=settings.decode_length, runs=settings.runs,
                       warmups=max(1, settings.warmups), timeout_s=120.0, workers=workers,
                       output_dir=str(work / (f"c{level}" if workers == 1
                                              else f"c{level}-w{workers}")),
                       telemetry_interval_s=settings.telemetry_interval_s)
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
    return Level(dataclasses.replace(row, workers=workers), list(result.records), trace)


def measure_concurrency(users: int, settings: CalibrationSettings, server: SimulatedServer,
                        tokenizer: str, work: Path) -> Row:
    """The concurrency pattern at ``users`` virtual users (``runs`` requests each, in all)
    against ``server``: the same row as a rounds level, client minus server per request. Here
    requests end and restart at any moment, often many in the same decode step, which rounds
    never do."""
    config = RunConfig(tokenizer_name=tokenizer, url=server.url, mode="concurrency",
                       batch_sizes=(users,), requests=users * settings.runs,
                       sequence_length=settings.sequence_length,
                       decode_length=settings.decode_length, timeout_s=120.0,
                       output_dir=str(work / f"users{users}"))
    wall0, cpu0, server0 = time.perf_counter(), cpu_seconds(), server.cpu_s()
    result = run(config)
    wall = time.perf_counter() - wall0
    if result.status == "cancelled":
        raise KeyboardInterrupt
    if result.status != "complete":
        raise BenchmarkError(f"The calibration run with {users} concurrent users did not "
                             f"complete: {result.message or result.status}.")
    cpu1, server1 = cpu_seconds(), server.cpu_s()
    trace = server.rows(wait_for=[r.request_id for r in result.records if r.ok])
    diff = (lambda a, b: b - a if a is not None and b is not None else None)
    simulator = result.server_info.get("simulator")
    clock = simulator.get("arrival_clock") if isinstance(simulator, dict) else None
    return summarize_level(users, result.records, trace, window_s=wall,
                           client_cpu_s=diff(cpu0, cpu1), server_cpu_s=diff(server0, server1),
                           tolerance_ms=settings.tolerance_ms,
                           arrival_clock=clock if isinstance(clock, str) else None,
                           pattern="concurrency")


def measure_schedule(rate: float, arrivals: str, server: SimulatedServer, tokenizer: str,
                     work: Path, *, duration_s: float, decode_length: int = 16) -> ScheduleRow:
    """One rate-mode run of ``duration_s`` at ``rate`` against ``server``; its ScheduleRow."""
    config = RunConfig(tokenizer_name=tokenizer, url=server.url, mode="rate", rates=(rate,),
                       arrivals=arrivals, duration_s=duration_s, sequence_length=10,
                       decode_length=decode_length, timeout_s=30.0,
                       output_dir=str(work / f"rate-{arrivals}-{rate:g}"))
    cpu_before, wall_before = cpu_seconds(), time.perf_counter()
    result = run(config)
    cpu_after, wall_after = cpu_seconds(), time.perf_counter()
    if result.status == "cancelled":
        raise KeyboardInterrupt
    if result.status != "complete":
        raise BenchmarkError(f"The schedule measurement at {rate:g} requests/s did not "
                             f"complete: {result.message or result.status}.")
    trace = server.rows(wait_for=[r.request_id for r in result.records if r.ok])
    cpu = (None if cpu_before is None or cpu_after is None
           else 100 * (cpu_after - cpu_before) / max(wall_after - wall_before, 1e-9))
    return summarize_schedule(rate, arrivals, result.records, trace, client_cpu_pct=cpu)


def measure_schedules(rates: Iterable[float], arrivals: Iterable[str], *, duration_s: float,
                      tokenizer: str | None = None, decode_length: int = 16,
                      on_row: Any = None, work_dir: str | os.PathLike[str] | None = None
                      ) -> list[ScheduleRow]:
    """The rate mode at each rate (lowest first) and arrival kind against a zero-cost simulator;
    stops after the first rate that is not kept (higher ones would not be either)."""
    rows: list[ScheduleRow] = []
    kinds = list(arrivals)
    with _workspace(work_dir) as work:
        name = tokenizer or str(build_tiny_tokenizer(work / "tokenizer"))
        server = ZeroCostServer(work / "schedule-trace.jsonl")
        server.start()
        try:
            for rate in sorted(set(rates)):
                at = [measure_schedule(rate, kind, server, name, work, duration_s=duration_s,
                                       decode_length=decode_length) for kind in kinds]
                rows += at
                if on_row is not None:
                    for row in at:
                        on_row(row)
                if not all(row.kept for row in at):
                    break
        finally:
            server.stop()
    return rows


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
    concurrency_rows: list[Row] = field(default_factory=list)
    schedule: list[ScheduleRow] = field(default_factory=list)
    worker_rows: list[Row] = field(default_factory=list)  # the climbs with --workers above 1

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
            "concurrency_rows": [r.to_dict() for r in self.concurrency_rows],
            "workers": self.workers_dict(),
            "schedule": self.schedule_dict(),
        }

    def workers_dict(self) -> dict[str, Any] | None:
        """Each worker count's climb (rows), its highest accurate level and the sentence saying
        which count a load needs (None when only one worker was measured)."""
        if not self.worker_rows:
            return None
        rows = self.rows + self.worker_rows
        best, sentence = workers_verdict(rows, tolerance_ms=self.settings.tolerance_ms)
        return {"rows": [r.to_dict() for r in self.worker_rows],
                "accurate_concurrency": {str(k): v for k, v in best.items()},
                "sentence": sentence,
                "cpu_pct": "client CPU % is the busiest client process's (the engine's, or "
                           "its busiest worker's): one process is one core"}

    def schedule_dict(self) -> dict[str, Any] | None:
        """The rate mode's schedule measurement (None when it was not measured)."""
        if not self.schedule:
            return None
        best, sentence = schedule_verdict(self.schedule)
        return {"rows": [r.to_dict() for r in self.schedule],
                "definitions": "lag = real send - intended send (ms); server CV = coefficient "
                               "of variation of the gaps between the simulator's kernel "
                               "arrival stamps; sent / scheduled = achieved send rate over the "
                               "drawn schedule's own rate",
                "accurate_rate": best, "sentence": sentence}


def calibrate(settings: CalibrationSettings, *, tokenizer: str | None = None,
              on_row: Any = None, work_dir: str | os.PathLike[str] | None = None,
              on_concurrency_row: Any = None) -> Calibration:
    """Run the calibration; ``on_row(row)`` is called after each level. Then the concurrency
    pattern is measured at the same levels, up to the highest one the rounds measured
    (``on_concurrency_row(row)`` after each); the verdict stays the rounds'."""
    result = Calibration(settings=settings, started_at=now_iso())
    with _workspace(work_dir) as work:
        name = tokenizer or str(build_tiny_tokenizer(work / "tokenizer"))
        server = SimulatedServer(settings, work / "trace.jsonl")
        result.server_argv = list(server.process.argv)
        server.start()
        try:
            counts = sorted(set(settings.workers)) or [1]
            for count in counts:
                # The first count's climb is the verdict's (rows); others go to worker_rows.
                into = result.rows if count == counts[0] else result.worker_rows
                for level in sorted(set(settings.levels)):
                    row = measure_level(level, settings, server, name, work, count).row
                    into.append(row)
                    if on_row is not None:
                        on_row(row)
                    reason = stop_reason(row, settings)
                    if reason is not None:
                        if count == counts[0]:
                            result.stopped_because = reason
                        break
            for row in list(result.rows):
                users_row = measure_concurrency(row.concurrency, settings, server, name, work)
                result.concurrency_rows.append(users_row)
                if on_concurrency_row is not None:
                    on_concurrency_row(users_row)
                if stop_reason(users_row, settings) is not None:
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


