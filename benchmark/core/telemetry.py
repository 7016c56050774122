"""The run's sampler: the server's /metrics, every NVIDIA GPU (NVML) and the client itself
(with ``--workers``, also what each worker reported of its own CPU and loop lag), read once
per interval in a thread of its own, onto the run's time axis.

    probe = LoopProbe()                          # started inside the engine's event loop
    sampler = Sampler(interval_s=1.0, origin_ns=time.perf_counter_ns(),
                      metrics_url="http://host:3000/metrics", probe=probe)
    sampler.start(); ...; sampler.mark_step(4, "start"); ...; sampler.stop()
    sampler.data                                 # a telemetry_data.Telemetry, filled as it goes

Each source that cannot be read (no /metrics, no NVML library, no GPU) leaves one sentence in
``data.missing`` and the run goes on without it. ``NvmlReader`` is the GPU source; tests pass
any object with the same ``open`` / ``read`` / ``close`` (``GpuReader``). Parsing is in
``telemetry_data`` (pure); this module does the clocks, the network and the thread.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any, Callable, Protocol

import httpx

from .telemetry_data import Sample, Telemetry, WorkerUsage, parse_server_metrics, worker_samples

__all__ = ["GpuReader", "NvmlReader", "SourceMissing", "LoopProbe", "Sampler",
           "LAG_PROBE_S", "MAX_METRICS_BYTES"]

LAG_PROBE_S = 0.1           # the loop probe's period
MAX_METRICS_BYTES = 8 * 1024 * 1024
MAX_SERVER_FAILURES = 3     # consecutive failed scrapes before the server source is dropped


class SourceMissing(Exception):
    """A source cannot be read; str() is the sentence shown on the page and in run.json."""


class GpuReader(Protocol):
    """A GPU source: ``open()`` returns the GPUs seen (dicts: index, name, memory_total_mib,
    energy_counter) or raises ``SourceMissing``; ``read()`` returns (gpu index, metric, value)
    readings; ``close()`` frees it."""

    def open(self) -> list[dict[str, Any]]: ...

    def read(self) -> list[tuple[int, str, float]]: ...

    def close(self) -> None: ...


class NvmlReader:
    """Every visible NVIDIA GPU through NVML (``nvidia-ml-py``): utilization, memory, power,
    SM clock, temperature and the total energy counter (where the GPU has one)."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._energy: list[bool] = []

    def open(self) -> list[dict[str, Any]]:
        try:
            import pynvml
        except ImportError:
            raise SourceMissing("No GPU readings: the NVML library (nvidia-ml-py) is not "
                                "installed.") from None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            raise SourceMissing(f"No GPU readings: NVML could not start on this machine "
                                f"({_short(exc)}); there may be no NVIDIA GPU or driver "
                                f"here.") from None
        self._nvml = pynvml
        gpus = []
        try:
            count = pynvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                self._handles.append(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                energy = _try(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle) is not None
                self._energy.append(energy)
                gpus.append({"index": index, "name": name[:100],
                             "memory_total_mib": round(memory.total / 2**20),
                             "energy_counter": energy})
        except Exception as exc:
            self.close()
            raise SourceMissing(f"No GPU readings: NVML failed while listing the GPUs "
                                f"({_short(exc)}).") from None
        if not gpus:
            self.close()
            raise SourceMissing("No GPU readings: NVML found no GPU on this machine.")
        return gpus

    def read(self) -> list[tuple[int, str, float]]:
        nvml = self._nvml
        out: list[tuple[int, str, float]] = []
        for index, handle in enumerate(self._handles):
            util = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
            if util is not None:
                out.append((index, "utilization_pct", float(util.gpu)))
            memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
            if memory is not None:
                out.append((index, "memory_used_mib", memory.used / 2**20))
                out.append((index, "memory_used_pct", 100.0 * memory.used / memory.total))
            power = _try(nvml.nvmlDeviceGetPowerUsage, handle)
            if power is not None:
                out.append((index, "power_w", power / 1000.0))
            clock = _try(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)
            if clock is not None:
                out.append((index, "sm_clock_mhz", float(clock)))
            temp = _try(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            if temp is not None:
                out.append((index, "temperature_c", float(temp)))
            if self._energy[index]:
                energy = _try(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
                if energy is not None:
                    out.append((index, "energy_j", energy / 1000.0))
        return out

    def close(self) -> None:
        if self._nvml is not None:
            _try(self._nvml.nvmlShutdown)
            self._nvml = None
        self._handles = []


def _try(call: Any, *args: Any) -> Any:
    """``call(*args)``, or None when NVML says the GPU does not support it (or fails)."""
    try:
        return call(*args)
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends: skip the reading
        return None


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:160]


class LoopProbe:
    """Measures the event loop from inside: every ``LAG_PROBE_S`` it yields once and times how
    long the loop took to come back (its lag: the wait any arriving byte's stamp would see), and
    notes the loop thread's CPU time. ``take()`` (from the sampler's thread) hands over what was
    gathered since the last call."""

    def __init__(self, period_s: float = LAG_PROBE_S) -> None:
        self.period_s = period_s
        self._lags: list[float] = []
        self._cpu: tuple[float, float] | None = None     # (thread CPU s, perf_counter s)
        self._last: tuple[float, float] | None = None

    async def run(self) -> None:
        """Run inside the loop until cancelled."""
        while True:
            await asyncio.sleep(self.period_s)
            before = time.perf_counter_ns()
            await asyncio.sleep(0)          # back in the ready queue: returns after one turn
            self._lags.append((time.perf_counter_ns() - before) / 1e6)
            self._cpu = (time.thread_time(), time.perf_counter())

    def take(self) -> tuple[list[float], float | None]:
        """The lags (ms) since the last call and the loop thread's CPU use in that time (% of
        one core; None until two readings exist)."""
        lags, self._lags = self._lags, []
        now, pct = self._cpu, None
        if now is not None and self._last is not None and now[1] > self._last[1]:
            pct = 100.0 * (now[0] - self._last[0]) / (now[1] - self._last[1])
        if now is not None:
            self._last = now
        return lags, pct


class Sampler:
    """Reads every source once per ``interval_s`` in a daemon thread; ``data`` holds what was
    read. The first reading is taken at once; sources are opened in the thread, so starting
    never delays the run."""

    def __init__(self, *, interval_s: float, origin_ns: int, metrics_url: str | None,
                 headers: dict[str, str] | None = None, gpu_reader: GpuReader | None = None,
                 probe: LoopProbe | None = None) -> None:
        self.interval_s = interval_s
        self.data = Telemetry(interval_s=interval_s, origin_ns=origin_ns,
                              metrics_url=metrics_url)
        self.headers = dict(headers or {})
        self.gpu_reader = gpu_reader if gpu_reader is not None else NvmlReader()
        self.probe = probe
        # With worker processes (or Ray actors): what they reported of themselves since the
        # last call, ``[(worker index, WorkerUsage), ...]`` (set by the engine once they run).
        self.worker_usage: Callable[[], list[tuple[int, WorkerUsage]]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._gpu_open = False
        self._server_failures = 0
        self._server_ok = False
        self._cpu_last: tuple[float, float] | None = None

    # -- control ---------------------------------------------------------------------------
    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._work, name="telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (one last reading is taken) and close the sources."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    def mark_step(self, step: int, edge: str) -> None:
        """A step started (``edge="start"``) or ended (``"end"``), now."""
        t_s = self.now_s()
        if edge == "start":
            self.data.steps.append({"step": step, "start_s": round(t_s, 3), "end_s": None})
            return
        for window in reversed(self.data.steps):
            if window["step"] == step and window["end_s"] is None:
                window["end_s"] = round(t_s, 3)
                return

    def now_s(self) -> float:
        return (time.perf_counter_ns() - self.data.origin_ns) / 1e9

    # -- the thread ------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._open()
            next_at = time.perf_counter()
            while True:
                self.sample_once()
                if self._stop.is_set():
                    break
                next_at += self.interval_s
                wait = next_at - time.perf_counter()
                if wait < 0:                     # fell behind: skip, never catch up in bursts
                    next_at = time.perf_counter()
                    wait = 0.0
                if self._stop.wait(wait):
                    self.sample_once()           # the last reading, at the end of the run
                    break
        except Exception as exc:  # noqa: BLE001 - telemetry must never stop a run
            self._missing(f"Telemetry stopped early on an unexpected error "
                          f"({type(exc).__name__}: {_short(exc)}).")
        finally:
            self._close()

    def _open(self) -> None:
        if self.data.metrics_url:
            timeout = max(1.0, min(5.0, self.interval_s))
            self._http = httpx.Client(timeout=timeout, headers=self.headers,
                                      follow_redirects=False)
        try:
            self.data.gpus = self.gpu_reader.open()
            self._gpu_open = True
        except SourceMissing as exc:
            self._missing(str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken reader is a missing source
            self._missing(f"No GPU readings: the GPU reader failed ({_short(exc)}).")

    def _close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        if self._gpu_open:
            try:
                self.gpu_reader.close()
            except Exception:  # noqa: BLE001
                pass
            self._gpu_open = False

    def _missing(self, sentence: str) -> None:
        if sentence not in self.data.missing:
            self.data.missing.append(sentence)

    def sample_once(self) -> None:
        t_s = round(self.now_s(), 3)
        rows: list[Sample] = []
        rows += self._server(t_s)
        rows += self._gpu(t_s)
        rows += self._client(t_s)
        self.data.samples.extend(rows)

    def _server(self, t_s: float) -> list[Sample]:
        if self._http is None or not self.data.metrics_url:
            return []
        url = self.data.metrics_url
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SourceMissing(f"HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_METRICS_BYTES:
                        raise SourceMissing("the page is larger than 8 MB")
            rows = parse_server_metrics(body.decode("utf-8", "replace"), t_s)
            if not rows and not self._server_ok:
                raise SourceMissing("it holds none of TGI's, vLLM's or SGLang's metrics")
        except (httpx.HTTPError, SourceMissing, ValueError) as exc:
            self._server_failures += 1
            if not self._server_ok or self._server_failures >= MAX_SERVER_FAILURES:
                why = str(exc) if isinstance(exc, (SourceMissing, ValueError)) else (
                    f"{type(exc).__name__}")
                when = "" if not self._server_ok else " after the first readings"
                self._missing(f"No server metrics{when}: {url} could not be read ({why[:160]}); "
                              f"the server's queue and batch size are not shown.")
                self._http.close()
                self._http = None
            return []
        self._server_ok = True
        self._server_failures = 0
        return rows

    def _gpu(self, t_s: float) -> list[Sample]:
        if not self._gpu_open:
            return []
        try:
            readings = self.gpu_reader.read()
        except Exception as exc:  # noqa: BLE001 - drop the source, keep the run
            self._missing(f"GPU readings stopped: the GPU reader failed ({_short(exc)}).")
            self._close_gpu()
            return []
        return [Sample(t_s, "gpu", metric, f"gpu={index}", float(value))
                for index, metric, value in readings]

    def _close_gpu(self) -> None:
        try:
            self.gpu_reader.close()
        except Exception:  # noqa: BLE001
            pass
        self._gpu_open = False

    def _client(self, t_s: float) -> list[Sample]:
        rows = []
        cpu, wall = time.process_time(), time.perf_counter()
        if self._cpu_last is not None and wall > self._cpu_last[1]:
            pct = 100.0 * (cpu - self._cpu_last[0]) / (wall - self._cpu_last[1])
            rows.append(Sample(t_s, "client", "process_cpu_pct", "", round(pct, 2)))
        self._cpu_last = (cpu, wall)
        if self.probe is not None:
            lags, loop_cpu = self.probe.take()
            if loop_cpu is not None:
                rows.append(Sample(t_s, "client", "loop_cpu_pct", "", round(loop_cpu, 2)))
            if lags:
                rows.append(Sample(t_s, "client", "loop_lag_p50_ms", "",
                                   round(statistics.median(lags), 4)))
                rows.append(Sample(t_s, "client", "loop_lag_max_ms", "", round(max(lags), 4)))
        if self.worker_usage is not None:
            rows += worker_samples(t_s, self.worker_usage())
        return rows
