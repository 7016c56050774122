"""Ctrl-C, SIGTERM and SIGHUP as a flag, for work that must stop cleanly.

    cancel = threading.Event()
    with cancel_on_signals(cancel):
        do_work(cancel)          # checks cancel.is_set() between steps, then cleans up

While the block runs (on the main thread), SIGINT, SIGTERM and SIGHUP (a closed terminal) set
``cancel`` instead of raising wherever the main thread happens to be (inside a lock, an HTTP
call, a clean-up). A second Ctrl-C raises ``KeyboardInterrupt`` at once, for a user who will not
wait. The previous handlers come back when the block ends. Off the main thread it does nothing:
Python only runs signal handlers there. Used by the engine (a run saves what it measured) and
by ``--launch`` (a server that is starting is stopped).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

__all__ = ["cancel_on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM / SIGHUP set ``cancel`` inside the block; a second SIGINT interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
