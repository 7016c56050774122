"""How our own child processes start: ``python -m benchmark...`` with this copy of the package
on the path (the simulated server, the log relay, the engine run by the app).

A leaf: the simulator, the server manager and the app all start children this way;
``die_with_parent`` makes a child stop when the process that started it dies (even by SIGKILL).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Callable, Mapping

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def with_package_path(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` whose PYTHONPATH starts with ``PACKAGE_ROOT`` (the folder holding
    ``benchmark``), so that a ``python -m benchmark...`` child imports this copy."""
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}


def die_with_parent(sig: int = 15) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets signal ``sig`` (default
    SIGTERM, which our children answer by saving what they measured and stopping) when the
    parent dies, even by SIGKILL. Linux only (``prctl(PR_SET_PDEATHSIG)``); None elsewhere.

    The signal comes when the *thread* that started the child ends: start children from a
    thread that lives as long as the process (the app's queue worker, the main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    # Looked up here, in the parent: between fork and exec the child only makes two calls
    # (no loader or import locks that another thread of the parent might have held).
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:   # the parent died before prctl: act as if just now
            os.kill(os.getpid(), sig)

    return preexec


_PR_SET_PDEATHSIG = 1
