"""Waiting for an instant of ``time.perf_counter_ns()`` inside the event loop.

    await wait_until(instant_ns)     # returns at or after instant_ns, never before

Event-loop timers wake up to a millisecond early or late (uvloop and libuv count in
milliseconds), so the wait is in two parts: a sleep that ends a little before the instant,
then a busy turn that yields to the event loop (``asyncio.sleep(0)``) until the instant is
reached; other tasks keep running meanwhile (responses keep being read), and the wait ends
within one turn of the loop after the instant.

On Linux the sleep is a ``timerfd`` on the monotonic clock (the clock of ``perf_counter_ns``)
watched by the event loop, which wakes it to within the kernel's wake-up time (tens to a few
hundred microseconds on a virtual machine), so the busy turn is only the last ``SPIN_NS``.
Elsewhere it is the loop's own timer, and the busy turn the last ``COARSE_SPIN_NS``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time
from typing import Any, Callable

__all__ = ["SPIN_NS", "COARSE_SPIN_NS", "wait_until", "precise_timer"]

# The busy turn after a timerfd wake-up (covers the kernel's wake-up time).
SPIN_NS = 500_000
# The busy turn after the event loop's own timer (it wakes up to a millisecond off).
COARSE_SPIN_NS = 2_000_000


async def wait_until(instant_ns: int) -> None:
    """Return once ``perf_counter_ns()`` has reached ``instant_ns`` (at once when it has)."""
    perf_ns = time.perf_counter_ns
    left = instant_ns - perf_ns()
    if left > SPIN_NS and _TIMER is not None:
        await _timerfd_sleep(instant_ns - SPIN_NS)
    while (left := instant_ns - perf_ns()) > 0:
        await asyncio.sleep((left - COARSE_SPIN_NS) / 1e9 if left > COARSE_SPIN_NS else 0)


def precise_timer() -> bool:
    """True when ``wait_until`` sleeps on a timerfd (Linux), False on the loop's timer."""
    return _TIMER is not None


# ---------------------------------------------------------------------------------------------
# timerfd: os.timerfd_create on Python 3.13+, libc through ctypes before


def _timerfd_functions() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    """(create, arm at an absolute monotonic ns) for a non-blocking timerfd, or None."""
    if sys.platform != "linux" or "CLOCK_MONOTONIC" not in time.get_clock_info(
            "perf_counter").implementation:
        return None
    if hasattr(os, "timerfd_create"):  # pragma: no cover - Python 3.13+
        flags = os.TFD_NONBLOCK | os.TFD_CLOEXEC  # type: ignore[attr-defined]

        def create() -> int:
            return os.timerfd_create(time.CLOCK_MONOTONIC, flags=flags)  # type: ignore

        def arm(fd: int, instant_ns: int) -> None:
            os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME,  # type: ignore[attr-defined]
                                  initial=instant_ns)
        return create, arm
    return _ctypes_timerfd()


def _ctypes_timerfd() -> tuple[Callable[[], int], Callable[[int, int], None]] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        create_fd, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

    create_fd.argtypes = [ctypes.c_int, ctypes.c_int]
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(Itimerspec), ctypes.c_void_p]
    flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK and TFD_CLOEXEC have these values

    def create() -> int:
        fd = create_fd(time.CLOCK_MONOTONIC, flags)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        return fd

    def arm(fd: int, instant_ns: int) -> None:
        spec = Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(max(instant_ns, 1), 1_000_000_000)
        if settime(fd, 1, ctypes.byref(spec), None) < 0:  # 1: TFD_TIMER_ABSTIME
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    return create, arm


def _fire(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def _timerfd_sleep(instant_ns: int) -> None:
    """Sleep until ``instant_ns`` on a timerfd watched by the running loop (the loop's own
    timer when the loop cannot watch it)."""
    assert _TIMER is not None
    create, arm = _TIMER
    loop = asyncio.get_running_loop()
    fd = create()
    try:
        arm(fd, instant_ns)
        done: asyncio.Future[None] = loop.create_future()
        try:
            loop.add_reader(fd, _fire, done)
        except NotImplementedError:  # pragma: no cover - a loop without add_reader
            await asyncio.sleep(max(0, instant_ns - time.perf_counter_ns()) / 1e9)
            return
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


_TIMER: Any = _timerfd_functions()
