"""Waiting for an instant (the rate mode's send times): never returns before it, on the
timerfd path (Linux) and on the event loop's own timer, with asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
import uvloop

from benchmark.core import clock

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(coro, loop_name: str):
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(coro)


async def woken_after(offsets_ms: list[float]) -> list[int]:
    """Wait for instants ``offsets_ms`` from now, together; ns each returned past its instant."""
    start = time.perf_counter_ns()
    instants = [start + int(ms * 1e6) for ms in offsets_ms]

    async def one(instant: int) -> int:
        await clock.wait_until(instant)
        return time.perf_counter_ns() - instant

    return await asyncio.gather(*(one(i) for i in instants))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "loop-timer"])
def test_a_wait_never_ends_before_its_instant(loop_name, timerfd, monkeypatch):
    if not timerfd:
        monkeypatch.setattr(clock, "_TIMER", None)
    # Instants closer than the busy turn, inside it, and beyond it; two waits at once.
    late = run(woken_after([0.1, 0.4, 1.5, 3.0, 12.0, 12.0, 30.0]), loop_name)
    assert all(ns >= 0 for ns in late), late


def test_an_instant_already_past_returns_without_sleeping(monkeypatch):
    async def no_sleep(*args):
        raise AssertionError("slept for an instant already past")

    monkeypatch.setattr(clock.asyncio, "sleep", no_sleep)
    monkeypatch.setattr(clock, "_timerfd_sleep", no_sleep)
    run(clock.wait_until(time.perf_counter_ns() - 5_000_000), "uvloop")


def test_the_wait_sleeps_on_a_timerfd_on_linux_and_closes_each():
    assert clock.precise_timer() == sys.platform.startswith("linux")
    if clock.precise_timer():
        before = len(os.listdir("/proc/self/fd"))
        run(woken_after([3.0, 5.0, 5.0]), "uvloop")
        assert len(os.listdir("/proc/self/fd")) == before
