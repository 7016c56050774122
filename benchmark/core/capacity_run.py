"""Capacity mode's probes against a real server: the I/O around the pure search of capacity.py.

    capacity = await run_capacity(engine, session)     # called by the engine in capacity mode

Each probe is one step of the run, numbered from 1 (the ``step`` column of the files):

1. one request at a time (one user, ``SINGLE_REQUESTS`` requests, the first not counted: it
   opens the connection): the server's best latency. If it already misses a target, the run
   stops there and says so plainly (``capacity.too_slow_alone``).
2. saturation: ``SATURATION_USERS`` users (at most the server's ``max_concurrent_requests``)
   for ``SATURATION_S`` seconds: the requests completed between ``SATURATION_WARMUP_S`` and
   the end, per second, estimate the highest rate the server can keep at all, the top of the
   search's bracket (an estimate: the search checks it before trusting it).
3. Poisson request-rate probes (the rate mode's open-loop dispatcher), chosen by
   ``capacity.search_capacity``; each lasts ``capacity.probe_plan`` (warm-up not counted) and
   is cut short, as failed, once it is clearly over the limit: its verdict is certain
   (``capacity.certainly_failed``) or its requests in flight keep growing
   (``capacity.queue_growing``, from a sample of sent and in-flight counts every
   ``CHECK_EVERY_S``); the probe row says why (``stopped_why``).

The whole search stays within the config's ``capacity_duration_s``: a probe is shortened to
fit, and the search ends (saying so) when too little time is left for another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from typing import Any

from .capacity import (
    WARMUP_S,
    Capacity,
    Load,
    Probe,
    Search,
    SearchState,
    certainly_failed,
    finish,
    known_bad,
    miss_words,
    next_rate,
    probe_from_step,
    probe_plan,
    queue_growing,
    record_probe,
    saturation_rate,
    server_failing,
    too_slow_alone,
)
from .records import RequestRecord
from .slo import slo_of
from .stats import summarize_step

__all__ = ["run_capacity", "SINGLE_REQUESTS", "SATURATION_USERS", "SATURATION_S"]

SINGLE_REQUESTS = 8
SATURATION_USERS = 128
SATURATION_S = 20.0
SATURATION_WARMUP_S = 5.0  # the first wave of prompts all arrive at once: let it pass
MIN_MEASURE_S = 4.0      # a rate probe shorter than this (time nearly up) is not started
CHECK_EVERY_S = 0.25     # how often a running probe's verdict is looked at
NS_PER_S = 1_000_000_000


async def run_capacity(engine: Any, session: Any) -> Capacity:
    """Run the probes with ``engine`` (the engine's ``_Engine``) and return the answer; the
    engine's ``result.capacity`` is updated after every probe so that saved files show the
    search as it goes, and says so when the run is stopped (or fails) before the answer."""
    search = _Search(engine, session)
    try:
        return await search.run()
    except BaseException:
        search.interrupted()
        raise


class _ServerFailing(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _check_server(where: str, records: list[RequestRecord]) -> None:
    """Raise ``_ServerFailing`` when most of a probe's requests failed (errors, not missed
    targets; requests the search cancelled do not count)."""
    sent = [r for r in records if r.error_kind != "cancelled"]
    failed = [r.error for r in sent if r.error]
    if failed and 2 * len(failed) >= len(sent):
        raise _ServerFailing(server_failing(where, len(failed), len(sent), failed[0]))


class _Search:
    def __init__(self, engine: Any, session: Any):
        self.engine = engine
        self._first_session = session
        self.failure: str | None = None   # why the search ended early, when the server broke
        self.config = engine.config
        slo = slo_of(self.config)
        assert slo is not None, "capacity mode is validated to have a target"
        self.slo = slo
        self.started = time.monotonic()
        self.budget_s = self.config.capacity_duration_s
        self.number = 0
        self.probes: list[Probe] = []
        self.seed = (self.config.schedule_seed if self.config.schedule_seed is not None
                     else secrets.randbits(62))

    def time_left(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)

    # -- the three phases ----------------------------------------------------------------------

    @property
    def session(self) -> Any:
        """The session the engine holds now: a probe whose connection-opening GETs failed
        makes the engine drop its pooled connections and open a new session (``transformers
        serve`` answers ``/v1/models`` with 500), so a session kept from the start may be
        closed."""
        return getattr(self.engine, "_session", None) or self._first_session
    async def run(self) -> Capacity:
        single, values = await self._closed_loop("one at a time", users=1,
                                                 requests=SINGLE_REQUESTS, warmup_first=True)
        slow = too_slow_alone(single, self.slo, values)
        if slow is not None:
            return self._answer(single, None, None, message=slow)
        info = self.engine.result.server_info or {}
        limit = info.get("max_concurrent_requests")
        users = SATURATION_USERS
        if isinstance(limit, int) and limit > 0:
            users = min(users, limit)
        try:
            saturation, _ = await self._closed_loop(
                "saturation", users=users, duration_s=min(SATURATION_S, max(
                    self.time_left() / 4, WARMUP_S + 2.0)))
        except _ServerFailing as failing:
            return self._answer(single, None, None, message=failing.message)
        low = single.rate_rps
        high = max(saturation.rate_rps, low)
        search = await self._search(low, high)
        return self._answer(single, saturation, search, message=self.failure)

    async def _search(self, low: float, high: float) -> Search:
        """``capacity.next_rate`` chooses, a probe measures, ``record_probe`` narrows. A probe
        most of whose requests failed (the server broke, not a target missed) ends the search
        with the server's error: a broken server has no capacity to bisect."""
        state = SearchState.start(low, high)
        while True:
            out_of_time = self.time_left() < WARMUP_S + MIN_MEASURE_S
            rate, ended = next_rate(state, out_of_time=out_of_time)
            if rate is None:
                return finish(state, ended or "converged")
            try:
                probe = await self._rate_probe(rate)
            except _ServerFailing as failing:
                self.failure = failing.message
                return finish(state, "server failed")
            state = record_probe(state, rate, probe)

    def _answer(self, single: Probe, saturation: Probe | None, search: Any, *,
                message: str | None = None) -> Capacity:
        capacity = Capacity.from_search(self.slo, single, saturation, search, message=message)
        if message is not None and search is None:   # the server broke: every probe it took
            capacity = dataclasses.replace(capacity, probes=tuple(self.probes),
                                           ended="server failed")
        self.engine.result.capacity = capacity
        return capacity

    def interrupted(self) -> None:
        """The run stopped mid-search: the files say what was found until then."""
        if not self.probes:
            return
        passed = [p.rate_rps for p in self.probes if p.passed and p.kind == "rate"]
        message = ("The search was stopped before it ended: the highest request rate kept so far "
                   f"was {max(passed):.3g} per second." if passed else
                   "The search was stopped before it found the limit.")
        self.engine.result.capacity = dataclasses.replace(
            Capacity.from_search(self.slo, self.probes[0], None, None),
            probes=tuple(self.probes), ended="stopped", message=message)

    # -- probes --------------------------------------------------------------------------------
    def _next_step(self, size: float) -> Any:
        self.number += 1
        return self.engine.new_step(size, self.number)

    async def _closed_loop(self, kind: str, *, users: int, requests: int | None = None,
                           duration_s: float | None = None,
                           warmup_first: bool = False) -> tuple[Probe, dict[str, list[float]]]:
        """A probe of ``users`` virtual users (the concurrency pattern)."""
        step = self._next_step(users)
        config = dataclasses.replace(self.config, mode="concurrency", batch_sizes=(users,),
                                     requests=requests,
                                     duration_s=duration_s if requests is None else None)
        with self._as(config):
            try:
                await self.engine._concurrency(self.session, step)
            finally:
                records = list(step.records)
                self._settle(step, kind, warmup_before_ns=None)
        if warmup_first and records:
            first = min(records, key=lambda r: r.scheduled_ns)
            first.warmup = True
        rate = None
        if not warmup_first and records and duration_s:
            # Saturation: the steady completion rate, requests that ended between the
            # warm-up and the moment the users stopped starting new ones (not per sent
            # request: those sent late end long after the window and would dilute it).
            start = min(r.scheduled_ns for r in records)
            warm = min(SATURATION_WARMUP_S, duration_s / 2)
            first, last = start + int(warm * NS_PER_S), start + int(duration_s * NS_PER_S)
            for record in records:
                record.warmup = record.scheduled_ns < first
            ended = sum(1 for r in records if r.ok and r.end_ns is not None
                        and first <= r.end_ns <= last)
            rate = saturation_rate(ended, (last - first) / NS_PER_S, users,
                                   [r.e2e_ms for r in records if r.ok and r.e2e_ms is not None])
        probe = self._probe(kind, step.index, rate, records, stopped_why=None)
        _check_server(f"with {users} user{'s' if users != 1 else ''} in flight", records)
        counted = [r for r in records if not r.warmup and r.ok]
        values = {"ttft": [r.ttft_ms for r in counted if r.ttft_ms is not None],
                  "tpot": [r.token_latency_ms for r in counted if r.token_latency_ms is not None],
                  "e2e": [r.e2e_ms for r in counted if r.e2e_ms is not None]}
        return probe, values

    async def _rate_probe(self, rate: float) -> Probe:
        """A Poisson probe at ``rate`` requests/s, cut short once it is clearly over the
        limit (``_over_the_limit``)."""
        plan = probe_plan(rate, time_left_s=self.time_left())
        step = self._next_step(rate)
        config = dataclasses.replace(self.config, mode="rate", rates=(rate,),
                                     arrivals="poisson", burstiness=None, ramp_up_s=None,
                                     duration_s=plan.duration_s, requests=None,
                                     schedule_seed=self.seed)   # per probe: step_seed
        why: str | None = None
        samples: list[Load] = []
        with self._as(config):
            task = asyncio.create_task(self.engine._rate(self.session, step))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=CHECK_EVERY_S)
                    if task.done():
                        break
                    why = self._over_the_limit(step.records, plan, samples)
                    if why is not None:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        break
                if why is None:
                    task.result()
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                records = list(step.records)
                start = min((r.step_start_ns for r in records if r.step_start_ns), default=0)
                self._settle(step, "rate", warmup_before_ns=start + int(plan.warmup_s * NS_PER_S))
        probe = self._probe("rate", step.index, rate, records, stopped_why=why)
        _check_server(f"at {rate:.3g} requests per second", records)
        return probe

    def _over_the_limit(self, records: list[RequestRecord], plan: Any,
                        samples: list[Load]) -> str | None:
        """Why the running probe is clearly over the limit (its verdict already certain, or
        its queue growing), or None; appends this instant's load to ``samples``."""
        starts = [r.step_start_ns for r in records if r.step_start_ns]
        if not starts:
            return None
        now = time.perf_counter_ns()
        start = min(starts)
        counted_from = start + int(plan.warmup_s * NS_PER_S)
        counted = [r for r in records if r.scheduled_ns >= counted_from]
        bad = known_bad(counted, self.slo, now)
        if certainly_failed(bad, plan.planned_requests, self.slo.attainment):
            return miss_words(bad, plan.planned_requests, self.slo.attainment)
        ended = [(r.end_ns - r.scheduled_ns) / NS_PER_S for r in records
                 if r.end_ns is not None and r.scheduled_ns]
        samples.append(Load(at_s=(now - start) / NS_PER_S, sent=len(records),
                            in_flight=len(records) - len(ended)))
        return queue_growing(samples, rate_rps=plan.rate_rps,
                             mean_latency_s=sum(ended) / len(ended) if ended else None,
                             longest_latency_s=max(ended) if ended else None,
                             warmup_s=plan.warmup_s)

    @contextlib.contextmanager
    def _as(self, config: Any) -> Any:
        """Run one probe with the engine set up as for that load pattern."""
        saved = self.engine.config
        self.engine.config = config
        try:
            yield
        finally:
            self.engine.config = saved

    def _settle(self, step: Any, kind: str, *, warmup_before_ns: int | None) -> None:
        """Number the probe's records as its step, mark its warm-up, move them to the result."""
        for record in step.records:
            record.step = step.index
            if warmup_before_ns is not None and record.scheduled_ns < warmup_before_ns:
                record.warmup = True
        self.engine._keep(step)

    def _probe(self, kind: str, number: int, rate: float | None,
               records: list[RequestRecord], *, stopped_why: str | None) -> Probe:
        config = self.config
        summary = summarize_step(records, step=number, mode="capacity",
                                 sequence_length=config.sequence_length,
                                 decode_length=config.decode_length, slo=self.slo)
        probe = probe_from_step(summary, kind=kind, rate_rps=rate, stopped_why=stopped_why)
        if stopped_why is not None and probe.passed:  # over the limit; the part run may not show it
            probe = dataclasses.replace(probe, passed=False)
        self.probes.append(probe)
        # What the files show while the search goes on: the probes so far, no answer yet.
        self.engine.result.capacity = dataclasses.replace(
            Capacity.from_search(self.slo, self.probes[0], None, None),
            probes=tuple(self.probes), ended="running")
        self.engine.probe_done(probe)
        return probe
