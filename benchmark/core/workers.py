"""Worker processes: one step's requests spread over N processes (``--workers N``).

One engine process is one CPU core: past some thousands of token events per second its event
loop is late to read the bytes, and the lateness shows up as client delay in TTFT. With
``--workers N`` the engine (the parent) keeps everything but the sending: it builds the prompts,
draws the rate schedule, deals each step's requests to N worker processes, merges what they
send back into one run, and saves the files. Each worker runs the engine's own per-process load
code (``engine.worker_main``) with its own event loop and connections.

    pool = Pool.start(2, target=worker_main, args=(config, model, headers, run_id))
    pool.send(0, share); pool.send(1, share)        # with a start instant slightly ahead
    for worker, message in pool.poll(): ...          # ("event", e) ("records", [...]) ("done", ...)
    pool.close()

Clock: ``time.perf_counter_ns`` is one monotonic clock for every process of a machine (Linux's
CLOCK_MONOTONIC), so the parent picks a start instant a little in the future and every worker
sleeps until it; the stamps of all workers are comparable, as those of one process are.

How a step is dealt (pure functions below):
- rounds: each round's requests round-robin over the workers, all sent at the same instant;
  the next round starts when every worker has returned its part (TGI's pattern, as before);
- concurrency: virtual users round-robin over the workers (user ``u`` to worker ``u % N``), a
  ``--requests`` bound split in proportion to the users each worker got;
- rate: ONE schedule drawn by the parent, arrivals dealt round-robin in arrival order, so the
  process arriving at the server is the one asked for; ``--max-concurrency`` is split into
  per-worker caps that add up to it (a request may wait behind its own worker's cap while
  another worker has room: the wait is measured, as always).

Messages from a worker: ``("ready",)`` once started, ``("event", ProgressEvent)``,
``("records", [RequestRecord, ...])`` (finished records, streamed so that a worker that dies
leaves what it measured), ``("usage", WorkerUsage)`` (its own CPU and loop lag, every telemetry
interval while a share runs: kept by the pool for the telemetry sampler, ``usage.take()``, not
returned by ``poll``) and ``("done", status, message)`` at the end of each share (status
"ok", "stopped" with the reason, or "cancelled"). To a worker: a ``Share``, ``"cancel"``, or
``None`` (exit).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ..config import auto_workers
from .patterns import Slot
from .telemetry_data import WorkerUsage

__all__ = ["Share", "Pool", "RayPool", "auto_workers", "deal", "split_quota", "split_cap",
           "STEP_LEAD_NS", "ROUND_LEAD_NS", "READY_TIMEOUT_S"]

# A step's start instant is this far after the shares are sent (workers open their connections
# meanwhile); a later round of the rounds pattern needs no new connections.
STEP_LEAD_NS = 1_000_000_000
ROUND_LEAD_NS = 20_000_000
# A worker that has not said "ready" after this long (imports on a loaded machine) is a failure.
READY_TIMEOUT_S = 120.0
# How long a worker may take to exit after being told to.
EXIT_TIMEOUT_S = 5.0
# A Ray actor that has not answered a poll after this long is lost (or was never placed).
RAY_ANSWER_TIMEOUT_S = 60.0


def deal(count: int, workers: int) -> list[list[int]]:
    """Indexes ``0..count-1`` dealt round-robin: item ``i`` goes to worker ``i % workers``."""
    return [list(range(w, count, workers)) for w in range(workers)]


def split_quota(total: int | None, weights: list[int]) -> list[int | None]:
    """``total`` split in proportion to ``weights`` (whole numbers adding up to ``total``; the
    first ones get the remainder); None stays None for every part."""
    if total is None:
        return [None] * len(weights)
    whole = sum(weights)
    parts = [total * w // whole for w in weights]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


def split_cap(cap: int | None, workers: int) -> list[int | None]:
    """A ``--max-concurrency`` cap split over workers, the parts adding up to it (a worker gets
    at least 1, so with more workers than the cap the sum is the worker count)."""
    if cap is None:
        return [None] * workers
    return [max(1, part or 0) for part in split_quota(cap, [1] * workers)]


@dataclass(frozen=True)
class Share:
    """What one worker is given: its part of a step (concurrency, rate) or of a round.

    ``start_ns``: the common start instant (``perf_counter_ns``); ``connections``: keep-alive
    connections to open before it; ``bodies``: serialised prompts (built by the parent).
    rounds: ``slots`` (this worker's part of the round). concurrency: ``users`` (the global
    0-based user indexes it runs) and ``requests`` (its part of ``--requests``). rate:
    ``numbers`` (1-based arrival numbers) with their ``offsets`` (ns from ``start_ns``), the
    body of arrival ``k`` being ``bodies[(k - 1) % len(bodies)]``, and ``cap``.
    """

    kind: str
    step: float
    index: int
    start_ns: int
    connections: int
    bodies: tuple[bytes, ...]
    slots: tuple[Slot, ...] = ()
    users: tuple[int, ...] = ()
    requests: int | None = None
    numbers: tuple[int, ...] = ()
    offsets: tuple[int, ...] = ()
    cap: int | None = None


class _Usage:
    """The workers' ``("usage", WorkerUsage)`` reports, kept from ``poll`` (the engine's loop)
    until the telemetry sampler (its own thread) takes them."""

    def __init__(self) -> None:
        self._reports: list[tuple[int, WorkerUsage]] = []
        self._lock = threading.Lock()

    def keep(self, out: list[tuple[int, Any]], worker: int, message: Any) -> None:
        """``message`` into ``out``, unless it is a usage report (kept here)."""
        if isinstance(message, tuple) and message and message[0] == "usage":
            with self._lock:
                self._reports.append((worker, message[1]))
        else:
            out.append((worker, message))

    def take(self) -> list[tuple[int, WorkerUsage]]:
        with self._lock:
            reports, self._reports = self._reports, []
        return reports


class WorkerDied(Exception):
    """A worker process ended without being told to; str() says which and how."""


class Pool:
    """N worker processes (spawned: a clean interpreter each, no forked event loop), each with
    a pipe for its shares and one for what it sends back."""

    def __init__(self, processes: list[Any], tasks: list[Connection], results: list[Connection]):
        self.processes = processes
        self.tasks = tasks
        self.results = results
        self.dead: dict[int, str] = {}
        self.usage = _Usage()

    @classmethod
    def start(cls, count: int, *, target: Callable[..., None], args: tuple[Any, ...]) -> "Pool":
        context = multiprocessing.get_context("spawn")
        processes, tasks, results = [], [], []
        for index in range(count):
            task_read, task_write = context.Pipe(duplex=False)
            result_read, result_write = context.Pipe(duplex=False)
            process = context.Process(target=target, name=f"benchmark-worker-{index + 1}",
                                      args=(index, task_read, result_write, *args), daemon=True)
            process.start()
            task_read.close()
            result_write.close()
            processes.append(process)
            tasks.append(task_write)
            results.append(result_read)
        return cls(processes, tasks, results)

    @property
    def size(self) -> int:
        return len(self.processes)

    def send(self, worker: int, message: Any) -> None:
        try:
            self.tasks[worker].send(message)
        except (BrokenPipeError, OSError):
            self._mark_dead(worker)

    def cancel(self) -> None:
        for worker in range(self.size):
            if worker not in self.dead:
                self.send(worker, "cancel")

    def poll(self, timeout: float = 0.0) -> list[tuple[int, Any]]:
        """Messages that arrived (in order per worker), and ``(worker, ("dead", sentence))``
        for a worker found ended since the last call (after its last messages)."""
        alive = [w for w in range(self.size) if w not in self.dead]
        ready = set(wait([self.results[w] for w in alive]
                         + [self.processes[w].sentinel for w in alive], timeout))
        out: list[tuple[int, Any]] = []
        for worker in alive:
            conn, process = self.results[worker], self.processes[worker]
            if conn not in ready and process.sentinel not in ready:
                continue
            try:
                while conn.poll():
                    self.usage.keep(out, worker, conn.recv())
            except (EOFError, OSError):
                pass
            else:
                if process.sentinel not in ready:
                    continue
                process.join(0.5)  # the exit code, once the pipe is drained
            out.append((worker, ("dead", self._mark_dead(worker))))
        return out

    def _mark_dead(self, worker: int) -> str:
        process = self.processes[worker]
        process.join(0.5)
        code = process.exitcode
        how = ("was killed by signal " + str(-code) if code is not None and code < 0
               else f"exited with code {code}" if code is not None else "stopped answering")
        self.dead[worker] = f"worker process {worker + 1} of {self.size} {how}"
        return self.dead[worker]

    def close(self) -> None:
        """Tell every worker to exit; stop the ones that do not within EXIT_TIMEOUT_S."""
        for worker in range(self.size):
            if worker not in self.dead:
                self.send(worker, None)
        for process in self.processes:
            process.join(EXIT_TIMEOUT_S)
            if process.is_alive():
                process.terminate()
                process.join(EXIT_TIMEOUT_S)
        for conn in self.tasks + self.results:
            conn.close()


class RayPool:
    """The same workers as Ray actors (``--ray-address ADDR``), on one machine or many; the same
    interface as ``Pool``. Each actor runs the engine's worker (``engine.RayWorker``) in a
    thread of its own process and measures its requests with its own machine's monotonic clock.

    Start instant: a ``Share``'s ``start_ns`` is the parent's ``perf_counter_ns``, which means
    nothing on another machine; it travels as a wall-clock instant (``time.time_ns``) and each
    actor turns it back into its own ``perf_counter_ns``. Wall clocks agree only as well as the
    machines' NTP: that moves when requests are sent (by the clocks' disagreement), never a
    latency, which is always the difference of two stamps of one machine's monotonic clock.
    Messages are fetched by polling each actor (``take``)."""

    def __init__(self, ray: Any, actors: list[Any], started_ray: bool):
        self.ray = ray
        self.actors = actors
        self.started_ray = started_ray
        self.dead: dict[int, str] = {}
        self.usage = _Usage()

    @classmethod
    def start(cls, count: int, *, address: str, actor: type,
              args: tuple[Any, ...]) -> "RayPool":
        try:
            import ray
        except ImportError:
            raise RuntimeError("--ray-address needs Ray, an optional extra: pip install -r "
                               "requirements-distributed.txt") from None
        started = False
        if not ray.is_initialized():
            # The package must be importable by the actors: installed on every node of a real
            # cluster; on this machine (a local cluster) the folder holding it is put on
            # PYTHONPATH.
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
            # "local" is Ray's own word for a new cluster on this machine, even where one is
            # running or RAY_ADDRESS names one (None would join those).
            ray.init(address=address, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
            started = True
        remote = ray.remote(num_cpus=1, max_concurrency=4)(actor)
        actors = [remote.options(name=None).remote(index, *args) for index in range(count)]
        return cls(ray, actors, started)

    @property
    def size(self) -> int:
        return len(self.actors)

    def send(self, worker: int, message: Any) -> None:
        wall = None
        if isinstance(message, Share):
            wall = time.time_ns() + (message.start_ns - time.perf_counter_ns())
        self.actors[worker].put.remote(message, wall)

    def cancel(self) -> None:
        for worker in range(self.size):
            if worker not in self.dead:
                self.send(worker, "cancel")

    def poll(self, timeout: float = 0.0) -> list[tuple[int, Any]]:
        alive = [w for w in range(self.size) if w not in self.dead]
        refs = {self.actors[w].take.remote(): w for w in alive}
        out: list[tuple[int, Any]] = []
        for ref, worker in refs.items():
            try:
                for message in self.ray.get(ref, timeout=RAY_ANSWER_TIMEOUT_S):
                    self.usage.keep(out, worker, message)
            except Exception as exc:  # noqa: BLE001 - RayActorError, a node gone, a timeout
                self.dead[worker] = (self._unanswered(worker)
                                     if type(exc).__name__ == "GetTimeoutError" else
                                     f"worker {worker + 1} of {self.size} (a Ray actor) was "
                                     f"lost: {type(exc).__name__}")
                out.append((worker, ("dead", self.dead[worker])))
        if not out and timeout:
            time.sleep(timeout)
        return out

    def _unanswered(self, worker: int) -> str:
        """Why an actor did not answer for a minute: most often it was never placed, each
        actor needing one CPU of the cluster that nothing else holds."""
        try:
            cpus = f"{self.ray.cluster_resources().get('CPU', 0):g}"
        except Exception:  # noqa: BLE001 - the cluster itself is gone
            cpus = "an unknown number of"
        return (f"worker {worker + 1} of {self.size} (a Ray actor) did not answer for "
                f"{RAY_ANSWER_TIMEOUT_S:g} s: "
                f"each actor needs one CPU of the Ray cluster that nothing else holds, and the "
                f"cluster has {cpus} CPUs (`ray status` shows what is free); a node may also "
                f"be unreachable")

    def close(self) -> None:
        for worker in range(self.size):
            if worker not in self.dead:
                self.send(worker, None)
        time.sleep(0.2)
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started_ray:
            self.ray.shutdown()
