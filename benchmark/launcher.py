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

import argparse
import atexit
import errno
import itertools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx

from . import launcher_logs as logs
from .config import DEFAULT_SERVER_HOST, DEFAULT_SERVER_PORT, DTYPE_CHOICES, QUANTIZE_CHOICES
from .config import ServerSettings, parse_float
from .errors import ServerStartError, redact

__all__ = [
    "LAUNCHER",
    "DEFAULT_TIMEOUT_S",
    "ServerHandle",
    "ServerStatus",
    "ServerManager",
    "launcher_args",
    "launcher_available",
    "stop_all",
    "add_server_arguments",
    "settings_from_args",
    "launch_from_cli",
    "launch_and_run",
    "mask_line",
]

LAUNCHER = "text-generation-launcher"
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_GRACE_S = 10.0
TAIL_LINES = 2000
POLL_INTERVAL_S = 0.5
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

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
    pid: int | None = None
    url: str | None = None
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


def launcher_available(launcher_cmd: str = LAUNCHER, env: dict[str, str] | None = None) -> bool:
    """True when ``launcher_cmd`` is found on PATH (else the simulator would be started)."""
    path = (env if env is not None else os.environ).get("PATH")
    return shutil.which(launcher_cmd, path=path) is not None


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
MAX_PENDING_BYTES = 65536


def _split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines (\\n, \\r\\n or \\r: progress bars) and the unfinished rest."""
    parts = _LINE_BREAK.split(data)
    pending = parts.pop()
    if len(pending) > MAX_PENDING_BYTES:
        parts.append(pending)
        pending = b""
    return parts, pending


def mask_line(raw: bytes | str, secrets: list[str] | None = None) -> str:
    """One output line as stored: decoded, secrets masked (``errors.redact``), no colour
    codes, bounded length. Empty when the line is blank."""
    text = redact(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw,
                  secrets)
    line = logs.clean_line(text)
    if text.startswith("{"):
        line = redact(line, secrets)  # unwrapped JSON could hold escaped characters
    return line if line.strip() else ""


# ---------------------------------------------------------------------------------------------
# One launched process: its output reader, log buffer and phase


class _Launch:
    """A started launcher process, the thread reading its output, and what that output says."""

    def __init__(self, argv: list[str], env: dict[str, str], settings: ServerSettings, *,
                 simulated: bool, log_path: Path, secrets: list[str],
                 on_change: Callable[[], None]):
        self.settings = settings
        self.simulated = simulated
        self.log_path = log_path
        self.secrets = secrets
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.phase = "starting"
        self.progress: tuple[int, int] | None = None
        self.started_ns = time.perf_counter_ns()
        self.ended_ns: int | None = None
        self.stop_requested = False
        self.relay_pid: int | None = None
        self._handover = threading.Event()
        self._pending = b""
        self._lock = threading.Lock()
        self._on_change = on_change
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "a", encoding="utf-8", errors="replace")
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._log.write(f"# {stamp} $ {redact(' '.join(argv), secrets)}\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            self._log.close()
            raise ServerStartError(
                "exited", f"Could not start {argv[0]}: {redact(str(exc), secrets)}. Check that "
                          "it is installed and can be run.") from exc
        self.pid = self.proc.pid
        _RUNNING.add(self)  # from now on the exit hooks stop it, whatever happens next
        self.reader = threading.Thread(target=self._read, name=f"tgi-log-{self.pid}", daemon=True)
        self.reader.start()

    # -- output ---------------------------------------------------------------------------
    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        fd = stream.fileno()
        pending = b""
        try:
            while not self._handover.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                lines, pending = _split_lines(pending + chunk)
                for raw in lines:
                    self._add(raw)
            if pending and not self._handover.is_set():
                self._add(pending)
        except (OSError, ValueError):
            pass
        finally:
            self._pending = pending
            with self._lock:
                self._log.close()
            if not self._handover.is_set():
                stream.close()

    def _add(self, raw: bytes) -> None:
        line = mask_line(raw, self.secrets)
        if not line:
            return
        with self._lock:
            self.lines.append(line)
            if not self._log.closed:
                self._log.write(line + "\n")
                self._log.flush()
            new_phase = logs.later_phase(self.phase, logs.phase_of(line))
            if new_phase == "downloading":
                self.progress = logs.download_progress(line) or self.progress
            self.phase = new_phase
        self._on_change()

    def hand_over(self, env: dict[str, str]) -> None:
        """Let a small relay process keep reading (and masking) the output into the log file.

        Used when the server must outlive this program: without a reader its output pipe
        would break or fill up.
        """
        self._handover.set()
        self.reader.join(5.0)
        stream = self.proc.stdout
        if stream is None or stream.closed or not self.alive():
            return
        relay = subprocess.Popen(
            [sys.executable, "-m", "benchmark.launcher", "--relay", str(self.log_path)],
            stdin=stream, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**env, "PYTHONPATH": os.pathsep.join(
                p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)},
            start_new_session=True, close_fds=True,
        )
        self.relay_pid = relay.pid
        stream.close()
        if self._pending:
            line = mask_line(self._pending, self.secrets)
            if line:
                with open(self.log_path, "a", encoding="utf-8") as log:
                    log.write(line + "\n")

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        if n <= 0:
            return []
        with self._lock:
            start = max(0, len(self.lines) - n)
            return list(itertools.islice(self.lines, start, None))

    # -- process --------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout_s: float) -> None:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until the reader has consumed everything the process printed."""
        self.reader.join(timeout_s)

    def elapsed_s(self) -> float:
        end = self.ended_ns if self.ended_ns is not None else time.perf_counter_ns()
        return (end - self.started_ns) / 1e9

    def terminate(self, grace_s: float) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``grace_s``; reap the leader."""
        self.stop_requested = True
        _terminate_group(self.proc, grace_s)
        self.drain(2.0)
        _RUNNING.discard(self)


class _Adopted:
    """A server kept running by an earlier run of this tool (``--keep-server``), found again
    through its state file: same interface as ``_Launch``, but not our child process."""

    phase = "ready"
    progress = None

    def __init__(self, state: dict[str, Any], settings: ServerSettings):
        self.settings = settings
        self.pid = int(state["pid"])
        self.simulated = bool(state.get("simulated"))
        self.log_path = Path(state["log_path"])
        self.started_ns = self.ended_ns = time.perf_counter_ns()
        self.stop_requested = False

    def alive(self) -> bool:
        return _pid_running(self.pid)

    @property
    def returncode(self) -> int | None:
        return None  # not our child: its exit code is not ours to read

    def wait(self, timeout_s: float) -> None:
        deadline = time.perf_counter_ns() + int(timeout_s * 1e9)
        while self.alive() and time.perf_counter_ns() < deadline:
            time.sleep(0.1)

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 256 * 1024))
                data = log.read()
        except OSError:
            return []
        lines = [mask_line(raw) for raw in data.splitlines()[1:] or data.splitlines()]
        lines = [line for line in lines if line and not line.startswith("# ")]
        return lines[-n:] if n > 0 else []

    def drain(self, timeout_s: float = 5.0) -> None:
        time.sleep(min(timeout_s, 0.2))  # the relay appends the last lines to the file

    def elapsed_s(self) -> float:
        return 0.0

    def terminate(self, grace_s: float) -> None:
        self.stop_requested = True
        _killpg(self.pid, signal.SIGTERM)
        if not _wait_group_gone(self.pid, grace_s):
            _killpg(self.pid, signal.SIGKILL)
            _wait_group_gone(self.pid, 5.0)
        _RUNNING.discard(self)
        _forget_state(self.settings.port, self.pid)

    def hand_over(self, env: dict[str, str]) -> None:
        """Its output already goes to the relay started by the run that kept it."""


def _is_our_server(pid: int, port: int) -> bool:
    """``pid`` leads its own process group and was started with ``--port PORT``."""
    try:
        if os.getpgid(pid) != pid:
            return False
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a == b"--port" and b == str(port).encode() for a, b in zip(args, args[1:]))


def _pid_running(pid: int) -> bool:
    """True when ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------------------------------------
# State files of kept servers: <tmp>/tgi-benchmark-<uid>/server-<port>.json


def _state_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"tgi-benchmark-{os.getuid()}"


def _state_path(port: int) -> Path:
    return _state_dir() / f"server-{int(port)}.json"


def _save_state(launch: Any) -> None:
    folder = _state_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    data = {"pid": launch.pid, "settings": launch.settings.to_dict(),
            "simulated": launch.simulated, "log_path": str(launch.log_path),
            "kept_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    path = _state_path(launch.settings.port)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _load_state(port: int) -> dict[str, Any] | None:
    """The state file for ``port``, if it is ours (same user, private folder) and readable."""
    path = _state_path(port)
    try:
        folder = path.parent.stat()
        if folder.st_uid != os.getuid() or folder.st_mode & 0o077:
            return None
        if path.stat().st_uid != os.getuid():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        int(data["pid"])
        ServerSettings.from_dict(data["settings"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _forget_state(port: int, pid: int | None = None) -> None:
    data = _load_state(port)
    if data is not None and (pid is None or int(data["pid"]) == pid):
        try:
            _state_path(port).unlink()
        except OSError:
            pass


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _group_alive(pgid: int) -> bool:
    return _killpg(pgid, 0)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.perf_counter_ns() + int(timeout_s * 1e9)
    while _group_alive(pgid):
        if time.perf_counter_ns() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate_group(proc: subprocess.Popen, grace_s: float) -> None:
    pgid = proc.pid  # start_new_session=True: the launcher leads its own group
    if proc.poll() is None:
        _killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _killpg(pgid, signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
    # Children left in the group after the launcher itself exited (shards, the router).
    if _group_alive(pgid):
        _killpg(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, grace_s):
            _killpg(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, 5.0)


# ---------------------------------------------------------------------------------------------
# Nothing left behind: atexit and signal handlers


_RUNNING: set[Any] = set()
_HOOKS_LOCK = threading.Lock()
_ATEXIT_DONE = False
_SIGNALS_DONE = False


def stop_all(grace_s: float = DEFAULT_GRACE_S) -> None:
    """Stop every server started by this process (called at exit and on SIGTERM/SIGHUP)."""
    for launch in list(_RUNNING):
        try:
            launch.terminate(grace_s)
        except Exception:  # noqa: BLE001 - best effort while exiting
            pass


def _on_signal(previous: Any, signum: int, frame: Any) -> None:
    stop_all()
    if callable(previous):
        previous(signum, frame)
        return
    raise SystemExit(128 + signum)


def _install_exit_hooks() -> None:
    """atexit always; SIGTERM/SIGHUP handlers when called from the main thread (once)."""
    global _ATEXIT_DONE, _SIGNALS_DONE
    with _HOOKS_LOCK:
        if not _ATEXIT_DONE:
            atexit.register(stop_all)
            _ATEXIT_DONE = True
        if _SIGNALS_DONE or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)
            if previous in (signal.SIG_IGN, None):
                continue
            signal.signal(sig, lambda signum, frame, prev=previous: _on_signal(prev, signum, frame))
        _SIGNALS_DONE = True


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
    simulator_args: extra flags for the simulated server when it stands in for TGI (e.g.
                   ``["--tokenizer", name]`` so that it counts prompt tokens exactly)
    """

    def __init__(self, log_dir: Path | str | None = None, env: dict[str, str] | None = None,
                 launcher_cmd: str = LAUNCHER, *, grace_s: float = DEFAULT_GRACE_S,
                 allow_trust_remote_code: bool | None = None,
                 fallback_to_simulator: bool = True, simulator_args: list[str] | None = None,
                 poll_interval_s: float = POLL_INTERVAL_S):
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.env = dict(os.environ if env is None else env)
        self.launcher_cmd = launcher_cmd
        self.grace_s = grace_s
        if allow_trust_remote_code is None:
            from .access import allow_trust_remote_code as allowed_by_env

            allow_trust_remote_code = allowed_by_env(os.environ)
        self.allow_trust_remote_code = allow_trust_remote_code
        self.fallback_to_simulator = fallback_to_simulator
        self.simulator_args = list(simulator_args or [])
        self.poll_interval_s = poll_interval_s
        self._start_lock = threading.RLock()
        self._launch: _Launch | None = None        # the current process (None when stopped)
        self._last: _Launch | None = None          # the latest one, kept for its log
        self._handle: ServerHandle | None = None
        self._failure: tuple[str, str] | None = None
        self._error: ServerStartError | None = None
        self._final_phase: str | None = None       # "ready"/"failed"/"stopped" once reached
        self._on_status: Callable[[ServerStatus], None] | None = None
        self._last_notified: tuple[str, str] | None = None
        _install_exit_hooks()

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
        if launch is None:
            if self._failure is not None:
                return ServerStatus("failed", 0.0, self._failure[1], reason=self._failure[0])
            return ServerStatus("stopped", 0.0, "No server started yet.")
        phase = self._final_phase or launch.phase
        if phase == "ready" and not launch.alive():
            phase = "failed"
        reason = self._failure[0] if self._failure and phase == "failed" else None
        if phase == "failed" and self._failure:
            message = self._failure[1].split("\n", 1)[0]
        else:
            message = logs.describe_phase(phase, launch.progress)
        tail = launch.tail(1)
        return ServerStatus(
            phase=phase, elapsed_s=round(launch.elapsed_s(), 3), message=message,
            simulated=launch.simulated,
            pid=launch.pid, url=launch.settings.url, reason=reason,
            last_line=tail[0] if tail else None,
        )

    @property
    def error(self) -> ServerStartError | None:
        """The last start-up or crash error (its ``reason``, full message and ``log_tail``)."""
        return self._error

    def log_tail(self, n: int = 50) -> list[str]:
        """The last ``n`` masked lines the launcher printed (kept after it stopped)."""
        return self._last.tail(n) if self._last is not None else []

    def ensure(self, settings: ServerSettings, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               on_status: Callable[[ServerStatus], None] | None = None,
               cancel: threading.Event | None = None) -> ServerHandle:
        """Start (or reuse) a server with ``settings`` and wait until it is ready.

        ``on_status`` is called with a ``ServerStatus`` on every phase change and, until the
        server is ready, every log line (possibly from the output-reading thread: keep it
        quick). Setting ``cancel`` or
        calling ``stop()`` from another thread stops the start-up. Raises ``ConfigError`` for
        invalid settings and ``ServerStartError`` when the server cannot be made ready (the
        process is stopped then).
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
                if err.reason == "cancelled":
                    self._stop_launch(launch, final="stopped")
                else:
                    self._fail(launch, err.reason, str(err))
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
            if self._last is not None and self._failure is not None:
                raise ServerStartError(self._failure[0], self._failure[1], self._last.tail(40))
            raise ServerStartError("exited", "No TGI server is running: start one first.")
        if launch.alive() and wait_s > 0 and not self._answers(launch):
            launch.wait(wait_s)
        if launch.alive():
            return
        launch.drain()
        failure = logs.explain_crash(launch.tail(), launch.returncode)
        self._fail(launch, failure.reason, failure.message)
        self._error = ServerStartError(failure.reason, failure.message, launch.tail(40))
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
        _RUNNING.discard(launch)
        launch.hand_over(self._child_env())
        _save_state(launch)
        self._launch = None
        self._handle = None
        return handle

    # -- internals ------------------------------------------------------------------------
    def _adopt(self, settings: ServerSettings) -> ServerHandle | None:
        """Reuse a server that an earlier run kept (``--keep-server``) on this port.

        Trusted only when its state file is ours, its pid leads its own process group with
        ``--port PORT`` on its command line, and it answers ``/info`` with the saved model.
        Same settings: reused. Other settings: stopped (the caller then starts a new one).
        """
        state = _load_state(settings.port)
        if state is None:
            return None
        saved = ServerSettings.from_dict(state["settings"])
        kept = _Adopted(state, saved)
        if not (kept.alive() and _is_our_server(kept.pid, saved.port)):
            _forget_state(saved.port)
            return None
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            info = self._probe(client, saved.url)
        if info is None or not _same_model(info, saved.model_id):
            _forget_state(saved.port)  # not answering as ours: leave that process alone
            return None
        if saved != settings:
            kept.terminate(self.grace_s)
            return None
        _RUNNING.add(kept)
        self._failure = self._error = None
        self._last_notified = None
        self._launch = self._last = kept
        kept.simulated = kept.simulated or info.get("simulated") is True
        self._handle = ServerHandle(url=settings.url, settings=settings,
                                    simulated=kept.simulated, pid=kept.pid, info=info,
                                    log_path=kept.log_path, reused=True)
        self._final_phase = "ready"
        self._notify(force=True)
        return self._handle

    def _start(self, settings: ServerSettings) -> _Launch:
        env = self._child_env()
        args = launcher_args(settings)
        program = shutil.which(self.launcher_cmd, path=env.get("PATH"))
        simulated = program is None
        if simulated:
            if not self.fallback_to_simulator:
                raise ServerStartError("exited", f"{self.launcher_cmd} is not installed here "
                                                 "(not found on PATH).")
            argv = [sys.executable, "-m", "benchmark.simulator", *args, *self.simulator_args]
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        else:
            argv = [program, *args]
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        log_dir = self.log_dir or Path(tempfile.gettempdir()) / "tgi-benchmark-logs"
        log_path = log_dir / f"tgi-{stamp}-port{settings.port}.log"
        self._failure = None
        self._error = None
        self._final_phase = None
        self._last_notified = None
        _install_exit_hooks()
        launch = _Launch(argv, env, settings, simulated=simulated, log_path=log_path,
                         secrets=self.secrets, on_change=self._notify)
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
                self._failure = ("port_in_use", message)
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
            info = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def _answers(self, launch: _Launch) -> bool:
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                return client.get(f"{launch.settings.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _probe_reuse(self, launch: _Launch) -> bool:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            info = self._probe(client, launch.settings.url)
        return info is not None and _same_model(info, launch.settings.model_id)

    def _wait_ready(self, launch: _Launch, timeout_s: float,
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

    def _fail(self, launch: _Launch, reason: str, message: str) -> None:
        self._failure = (reason, message)
        self._stop_launch(launch, final="failed")

    def _stop_launch(self, launch: _Launch, *, final: str, grace_s: float | None = None) -> None:
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


# ---------------------------------------------------------------------------------------------
# The CLI's --launch: flags, and start -> run -> stop

# The flag each ServerSettings field is typed with (to word ConfigErrors like argparse does).
SERVER_FLAG_FOR_FIELD = {
    "model_id": "--model-id", "revision": "--revision", "quantize": "--quantize",
    "dtype": "--dtype", "num_shard": "--num-shard", "max_input_tokens": "--max-input-tokens",
    "max_total_tokens": "--max-total-tokens", "max_batch_size": "--max-batch-size",
    "max_batch_prefill_tokens": "--max-batch-prefill-tokens",
    "max_concurrent_requests": "--max-concurrent-requests",
    "trust_remote_code": "--trust-remote-code", "port": "--port", "hostname": "--hostname",
    "timeout_s": "--server-timeout",
}
# Flags that mean nothing without --launch: (dest, flag, default).
_LAUNCH_ONLY = (
    ("model_id", "--model-id", None), ("quantize", "--quantize", None), ("dtype", "--dtype", None),
    ("num_shard", "--num-shard", None), ("max_input_tokens", "--max-input-tokens", None),
    ("max_total_tokens", "--max-total-tokens", None), ("max_batch_size", "--max-batch-size", None),
    ("max_batch_prefill_tokens", "--max-batch-prefill-tokens", None),
    ("max_concurrent_requests", "--max-concurrent-requests", None),
    ("trust_remote_code", "--trust-remote-code", False), ("port", "--port", None),
    ("hostname", "--hostname", None), ("server_timeout", "--server-timeout", None),
    ("server_log_dir", "--server-log-dir", None), ("keep_server", "--keep-server", False),
)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launch`` and the launcher's flags (TGI's names) to the benchmark's parser.

    The benchmark's ``--revision`` (the tokenizer's) is also the model's revision when
    launching. ``--tokenizer-name`` becomes optional: with ``--launch`` it defaults to
    ``--model-id``; without it the run's own validation still asks for it.
    """
    for action in parser._actions:
        if "--tokenizer-name" in action.option_strings:
            action.required = False
            action.help = (action.help or "") + " (with --launch: defaults to --model-id)"
    group = parser.add_argument_group(
        "launch a TGI server (--launch)",
        "Start text-generation-launcher (or the simulated server when it is not installed), "
        "wait until it is ready, benchmark it, then stop it. HF_TOKEN is passed to it through "
        "the environment.")
    group.add_argument("--launch", action="store_true",
                       help="start a TGI server with the flags below and benchmark it")
    group.add_argument("--model-id", metavar="ID",
                       help="Hub id (org/name) or local folder of the model")
    if not any("--revision" in a.option_strings for a in parser._actions):
        group.add_argument("--revision", help="model revision (branch, tag or commit)")
    group.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="quantization method")
    group.add_argument("--dtype", choices=DTYPE_CHOICES,
                       help="weights' data type (not with --quantize)")
    group.add_argument("--num-shard", metavar="N", help="number of GPUs to shard the model over")
    group.add_argument("--max-input-tokens", metavar="N",
                       help="longest prompt the server accepts")
    group.add_argument("--max-total-tokens", metavar="N",
                       help="longest prompt + generated tokens of one request")
    group.add_argument("--max-batch-size", metavar="N", help="most requests in one batch")
    group.add_argument("--max-batch-prefill-tokens", metavar="N",
                       help="most prompt tokens processed in one prefill")
    group.add_argument("--max-concurrent-requests", metavar="N",
                       help="requests the router accepts at once (more get HTTP 429)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run code from the model repository (only for models you trust)")
    group.add_argument("--port", metavar="PORT",
                       help=f"server port (default {DEFAULT_SERVER_PORT})")
    group.add_argument("--hostname", metavar="HOST",
                       help=f"address the server listens on (default {DEFAULT_SERVER_HOST})")
    group.add_argument("--server-timeout", metavar="S",
                       help=f"seconds to wait until the server is ready (default "
                            f"{DEFAULT_TIMEOUT_S:g}: downloads are slow)")
    group.add_argument("--server-log-dir", metavar="DIR",
                       help="folder for the launcher's (masked) log (default: a temporary folder)")
    group.add_argument("--keep-server", action="store_true",
                       help="leave the server running after the benchmark")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Validated ``ServerSettings`` from parsed flags (``--trust-remote-code`` is explicit)."""
    from .config import parse_int
    from .errors import ConfigError

    if not getattr(args, "model_id", None):
        raise ConfigError("model_id", "--launch needs --model-id: a Hub id such as "
                                      "org/model-name, or a local folder.")

    def number(name: str, minimum: int = 1) -> int | None:
        value = getattr(args, name, None)
        return None if value is None else parse_int(name, value, minimum=minimum)

    settings = ServerSettings(
        model_id=args.model_id, revision=getattr(args, "revision", None),
        quantize=args.quantize, dtype=args.dtype, num_shard=number("num_shard"),
        max_input_tokens=number("max_input_tokens"), max_total_tokens=number("max_total_tokens"),
        max_batch_size=number("max_batch_size"),
        max_batch_prefill_tokens=number("max_batch_prefill_tokens"),
        max_concurrent_requests=number("max_concurrent_requests"),
        trust_remote_code=bool(args.trust_remote_code),
        port=DEFAULT_SERVER_PORT if args.port is None else parse_int("port", args.port),
        hostname=args.hostname or DEFAULT_SERVER_HOST,
    )
    return settings.validate(allow_trust_remote_code=True)


def launch_from_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int | None:
    """The CLI's hook: None without ``--launch``; else start, benchmark, stop; the exit code.

    Flag errors exit 2 through ``parser.error`` (before anything is started). The run's
    folder defaults to a fresh ``results/<run id>`` so that a crash can be recorded in it.
    """
    from . import cli, results
    from .config import DEFAULT_URL
    from .errors import ConfigError

    if not args.launch:
        for dest, flag, default in _LAUNCH_ONLY:
            if getattr(args, dest, default) not in (default, None):
                parser.error(f"argument {flag}: only used with --launch (add --launch to start "
                             "a TGI server and benchmark it, or drop this flag).")
        return None
    if args.url != DEFAULT_URL:
        parser.error("argument --url: --launch benchmarks the server it starts; drop --url "
                     "(or drop --launch to benchmark a server that is already running).")
    try:
        settings = settings_from_args(args)
        timeout_s = DEFAULT_TIMEOUT_S if args.server_timeout is None else parse_float(
            "timeout_s", args.server_timeout, minimum=0.0, exclusive_minimum=True)
    except ConfigError as err:
        flag = SERVER_FLAG_FOR_FIELD.get(err.field)
        parser.error(f"argument {flag}: {err.message}" if flag else err.message)
    args.url = settings.url
    args.tokenizer_name = args.tokenizer_name or settings.model_id
    if not args.output_dir:
        args.output_dir = str(results.default_output_dir(settings.model_id))
    try:
        config = cli.config_from_args(args)
    except ConfigError as err:
        cli.usage_error(parser, err)

    def run(handle: ServerHandle, manager: ServerManager) -> int:
        return cli.run_cli(config, args, parser, server=settings.to_dict())

    def on_crash(err: ServerStartError) -> None:
        _record_crash(Path(args.output_dir), err)

    manager = ServerManager(log_dir=args.server_log_dir, allow_trust_remote_code=True,
                            simulator_args=["--tokenizer", args.tokenizer_name])
    return launch_and_run(settings, run, timeout_s=timeout_s, keep=args.keep_server,
                          manager=manager, on_crash=on_crash)


def _record_crash(folder: Path, err: ServerStartError) -> None:
    """Add the launcher's explanation (with its last log lines) to a failed run's files."""
    from .errors import BenchmarkError
    from .results import RunResult

    try:
        result = RunResult.load(folder)
    except BenchmarkError:
        return  # the run never started: nothing was saved
    if result.status != "failed":
        return
    result.message = redact(f"{result.message or ''} {err}".strip())
    result.save(folder)


class _StartupInterrupted(BaseException):
    """SIGTERM during start-up, turned into an exception so that the server is stopped."""


def _print_status(out: Any) -> Callable[[ServerStatus], None]:
    seen: list[str] = []

    def show(status: ServerStatus) -> None:
        text = status.message
        if status.phase == "failed" or (seen and seen[-1] == text):
            return
        seen.append(text)
        label = " (simulated)" if status.simulated else ""
        if status.phase == "stopped":
            print(f"[server]{label} Stopped.", file=out, flush=True)
            return
        print(f"[server {status.elapsed_s:6.1f} s]{label} {text}", file=out, flush=True)

    return show


def launch_and_run(settings: ServerSettings, run: Callable[[ServerHandle, ServerManager], int],
                   *, timeout_s: float = DEFAULT_TIMEOUT_S, keep: bool = False,
                   log_dir: Path | str | None = None, manager: ServerManager | None = None,
                   on_crash: Callable[[ServerStartError], None] | None = None,
                   out: Any = None) -> int:
    """Start (or reuse) the server, call ``run(handle, manager)``, then stop it unless ``keep``.

    Returns ``run``'s exit code; 1 when the server cannot start or died during the run (the
    explanation is printed and passed to ``on_crash``); 130 when start-up is interrupted by
    Ctrl-C or SIGTERM (the server is stopped).
    """
    out = out if out is not None else sys.stderr
    manager = manager or ServerManager(log_dir=log_dir, allow_trust_remote_code=True)
    previous = _interrupt_on_sigterm()
    try:
        try:
            handle = manager.ensure(settings, timeout_s=timeout_s, on_status=_print_status(out))
        except (KeyboardInterrupt, _StartupInterrupted):
            manager.stop()
            print("Start-up interrupted: the server was stopped.", file=out, flush=True)
            return 130
        except ServerStartError as err:
            print(f"error: {err}", file=out, flush=True)
            if err.log_tail and err.reason not in ("exited", "crashed"):
                print("Last lines of the server's log:", file=out)
                for line in err.log_tail[-15:]:
                    print(f"  {line}", file=out)
            if manager.log_path is not None:
                print(f"Full log: {manager.log_path}", file=out, flush=True)
            return 1
        finally:
            _restore_signal(previous)
        label = "simulated server" if handle.simulated else "TGI server"
        if handle.reused:
            print(f"Reusing the {label} already running with these settings.", file=out)
        print(f"Benchmarking the {label} at {handle.url} (model {handle.settings.model_id}, "
              f"pid {handle.pid}; log {handle.log_path}).", file=out, flush=True)
        code = run(handle, manager)
        try:
            manager.check_alive(wait_s=0.0 if code == 0 else 10.0)
        except ServerStartError as err:
            print(f"error: {err}", file=out, flush=True)
            if on_crash is not None:
                on_crash(err)
            code = code or 1
        return code
    finally:
        if keep and manager.handle is not None:
            kept = manager.keep()
            if kept is not None:
                print(f"The server keeps running at {kept.url} (pid {kept.pid}; log "
                      f"{kept.log_path}). Stop it with: kill -TERM -- -{kept.pid}",
                      file=out, flush=True)
        else:
            manager.stop()


def _interrupt_on_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise _StartupInterrupted()

    return signal.signal(signal.SIGTERM, handler)


def _restore_signal(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# The relay behind --keep-server: ``python -m benchmark.launcher --relay LOG``


def _relay_main(argv: list[str]) -> int:
    """Copy stdin (a kept server's output) into LOG, masked line by line, until it ends."""
    if len(argv) != 2 or argv[0] != "--relay":
        print("usage: python -m benchmark.launcher --relay LOGFILE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    secrets = [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]
    pending = b""
    with open(argv[1], "a", encoding="utf-8") as log:
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            lines, pending = _split_lines(pending + chunk)
            for raw in lines:
                line = mask_line(raw, secrets)
                if line:
                    log.write(line + "\n")
                    log.flush()
        if pending and mask_line(pending, secrets):
            log.write(mask_line(pending, secrets) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_relay_main(sys.argv[1:]))
