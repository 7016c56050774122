"""Small helpers the tests import: the repository root, the tiny tokenizer's words, free ports,
waiting for a condition or for a process to end, reading a CSV."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

from benchmark.core.prompts import TINY_WORDS as WORDS  # noqa: F401  (tests train tokenizers on it)

ROOT = Path(__file__).resolve().parents[2]
FAKE_LAUNCHER_DIR = ROOT / "tests" / "support" / "fake_launcher"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def gone(pid: int | None) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    import psutil

    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
