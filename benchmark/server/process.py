"""The processes behind ``launcher.ServerManager`` (internal): a launched launcher and the
thread reading its output, a kept server found again, process-group termination, the state
files of kept servers, the exit hooks, and the relay that keeps a kept server's log.

    python -m benchmark.server.relay --relay LOGFILE   # stdin -> masked lines -> LOGFILE
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import logs
from .. import children
from ..children import with_package_path
from ..config import ServerSettings
from ..core.results import atomic_write
from ..errors import ServerStartError, redact

DEFAULT_GRACE_S = 10.0
TAIL_LINES = 2000
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
MAX_PENDING_BYTES = 65536


def split_lines(data: bytes, dropping: bool = False) -> tuple[list[bytes], bytes, bool]:
    """Complete lines (\\n, \\r\\n or \\r: progress bars), the unfinished rest, and whether
    the rest of an overlong line is being dropped.

    A line longer than ``MAX_PENDING_BYTES`` is stored as its head only (it is cut to
    ``launcher_logs.MAX_LINE_CHARS`` anyway); the remainder up to the next line break is
    dropped, never stored as a line of its own, so a secret cut in two there cannot leave its
    second half in the log. Pass the returned flag back with the next chunk.
    """
    parts = _LINE_BREAK.split(data)
    pending = parts.pop()
    if dropping:
        if not parts:
            return [], b"", True
        parts.pop(0)  # the end of the overlong line
    if len(pending) > MAX_PENDING_BYTES:
        parts.append(pending[:MAX_PENDING_BYTES])
        return parts, b"", True
    return parts, pending, False


def mask_line(raw: bytes | str, secrets: list[str] | None = None) -> str:
    """One output line as stored: decoded, secrets masked (``errors.redact``), no colour
    codes, bounded length. Empty when the line is blank."""
    text = redact(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw,
                  secrets)
    # Again once colour codes are gone and JSON lines unwrapped (escapes, codes inside a value).
    line = _mask_cut_secrets(redact(logs.clean_line(text), secrets), secrets)
    return line if line.strip() else ""


MIN_SECRET_PIECE = 6


def _mask_cut_secrets(line: str, secrets: list[str] | None) -> str:
    """Mask the first half of a secret at the end of ``line`` and its second half at the
    start: a secret broken over two lines (wrapped output) leaves neither half readable.
    Pieces shorter than ``MIN_SECRET_PIECE`` characters are left alone."""
    for secret in secrets or []:
        for size in range(len(secret) - 1, MIN_SECRET_PIECE - 1, -1):
            if line.endswith(secret[:size]):
                line = line[:-size] + "***"
                break
        for size in range(len(secret) - 1, MIN_SECRET_PIECE - 1, -1):
            if line.startswith(secret[-size:]):
                line = "***" + line[size:]
                break
    return line


# ---------------------------------------------------------------------------------------------
# One launched process: its output reader, log buffer and phase


class Launch:
    """A started launcher process, the thread reading its output, and what that output says."""

    def __init__(self, argv: list[str], env: dict[str, str], settings: ServerSettings, *,
                 simulated: bool, log_path: Path, secrets: list[str],
                 on_change: Callable[[], None], die_with_parent: bool = False):
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
        self._handover = threading.Event()
        self._pending = b""
        self._lock = threading.Lock()
        self._on_change = on_change
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "a", encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ServerStartError(
                "exited", f"Could not write the server's log file {log_path} "
                          f"({exc.strerror or exc}). Choose a folder you can write to "
                          "(--server-log-dir on the command line).") from exc
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._log.write(f"# {stamp} $ {redact(' '.join(argv), secrets)}\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, close_fds=True,
                preexec_fn=children.die_with_parent() if die_with_parent else None,
            )
        except OSError as exc:
            self._log.close()
            raise ServerStartError(
                "exited", f"Could not start {argv[0]}: {redact(str(exc), secrets)}. Check that "
                          "it is installed and can be run.") from exc
        self.pid = self.proc.pid
        RUNNING.add(self)  # from now on the exit hooks stop it, whatever happens next
        self.reader = threading.Thread(target=self._read, name=f"tgi-log-{self.pid}", daemon=True)
        self.reader.start()

    # -- output ---------------------------------------------------------------------------
    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        fd = stream.fileno()
        pending, dropping = b"", False
        try:
            while not self._handover.is_set():
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                lines, pending, dropping = split_lines(pending + chunk, dropping)
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
        subprocess.Popen(
            [sys.executable, "-m", "benchmark.server.relay", "--relay", str(self.log_path)],
            stdin=stream, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=with_package_path(env),
            start_new_session=True, close_fds=True,
        )
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
        terminate_group(self.proc, grace_s)
        self.drain(2.0)
        RUNNING.discard(self)
        forget_state(self.settings.port, self.pid)


class Adopted:
    """A server kept running by an earlier run of this tool (``--keep-server``), found again
    through its state file: same interface as ``Launch``, but not our child process."""

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
        return pid_running(self.pid)

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
        _terminate_pgid(self.pid, grace_s)
        RUNNING.discard(self)
        forget_state(self.settings.port, self.pid)

    def hand_over(self, env: dict[str, str]) -> None:
        """Its output already goes to the relay started by the run that kept it."""


def is_our_server(pid: int, port: int) -> bool:
    """``pid`` leads its own process group and was started with ``--port PORT``."""
    try:
        if os.getpgid(pid) != pid:
            return False
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a == b"--port" and b == str(port).encode() for a, b in zip(args, args[1:]))


def pid_running(pid: int) -> bool:
    """True when ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    fields = _proc_stat_fields(pid)
    return not fields or fields[0] != "Z"


def _proc_stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, pgrp, ...),
    or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# State files of started and kept servers: <tmp>/tgi-benchmark-<uid>/server-<port>.json


def state_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"tgi-benchmark-{os.getuid()}"


def private_log_dir() -> Path:
    """The default folder of the servers' logs: ``<state folder>/logs``, made ours and closed
    to other users (0700). When that folder is someone else's or open to others (planted in
    the shared temporary folder), a fresh private temporary folder is used instead."""
    folder = state_dir() / "logs"
    try:
        folder.parent.mkdir(mode=0o700, exist_ok=True)
        folder.mkdir(mode=0o700, exist_ok=True)
        if all(_private(path) for path in (folder.parent, folder)):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="tgi-benchmark-logs-"))


def _private(path: Path) -> bool:
    info = path.lstat()
    return (info.st_uid == os.getuid() and not (info.st_mode & 0o077)
            and not path.is_symlink() and path.is_dir())


def state_path(port: int) -> Path:
    return state_dir() / f"server-{int(port)}.json"


def save_state(launch: Any, *, kept: bool) -> None:
    """Record a server started by this process (``kept=False``: it must die with it) or left
    running on purpose (``kept=True``), so that a later run can reuse or clean it up."""
    try:
        folder = state_dir()
        folder.mkdir(mode=0o700, exist_ok=True)
        data = {"pid": launch.pid, "settings": launch.settings.to_dict(),
                "simulated": launch.simulated, "log_path": str(launch.log_path),
                "kept": kept, "owner_pid": os.getpid(),
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write(state_path(launch.settings.port), json.dumps(data))
    except OSError:
        pass  # without a state file the server is simply not found again


def load_state(port: int) -> dict[str, Any] | None:
    """The state file for ``port``, if it is ours (same user, private folder) and readable."""
    path = state_path(port)
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


def forget_state(port: int, pid: int | None = None) -> None:
    data = load_state(port)
    if data is not None and (pid is None or int(data["pid"]) == pid):
        try:
            state_path(port).unlink()
        except OSError:
            pass


def killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def group_alive(pgid: int) -> bool:
    """True while a running (not zombie) process is in group ``pgid``."""
    if not killpg(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _proc_stat_fields(entry)
        if fields is not None and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.perf_counter_ns() + int(timeout_s * 1e9)
    while group_alive(pgid):
        if time.perf_counter_ns() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate_group(proc: subprocess.Popen, grace_s: float) -> None:
    pgid = proc.pid  # start_new_session=True: the launcher leads its own group
    if proc.poll() is None:
        killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            killpg(pgid, signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
    # Children left in the group after the launcher itself exited (shards, the router).
    if group_alive(pgid):
        _terminate_pgid(pgid, grace_s)


def _terminate_pgid(pgid: int, grace_s: float) -> None:
    """SIGTERM to process group ``pgid``; SIGKILL when it is not gone after ``grace_s``."""
    killpg(pgid, signal.SIGTERM)
    if not wait_group_gone(pgid, grace_s):
        killpg(pgid, signal.SIGKILL)
        wait_group_gone(pgid, 5.0)


# ---------------------------------------------------------------------------------------------
# Nothing left behind: atexit and signal handlers


RUNNING: set[Any] = set()
_HOOKS_LOCK = threading.Lock()
_ATEXIT_DONE = False
_SIGNALS_DONE = False


def stop_all(grace_s: float = DEFAULT_GRACE_S) -> None:
    """Stop every server started by this process (called at exit and on SIGTERM/SIGHUP)."""
    for launch in list(RUNNING):
        try:
            launch.terminate(grace_s)
        except Exception:  # noqa: BLE001 - best effort while exiting
            pass


def reap_orphans(grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """At start-up: stop every server an earlier process started for itself (not kept) and left
    behind when it died (SIGKILL leaves no time for the exit hooks); one sentence per server
    found, to tell the user."""
    found: list[str] = []
    try:
        files = sorted(state_dir().glob("server-*.json"))
    except OSError:
        return found
    for file in files:
        try:
            port = int(file.stem.split("-", 1)[1])
        except ValueError:
            continue
        data = load_state(port)
        if data is None or data.get("kept"):
            continue
        owner, pid = data.get("owner_pid"), int(data["pid"])
        if isinstance(owner, int) and owner != os.getpid() and pid_running(owner):
            continue   # its owner still runs and stops it itself
        if pid_running(pid) and is_our_server(pid, port):
            _terminate_pgid(pid, grace_s)
            found.append(f"A server on port {port} (process {pid}) left by an app that died "
                         f"(process {owner}) was stopped.")
        forget_state(port, pid)
    return found


def _on_signal(previous: Any, signum: int, frame: Any) -> None:
    stop_all()
    if callable(previous):
        previous(signum, frame)
        return
    raise SystemExit(128 + signum)


def install_exit_hooks() -> None:
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
