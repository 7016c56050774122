"""The engine: ``run(config) -> RunResult``, TGI's benchmark over HTTP.

    from benchmark.core.engine import run
    result = run(config, on_progress=print)         # blocks; returns the finished RunResult
    result.status                                   # "complete", "cancelled" or "failed"

What ``run`` does, in order:
1. ``config.validate()``; ``GET /health`` and ``GET /info`` (httpx) so that a wrong URL, a server
   still loading or lengths above the server's limits are refused before any load is sent
   (``ServerUnreachable``, ``ServerError``, ``ServerLimitError``, ``ConfigError``);
2. loads the tokenizer (``TokenizerError``) and builds prompts of exactly ``sequence_length``
   tokens, serialising the request bodies ahead of the requests (between rounds, in chunks;
   before a step in concurrency mode), never while requests are in flight;
3. runs the load pattern of every step (``load.py``) with the streaming clients (``clients/``)
   on one ``aiohttp`` session without a connection limit, connections opened before a step;
   In rate mode (open loop) each step's send times are drawn up front from the schedule seed
   (``patterns.arrival_offsets``) and kept against the monotonic clock: the dispatcher hands
   each request to the client ``HANDOFF_NS`` before its send time; the client builds it and
   takes a connection, then holds its bytes until the send time (``clients.HeldBody``, woken
   by ``clock.wait_until``: a timerfd, then a busy turn of the event loop; responses keep
   being read meanwhile), so only the write is left at the send time; no byte goes earlier; a
   late send goes at once and never moves the ones after it; a request never waits for
   another except behind ``--max-concurrency``, and that wait is stamped (``queued_ns`` ->
   ``admitted_ns``);
   In concurrency mode a user's next request starts as soon as its stream ends, through a
   ``pacing.StartPacer``: a burst of restarts runs at most ~1 ms per turn of the event loop,
   so the sockets are read (and first tokens stamped) between slices; the wait is dispatch lag;
   With ``--workers N`` (N > 1) or ``--ray-address``, the steps are dealt to worker processes
   (``workers.py``) that run this same load code (``worker_main``, ``RayWorker``); this
   process builds the prompts, draws the schedule, merges records and progress, saves;
4. saves ``run.json``, ``summary.csv`` and ``requests.csv`` at the start and after every step,
   and once more at the end, then returns the result. ``run.json``'s ``calibration`` says how
   accurate the client was found to be by the latest ``python -m benchmark calibrate`` on
   this machine (``client_calibration``), or null when it was never calibrated.
5. unless ``telemetry_interval_s`` is 0, runs a ``telemetry.Sampler`` in its own thread from
   the first save to the end (the server's /metrics, the GPUs through NVML, the client's CPU;
   a ``LoopProbe`` task inside the event loop measures its lag); each step's start and end are
   marked on its time axis, and ``telemetry.csv`` is written with the other files.

Progress goes to ``on_progress(event: dict)`` (the events of ``progress.py``). Setting ``cancel``
(a ``threading.Event``), or SIGINT / SIGTERM when ``run`` is called on the main thread, stops
the load: requests in flight are recorded as cancelled, files are saved with status
"cancelled". A server that stops answering mid-run ends the run with status "failed" and a
message; what was measured is kept in both cases. Failed requests (HTTP errors, timeouts,
broken streams) are records with ``error`` set, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import queue
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from . import results
from .clients import StreamClient, error_message, make_client, open_session
from .clients.openai import UNSENT_SAMPLING
from ..config import RunConfig, auto_workers, check_url, parse_rates, strip_credentials
from ..errors import BenchmarkError, ConfigError, ResultFileError, redact
from .interrupts import cancel_on_signals
from .pacing import StartPacer
from .patterns import Concurrency, RateSchedule, Rounds, Slot, arrival_offsets, step_seed
from .probe import CONTROL_TIMEOUT_S, ServerProbe, probe_server, server_answers
from .progress import (Done, ProbeDone, ProgressCallback, ProgressEvent, RequestsDone, RoundDone,
                       RunWarning, Start, StepDone, StepStart)
from .prompts import PromptSet, build_prompts, load_tokenizer
from .records import RequestRecord
from .stats import INCOMPLETE
from .calibration_note import client_calibration
from .capacity_run import SATURATION_USERS, run_capacity
from .clock import wait_until
from .results import RunResult
from .telemetry import GpuReader, LoopProbe, Sampler
from .telemetry_data import WorkerUsage
from .workers import (READY_TIMEOUT_S, ROUND_LEAD_NS, STEP_LEAD_NS, Pool, RayPool, Share, deal,
                      split_cap, split_quota)

__all__ = ["run", "probe_server", "ServerProbe", "ProgressCallback", "worker_main", "RayWorker"]

CANCEL_POLL_S = 0.05
PROGRESS_EVERY_S = 0.25
# Concurrency mode: prompts built ahead per step (then re-used, with a warning): all of them
# with --requests (up to 8 x this), else 8 per user, at least 64, at most this.
PROMPT_POOL_MAX = 512
# Rounds mode: prompts are built in chunks of this many (at least one round), between rounds.
PROMPT_CHUNK = 256
MAX_ERROR_WARNINGS = 5
# Rate mode: each request is handed to the client this long before its send time; the client
# builds it, takes a connection and holds its bytes back until the send time (clients.HeldBody,
# clock.wait_until), so that only the write itself is left at the send time.
HANDOFF_NS = 5_000_000
# Rate mode: keep-alive connections opened before a step (more are opened as needed).
RATE_CONNECTIONS = 64
# Rate mode: requests still running this long after --timeout past the step's end are cut.
INCOMPLETE_GRACE_S = 5.0
# While a step runs, the objects alive are frozen again every this many requests (see
# _quiet_collector): the step's own records then never pile up under the collector either.
FREEZE_EVERY = 1_000
# Sentences about what was cut from the server's /info, at most (one per cut field).
MAX_PROBE_NOTES = 5


def _short(exc: BaseException) -> str:
    """An exception's message on one line, shortened (for a warning)."""
    return " ".join(str(exc).split())[:200] or "no message"


# ---------------------------------------------------------------------------------------------
# The run


def _quiet_collector() -> None:
    """Move every object alive (the tokenizer, imported libraries, earlier
    steps' records) out of the collector's reach, so that while a step runs a collection walks
    only what the step creates. Seen in a rate step against the simulator (a loaded 2-core
    machine): full collections walked 29,000 to 96,000 objects, mostly the tokenizer's
    libraries, and paused the event loop 70 to 390 ms each, pauses that show up as client
    delay in TTFT, dispatch and schedule lag. No cyclic garbage is made per request (those
    collections freed nothing), so the
    frozen objects are only the ones the run keeps; ``gc.unfreeze()`` at the end of the run
    hands them back. (No ``gc.collect()`` first: with the tokenizer's libraries loaded it
    takes a tenth of a second or more per step, for garbage that is small.)"""
    gc.freeze()


class _RunStopped(Exception):
    """The run cannot go on (server gone, every request refused); str() says why."""


class _Cancelled(Exception):
    """The user asked to stop (cancel event, SIGINT, SIGTERM)."""


@dataclass
class _Step:
    """What one step needs while it runs."""

    size: float  # batch size, users, or requests/s
    index: int = 1  # position in the run (from 1)
    bodies: list[bytes] = field(default_factory=list)  # pre-serialised, not yet sent
    built: int = 0  # prompts built so far for this step
    records: list[RequestRecord] = field(default_factory=list)
    # What progress events call this step (capacity mode: the probe number), else ``size``.
    label: float | None = None


def run(config: RunConfig, *, on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None, server: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        gpu_reader: GpuReader | None = None) -> RunResult:
    """Run the benchmark described by ``config`` and return its result (see module docstring).

    ``headers`` are sent with every request (for example ``Authorization`` for an endpoint that
    needs a token); they are never saved, and their values are masked in every message.
    ``gpu_reader``: the sampler's GPU source (default NVML; tests pass a fake).
    Raises a ``BenchmarkError`` when the run cannot start (bad config, no server, server limits,
    tokenizer); once it has started, failures end up in ``result.status`` / ``result.message``.
    """
    config = dataclasses.replace(config.validate(), url=check_url(config.url))
    if config.mode == "rate":  # a whole rate is an int: step 200, not 200.0, in every file
        config = dataclasses.replace(config, rates=parse_rates(list(config.rates)))
    if str(config.workers).strip().lower() == "auto":  # the count used is the one saved
        config = dataclasses.replace(config, workers=auto_workers())
    if config.mode in ("rate", "capacity") and config.schedule_seed is None:
        # Drawn here and saved in run.json's config, so that the run can be replayed exactly.
        config = dataclasses.replace(config, schedule_seed=secrets.randbits(62))
    cancel = cancel if cancel is not None else threading.Event()
    with cancel_on_signals(cancel):
        engine = _Engine(config, on_progress, cancel, server, dict(headers or {}))
        engine.gpu_reader = gpu_reader
        return engine.execute()


def loop_factory() -> Any:
    """uvloop's event loop when it is installed (less client overhead per token event), else
    asyncio's: the engine's run and each worker process use the same."""
    try:
        import uvloop  # optional: a faster event loop
    except ImportError:  # pragma: no cover - uvloop is in requirements
        return None
    return uvloop.new_event_loop


class _Engine:
    def __init__(self, config: RunConfig, on_progress: ProgressCallback | None,
                 cancel: threading.Event, server: dict[str, Any] | None,
                 headers: dict[str, str]):
        self.config = config
        self.headers = headers
        self.secrets = [v.split(" ", 1)[-1] for v in headers.values()] + list(headers.values())
        self.on_progress = on_progress
        self.cancel = cancel
        self.server = server
        self.warned: set[str] = set()
        self.error_warnings = 0
        self.result: RunResult | None = None
        self.folder: Path | None = None
        self.run_id = ""
        self.model: str | None = None
        self.pool: Pool | RayPool | None = None  # worker processes (--workers > 1, Ray)
        self.client: StreamClient | None = None
        self.tokenizer: Any = None
        self._alive_lock: asyncio.Lock | None = None
        self._session: Any = None  # the aiohttp session in use (replaced when found unusable)
        self._sessions: contextlib.AsyncExitStack | None = None  # sessions replacing the first
        self._dead: str | None = None
        self._last_progress = 0.0
        self.gpu_reader: GpuReader | None = None
        self.sampler: Sampler | None = None
        self.probe = LoopProbe()
        # Fresh prompts for every run unless --seed is given: a server's prefix cache must not
        # remember the prompts of an earlier run and make prefill look faster than it is.
        self.prompt_seed = config.seed if config.seed is not None else secrets.randbits(31)
        self.parent_pid = os.getppid()

    # -- progress ----------------------------------------------------------------------------
    def emit(self, event: ProgressEvent) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(event)
        except (BrokenPipeError, ValueError):  # a reader that went away must not stop the run
            self.on_progress = None

    def warn(self, message: str, key: str | None = None) -> None:
        key = key or message
        if key in self.warned:
            return
        self.warned.add(key)
        message = redact(message, self.secrets)
        if self.result is not None:
            self.result.warnings.append(message)
        self.emit(RunWarning(message=message))

    # -- the whole run -------------------------------------------------------------------------
    def execute(self) -> RunResult:
        config = self.config
        probe = probe_server(config, headers=self.headers)
        config.check_against_server(probe.info)
        self._check_cancel_before_start()
        self.tokenizer = load_tokenizer(config.tokenizer_name, config.revision)
        self._check_cancel_before_start()
        self.client = make_client(config, model=probe.model, headers=self.headers)
        self.model = probe.model

        model = str(probe.info.get("model_id") or probe.model or config.tokenizer_name)
        folder = Path(config.output_dir) if config.output_dir else results.default_output_dir(model)
        results.check_output_dir_free(folder)
        try:
            run_id = results.check_run_id(folder.name)
        except BenchmarkError:
            run_id = results.new_run_id(model)
        self.folder = folder
        self.run_id = run_id
        # The run id may be a folder's name (--output-dir /tmp/runs/rounds gives "rounds"):
        # a random part makes the X-Request-Id of this run unique among runs, so a server's
        # logs and traces never mix two runs.
        self.request_prefix = f"{run_id}-{secrets.token_hex(3)}"
        self.result = RunResult(run_id=run_id, config=config, server_info=probe.info,
                                simulated=probe.simulated, server=self.server,
                                calibration=client_calibration(self._peak_concurrency()))
        self._start_sampler()
        try:
            self._save()
        except OSError as exc:
            self._stop_sampler()
            raise ConfigError("output_dir", f"Cannot write the results to {folder} "
                                            f"({exc.strerror or exc}). Choose another output "
                                            f"folder.") from exc
        self.emit(Start(run_id=run_id, output_dir=str(folder), steps=tuple(config.steps),
                        planned_requests=config.planned_requests(), simulated=probe.simulated,
                        mode=config.mode))
        for note in probe.notes[:MAX_PROBE_NOTES]:
            self.warn(note)
        if len(probe.notes) > MAX_PROBE_NOTES:
            self.warn(f"{len(probe.notes) - MAX_PROBE_NOTES} more parts of the server's /info "
                      f"were cut or left out.")
        limit = probe.info.get("max_concurrent_requests")
        if (config.mode in ("rounds", "concurrency") and isinstance(limit, int) and limit > 0
                and max(config.batch_sizes) > limit):
            self.warn(f"Batch size {max(config.batch_sizes)} is above the server's "
                      f"max_concurrent_requests ({limit}): it will refuse the requests beyond "
                      f"{limit} with HTTP 429. Restart it with a larger "
                      f"--max-concurrent-requests to measure that batch size.")
        if config.api != "tgi":
            unsent = [n for n in UNSENT_SAMPLING if getattr(config.sampling, n) not in (None, False)]
            if unsent:
                self.warn(f"The OpenAI API has no {', '.join(unsent)}: these settings were not "
                          f"sent (use --api tgi to send them).")

        status, message = "complete", None
        try:
            self._run_loop()
        except (_Cancelled, KeyboardInterrupt):
            status = "cancelled"
            message = f"Stopped before the end; the files hold {self._kept_words()}."
            if os.getppid() != self.parent_pid:   # the app that started us died (SIGTERM)
                status = "failed"
                message = (f"Interrupted: the app that started this run (process "
                           f"{self.parent_pid}) stopped; the files hold {self._kept_words()}.")
        except _RunStopped as exc:
            status, message = "failed", str(exc)
        except OSError as exc:   # the results could not be saved (disk full, folder removed)
            status, message = "failed", self._cannot_save(exc)
        except BaseException as exc:
            self._finish("failed", f"The benchmark stopped on an unexpected error: "
                                   f"{type(exc).__name__}: {exc}")
            raise
        if status == "complete":
            message = self._nothing_measured()
            status = "failed" if message else status
        self._finish(status, message)
        return self.result

    def _peak_concurrency(self) -> int:
        """The most requests in flight the run is planned for (for the calibration note)."""
        if self.config.mode == "rate":
            return int(self.config.max_concurrency or 1)
        if self.config.mode == "capacity":
            return SATURATION_USERS
        return max(self.config.batch_sizes)

    def _at(self, step: float) -> str:
        """"batch size 4", "4 users" or "200 requests/s": a step in a message."""
        if self.config.mode == "rate":
            return f"{step:g} requests/s"
        if self.config.mode == "concurrency":
            return f"{step} user{'' if step == 1 else 's'}"
        return f"batch size {step}"
    def _start_sampler(self) -> None:
        """The telemetry sampler, in its own thread, from now until the run ends (off when the
        interval is 0). Its time axis starts now."""
        assert self.result is not None
        interval = self.config.telemetry_interval_s
        if not interval:
            return
        url = self.config.metrics_url or f"{self.config.url}/metrics"
        # The endpoint's token goes to its own host only, never to another metrics host.
        same_host = urlsplit(url)[:2] == urlsplit(self.config.url)[:2]
        self.sampler = Sampler(interval_s=interval, origin_ns=time.perf_counter_ns(),
                               metrics_url=url, headers=self.headers if same_host else {},
                               gpu_reader=self.gpu_reader, probe=self.probe)
        self.sampler.data.metrics_url = strip_credentials(url)
        self.result.telemetry = self.sampler.data
        self.sampler.start()

    def _stop_sampler(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            assert self.result is not None
            self.result.telemetry = self.sampler.data
            self.sampler.data.missing[:] = [redact(m, self.secrets)
                                            for m in self.sampler.data.missing]

    def _nothing_measured(self) -> str | None:
        """Why a run that went to its end measured nothing (every request failed), or None.
        Timings of failed requests are not measurements: such a run must not read "complete"."""
        assert self.result is not None
        measured = self.result.measured_records
        if not measured or any(r.ok for r in measured):
            return None
        timeouts = sum(1 for r in measured if r.error_kind == "timeout")
        how = f", {timeouts} timed out" if timeouts else ""
        return (f"Every measured request failed ({len(measured)} requests{how}), so nothing was "
                f"measured. First error: {measured[0].error}. Check the server, or raise "
                f"--timeout if it is just slow.")

    def _cannot_save(self, exc: OSError) -> str:
        return (f"The results could not be saved to {self.folder} ({exc.strerror or exc}); "
                f"the run stopped. Free some space or choose another output folder.")

    def _check_cancel_before_start(self) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt

    def _kept_words(self) -> str:
        assert self.result is not None
        measured = self._measured_count()
        in_flight = len(self.result.records) - measured
        words = f"the {measured} request{'s' if measured != 1 else ''} measured until then"
        if in_flight:
            words += f" (and {in_flight} cancelled in flight)"
        return words

    def _measured_count(self) -> int:
        assert self.result is not None
        return sum(1 for r in self.result.records if r.error_kind != "cancelled")

    def _save(self) -> None:
        assert self.result is not None and self.folder is not None
        self.result.save(self.folder)

    def _finish(self, status: str, message: str | None) -> None:
        assert self.result is not None
        self._stop_sampler()
        self.result.status = status
        self.result.message = redact(message, self.secrets) if message else None
        self.result.ended_at = results.now_iso()
        try:
            self._save()
        except OSError as exc:
            # The files keep their last saved state; say so once, as the run's failure.
            message = self._cannot_save(exc)
            self.result.status, self.result.message = "failed", redact(message, self.secrets)
            self.emit(Done(status="failed", message=self.result.message,
                           output_dir=str(self.folder)))
            raise ResultFileError(self.result.message) from None
        self.emit(Done(status=status, message=self.result.message, output_dir=str(self.folder)))

    def _run_loop(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._all_steps())

    # -- steps ---------------------------------------------------------------------------------
    async def _all_steps(self) -> None:
        self._alive_lock = asyncio.Lock()
        main = asyncio.current_task()
        assert main is not None
        watcher = asyncio.create_task(self._watch_cancel(main))
        probe = asyncio.create_task(self.probe.run()) if self.sampler is not None else None
        try:
            if self.config.workers > 1 or self.config.ray_address:
                await self._start_pool()
            async with contextlib.AsyncExitStack() as self._sessions, \
                    open_session() as self._session:
                if self.config.mode == "capacity":
                    await run_capacity(self, self._session)
                    self._save()
                    return
                sizes = self.config.steps
                for index, size in enumerate(sizes, start=1):
                    if self.cancel.is_set():
                        raise _Cancelled
                    self.emit(StepStart(step=size, index=index, of=len(sizes)))
                    step = _Step(size=size, index=index)
                    _quiet_collector()
                    if self.sampler is not None:
                        self.sampler.mark_step(size, "start")
                    try:
                        if self.pool is not None:
                            await self._worker_step(step)
                        elif self.config.mode == "rounds":
                            await self._rounds(self._session, step)
                        elif self.config.mode == "rate":
                            await self._rate(self._session, step)
                        else:
                            await self._concurrency(self._session, step)
                    finally:
                        if self.sampler is not None:
                            self.sampler.mark_step(size, "end")
                        self._keep(step)
                    self._step_warnings(step)
                    self._save()
                    self.emit(StepDone(step=size))
                    self._stop_if_all_refused(step)
        except asyncio.CancelledError:
            if self.cancel.is_set():
                raise _Cancelled from None
            raise
        finally:
            watcher.cancel()
            if self.pool is not None:
                self.pool.close()
            gc.unfreeze()
            if probe is not None:
                probe.cancel()

    async def _watch_cancel(self, main: asyncio.Task[Any]) -> None:
        while not self.cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_S)
        if self.pool is None:  # with workers, the parent's loops see the event and tell them
            main.cancel()

    # -- capacity mode (capacity_run.py runs the probes through these) ----------------------
    def new_step(self, size: float, index: int) -> _Step:
        """A step to run one capacity probe in: ``size`` users or requests/s, ``index`` its
        probe number (the step its records get)."""
        self.emit(StepStart(step=index, index=index, of=None))
        return _Step(size=size, index=index, label=index)

    def probe_done(self, probe: Any) -> None:
        """Save the files and report a finished capacity probe."""
        self._save()
        self.emit(ProbeDone(step=probe.step, probe_kind=probe.kind, rate_rps=probe.rate_rps,
                            attainment=probe.attainment, passed=probe.passed,
                            stopped_early=probe.stopped_early, requests=probe.requests))
        self.emit(StepDone(step=probe.step))

    def _keep(self, step: _Step) -> None:
        """Move a step's measured records into the result (once, even when interrupted)."""
        assert self.result is not None
        if step.records:
            for record in step.records:
                if record.error and self.secrets:
                    record.error = redact(record.error, self.secrets)
            self.result.records.extend(step.records)
            step.records = []

    def _build(self, step: _Step, count: int) -> None:
        """Build (and serialise) the next ``count`` prompts of ``step``: never while timing."""
        assert self.client is not None
        seed = self.prompt_seed * 1_000_003 + (
            int(step.size) if self.config.mode != "rate" else 7_919 * step.index)
        prompts = build_prompts(self.tokenizer, length=self.config.sequence_length, count=count,
                                api=self.config.api, seed=seed, start=step.built)
        step.built += count
        self._prompt_warning(prompts)
        step.bodies.extend(self.client.body(text) for text in prompts.texts)

    def _take(self, step: _Step, count: int, total: int) -> list[bytes]:
        """The bodies of the next round, building a chunk of prompts first when needed
        (``total``: the prompts the whole step needs)."""
        if len(step.bodies) < count:
            self._build(step, max(count - len(step.bodies),
                                  min(total - step.built, PROMPT_CHUNK)))
        taken, step.bodies = step.bodies[:count], step.bodies[count:]
        return taken

    def _prompt_warning(self, prompts: PromptSet) -> None:
        if prompts.exact:
            return
        other = sorted({c for c in prompts.token_counts if c != prompts.length})
        self.warn(f"The tokenizer could not build prompts of exactly {prompts.length} tokens "
                  f"for this API: some are {', '.join(map(str, other[:5]))} tokens long. "
                  f"The files show the length the server reported.", key="prompt-length")

    def _record(self, slot: Slot) -> RequestRecord:
        run = f"w{slot.run}" if slot.warmup else str(slot.run)
        return RequestRecord(step=slot.step, run=slot.run, request=slot.request,
                             warmup=slot.warmup,
                             requested_output_tokens=self.config.decode_length,
                             request_id=f"{self.request_prefix}-{slot.step}-{run}-{slot.request}")

    async def _open_connections(self, session: Any, step: float, count: int) -> Any:
        """Open ``count`` keep-alive connections (small GETs at once) before the load starts;
        return the session the step uses.

        ``/info`` (``/v1/models`` on OpenAI APIs) costs the server nothing, unlike TGI's
        ``/health``, which may run a generation to check the model. A GET answered with an
        error may leave a connection the server has closed without saying so (``transformers
        serve`` answers ``/v1/models`` with 500 and drops the socket): the first requests would
        go out on dead sockets. Then the pooled connections are given up: the step gets a new
        session, whose requests open their own connections, and a warning says why."""
        path = "/info" if self.config.api == "tgi" else "/v1/models"
        failures: list[str] = []

        async def one() -> None:
            try:
                async with session.get(self.config.url + path,
                                       headers=self.headers) as response:
                    raw = await response.read()
                    if response.status >= 400:
                        failures.append(f"answered HTTP {response.status} "
                                        f"({error_message(raw, response.reason)})")
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                failures.append(f"failed ({type(exc).__name__}: {_short(exc)})")

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONTROL_TIMEOUT_S):
                await asyncio.gather(*(one() for _ in range(count)))
        if not failures:
            return session
        self.warn(f"Opening connections for {self._at(step)}: GET {path} "
                  f"{failures[0]} ({len(failures)} of {count}). Those connections may "
                  f"have been closed by the server, so they were dropped: the measured requests "
                  f"open their own, and their time to first token includes connecting.",
                  key="open-connections")
        await session.close()
        assert self._sessions is not None
        self._session = await self._sessions.enter_async_context(open_session())
        return self._session

    async def _send(self, session: Any, body: bytes, record: RequestRecord,
                    release_ns: int | None = None) -> None:
        assert self.client is not None
        await self.client.send(session, body, record, timeout_s=self.config.timeout_s,
                               release_ns=release_ns)

    async def _rounds(self, session: Any, step: _Step) -> None:
        config = self.config
        pattern = Rounds(step.size, config.runs, config.warmups)
        total = pattern.total
        self._build(step, min(total, max(step.size, PROMPT_CHUNK)))  # before opening connections
        session = await self._open_connections(session, step.size, step.size)
        for round_ in pattern.rounds():
            if self.cancel.is_set():
                raise _Cancelled
            bodies = self._take(step, len(round_.slots), total)
            records = [self._record(slot) for slot in round_.slots]
            if not round_.warmup:
                step.records.extend(records)
            now = time.perf_counter_ns()
            for record in records:
                record.scheduled_ns = now
            await asyncio.gather(*(self._send(session, b, r) for b, r in zip(bodies, records)))
            errors = sum(1 for r in records if not r.ok)
            self.emit(RoundDone(step=step.size, run=round_.run,
                                runs=config.warmups if round_.warmup else config.runs,
                                warmup=round_.warmup, errors=errors))
            if round_.warmup and errors:
                self._error_warning(records, warmup=True)
            await self._check_alive(records, step)
            self._stop_if_all_refused(step, records)

    def _build_concurrency(self, step: _Step) -> None:
        """All prompts of a concurrency step, built before its load starts (none while it runs)."""
        if self.config.requests is not None:
            self._build(step, min(self.config.requests, PROMPT_POOL_MAX * 8))
        else:
            self._build(step, min(max(step.size * 8, 64), PROMPT_POOL_MAX))

    async def _concurrency(self, session: Any, step: _Step, share: Share | None = None) -> None:
        """The concurrency pattern; in a worker process, ``share`` names its users, its part of
        --requests and the common start instant (the prompts come with it)."""
        config = self.config
        users = share.users if share is not None else tuple(range(step.size))
        pattern = Concurrency(len(users), duration_s=config.duration_s,
                              requests=share.requests if share is not None else config.requests,
                              names=users, step=step.size)
        if share is None:
            self._build_concurrency(step)
        session = await self._open_connections(session, step.size, len(users))
        done = errors = 0
        if share is not None:
            await wait_until(share.start_ns)
            started = share.start_ns
        else:
            started = time.perf_counter_ns()
        pattern.start(started)
        pacer = StartPacer()

        async def user(index: int) -> None:
            nonlocal done, errors
            while not self.cancel.is_set():
                now = time.perf_counter_ns()
                slot = pattern.next_slot(index, now)
                if slot is None:
                    return
                record = self._record(slot)
                record.scheduled_ns = now
                step.records.append(record)
                if pattern.issued > len(step.bodies):
                    self.warn(f"Prompts are re-used after the first {len(step.bodies)} requests "
                              f"of a step: a server with a prefix cache may answer them faster "
                              f"than new prompts.", key="prompt-reuse")
                body = step.bodies[(pattern.issued - 1) % len(step.bodies)]
                if pattern.issued % FREEZE_EVERY == 0:
                    gc.freeze()  # O(1): the step's records so far leave the collector's walk
                await pacer.turn()  # a burst of restarts leaves the loop time to read
                await self._send(session, body, record)
                done += 1
                errors += 0 if record.ok else 1
                self._requests_progress(step, done, errors, pattern.total, started)
                if record.error_kind in ("connection", "stream"):
                    await self._check_alive([record], step)

        await asyncio.gather(*(user(i) for i in range(len(users))))
        if self.cancel.is_set():
            raise _Cancelled
        self._requests_progress(step, done, errors, pattern.total, started, force=True)

    def _schedule(self, step: _Step) -> Any:
        """The step's send times (ns from its start) with its prompts built (none are built
        while it runs, they are re-used past PROMPT_POOL_MAX * 8); empty when none falls
        within the step (warned)."""
        config = self.config
        assert config.schedule_seed is not None
        offsets = arrival_offsets(RateSchedule(
            rate=float(step.size), arrivals=config.arrivals,
            seed=step_seed(config.schedule_seed, step.index), burstiness=config.burstiness,
            ramp_up_s=config.ramp_up_s, duration_s=config.duration_s, requests=config.requests))
        total = len(offsets)
        if total == 0:
            self.warn(f"No request was scheduled at {self._at(step.size)}: at that rate the "
                      f"first arrival falls after the duration. Raise the rate or the duration.",
                      key=f"empty-step:{step.size}")
            return offsets
        self._build(step, min(total, PROMPT_POOL_MAX * 8))
        if total > len(step.bodies):
            self.warn(f"Prompts are re-used after the first {len(step.bodies)} requests of a "
                      f"step: a server with a prefix cache may answer them faster than new "
                      f"prompts.", key="prompt-reuse")
        return offsets

    async def _rate(self, session: Any, step: _Step, share: Share | None = None) -> None:
        """Open loop: send on the step's schedule whatever the server does (module docstring).
        In a worker process, ``share`` holds its arrivals of the parent's schedule (numbers and
        offsets from the common start instant), its part of --max-concurrency and the prompts."""
        config = self.config
        if share is None:
            offsets: Any = self._schedule(step)
            numbers: Any = range(1, len(offsets) + 1)
            cap = config.max_concurrency
        else:
            offsets, numbers, cap = share.offsets, share.numbers, share.cap
        total = len(offsets)
        if total == 0:
            return
        session = await self._open_connections(session, step.size,
                                               min(total, cap or RATE_CONNECTIONS,
                                                   RATE_CONNECTIONS * 4))
        slots = asyncio.Semaphore(cap) if cap else None
        bodies = step.bodies
        done = errors = 0
        tasks: set[asyncio.Task[None]] = set()

        async def one(record: RequestRecord, body: bytes) -> None:
            nonlocal done, errors
            due = record.scheduled_ns
            if slots is not None:
                async with slots:  # a place taken before the send time is kept until then
                    record.admitted_ns = max(time.perf_counter_ns(), due)
                    await self._send(session, body, record, release_ns=due)
            else:
                record.admitted_ns = record.queued_ns
                await self._send(session, body, record, release_ns=due)
            done += 1
            errors += 0 if record.ok else 1
            self._requests_progress(step, done, errors, total, start)
            if record.error_kind in ("connection", "stream"):
                try:
                    await self._check_alive([record], step)
                except _RunStopped:
                    pass  # the dispatcher stops the step
                except OSError as exc:  # the client itself, e.g. out of file descriptors
                    self.warn(f"The client could not check the server ({exc.strerror or exc}) "
                              f"with {len(tasks)} requests in flight at "
                              f"{self._at(step.size)}: the server is not keeping up and "
                              f"requests pile up. Lower the rate or cap the requests in "
                              f"flight with --max-concurrency.", key="rate-client-limit")

        start = share.start_ns if share is not None else time.perf_counter_ns()
        perf_ns = time.perf_counter_ns
        try:
            for number, offset in zip(numbers, offsets):
                due = start + offset
                if (left := due - HANDOFF_NS - perf_ns()) > 0:
                    await asyncio.sleep(left / 1e9)  # early or late by a ms: the client holds it
                if self._dead is not None:
                    raise _RunStopped(self._dead)
                record = self._record(Slot(step.size, 1, number))
                record.step_start_ns = start
                record.scheduled_ns = due
                record.queued_ns = max(perf_ns(), due)
                step.records.append(record)
                if number % FREEZE_EVERY == 0:
                    gc.freeze()  # O(1): the step's records so far leave the collector's walk
                task = asyncio.create_task(one(record, bodies[(number - 1) % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            # The step's time is up: at its duration, or at its last send (--requests only).
            end = start + int(config.duration_s * 1e9) if config.duration_s is not None else 0
            while (left := end - perf_ns()) > 0 and tasks:
                await asyncio.sleep(min(left / 1e9, CANCEL_POLL_S))
            step_end = perf_ns()
            if tasks:
                await asyncio.wait(set(tasks), timeout=config.timeout_s + INCOMPLETE_GRACE_S)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        for record in step.records:
            if (record.error_kind in ("timeout", "cancelled") and record.end_ns is not None
                    and record.end_ns > step_end):
                record.error_kind = INCOMPLETE
                record.error = (f"still running when the step's time was up, no end within "
                                f"--timeout ({config.timeout_s:g} s)")
        if self._dead is not None:
            raise _RunStopped(self._dead)
        if self.cancel.is_set():
            raise _Cancelled
        self._requests_progress(step, done, errors, total, start, force=True)

    def _requests_progress(self, step: _Step, done: int, errors: int, total: int | None,
                           started: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        self.emit(RequestsDone(step=step.size if step.label is None else step.label,
                               done=done, total=total,
                               elapsed_s=round((time.perf_counter_ns() - started) / 1e9, 3),
                               errors=errors))

    async def _check_alive(self, records: list[RequestRecord], step: _Step) -> None:
        """After broken connections, stop the run if the server no longer answers."""
        if self._dead is not None:
            raise _RunStopped(self._dead)
        if not any(r.error_kind in ("connection", "stream") for r in records):
            return
        assert self._alive_lock is not None
        async with self._alive_lock:
            if self._dead is None:
                reason = await server_answers(self.config.url, headers=self.headers)
                if reason is not None:
                    failed = next(r for r in records if r.error_kind in ("connection", "stream"))
                    self._dead = (
                        f"The server at {self.config.url} stopped answering during "
                        f"{self._at(step.size)} ({failed.error}; /health: {reason}). The files hold what "
                        f"was measured until then; restart the server and run again.")
        if self._dead is not None:
            raise _RunStopped(self._dead)

    # -- worker processes (--workers above 1): the parent's side ------------------------------
    async def _start_pool(self) -> None:
        """Start the worker processes once for the run and wait until each says it is ready."""
        args = (self.config, self.model, self.headers, self.request_prefix)
        if self.config.ray_address:
            try:
                pool: Pool | RayPool = await asyncio.to_thread(
                    RayPool.start, self.config.workers, address=self.config.ray_address,
                    actor=RayWorker, args=args)
            except Exception as exc:  # noqa: BLE001 - Ray missing, no cluster at the address
                raise _RunStopped(f"The Ray workers could not start at --ray-address "
                                  f"{self.config.ray_address}: {type(exc).__name__}: {exc}"
                                  ) from None
        else:
            pool = Pool.start(self.config.workers, target=worker_main, args=args)
        self.pool = pool
        if self.sampler is not None:  # the workers' own CPU and loop lag, as they report them
            self.sampler.worker_usage = pool.usage.take
        waiting = set(range(pool.size))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            if self.cancel.is_set():
                raise _Cancelled
            for worker, message in pool.poll():
                if message[0] == "ready":
                    waiting.discard(worker)
                elif message[0] in ("dead", "failed"):
                    raise _RunStopped(f"The load could not start: {message[1]}. Run with fewer "
                                      f"--workers (or 1).")
            if time.monotonic() > deadline:
                raise _RunStopped(f"{len(waiting)} of {pool.size} worker processes were not "
                                  f"ready after {READY_TIMEOUT_S:g} s (a machine this loaded "
                                  f"cannot send the load either). Run with fewer --workers.")
            await asyncio.sleep(0.01)

    async def _worker_step(self, step: _Step) -> None:
        """One step dealt over the worker processes (``workers.py`` says how), its records
        merged into ``step.records`` in the order one process would have written them."""
        if self.config.mode == "rounds":
            await self._rounds_workers(step)
            return
        try:
            if self.config.mode == "rate":
                await self._rate_workers(step)
            else:
                await self._concurrency_workers(step)
        finally:
            if self.config.mode == "rate":
                step.records.sort(key=lambda r: r.request)
            else:
                step.records.sort(key=lambda r: r.scheduled_ns)

    async def _rounds_workers(self, step: _Step) -> None:
        config, pool = self.config, self.pool
        assert pool is not None
        pattern = Rounds(step.size, config.runs, config.warmups)
        total = pattern.total
        self._build(step, min(total, max(step.size, PROMPT_CHUNK)))
        first = True
        for round_ in pattern.rounds():
            if self.cancel.is_set():
                raise _Cancelled
            bodies = self._take(step, len(round_.slots), total)
            start = time.perf_counter_ns() + (STEP_LEAD_NS if first else ROUND_LEAD_NS)
            busy = set()
            for worker, mine in enumerate(deal(len(round_.slots), pool.size)):
                if mine:
                    pool.send(worker, Share("rounds", step.size, step.index, start,
                                            len(mine) if first else 0,
                                            tuple(bodies[i] for i in mine),
                                            slots=tuple(round_.slots[i] for i in mine)))
                    busy.add(worker)
            first = False
            records: list[RequestRecord] = []
            try:
                await self._collect(step, busy, None, start, records.extend)
            finally:
                records.sort(key=lambda r: r.request)
                if not round_.warmup:
                    step.records.extend(records)
            errors = sum(1 for r in records if not r.ok)
            self.emit(RoundDone(step=step.size, run=round_.run,
                                runs=config.warmups if round_.warmup else config.runs,
                                warmup=round_.warmup, errors=errors))
            if round_.warmup and errors:
                self._error_warning(records, warmup=True)
            self._stop_if_all_refused(step, records)

    async def _concurrency_workers(self, step: _Step) -> None:
        config, pool = self.config, self.pool
        assert pool is not None
        self._build_concurrency(step)
        users = deal(int(step.size), pool.size)
        quotas = split_quota(config.requests, [len(mine) for mine in users])
        start = time.perf_counter_ns() + STEP_LEAD_NS
        busy = set()
        for worker, mine in enumerate(users):
            if mine and quotas[worker] != 0:
                bodies = tuple(step.bodies[worker::pool.size]) or tuple(step.bodies)
                pool.send(worker, Share("concurrency", step.size, step.index, start, len(mine),
                                        bodies, users=tuple(mine), requests=quotas[worker]))
                busy.add(worker)
        await self._collect(step, busy, config.requests, start, step.records.extend)

    async def _rate_workers(self, step: _Step) -> None:
        """One schedule, drawn here, its arrivals dealt round-robin in arrival order."""
        config, pool = self.config, self.pool
        assert pool is not None
        offsets = self._schedule(step)
        total = len(offsets)
        if total == 0:
            return
        caps = split_cap(config.max_concurrency, pool.size)
        start = time.perf_counter_ns() + STEP_LEAD_NS
        bodies = tuple(step.bodies)
        busy = set()
        for worker, mine in enumerate(deal(total, pool.size)):
            if mine:
                pool.send(worker, Share(
                    "rate", step.size, step.index, start,
                    min(len(mine), caps[worker] or RATE_CONNECTIONS, RATE_CONNECTIONS * 4),
                    bodies, numbers=tuple(i + 1 for i in mine),
                    offsets=tuple(offsets[i] for i in mine), cap=caps[worker]))
                busy.add(worker)
        await self._collect(step, busy, total, start, step.records.extend)

    async def _collect(self, step: _Step, busy: set[int], total: int | None, started: int,
                       keep: Any) -> None:
        """Take what the workers in ``busy`` send until each has finished its share: records
        (to ``keep``), progress (summed over workers) and warnings. A cancel, a worker that
        stopped (server gone) or one that died tells the others to stop; then the step ends
        with _Cancelled or _RunStopped, after every record that came back was kept."""
        pool = self.pool
        assert pool is not None
        pending = set(busy)
        counts: dict[int, tuple[int, int]] = {}
        dead: str | None = None
        stopped: str | None = None
        told = False
        while pending:
            if not told and (self.cancel.is_set() or dead or stopped):
                pool.cancel()
                told = True
            # Wait in a thread for the pipes (the parent's loop idles: no CPU taken from the
            # workers on a small machine), at most 50 ms so that a cancel is seen.
            messages = await asyncio.to_thread(pool.poll, 0.05)
            for worker, message in messages:
                kind = message[0]
                if kind == "records":
                    keep(message[1])
                elif kind == "event":
                    event = message[1]
                    if isinstance(event, RequestsDone):
                        counts[worker] = (event.done, event.errors)
                        self._requests_progress(step, sum(c[0] for c in counts.values()),
                                                sum(c[1] for c in counts.values()), total,
                                                started)
                    elif isinstance(event, RunWarning):
                        self.warn(event.message)
                elif kind == "done":
                    pending.discard(worker)
                    if message[1] == "stopped":
                        stopped = stopped or message[2]
                elif kind in ("dead", "failed"):
                    pending.discard(worker)
                    dead = dead or message[1]
        if dead is not None:
            raise _RunStopped(
                f"The run stopped at {self._at(step.size)}: {dead}. The files hold the "
                f"requests every worker sent back until then (those in flight in that worker "
                f"are lost). Run again, with fewer --workers if the machine ran out of memory.")
        if stopped is not None:
            raise _RunStopped(stopped)
        if self.cancel.is_set():
            raise _Cancelled
        if total is not None or counts:
            self._requests_progress(step, sum(c[0] for c in counts.values()),
                                    sum(c[1] for c in counts.values()), total, started,
                                    force=True)

    # -- after a step --------------------------------------------------------------------------
    def _step_warnings(self, step: _Step) -> None:
        assert self.result is not None
        config = self.config
        records = [r for r in self.result.records if r.step == step.size and not r.warmup]
        ok = [r for r in records if r.ok]
        expected = config.sequence_length
        mismatched = [r for r in ok if r.input_tokens is not None and r.input_tokens != expected]
        if mismatched:
            seen = sorted({r.input_tokens for r in mismatched})  # type: ignore[type-var]
            self.warn(f"The server counted {', '.join(map(str, seen[:5]))} prompt tokens instead "
                      f"of the {expected} asked ({len(mismatched)} of {len(ok)} requests at "
                      f"{self._at(step.size)}). Prefill throughput uses the server's count.",
                      key="input-length")
        if ok and all(r.input_tokens is None for r in ok):
            self.warn(f"The server did not report prompt token counts: prefill throughput assumes "
                      f"the {expected} tokens the prompts were built with.", key="input-unknown")
        where = self._at(step.size)
        counted = [r for r in ok if r.tokens_from_events]
        if counted:
            self.warn(f"The server did not report output token counts for {len(counted)} of "
                      f"{len(ok)} requests at {where} (it may ignore stream_options): their "
                      f"tokens were counted from stream events, which undercounts when an "
                      f"event carries several tokens. requests.csv marks them "
                      f"(tokens_from_events).", key=f"output-unknown:{step.size}")
        short = [r for r in ok if r.output_token_count < config.decode_length]
        if short:
            self.warn(f"Outputs were shorter than asked: {len(short)} of {len(ok)} requests at "
                      f"{self._at(step.size)} stopped before {config.decode_length} tokens "
                      f"(finish reason: {short[0].finish_reason or 'not given'}). Throughput and "
                      f"token latency count only the tokens that really came.",
                      key=f"short-outputs:{step.size}")
        retried = [r for r in records if r.retried]
        if retried:
            self.warn(f"{len(retried)} of {len(records)} requests at {where} went out on a "
                      f"kept-alive connection the server had closed and got no answer: each was "
                      f"sent again once on a fresh connection (requests.csv: retried).",
                      key=f"retried:{step.size}")
        coalesced = sum(r.coalesced_events for r in ok)
        if coalesced:
            self.warn(f"{coalesced} token events at {where} arrived in the same read as the "
                      f"event before them: the client cannot time them apart, so they give no "
                      f"inter-token latency sample (requests.csv: coalesced_events).",
                      key=f"coalesced:{step.size}")
        self._error_warning(records, warmup=False)

    def _error_warning(self, records: list[RequestRecord], *, warmup: bool) -> None:
        """Warn once per kind of error (at most MAX_ERROR_WARNINGS kinds a run)."""
        failed = [r for r in records if not r.ok and r.error_kind != "cancelled"]
        if not failed or self.error_warnings >= MAX_ERROR_WARNINGS:
            return
        first = failed[0]
        key = f"error:{first.error_kind}:{(first.error or '')[:60]}"
        if key in self.warned:
            return
        self.error_warnings += 1
        where = "requests of a warm-up round" if warmup else "measured requests"
        self.warn(f"{len(failed)} of {len(records)} {where} at {self._at(first.step)} failed: "
                  f"{first.error}", key=key)

    def _stop_if_all_refused(self, step: _Step,
                             records: list[RequestRecord] | None = None) -> None:
        """Every request of a round (or of a step) refused by the server with an HTTP 4xx other
        than 429: the same request would be refused again, so stop instead of repeating."""
        assert self.result is not None
        if records is None:
            records = [r for r in self.result.records if r.step == step.size]
        if not records or any(r.ok for r in records):
            return
        refused = [r for r in records if r.error_kind == "http" and r.status is not None
                   and 400 <= r.status < 500 and r.status != 429]
        if len(refused) == len(records):
            raise _RunStopped(
                f"The server refused every request at {self._at(step.size)}: "
                f"{refused[0].error}. Fix the settings it complains about and run again.")


# ---------------------------------------------------------------------------------------------
# A worker process (--workers above 1): the same per-process load code, fed by the parent


def worker_main(index: int, tasks: Any, results_pipe: Any, config: RunConfig,
                model: str | None, headers: dict[str, str], run_id: str) -> None:
    """A worker process's entry: run the shares the parent sends until told to exit. Ctrl-C
    reaches the parent, which tells the workers (SIGINT is ignored here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = _WorkerEngine(config, tasks, results_pipe, model, headers, run_id)
    except Exception as exc:  # noqa: BLE001 - said to the parent, which stops the run
        results_pipe.send(("failed", f"worker process {index + 1} could not start "
                                     f"({type(exc).__name__}: {exc})"))
        return
    results_pipe.send(("ready",))
    worker.serve()


class _WorkerEngine(_Engine):
    """The engine's load code in a worker process: no probe, no tokenizer, no files; progress,
    warnings and finished records go to the parent through ``results_pipe``."""

    def __init__(self, config: RunConfig, tasks: Any, results_pipe: Any, model: str | None,
                 headers: dict[str, str], run_id: str):
        super().__init__(config, None, threading.Event(), None, headers)
        self.on_progress = self._forward
        self.run_id = self.request_prefix = run_id  # the parent's request-id prefix
        self.client = make_client(config, model=model, headers=headers)
        self.out = results_pipe
        self.outbox: list[RequestRecord] = []
        self.sent: set[str] = set()
        self.shares: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, args=(tasks,), daemon=True).start()

    def _read(self, tasks: Any) -> None:
        """The parent's messages: "cancel" at once (even mid-share), shares in order."""
        while True:
            try:
                message = tasks.recv()
            except (EOFError, OSError):  # the parent is gone: stop
                message = None
            if message == "cancel" or message is None:
                self.cancel.set()
            if message != "cancel":
                self.shares.put(message)
            if message is None:
                return

    def _forward(self, event: ProgressEvent) -> None:
        if isinstance(event, RequestsDone):
            self._flush()
        self.out.send(("event", event))

    def _flush(self) -> None:
        if self.outbox:
            batch, self.outbox = self.outbox, []
            self.sent.update(r.request_id for r in batch if r.request_id)
            self.out.send(("records", batch))

    async def _send(self, session: Any, body: bytes, record: RequestRecord,
                    release_ns: int | None = None) -> None:
        try:
            await super()._send(session, body, record, release_ns)
        finally:
            self.outbox.append(record)

    def serve(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self._alive_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as self._sessions, \
                open_session() as self._session:
            while True:
                share = await loop.run_in_executor(None, self.shares.get)
                if not isinstance(share, Share):
                    return
                # _open_connections may replace a session found unusable: the next share
                # takes the one in use.
                await self._run_share(self._session, share)

    async def _run_share(self, session: Any, share: Share) -> None:
        step = _Step(size=share.step, index=share.index, bodies=list(share.bodies),
                     built=len(share.bodies))
        records: list[RequestRecord] = []
        status, message = "ok", None
        _quiet_collector()
        job = asyncio.create_task(self._share_job(session, share, step, records))
        watcher = asyncio.create_task(self._cancel_when_told(job))
        usage = (asyncio.create_task(self._report_usage(self.config.telemetry_interval_s))
                 if self.config.telemetry_interval_s else None)
        try:
            await job
        except (_Cancelled, asyncio.CancelledError):
            status = "cancelled"
        except _RunStopped as exc:
            status, message = "stopped", str(exc)
        except Exception as exc:  # noqa: BLE001 - the parent ends the run with this sentence
            status, message = "stopped", (f"A worker process failed: {type(exc).__name__}: "
                                          f"{exc}")
        finally:
            watcher.cancel()
            if usage is not None:  # its last report goes before "done"
                usage.cancel()
                await asyncio.gather(usage, return_exceptions=True)
        waiting = {id(r) for r in self.outbox}
        self.outbox.extend(r for r in records + step.records
                           if r.request_id not in self.sent and id(r) not in waiting)
        self._flush()
        self.out.send(("done", status, message))

    async def _report_usage(self, interval_s: float) -> None:
        """While a share runs: every ``interval_s`` (and once more when it ends), this process's
        CPU use, its event loop's (this thread's) and the loop's lags to the parent, whose
        telemetry has no other view of a worker (a Ray actor may be on another machine)."""
        probe = LoopProbe()
        lags = asyncio.create_task(probe.run())
        last = (time.perf_counter(), time.process_time(), time.thread_time())

        def report() -> None:
            nonlocal last
            now = (time.perf_counter(), time.process_time(), time.thread_time())
            self.out.send(("usage", WorkerUsage(
                wall_s=now[0] - last[0], cpu_s=now[1] - last[1], loop_cpu_s=now[2] - last[2],
                lags_ms=tuple(probe.take()[0]))))
            last = now

        try:
            while True:
                await asyncio.sleep(interval_s)
                report()
        finally:
            lags.cancel()
            report()

    async def _cancel_when_told(self, job: asyncio.Task[Any]) -> None:
        while not self.cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_S)
        job.cancel()

    async def _share_job(self, session: Any, share: Share, step: _Step,
                         records: list[RequestRecord]) -> None:
        if share.kind == "concurrency":
            await self._concurrency(session, step, share)
        elif share.kind == "rate":
            await self._rate(session, step, share)
        else:  # a part of one round: all sent at the common instant, as one process does
            if share.connections:
                session = await self._open_connections(session, share.step, share.connections)
            await wait_until(share.start_ns)
            records.extend(self._record(slot) for slot in share.slots)
            for record in records:
                record.scheduled_ns = share.start_ns
            await asyncio.gather(*(self._send(session, b, r)
                                   for b, r in zip(share.bodies, records)))
            await self._check_alive(records, step)


class _Inbox:
    """A Ray actor's stand-in for the pipe from the parent (``put`` fills it)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()

    def recv(self) -> Any:
        return self.queue.get()


class _Outbox:
    """A Ray actor's stand-in for the pipe to the parent (the parent's ``take`` empties it)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self.lock:
            self.items.append(message)

    def take(self) -> list[Any]:
        with self.lock:
            items, self.items = self.items, []
        return items


class RayWorker:
    """A worker as a Ray actor (``--ray-address``; ``workers.RayPool`` says how it is used):
    the same ``_WorkerEngine`` as a worker process, run in a thread of the actor's process,
    fed by ``put`` and read by ``take``. A share's start instant comes as a wall-clock instant
    and is turned into this machine's ``perf_counter_ns`` here; the records go back moved onto
    the parent's clock by the same amount (every stamp of a record by the same shift, so its
    latencies are untouched; across machines they are then comparable to the wall clocks'
    agreement, and the step's rates and durations can be counted over all records)."""

    def __init__(self, index: int, config: RunConfig, model: str | None,
                 headers: dict[str, str], run_id: str):
        self.inbox, self.outbox = _Inbox(), _Outbox()
        self.shift = 0  # the parent's perf_counter_ns minus this machine's, from the last share
        try:
            worker = _WorkerEngine(config, self.inbox, self.outbox, model, headers, run_id)
        except Exception as exc:  # noqa: BLE001 - said to the parent, which stops the run
            self.outbox.send(("failed", f"worker {index + 1} (a Ray actor) could not start "
                                        f"({type(exc).__name__}: {exc})"))
            return
        threading.Thread(target=worker.serve, daemon=True).start()
        self.outbox.send(("ready",))

    def put(self, message: Any, wall_start_ns: int | None = None) -> None:
        if isinstance(message, Share) and wall_start_ns is not None:
            local = time.perf_counter_ns() + (wall_start_ns - time.time_ns())
            self.shift = message.start_ns - local
            message = dataclasses.replace(message, start_ns=local)
        self.inbox.queue.put(message)

    def take(self) -> list[Any]:
        return [("records", [_shifted(r, self.shift) for r in m[1]]) if m[0] == "records" else m
                for m in self.outbox.take()]


def _shifted(record: RequestRecord, shift: int) -> RequestRecord:
    """A copy of ``record`` with every stamp moved by ``shift`` ns (its latencies unchanged)."""
    def move(value: int | None) -> int | None:
        return None if value is None else value + shift
    return dataclasses.replace(
        record, scheduled_ns=record.scheduled_ns + shift, sent_ns=move(record.sent_ns),
        token_ns=[t + shift for t in record.token_ns], end_ns=move(record.end_ns),
        step_start_ns=move(record.step_start_ns), queued_ns=move(record.queued_ns),
        admitted_ns=move(record.admitted_ns))
