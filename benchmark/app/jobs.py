"""One benchmark at a time for every visitor of the app: a queue, a worker, a child process.

    runner = Runner(results_root=Path("results"))
    job = runner.submit(plan, run_id)          # queued; runs when the ones before it finish
    view = runner.view(job.run_id)             # a snapshot for the page: state, phase, progress
    runner.cancel(job.run_id)                  # Stop: leaves the queue, or SIGTERMs the engine

The worker thread takes jobs in order. For each: start or reuse TGI with launcher.ServerManager
(phase and log tail shown while it starts), then run the engine as a child process
(``python -m benchmark ... --output-dir <results>/<run_id> --progress-jsonl <file>``) so that the
web server cannot disturb its timing. The progress stream is read as it grows; each
``step_done`` bumps ``result_version`` so the page reloads the saved files. Stop sends SIGTERM:
the engine saves what it measured with status "cancelled". Each run writes only its own folder.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import run_argv
from ..errors import BenchmarkError, ServerStartError, redact
from ..children import die_with_parent, with_package_path
from ..core.progress import (Done, ProbeDone, ProgressEvent, RequestsDone, RoundDone,
                             RunWarning, Start, StepDone, StepStart)
from ..core.results import add_failure_reason, check_results_dir, mark_interrupted
from ..server.manager import ServerManager
from .form import Plan
POLL_S = 0.2
TERM_GRACE_S = 30.0
LOG_LINES = 30

QUEUED, STARTING, RUNNING, COMPLETE, CANCELLED, FAILED = (
    "queued", "starting server", "running", "complete", "cancelled", "failed")
FINISHED = (COMPLETE, CANCELLED, FAILED)
CHAT_WAIT = "waiting for a chat answer to finish"   # a RUNNING job's phase before it measures


@dataclass
class StepProgress:
    step: float  # batch size, users, or requests/s (an int when whole)
    rounds_done: int = 0
    rounds: int | None = None
    warmup: bool = False
    requests_done: int = 0
    requests_total: int | None = None
    errors: int = 0          # measured requests that failed (what the Requests table counts)
    warmup_errors: int = 0   # failed warm-up requests (not measured)
    done: bool = False
    # Find capacity: the finished probe ("kind", "rate_rps", "attainment", "passed", ...).
    probe: dict[str, Any] | None = None


@dataclass
class Job:
    run_id: str
    plan: Plan
    output_dir: Path
    state: str = QUEUED
    phase: str = ""
    message: str | None = None
    warnings: list[str] = field(default_factory=list)
    server_log: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    steps: list[float] = field(default_factory=list)
    progress: dict[int, StepProgress] = field(default_factory=dict)
    current_step: float | None = None
    result_version: int = 0
    simulated: bool | None = None
    started_ns: int | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen | None = None
    after_finish: list[Callable[["Job"], str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    server_only: bool = False    # start the form's server and stop there (the chat tab's offer)


@dataclass(frozen=True)
class JobView:
    """A consistent snapshot of a job for rendering (no live objects)."""

    run_id: str
    state: str
    phase: str
    message: str | None
    warnings: tuple[str, ...]
    server_log: tuple[str, ...]
    steps: tuple[int, ...]
    progress: tuple[StepProgress, ...]
    current_step: float | None
    result_version: int
    queue_position: int          # 0 while it runs or after it ended, 1.. while it waits
    notes: tuple[str, ...]
    done: bool                   # ended and its after-finish hooks ran
    behind_another: bool         # queued while another visitor's run is in progress
    mode: str                    # the load pattern: "rounds" or "concurrency"
    simulated: bool | None
    launches_server: bool
    output_dir: str
    elapsed_s: float
    server_only: bool = False

    @property
    def finished(self) -> bool:
        return self.done


def engine_argv(python: str, plan: Plan, output_dir: Path, progress_path: Path) -> list[str]:
    """The CLI command for one run: every setting of the run as its flag (``config.run_argv``),
    plus where to write files and progress."""
    run = replace(plan.run, output_dir=str(output_dir))
    return [python, "-m", "benchmark", *run_argv(run), "--progress-jsonl", str(progress_path)]


def _step_number(value: object) -> float:
    """A step from the engine's progress: a whole number as an int (batch sizes, users, whole
    rates), a fractional rate as it is (int() would show 2.5 requests/s as 2)."""
    number = float(value)  # type: ignore[arg-type]
    return int(number) if number.is_integer() else number


class Runner:
    """The app-wide queue. Thread-safe; one worker thread runs jobs one after the other."""

    def __init__(self, results_root: Path, *, env: Mapping[str, str] | None = None,
                 python: str = sys.executable, server_manager: Any = None,
                 allow_trust_remote_code: bool = False):
        self.results_root = Path(results_root).resolve()
        self.env = dict(os.environ if env is None else env)
        self.python = python
        if server_manager is None:
            # Created here (in the main thread) so that its exit hooks can be installed.
            server_manager = ServerManager(env=self.env,
                                           allow_trust_remote_code=allow_trust_remote_code,
                                           die_with_parent=True)
        self._manager = server_manager
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._active: Job | None = None
        self._closed = False
        self._chats: collections.Counter[str] = collections.Counter()   # url -> answers streaming
        self._worker = threading.Thread(target=self._work, name="benchmark-runner", daemon=True)
        self._worker.start()

    # -- public -------------------------------------------------------------------------------
    def submit(self, plan: Plan, run_id: str,
               after_finish: Callable[[Job], str | None] | None = None, *,
               server_only: bool = False) -> Job:
        """Queue a run. ``after_finish(job)`` runs in the worker once it ended (e.g. an upload);
        the sentence it returns is shown with the run's status. ``server_only``: start (or
        reuse) the plan's server and end there, nothing measured or saved (for the chat)."""
        if server_only and plan.server is None:
            raise BenchmarkError("There is no server to start: the form points at an endpoint "
                                 "URL.")
        job = Job(run_id=run_id, plan=plan, output_dir=self.results_root / run_id,
                  server_only=server_only)
        if after_finish is not None:
            job.after_finish.append(after_finish)
        with self._wake:
            if self._closed:
                raise BenchmarkError("The app is shutting down; try again in a minute.")
            self._jobs[run_id] = job
            self._queue.append(job)
            self._wake.notify_all()
        return job

    def view(self, run_id: str) -> JobView | None:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None:
                return None
            position = 0
            if job.state == QUEUED and job in self._queue:   # not when just taken off it
                position = 1 + list(self._queue).index(job)
            elapsed = (0.0 if job.started_ns is None
                       else (time.perf_counter_ns() - job.started_ns) / 1e9)
            return JobView(
                run_id=job.run_id, state=job.state, phase=job.phase, message=job.message,
                warnings=tuple(job.warnings), server_log=tuple(job.server_log),
                steps=tuple(job.steps),
                progress=tuple(replace(job.progress[s]) for s in job.steps if s in job.progress),
                current_step=job.current_step, result_version=job.result_version,
                queue_position=position, notes=tuple(job.notes), done=job.finished.is_set(),
                behind_another=self._active is not None and self._active is not job,
                mode=job.plan.run.mode,
                simulated=job.simulated,
                launches_server=job.plan.launches_server, output_dir=str(job.output_dir),
                elapsed_s=elapsed, server_only=job.server_only,
            )

    def busy(self) -> tuple[str | None, int]:
        """(run id in progress or None, number of runs waiting)."""
        with self._lock:
            return (self._active.run_id if self._active else None, len(self._queue))

    def benchmark_url(self) -> str | None:
        """The server URL of the benchmark starting or running now (None when none is): the
        chat pauses on it so that its messages do not disturb the measurement."""
        with self._lock:
            job = self._active
            if job is None or job.server_only or job.state in FINISHED:
                return None
            return job.plan.run.url

    def begin_chat(self, url: str) -> bool:
        """Count a chat answer about to stream from ``url``; False (nothing counted) when a
        benchmark is starting or running there. A benchmark that starts meanwhile waits for the
        answers counted here to end (``end_chat``) before it measures anything."""
        key = url.rstrip("/")
        with self._lock:
            job = self._active
            if (job is not None and not job.server_only and job.state not in FINISHED
                    and job.plan.run.url.rstrip("/") == key):
                return False
            self._chats[key] += 1
            return True

    def end_chat(self, url: str) -> None:
        key = url.rstrip("/")
        with self._wake:
            self._chats[key] -= 1
            if self._chats[key] <= 0:
                del self._chats[key]
            self._wake.notify_all()

    def _wait_for_chats(self, job: Job, url: str) -> None:
        """Hold a benchmark until the chat answers streaming from its server have ended."""
        key = url.rstrip("/")
        with self._wake:
            if self._chats.get(key):
                job.state, job.phase = RUNNING, CHAT_WAIT
            while self._chats.get(key) and not job.cancel_event.is_set():
                self._wake.wait(POLL_S)

    def launched_server(self) -> Any:
        """The ready server this app launched (a ``ServerHandle``), or None."""
        if self._manager is None:
            return None
        try:
            return self._manager.handle
        except Exception:  # noqa: BLE001 - a stand-in manager may have no handle
            return None

    def cancel(self, run_id: str) -> bool:
        """Stop a job: drop it from the queue, stop the server start, or SIGTERM the engine."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is None or job.state in FINISHED:
                return False
            if job.proc is not None and job.proc.poll() is not None:
                return False   # the engine has exited: its results are being saved, as they are
            job.cancel_event.set()
            if job.state == QUEUED and job in self._queue:
                self._queue.remove(job)
                job.state, job.message = CANCELLED, "Cancelled before it started."
                job.finished.set()
                return True
            proc = job.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> bool:
        job = self._jobs.get(run_id)
        return bool(job and job.finished.wait(timeout))

    def close(self) -> None:
        """Cancel everything and stop the server this runner launched (app shutdown)."""
        with self._wake:
            self._closed = True
            jobs = list(self._queue) + ([self._active] if self._active else [])
            self._wake.notify_all()
        for job in jobs:
            self.cancel(job.run_id)
        for job in jobs:
            job.finished.wait(TERM_GRACE_S + 5)
        if self._manager is not None:
            try:
                self._manager.stop()
            except Exception:  # noqa: BLE001 - shutting down: nothing left to tell
                pass

    # -- worker -------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed and not self._queue:
                    return
                job = self._queue.popleft()
                self._active = job
                job.started_ns = time.perf_counter_ns()
            try:
                self._run(job)
            except _Cancelled as exc:
                self._finish(job, CANCELLED, str(exc))
            except BenchmarkError as exc:
                self._finish(job, FAILED, str(exc))
            except Exception as exc:  # noqa: BLE001 - a crash must not kill the queue
                self._finish(job, FAILED, redact(f"Unexpected error: {exc}"))
            finally:
                with self._lock:
                    self._active = None
                for hook in job.after_finish:
                    try:
                        note = hook(job)
                    except Exception as exc:  # noqa: BLE001 - shown, never fatal
                        note = redact(f"After the run: {type(exc).__name__}: {exc}")
                    if note:
                        with self._lock:
                            job.notes.append(note)
                job.finished.set()

    def _set(self, job: Job, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)

    def _finish(self, job: Job, state: str, message: str | None) -> None:
        self._set(job, state=state, message=message, phase="")

    def _start_server(self, job: Job) -> Plan:
        plan = job.plan
        assert plan.server is not None
        self._set(job, state=STARTING, phase="checking for a running server")
        manager = self._manager

        def on_status(status: Any) -> None:
            phase = getattr(status, "message", None) or getattr(status, "phase", None) or ""
            with self._lock:
                job.phase = phase
                job.server_log.clear()
                try:
                    job.server_log.extend(redact(line) for line in manager.log_tail(LOG_LINES))
                except Exception:  # noqa: BLE001 - the log is a courtesy
                    pass

        try:
            handle = manager.ensure(plan.server, on_status=on_status, cancel=job.cancel_event)
        except ServerStartError as exc:
            if job.cancel_event.is_set() or exc.reason == "cancelled":
                raise _Cancelled("Stopped while the server was starting; nothing was "
                                 "measured.") from exc
            with self._lock:
                job.server_log.clear()
                job.server_log.extend(redact(line) for line in exc.log_tail[-LOG_LINES:])
            raise
        info = dict(getattr(handle, "info", None) or {})
        self._set(job, simulated=bool(getattr(handle, "simulated", False)), phase="ready")
        if info:
            plan.run.check_against_server(info)
        return Plan(run=replace(plan.run, url=handle.url), server=plan.server)

    def _run(self, job: Job) -> None:
        if job.cancel_event.is_set():
            self._finish(job, CANCELLED, "Cancelled before it started.")
            return
        try:   # before any server is started: a folder the run cannot be saved in
            check_results_dir(self.results_root, "The results folder")
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc} The run was refused; nothing was started.") from None
        plan = self._start_server(job) if job.plan.launches_server else job.plan
        if job.server_only:
            self._finish(job, COMPLETE, "The server is ready.")
            return
        if job.cancel_event.is_set():
            self._finish(job, CANCELLED, "Stopped before the benchmark started; nothing was "
                                         "measured.")
            return
        self._wait_for_chats(job, plan.run.url)
        if job.cancel_event.is_set():
            self._finish(job, CANCELLED, "Stopped before the benchmark started; nothing was "
                                         "measured.")
            return
        self._set(job, state=RUNNING, phase="running the benchmark")
        with tempfile.TemporaryDirectory(prefix="tgi-bench-progress-") as tmp:
            progress_path = Path(tmp) / "progress.jsonl"
            progress_path.touch()
            log_path = Path(tmp) / "engine.log"
            self._run_engine(job, plan, progress_path, log_path)
        if job.state == FAILED and job.plan.launches_server:
            self._explain_crash(job)

    def _explain_crash(self, job: Job) -> None:
        """A failed run on a launched server: say why the server died, in the page and the file."""
        try:
            self._manager.check_alive(wait_s=10.0)
        except ServerStartError as err:
            add_failure_reason(job.output_dir, str(err))
            with self._lock:
                job.result_version += 1
                job.message = redact(f"{job.message or ''} {err}".strip())
                job.server_log.clear()
                job.server_log.extend(redact(line) for line in err.log_tail[-LOG_LINES:])

    def _child_env(self) -> dict[str, str]:
        env = with_package_path(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _run_engine(self, job: Job, plan: Plan, progress_path: Path, log_path: Path) -> None:
        job.output_dir.mkdir(parents=True, exist_ok=True)
        argv = engine_argv(self.python, plan, job.output_dir, progress_path)
        with open(log_path, "wb") as log:
            # Its own session (a Ctrl-C of the app's terminal does not reach it), and SIGTERM
            # when the app dies, even by SIGKILL: it saves what it measured and stops.
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._child_env(),
                                    start_new_session=True, preexec_fn=die_with_parent())
            with self._lock:
                job.proc = proc
                cancelled_early = job.cancel_event.is_set()
            if cancelled_early:
                proc.send_signal(signal.SIGTERM)
            done: Done | None = None
            with open(progress_path, "r", encoding="utf-8") as stream:
                pending = ""
                term_sent_ns: int | None = None
                while True:
                    exited = proc.poll() is not None
                    chunk = stream.read()
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        event = ProgressEvent.from_json(line)
                        if event is not None:
                            done = self._on_event(job, event) or done
                    if exited:
                        break
                    if job.cancel_event.is_set():
                        now = time.perf_counter_ns()
                        if term_sent_ns is None:
                            term_sent_ns = now
                        elif (now - term_sent_ns) / 1e9 > TERM_GRACE_S:
                            proc.kill()
                    time.sleep(POLL_S)
                if pending.strip():
                    event = ProgressEvent.from_json(pending)
                    if event is not None:
                        done = self._on_event(job, event) or done
        code = proc.returncode
        with self._lock:
            job.result_version += 1   # the final save (run.json status) is on disk now
        if done is not None:
            status = done.status
            message = done.message
            state = {"complete": COMPLETE, "cancelled": CANCELLED}.get(status, FAILED)
            if state == CANCELLED and not message:
                message = "Stopped: the results measured until then are kept below."
            if state != COMPLETE:   # the engine's last save may have failed (a full disk)
                mark_interrupted(job.output_dir, "", message=message or "The run failed.")
            self._finish(job, state, redact(message) if message else None)
            return
        if job.cancel_event.is_set() and not (job.output_dir / "run.json").is_file():
            self._finish(job, CANCELLED, "Stopped before the engine reported anything.")
            return
        # The engine ended without saying how (killed, crashed): its run.json may still read
        # "running". End it as interrupted, with the reason, keeping what it measured.
        reason = _exit_reason(code, log_path)
        result = mark_interrupted(job.output_dir, reason)
        with self._lock:
            job.result_version += 1
        if result is not None:
            self._finish(job, FAILED, result.message)
            return
        if code is not None and code < 0:
            self._finish(job, FAILED, f"Interrupted: {reason}.")
            return
        tail = _last_lines(log_path, 1)   # it never started a run: its own error line
        reason = tail[0] if tail else f"the benchmark process exited with code {code}"
        self._finish(job, FAILED if code != 0 else COMPLETE, redact(reason) if code else None)

    def _on_event(self, job: Job, event: ProgressEvent) -> Done | None:
        with self._lock:
            if isinstance(event, Start):
                job.steps = [_step_number(s) for s in event.steps]
                job.progress = {s: StepProgress(step=s) for s in job.steps}
                job.simulated = bool(event.simulated)
            elif isinstance(event, StepStart):
                step = _step_number(event.step)
                job.current_step = step
                job.progress.setdefault(step, StepProgress(step=step))
                if step not in job.steps:
                    job.steps.append(step)
            elif isinstance(event, RoundDone):
                step = _step_number(event.step)
                p = job.progress.setdefault(step, StepProgress(step=step))
                p.warmup = bool(event.warmup)
                p.rounds_done = int(event.run or 0)
                p.rounds = event.runs
                if p.warmup:
                    p.warmup_errors += int(event.errors or 0)
                else:
                    p.errors += int(event.errors or 0)
            elif isinstance(event, RequestsDone):
                step = _step_number(event.step)
                p = job.progress.setdefault(step, StepProgress(step=step))
                p.requests_done = int(event.done or 0)
                p.requests_total = event.total
                p.errors = int(event.errors or 0)
            elif isinstance(event, ProbeDone):
                step = _step_number(event.step)
                job.progress.setdefault(step, StepProgress(step=step)).probe = {
                    "kind": event.probe_kind, "rate_rps": event.rate_rps,
                    "attainment": event.attainment, "passed": event.passed,
                    "stopped_early": event.stopped_early, "requests": event.requests}
            elif isinstance(event, StepDone):
                step = _step_number(event.step)
                job.progress.setdefault(step, StepProgress(step=step)).done = True
                job.result_version += 1
            elif isinstance(event, RunWarning):
                job.warnings.append(redact(str(event.message or "")))
            elif isinstance(event, Done):
                return event
        return None


class _Cancelled(BenchmarkError):
    """Stop was pressed before the engine started."""


def _exit_reason(code: int | None, log_path: Path) -> str:
    """Why the engine ended without a "done" event, in words: the signal that killed it, or its
    exit code and its last error line (never the progress bar's last line)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the benchmark process was killed ({name}) before it finished"
    errors = [line.strip() for line in _last_lines(log_path, 20)
              if line.strip().lower().startswith("error") or "Error:" in line]
    said = f": {errors[-1][:300]}" if errors else ""
    return f"the benchmark process exited with code {code} before it finished{said}"


def _last_lines(path: Path, n: int) -> list[str]:
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return []
    return lines[-n:]
