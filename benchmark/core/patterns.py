"""Load patterns: they decide only *when* requests go out, never how (no HTTP here).

    pattern = Rounds(batch_size=4, runs=5, warmups=1)       # TGI's tool
    for round_ in pattern.rounds():                          # warm-ups first
        send all of round_.slots at the same moment, wait for all of them

    pattern = Concurrency(users=8, duration_s=60)            # sustained load
    pattern.start(now_ns)
    while (slot := pattern.next_slot(user, now_ns)) is not None:
        send slot, wait for it                               # each user loops like this

A ``Slot`` names a request: its step (batch size / users), run (round index, or user index)
and request (index in the round, or the user's sequence number) plus whether it is a warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

__all__ = ["Slot", "Round", "Rounds", "Concurrency", "pattern_for"]


@dataclass(frozen=True)
class Slot:
    step: int
    run: int
    request: int
    warmup: bool = False


@dataclass(frozen=True)
class Round:
    """One batch sent at once: ``run`` counts warm-up and measured rounds separately (from 1)."""

    step: int
    run: int
    warmup: bool
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class Rounds:
    """``warmups`` then ``runs`` rounds of ``batch_size`` simultaneous requests."""

    batch_size: int
    runs: int
    warmups: int = 0

    def rounds(self) -> Iterator[Round]:
        for warmup, count in ((True, self.warmups), (False, self.runs)):
            for run in range(1, count + 1):
                slots = tuple(Slot(self.batch_size, run, request, warmup)
                              for request in range(1, self.batch_size + 1))
                yield Round(self.batch_size, run, warmup, slots)

    @property
    def total(self) -> int:
        return self.batch_size * (self.runs + self.warmups)


class Concurrency:
    """``users`` virtual users, each sending its next request as soon as the last one ended,
    until ``duration_s`` has passed since ``start`` or ``requests`` requests went out (both
    bounds apply when both are given)."""

    def __init__(self, users: int, *, duration_s: float | None = None,
                 requests: int | None = None):
        if duration_s is None and requests is None:
            raise ValueError("Concurrency needs a duration or a number of requests")
        self.users = users
        self.duration_s = duration_s
        self.requests = requests
        self.issued = 0
        self._per_user = [0] * users
        self._deadline_ns: int | None = None

    def start(self, now_ns: int) -> None:
        self.issued = 0
        self._per_user = [0] * self.users
        self._deadline_ns = (None if self.duration_s is None
                             else now_ns + int(self.duration_s * 1e9))

    def next_slot(self, user: int, now_ns: int) -> Slot | None:
        """The next request of ``user`` (0-based), or None when this user should stop."""
        if self.requests is not None and self.issued >= self.requests:
            return None
        if self._deadline_ns is not None and now_ns >= self._deadline_ns:
            return None
        self.issued += 1
        self._per_user[user] += 1
        return Slot(self.users, user + 1, self._per_user[user], False)

    @property
    def total(self) -> int | None:
        return self.requests

    def elapsed_s(self, now_ns: int) -> float | None:
        if self._deadline_ns is None or self.duration_s is None:
            return None
        return max(0.0, self.duration_s - (self._deadline_ns - now_ns) / 1e9)


def pattern_for(mode: str, step: int, *, runs: int, warmups: int,
                duration_s: float | None = None,
                requests: int | None = None) -> Rounds | Concurrency:
    """The pattern of one step (a batch size in rounds mode, a number of users otherwise)."""
    if mode == "rounds":
        return Rounds(step, runs, warmups)
    return Concurrency(step, duration_s=duration_s, requests=requests)
