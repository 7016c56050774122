"""Load patterns: they decide only *when* requests go out, never how (no HTTP here).

    pattern = Rounds(batch_size=4, runs=5, warmups=1)       # TGI's tool
    for round_ in pattern.rounds():                          # warm-ups first
        send all of round_.slots at the same moment, wait for all of them

    pattern = Concurrency(users=8, duration_s=60)            # sustained load
    pattern.start(now_ns)
    while (slot := pattern.next_slot(user, now_ns)) is not None:
        send slot, wait for it                               # each user loops like this

    offsets = arrival_offsets(RateSchedule(rate=200, arrivals="poisson", seed=7,
                                           duration_s=30))   # open loop: send times, up front
    for i, offset in enumerate(offsets):
        send request i at step_start + offset, whether or not the earlier ones have ended

A ``Slot`` names a request: its step (batch size / users), run (round index, or user index)
and request (index in the round, or the user's sequence number) plus whether it is a warm-up.
"""

from __future__ import annotations

import math
import random
from array import array
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["Slot", "Round", "Rounds", "Concurrency", "pattern_for", "RateSchedule",
           "arrival_offsets", "step_seed"]


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
    bounds apply when both are given).

    ``names``: with worker processes, the global 0-based indexes of the users this process runs
    (its slots then name them, and the step, ``step``, is the users of the whole step)."""

    def __init__(self, users: int, *, duration_s: float | None = None,
                 requests: int | None = None, names: tuple[int, ...] | None = None,
                 step: int | None = None):
        if duration_s is None and requests is None:
            raise ValueError("Concurrency needs a duration or a number of requests")
        self.users = users
        self.names = tuple(names) if names is not None else tuple(range(users))
        self.step = step if step is not None else users
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
        return Slot(self.step, self.names[user] + 1, self._per_user[user], False)

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


# ---------------------------------------------------------------------------------------------
# Open loop: a request rate


@dataclass(frozen=True)
class RateSchedule:
    """What decides one rate step's send times (the same values give the same times).

    ``rate``: requests per second once ramped up. ``arrivals``: "poisson" (exponential gaps),
    "constant" (even gaps) or "gamma" (gamma gaps of shape ``burstiness``, mean 1/rate: shape 1
    is Poisson, below 1 burstier, above 1 more even; the gaps' coefficient of variation is
    1/sqrt(shape)). ``ramp_up_s``: the rate grows linearly from 0 to ``rate`` over that many
    seconds. Bounds: arrivals before ``duration_s`` and/or the first ``requests`` of them.
    """

    rate: float
    arrivals: str = "poisson"
    seed: int = 0
    burstiness: float | None = None
    ramp_up_s: float | None = None
    duration_s: float | None = None
    requests: int | None = None


def step_seed(seed: int, index: int) -> int:
    """The schedule seed of the ``index``-th step (from 1) of a run drawn from ``seed``: each
    step gets its own draw, and re-running with the same seed replays every step."""
    return (seed * 1_000_003 + index) % (2 ** 63)


def _gap_drawer(kind: str, rate: float, burstiness: float | None,
                rng: random.Random) -> Callable[[], float] | None:
    """The function drawing one gap in seconds, or None for constant arrivals (the k-th at
    k / rate exactly, no float sum drifting)."""
    if kind == "constant":
        return None
    if kind == "poisson":
        return lambda: -math.log(1.0 - rng.random()) / rate  # exponential, inverse transform
    if kind == "gamma":
        shape = float(burstiness if burstiness is not None else 1.0)
        scale = 1.0 / (rate * shape)
        return lambda: rng.gammavariate(shape, scale)
    raise ValueError(f"unknown arrivals {kind!r}")


def arrival_offsets(schedule: RateSchedule) -> array:
    """Intended send times of one step, in ns from the step's start, non-decreasing.

    Pure: the gaps are drawn from ``random.Random(schedule.seed)`` and summed as floats in
    seconds (no clock is read), so a step is replayed exactly from its seed. The ramp-up is a
    change of time: arrivals are drawn at the full rate on an "operational" clock ``u``, then
    placed at the real time ``t`` whose expected number of arrivals under the ramp equals
    ``rate * u`` (``t = sqrt(2 * S * u)`` while ``u < S / 2``, else ``t = u + S / 2``). For
    Poisson arrivals this gives exactly an inhomogeneous Poisson process with a linear ramp;
    constant arrivals stay evenly spaced in expected count.

    Replay across Python versions: Poisson and constant arrivals use only ``Random.random()``,
    whose sequence Python keeps stable; gamma arrivals use ``Random.gammavariate``, which Python
    does not promise to keep (same Python, same schedule).
    """
    rate = float(schedule.rate)
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {schedule.rate!r}")
    if schedule.duration_s is None and schedule.requests is None:
        raise ValueError("a rate schedule needs a duration or a number of requests")
    gap = _gap_drawer(schedule.arrivals, rate, schedule.burstiness,
                      random.Random(schedule.seed))
    ramp = float(schedule.ramp_up_s or 0.0)
    limit_s = math.inf if schedule.duration_s is None else float(schedule.duration_s)
    limit_n = schedule.requests if schedule.requests is not None else math.inf
    out = array("q")
    u = 0.0
    count = 0
    while count < limit_n:
        u = u + gap() if gap is not None else (count + 1) / rate
        t = (math.sqrt(2.0 * ramp * u) if u < ramp / 2.0 else u + ramp / 2.0) if ramp else u
        if t >= limit_s:
            break
        out.append(int(round(t * 1e9)))
        count += 1
    return out
