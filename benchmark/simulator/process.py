"""The simulator as a child process: start it on a free port, read its URL, stop it.

    sim = SimulatorProcess(["--trace", "trace.jsonl", "--decode-base-ms", "10"])
    url = sim.start()        # waits for "Simulated TGI listening on http://HOST:PORT"
    ...
    sim.stop()               # SIGTERM, then SIGKILL after a grace period

``sim.lines`` keeps the process's output (start-up log, warnings) for error messages and tests.
A separate process, not a thread, so that the simulator and a client measuring it do not share
one interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from ..errors import ServerStartError
from ..children import PACKAGE_ROOT, with_package_path

READY_LINE = "Simulated TGI listening on "


class SimulatorProcess:
    """``python -m benchmark.simulator --port 0 <flags>`` in a child process."""

    def __init__(self, flags: list[str], *, keep_lines: int | None = None):
        self.argv = [sys.executable, "-m", "benchmark.simulator", "--port", "0", *flags]
        self.keep_lines = keep_lines
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self, timeout_s: float = 60.0) -> str:
        """Start it and return its URL; ``ServerStartError`` (with its last lines) if it fails."""
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, env=with_package_path(os.environ),
                                     cwd=str(PACKAGE_ROOT))
        ready = threading.Event()
        threading.Thread(target=self._read, args=(ready,), name="simulator-log",
                         daemon=True).start()
        deadline = time.perf_counter_ns() + int(timeout_s * 1e9)
        while not ready.wait(0.05):
            if time.perf_counter_ns() > deadline:
                break
        if not self.url:
            self.stop()
            raise ServerStartError(
                "no-ready-line", "The simulated server did not start. Check that "
                "`python -m benchmark.simulator` runs on this machine.", self.lines[-20:])
        return self.url

    def _read(self, ready: threading.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.keep_lines is not None and len(self.lines) > self.keep_lines:
                del self.lines[0]
            if line.startswith(READY_LINE) and not self.url:
                self.url = line[len(READY_LINE):].strip()
                ready.set()
        ready.set()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (the simulator ends its streams cleanly), then SIGKILL. Idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
