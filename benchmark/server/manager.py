"""Start, watch, reuse and stop ``text-generation-launcher`` (TGI) for the CLI and the app.

    manager = ServerManager(log_dir=Path("logs"))
    handle = manager.ensure(ServerSettings(model_id="org/model", port=1337))   # waits for ready
    ... benchmark handle.url ...
    manager.check_alive()        # raises ServerStartError("crashed", ...) if it died
    manager.stop()               # SIGTERM to its process group, SIGKILL after a grace period

``ensure`` reuses a running server whose settings are identical and restarts it when they
changed. It starts the launcher in its own process group with explicit ``--port`` and
``--hostname`` (the TGI image sets ``PORT=80``, the platform sets ``HOSTNAME``), passes
``HF_TOKEN`` through the environment only, and captures the output into a bounded buffer and a
log file, every line masked with ``errors.redact`` before it is stored. Readiness is ``/health``
then ``/info`` (whose ``model_id`` must be the one asked). Failures raise ``ServerStartError``
with a reason code and a plain-words message (see ``launcher_logs``).

When ``text-generation-launcher`` is not installed, the same manager starts the simulated server
(``python -m benchmark.simulator`` with the same flags) and the handle says ``simulated=True``.

Servers started here never outlive the program unless asked (``keep()``): an ``atexit`` hook
and SIGTERM/SIGHUP handlers (installed from the main thread) stop them.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from . import logs
from ..config import DEFAULT_SERVER_TIMEOUT_S, ServerSettings, parse_float
from ..config import allow_trust_remote_code as allowed_by_env
from ..errors import ServerError, ServerStartError, redact
from ..core.probe import bound_info, parse_json_object
from ..children import with_package_path
from .process import (DEFAULT_GRACE_S, RUNNING, SECRET_ENV, Adopted, Launch, forget_state,
                      install_exit_hooks, is_our_server, load_state, mask_line, pid_running,
                      private_log_dir, save_state, stop_all)

__all__ = [
    "LAUNCHER",
    "DEFAULT_TIMEOUT_S",
    "ServerHandle",
    "ServerStatus",
    "ServerManager",
    "launcher_args",
    "stop_all",
    "mask_line",
]

LAUNCHER = "text-generation-launcher"
DEFAULT_TIMEOUT_S = DEFAULT_SERVER_TIMEOUT_S
POLL_INTERVAL_S = 0.5

# The launcher reads an environment variable for each flag (clap's `env`). Variables for the
# settings managed here are removed from its environment, so that a stray one (the TGI image
# sets PORT=80; a Space may set MODEL_ID or MAX_INPUT_LENGTH) cannot change the server behind
# the settings shown to the user or conflict with a flag we pass.
MANAGED_ENV = (
    "MODEL_ID", "REVISION", "QUANTIZE", "DTYPE", "NUM_SHARD", "SHARDED", "MAX_INPUT_TOKENS",
    "MAX_INPUT_LENGTH", "MAX_TOTAL_TOKENS", "MAX_BATCH_SIZE", "MAX_BATCH_PREFILL_TOKENS",
    "MAX_BATCH_TOTAL_TOKENS", "MAX_CONCURRENT_REQUESTS", "TRUST_REMOTE_CODE", "PORT",
    "HOSTNAME",
)


# Secrets of the app itself that TGI never needs (model code run with --trust-remote-code
# would otherwise be able to read them).
APP_SECRETS = ("OAUTH_CLIENT_SECRET",)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class ServerHandle:
    """A server that answered ``/health`` and ``/info`` with the asked model."""

    url: str
    settings: ServerSettings
    simulated: bool
    pid: int
    info: dict
    log_path: Path | None = None
    reused: bool = False       # True when an already running server was reused


@dataclass(frozen=True)
class ServerStatus:
    """A snapshot of what the managed server is doing.

    phase:     "starting", "downloading", "loading", "warming up", "ready", "failed", "stopped"
    elapsed_s: seconds since the launch (frozen once ready, failed or stopped)
    message:   the phase in plain words ("Downloading the model weights ... (file 2 of 4)")
    reason:    the ServerStartError reason when phase is "failed"
    last_line: the last (masked) log line
    """

    phase: str
    elapsed_s: float
    message: str
    simulated: bool = False
    reason: str | None = None
    last_line: str | None = None


def launcher_args(settings: ServerSettings) -> list[str]:
    """The launcher's arguments (without the program name) for ``settings``, in a fixed order."""
    args = ["--model-id", settings.model_id]
    optional: tuple[tuple[str, Any], ...] = (
        ("--revision", settings.revision),
        ("--quantize", settings.quantize),
        ("--dtype", settings.dtype),
        ("--num-shard", settings.num_shard),
        ("--max-input-tokens", settings.max_input_tokens),
        ("--max-total-tokens", settings.max_total_tokens),
        ("--max-batch-size", settings.max_batch_size),
        ("--max-batch-prefill-tokens", settings.max_batch_prefill_tokens),
        ("--max-concurrent-requests", settings.max_concurrent_requests),
    )
    for flag, value in optional:
        if value is not None and value != "":
            args += [flag, str(value)]
    if settings.trust_remote_code:
        args.append("--trust-remote-code")
    args += ["--port", str(settings.port), "--hostname", settings.hostname]
    return args


# ---------------------------------------------------------------------------------------------
# The manager


class ServerManager:
    """Starts or reuses one TGI server at a time and watches it.

    log_dir:       where the launcher's masked log files go (default: a temporary folder)
    env:           the environment the launcher gets (default: this process's); HF_TOKEN is
                   passed through it and nowhere else
    launcher_cmd:  the program to start; when it is not on PATH the simulator is started
    allow_trust_remote_code: whether settings may ask for --trust-remote-code (default: the
                   environment variable ALLOW_TRUST_REMOTE_CODE, see ``access``)
    simulator_args: extra flags for the simulated server when it stands in for TGI (by
                   default it gets ``--tokenizer <model_id>``, so that it counts prompt tokens
                   the way TGI would)
    die_with_parent: the launcher gets SIGTERM when this process dies, even by SIGKILL (the
                   app; never with ``keep``, whose server must outlive the process)
    """

    def __init__(self, log_dir: Path | str | None = None, env: dict[str, str] | None = None,
                 launcher_cmd: str = LAUNCHER, *, grace_s: float = DEFAULT_GRACE_S,
                 allow_trust_remote_code: bool | None = None,
                 fallback_to_simulator: bool = True, simulator_args: list[str] | None = None,
                 poll_interval_s: float = POLL_INTERVAL_S, die_with_parent: bool = False):
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.env = dict(os.environ if env is None else env)
        self.launcher_cmd = launcher_cmd
        self.grace_s = grace_s
        if allow_trust_remote_code is None:
            allow_trust_remote_code = allowed_by_env(os.environ)
        self.allow_trust_remote_code = allow_trust_remote_code
        self.fallback_to_simulator = fallback_to_simulator
        self.simulator_args = list(simulator_args or [])
        self.poll_interval_s = poll_interval_s
        # The app's servers stop when the app dies, even by SIGKILL (never kept by the app);
        # the CLI's --launch --keep must outlive its process, so it leaves this off.
        self.die_with_parent = die_with_parent
        self._start_lock = threading.RLock()
        self._launch: Launch | None = None        # the current process (None when stopped)
        self._last: Launch | None = None          # the latest one, kept for its log
        self._handle: ServerHandle | None = None
        self._error: ServerStartError | None = None
        self._final_phase: str | None = None       # "ready"/"failed"/"stopped" once reached
        self._on_status: Callable[[ServerStatus], None] | None = None
        self._last_notified: tuple[str, str] | None = None
        install_exit_hooks()

    # -- public ---------------------------------------------------------------------------
    @property
    def secrets(self) -> list[str]:
        return [self.env[name] for name in SECRET_ENV if self.env.get(name)]

    @property
    def handle(self) -> ServerHandle | None:
        """The ready server, or None."""
        return self._handle if self._launch is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._last.log_path if self._last is not None else None

    @property
    def status(self) -> ServerStatus:
        launch = self._last
        failure = self._failure
        if launch is None:
            if failure is not None:
                return ServerStatus("failed", 0.0, str(failure), reason=failure.reason)
            return ServerStatus("stopped", 0.0, "No server started yet.")
        phase = self._final_phase or launch.phase
        if phase == "ready" and not launch.alive():
            phase = "failed"
        reason = failure.reason if failure is not None and phase == "failed" else None
        if phase == "failed" and failure is not None:
            message = str(failure).split("\n", 1)[0]
        elif phase == "failed":
            message = "The server stopped unexpectedly (check_alive() says why)."
        else:
            message = logs.describe_phase(phase, launch.progress)
        tail = launch.tail(1)
        return ServerStatus(
            phase=phase, elapsed_s=round(launch.elapsed_s(), 3), message=message,
            simulated=launch.simulated, reason=reason,
            last_line=tail[0] if tail else None,
        )

    @property
    def error(self) -> ServerStartError | None:
        """The last start-up or crash error (its ``reason``, full message and ``log_tail``)."""
        return self._error

    @property
    def _failure(self) -> ServerStartError | None:
        """The error that made the server fail: ``error`` unless the start-up was cancelled."""
        error = self._error
        return error if error is not None and error.reason != "cancelled" else None

    def log_tail(self, n: int = 50) -> list[str]:
        """The last ``n`` masked lines the launcher printed (kept after it stopped)."""
        return self._last.tail(n) if self._last is not None else []

    def ensure(self, settings: ServerSettings, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               on_status: Callable[[ServerStatus], None] | None = None,
               cancel: threading.Event | None = None) -> ServerHandle:
        """Start (or reuse) a server with ``settings`` and wait until it is ready.

        ``on_status`` is called with a ``ServerStatus`` on every phase change and, until the
        server is ready, every log line (possibly from the output-reading thread: keep it
        quick). Setting ``cancel`` or calling ``stop()`` from another thread ends the start-up
        (reason "cancelled"). Raises ``ConfigError`` for invalid settings and
        ``ServerStartError`` when the server cannot be made ready (the process is stopped
        then).
        """
        settings = settings.validate(allow_trust_remote_code=self.allow_trust_remote_code)
        timeout_s = parse_float("timeout_s", timeout_s, minimum=0.0, exclusive_minimum=True)
        with self._start_lock:
            self._on_status = on_status
            current = self._launch
            if (current is not None and self._handle is not None and current.alive()
                    and current.settings == settings):
                if self._probe_reuse(current):
                    self._handle = dataclasses.replace(self._handle, reused=True)
                    self._notify(force=True)
                    return self._handle
            if current is not None:
                self.stop()
            kept = self._adopt(settings)
            if kept is not None:
                return kept
            self._check_port_free(settings)
            launch = self._start(settings)
            try:
                info = self._wait_ready(launch, timeout_s, cancel)
            except ServerStartError as err:
                self._error = err
                self._stop_launch(launch, final="stopped" if err.reason == "cancelled"
                                  else "failed")
                raise
            except BaseException:
                self._stop_launch(launch, final="stopped")
                raise
            launch.ended_ns = time.perf_counter_ns()
            simulated = launch.simulated or info.get("simulated") is True
            launch.simulated = simulated
            self._handle = ServerHandle(url=settings.url, settings=settings, simulated=simulated,
                                        pid=launch.pid, info=info, log_path=launch.log_path)
            self._final_phase = "ready"
            self._notify(force=True)
            return self._handle

    def check_alive(self, wait_s: float = 0.0) -> None:
        """Raise ``ServerStartError("crashed", ...)`` with the last log lines if the server died.

        With ``wait_s``, a server that no longer answers ``/health`` gets that long to finish
        exiting (TGI takes a few seconds to shut down its shards after a crash).
        """
        launch = self._launch
        if launch is None:
            failure = self._failure
            if self._last is not None and failure is not None:
                raise ServerStartError(failure.reason, str(failure), self._last.tail(40))
            raise ServerStartError("exited", "No TGI server is running: start one first.")
        if launch.alive() and wait_s > 0 and not self._answers(launch):
            launch.wait(wait_s)
        if launch.alive():
            return
        launch.drain()
        failure = logs.explain_crash(launch.tail(), launch.returncode)
        self._error = ServerStartError(failure.reason, failure.message)
        self._stop_launch(launch, final="failed")
        self._error.log_tail = launch.tail(40)  # read once the whole group is stopped
        raise self._error

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the server (SIGTERM to its group, SIGKILL after the grace period). Idempotent."""
        launch = self._launch
        if launch is None:
            return
        self._stop_launch(launch, final="stopped", grace_s=grace_s)

    def keep(self) -> ServerHandle | None:
        """Let the current server outlive this program (the CLI's --keep-server).

        A small relay process takes over its output (masked, appended to the same log file)
        and this manager forgets it: ``stop()`` and the exit hooks no longer touch it. A state
        file lets a later ``ensure`` with the same port reuse it (or restart it when the
        settings differ).
        """
        launch = self._launch
        handle = self.handle
        if launch is None:
            return None
        RUNNING.discard(launch)
        launch.hand_over(self._child_env())
        save_state(launch, kept=True)
        self._launch = None
        self._handle = None
        return handle

    # -- internals ------------------------------------------------------------------------
    def _adopt(self, settings: ServerSettings) -> ServerHandle | None:
        """Reuse a server that an earlier run kept (``--keep-server``) on this port, or stop
        one left behind by a program that died without stopping it (killed with SIGKILL).

        Trusted only when its state file is ours and its pid leads its own process group with
        ``--port PORT`` on its command line; a kept one must also answer ``/info`` with the
        saved model. Same settings: reused. Other settings: stopped (the caller then starts a
        new one). A server whose owner still runs is left alone.
        """
        state = load_state(settings.port)
        if state is None:
            return None
        saved = ServerSettings.from_dict(state["settings"])
        kept = Adopted(state, saved)
        if not (kept.alive() and is_our_server(kept.pid, saved.port)):
            forget_state(saved.port)
            return None
        if not state.get("kept"):
            owner = int(state.get("owner_pid") or 0)
            if owner == os.getpid() or (owner and pid_running(owner)):
                return None  # a live program's server: the port check will say so
            kept.terminate(self.grace_s)  # left behind by a program that was killed
            return None
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            info = self._probe(client, saved.url)
        if info is None or not _same_model(info, saved.model_id):
            forget_state(saved.port)  # not answering as ours: leave that process alone
            return None
        if saved != settings:
            kept.terminate(self.grace_s)
            return None
        RUNNING.add(kept)
        self._error = None
        self._last_notified = None
        self._launch = self._last = kept
        kept.simulated = kept.simulated or info.get("simulated") is True
        self._handle = ServerHandle(url=settings.url, settings=settings,
                                    simulated=kept.simulated, pid=kept.pid, info=info,
                                    log_path=kept.log_path, reused=True)
        self._final_phase = "ready"
        self._notify(force=True)
        return self._handle

    def _start(self, settings: ServerSettings) -> Launch:
        env = self._child_env()
        args = launcher_args(settings)
        program = shutil.which(self.launcher_cmd, path=env.get("PATH"))
        simulated = program is None
        if simulated:
            if not self.fallback_to_simulator:
                raise ServerStartError("exited", f"{self.launcher_cmd} is not installed here "
                                                 "(not found on PATH).")
            # Like TGI, the stand-in counts prompt tokens with the model's own tokenizer
            # (it falls back to a documented rule when that cannot be loaded).
            extra = self.simulator_args
            if "--tokenizer" not in extra:
                extra = ["--tokenizer", settings.model_id, *extra]
            argv = [sys.executable, "-m", "benchmark.simulator", *args, *extra]
            env = with_package_path(env)
        else:
            argv = [program, *args]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        log_dir = self.log_dir or private_log_dir()
        log_path = log_dir / f"tgi-{stamp}-port{settings.port}.log"
        self._error = None
        self._final_phase = None
        self._last_notified = None
        install_exit_hooks()
        launch = Launch(argv, env, settings, simulated=simulated, log_path=log_path,
                         secrets=self.secrets, on_change=self._notify,
                         die_with_parent=self.die_with_parent)
        save_state(launch, kept=False)
        self._launch = self._last = launch
        self._handle = None
        self._notify(force=True)
        return launch

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items()
               if k not in MANAGED_ENV and k not in APP_SECRETS}
        token = env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN")
        if token:
            env["HF_TOKEN"] = token
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _check_port_free(self, settings: ServerSettings) -> None:
        family = socket.AF_INET6 if ":" in settings.hostname else socket.AF_INET
        host = settings.hostname.strip("[]")
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, settings.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return  # let the launcher report anything else in its own words
                message = (f"Port {settings.port} on {settings.hostname} is already used by "
                           "another program (perhaps a server started earlier and not stopped). "
                           "Stop that program or choose another port, then start again.")
                self._final_phase = "failed"
                self._error = ServerStartError("port_in_use", message)
                raise self._error from None

    def _probe(self, client: httpx.Client, url: str) -> dict | None:
        try:
            health = client.get(f"{url}/health")
            if health.status_code != 200:
                return None
            response = client.get(f"{url}/info")
            if response.status_code != 200:
                return None
            info = parse_json_object(response.content, f"{url}/info")
        except (httpx.HTTPError, ServerError):
            return None
        return None if info is None else bound_info(info)[0]

    def _answers(self, launch: Launch) -> bool:
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                return client.get(f"{launch.settings.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _probe_reuse(self, launch: Launch) -> bool:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            info = self._probe(client, launch.settings.url)
        return info is not None and _same_model(info, launch.settings.model_id)

    def _wait_ready(self, launch: Launch, timeout_s: float,
                    cancel: threading.Event | None) -> dict:
        url = launch.settings.url
        deadline_ns = launch.started_ns + int(timeout_s * 1e9)
        with httpx.Client(timeout=httpx.Timeout(5.0), trust_env=False) as client:
            while True:
                if cancel is not None and cancel.is_set():
                    raise ServerStartError("cancelled", "Start-up was cancelled: the server was "
                                                        "stopped.")
                code = launch.returncode
                if code is not None:
                    launch.drain()
                    if launch.stop_requested:
                        raise ServerStartError("cancelled", "The server was stopped before it "
                                                            "was ready.")
                    failure = logs.explain_exit(launch.tail(), code,
                                                model_id=launch.settings.model_id,
                                                has_token=bool(self.secrets))
                    raise ServerStartError(failure.reason, failure.message, launch.tail(40))
                info = self._probe(client, url)
                if info is not None:
                    if not _same_model(info, launch.settings.model_id):
                        raise ServerStartError(
                            "wrong_model",
                            f"Another server answers at {url}: it serves "
                            f"{redact(str(info.get('model_id')), self.secrets)!r}, not "
                            f"{launch.settings.model_id!r}. Stop it or choose another port.",
                            launch.tail(40))
                    return info
                if time.perf_counter_ns() >= deadline_ns:
                    phase = logs.describe_phase(launch.phase, launch.progress)
                    raise ServerStartError(
                        "timeout",
                        f"The server was not ready after {_duration(timeout_s)} (last step: "
                        f"{phase}). Large models take long to download and load: allow more "
                        "time (the start-up timeout, --server-timeout on the command line) or "
                        "read the log below to see where it stopped. The server was stopped.",
                        launch.tail(40))
                if cancel is not None:
                    cancel.wait(self.poll_interval_s)
                else:
                    time.sleep(self.poll_interval_s)

    def _stop_launch(self, launch: Launch, *, final: str, grace_s: float | None = None) -> None:
        launch.terminate(self.grace_s if grace_s is None else grace_s)
        if launch.ended_ns is None or final != "stopped":
            launch.ended_ns = time.perf_counter_ns()
        if self._launch is launch:
            self._launch = None
            self._handle = None
        self._final_phase = final
        self._notify(force=True)

    def _notify(self, force: bool = False) -> None:
        callback = self._on_status
        if callback is None:
            return
        if not force and self._final_phase is not None:
            # Ready (or over): log lines no longer change the status. Staying quiet keeps the
            # reader thread cheap while a benchmark runs in this process.
            return
        status = self.status
        key = (status.phase, status.last_line or "")
        if not force and key == self._last_notified:
            return
        self._last_notified = key
        try:
            callback(status)
        except Exception:  # noqa: BLE001 - a broken observer must not break the launcher
            pass


def _same_model(info: dict, model_id: str) -> bool:
    reported = str(info.get("model_id") or "").strip().rstrip("/")
    return reported == model_id.strip().rstrip("/")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    minutes = seconds / 60
    return f"{minutes:.0f} minutes" if minutes < 120 else f"{minutes / 60:.1f} hours"
