"""Starting many requests at once without blinding the event loop.

Building and sending one request costs the client ~0.1-0.4 ms of CPU in aiohttp. When many
requests start in the same turn of the event loop (a burst of completions in concurrency mode:
every user whose stream ended in one decode step starts its next request), the loop runs all
those starts back to back before it looks at its sockets again: 250 starts held it 30-60 ms, and a first token that arrived meanwhile was read, and
stamped, that much later (issue 12: 77-156 of 768 requests more than 20 ms off at 256 users).

``StartPacer`` cuts such a burst into slices: in one turn of the loop, starts go ahead until
``budget_ns`` of time has passed since the first of them; the rest wait (in order) for a later
turn, so the loop reads its sockets, and stamps what arrived, between slices. The wait happens
before the request is sent, after it was scheduled: it is counted as dispatch lag, never as
server latency. The concurrency pattern uses it; the rate mode builds each request ahead of
its send time instead (``clients.HeldBody``).

    pacer = StartPacer()
    await pacer.turn()          # returns at once, or in a later turn of the loop
    await client.send(...)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["StartPacer", "START_BUDGET_NS"]

START_BUDGET_NS = 1_000_000  # at most ~1 ms of request starts between two looks at the sockets
FIRST_BATCH = 8
MAX_BATCH = 4096


class StartPacer:
    """Lets request starts run for at most ``budget_ns`` per turn of the event loop; the others
    wait in order, in batches sized to what fitted in one turn."""

    def __init__(self, budget_ns: int = START_BUDGET_NS) -> None:
        self.budget_ns = budget_ns
        self._until = 0                     # end of the open slice (perf_counter_ns)
        self._fresh = True                  # the loop has turned since the slice opened
        self._admitted = 0                  # starts let through in the open slice
        self._size = FIRST_BATCH            # how many waiting starts to wake at once
        self._woken = 0                     # of the latest batch, how many have not run yet
        self._requeued = 0                  # of the latest batch, how many went back in line
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Starts held for a later turn now."""
        return len(self._waiting)

    async def turn(self) -> None:
        """Return when this start may go: at once within this turn's budget, else in a later
        turn, after the starts that were waiting before it."""
        loop = asyncio.get_running_loop()
        woken = False
        while True:
            if woken or not (self._waiting or self._woken):  # else others are ahead
                now = time.perf_counter_ns()
                if self._fresh:
                    self._open(loop, now)
                if now < self._until or not self._admitted:  # the first of a turn always goes
                    self._admitted += 1
                    if woken and not self._woken and self._waiting:
                        self._size = min(2 * self._size, MAX_BATCH)  # the whole batch fitted
                        self._wake()
                    return
                if woken:
                    self._size = max(1, self._admitted)  # the turn was full: that many fit
            waiter: asyncio.Future[None] = loop.create_future()
            if woken:  # back in line ahead of those that never ran, in its batch's order
                self._waiting.insert(self._requeued, waiter)
                self._requeued += 1
            else:
                self._waiting.append(waiter)
            if not self._woken:
                self._wake()  # they run in the next turn, after the loop has read its sockets
            try:
                if waiter.done():  # woken by its own call: it still waits for the next turn
                    await asyncio.sleep(0)
                else:
                    await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # woken, then cancelled
                    self._woken -= 1
                    if not self._woken and self._waiting:
                        self._wake()
                raise
            woken = True
            self._woken -= 1

    def _open(self, loop: asyncio.AbstractEventLoop, now: int) -> None:
        """A new slice of ``budget_ns``; ``_fresh`` again once the loop has turned."""
        self._fresh = False
        self._until = now + self.budget_ns
        self._admitted = 0
        loop.call_soon(self._turned)

    def _turned(self) -> None:
        self._fresh = True

    def _wake(self) -> None:
        """Wake the first ``_size`` waiting starts (they run in the next turn of the loop)."""
        self._requeued = 0
        while self._waiting and self._woken < self._size:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._woken += 1
