"""Telemetry as data: samples, parsing the server's /metrics, per-step figures and the
client-bound verdict. Pure: no clocks, no network, no threads (``telemetry.py`` does the I/O).

    samples = parse_server_metrics(text, t_s=3.0)      # TGI / vLLM / SGLang names we keep
    data = Telemetry(interval_s=1.0, origin_ns=t0)     # what a run's sampler collected
    block = data.to_dict(records, calibration)         # run.json's "telemetry"
    text = telemetry_csv(data.samples)                 # telemetry.csv (long format)

Times are seconds since ``origin_ns`` (a ``time.perf_counter_ns`` stamp taken when the run's
sampler started), so a request's raw stamps (``RequestRecord``) and the samples share one axis.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from .records import RequestRecord

__all__ = ["Sample", "Telemetry", "TELEMETRY_FILE", "TELEMETRY_COLUMNS", "SERVER_GAUGES",
           "SERVER_HISTOGRAMS", "ROLES", "CPU_SATURATED_PCT", "DEFAULT_LAG_LIMIT_MS",
           "CLIENT_BOUND_WORDS", "parse_server_metrics", "prefilter_metrics", "telemetry_csv",
           "read_telemetry_csv", "step_figures", "output_tokens_between", "record_timeline",
           "series", "role_series", "client_bound", "WorkerUsage", "worker_samples", "WORKER_METRICS",
           "busiest_series"]

TELEMETRY_FILE = "telemetry.csv"
TELEMETRY_COLUMNS = ("t_s", "source", "metric", "labels", "value")

# The server's gauges we keep, and what each one means for the charts and the step figures.
SERVER_GAUGES: dict[str, str] = {
    "tgi_queue_size": "queue",
    "tgi_batch_current_size": "batch",
    "tgi_batch_current_max_tokens": "batch_tokens",
    "vllm:num_requests_waiting": "queue",
    "vllm:num_requests_running": "batch",
    "vllm:gpu_cache_usage_perc": "kv_cache",
    "vllm:kv_cache_usage_perc": "kv_cache",
    "sglang:num_queue_reqs": "queue",
    "sglang:num_running_reqs": "batch",
    "sglang:token_usage": "kv_cache",
}
# Histograms whose running _sum and _count we keep (means per interval come from differences).
SERVER_HISTOGRAMS = ("tgi_batch_forward_duration", "tgi_request_queue_duration")
ROLES = ("queue", "batch", "batch_tokens", "kv_cache")

# The client limited a step when its event loop's thread used this much of one core (the same
# limit calibrate stops at), or when the loop ran later than the calibration's tolerance.
CPU_SATURATED_PCT = 90.0
DEFAULT_LAG_LIMIT_MS = 1.0
CLIENT_BOUND_WORDS = "the client, not the server, may have limited this step"
# A worker process's (or Ray actor's) readings, one row per worker (labels ``worker=N``).
WORKER_METRICS = ("worker_cpu_pct", "worker_loop_cpu_pct", "worker_loop_lag_p50_ms",
                  "worker_loop_lag_max_ms")
MAX_LABELS_CHARS = 200


@dataclass(frozen=True)
class Sample:
    """One reading: ``t_s`` seconds after the run's origin, from ``source`` ("server", "gpu",
    "client"); ``labels`` as ``k=v`` pairs joined by commas (``gpu=0``, ``method=decode``)."""

    t_s: float
    source: str
    metric: str
    labels: str
    value: float


@dataclass
class Telemetry:
    """What a run's sampler collected. ``missing``: one sentence per source that could not be
    read (the run went on without it); ``gpus``: the GPUs seen (index, name, memory, whether
    they count energy); ``steps``: each step's window, ``{"step", "start_s", "end_s"}``."""

    interval_s: float
    origin_ns: int
    metrics_url: str | None = None
    samples: list[Sample] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, records: list[RequestRecord],
                calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """run.json's ``telemetry`` block (the samples go to telemetry.csv, not here)."""
        return {
            "interval_s": self.interval_s,
            "origin_ns": self.origin_ns,
            "metrics_url": self.metrics_url,
            "file": TELEMETRY_FILE,
            "missing": list(self.missing),
            "gpus": [dict(g) for g in self.gpus],
            "steps": step_figures(self, records, calibration),
        }

    @classmethod
    def from_dict(cls, data: Any, samples: list[Sample] | None = None) -> "Telemetry | None":
        """Back from run.json's block (and telemetry.csv's samples); None when absent."""
        if not isinstance(data, dict):
            return None
        return cls(interval_s=float(data.get("interval_s") or 0.0),
                   origin_ns=int(data.get("origin_ns") or 0),
                   metrics_url=data.get("metrics_url"),
                   samples=list(samples or []),
                   missing=[str(m) for m in data.get("missing") or []],
                   gpus=[g for g in data.get("gpus") or [] if isinstance(g, dict)],
                   steps=[{"step": int(s["step"]), "start_s": s.get("start_s"),
                           "end_s": s.get("end_s")}
                          for s in data.get("steps") or [] if isinstance(s, dict)])

    def seconds(self, stamp_ns: int) -> float:
        """A ``perf_counter_ns`` stamp on this run's time axis."""
        return (stamp_ns - self.origin_ns) / 1e9


@dataclass(frozen=True)
class WorkerUsage:
    """What one worker process (``--workers``) or Ray actor measured of itself over ``wall_s``
    seconds of a share: its process's CPU seconds, its event-loop thread's CPU seconds, and the
    loop's lags (ms, one per probe turn). Sent to the parent, which has no other view of a
    worker (a Ray actor may be on another machine)."""

    wall_s: float
    cpu_s: float
    loop_cpu_s: float
    lags_ms: tuple[float, ...] = ()


def worker_samples(t_s: float, reports: Iterable[tuple[int, WorkerUsage]]) -> list[Sample]:
    """The client rows for the workers' reports that arrived since the last reading: per worker
    (0-based index; labels ``worker=N`` 1-based) its process's and its loop's CPU use (% of one
    core, over all its reports together) and its loop lag's median and maximum."""
    merged: dict[int, list[WorkerUsage]] = {}
    for worker, usage in reports:
        merged.setdefault(worker, []).append(usage)
    out = []
    for worker in sorted(merged):
        usages = merged[worker]
        label = f"worker={worker + 1}"
        wall = sum(u.wall_s for u in usages)
        if wall > 0:
            out.append(Sample(t_s, "client", "worker_cpu_pct", label,
                              round(100.0 * sum(u.cpu_s for u in usages) / wall, 2)))
            out.append(Sample(t_s, "client", "worker_loop_cpu_pct", label,
                              round(100.0 * sum(u.loop_cpu_s for u in usages) / wall, 2)))
        lags = [lag for u in usages for lag in u.lags_ms]
        if lags:
            out.append(Sample(t_s, "client", "worker_loop_lag_p50_ms", label,
                              round(statistics.median(lags), 4)))
            out.append(Sample(t_s, "client", "worker_loop_lag_max_ms", label,
                              round(max(lags), 4)))
    return out


# ---------------------------------------------------------------------------------------------
# The server's /metrics


def _wanted(name: str) -> bool:
    if name in SERVER_GAUGES:
        return True
    return any(name in (h, f"{h}_sum", f"{h}_count") for h in SERVER_HISTOGRAMS)


def prefilter_metrics(text: str) -> str:
    """Only the lines of the metrics we keep (and their # TYPE / # HELP lines): a vLLM server
    serves thousands of lines, and the sampler's thread shares the interpreter with the load
    generator, so the full parse runs on a few lines only."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP") and _wanted(parts[2]):
                kept.append(line)
            continue
        name = line.split("{", 1)[0].split(None, 1)[0] if line.strip() else ""
        if name and _wanted(name):
            kept.append(line)
    return "\n".join(kept) + "\n"


def _label_text(labels: dict[str, str]) -> str:
    text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "le")
    return text[:MAX_LABELS_CHARS]


def parse_server_metrics(text: str, t_s: float) -> list[Sample]:
    """The samples we keep from a Prometheus text page (TGI's, vLLM's and SGLang's names),
    parsed by ``prometheus_client``'s parser; ``ValueError`` when the page is not Prometheus
    text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[Sample] = []
    try:
        families = list(text_string_to_metric_families(prefilter_metrics(text)))
    except Exception as exc:  # the parser raises ValueError and friends on foreign text
        raise ValueError(f"not Prometheus text ({type(exc).__name__})") from exc
    for family in families:
        for sample in family.samples:
            if not _wanted(sample.name) or sample.name.endswith("_bucket"):
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            out.append(Sample(t_s, "server", sample.name, _label_text(dict(sample.labels)),
                              value))
    return out


# ---------------------------------------------------------------------------------------------
# telemetry.csv


def telemetry_csv(samples: Iterable[Sample]) -> str:
    """telemetry.csv: one row per sample (long format, ``TELEMETRY_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TELEMETRY_COLUMNS)
    for s in samples:
        writer.writerow([f"{s.t_s:.3f}", s.source, s.metric, s.labels, repr(round(s.value, 6))])
    return buffer.getvalue()


def read_telemetry_csv(text: str) -> list[Sample]:
    """The samples of a telemetry.csv; rows that do not parse are skipped."""
    out: list[Sample] = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != TELEMETRY_COLUMNS:
        return out
    for row in reader:
        try:
            t_s, source, metric, labels, value = row
            out.append(Sample(float(t_s), source, metric, labels, float(value)))
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------------------------------------
# Series


def series(samples: Iterable[Sample], source: str, metric: str) -> list[tuple[float, float]]:
    """(t_s, value) of one metric, summed over its label sets at each time (all GPUs' power,
    every engine's queue), in time order."""
    total: dict[float, float] = {}
    for s in samples:
        if s.source == source and s.metric == metric:
            total[s.t_s] = total.get(s.t_s, 0.0) + s.value
    return sorted(total.items())


def busiest_series(samples: Iterable[Sample], source: str, metric: str
                   ) -> list[tuple[float, float]]:
    """(t_s, value) of one metric, the largest over its label sets at each time (the busiest
    worker: one process is one core, so the busiest one is where the client's limit is)."""
    top: dict[float, float] = {}
    for s in samples:
        if s.source == source and s.metric == metric:
            top[s.t_s] = max(top.get(s.t_s, s.value), s.value)
    return sorted(top.items())


def role_series(samples: Iterable[Sample], role: str) -> list[tuple[float, float]]:
    """(t_s, value) of the server's queue / batch / batch_tokens / kv_cache, whatever the
    server's own name for it."""
    names = [name for name, kind in SERVER_GAUGES.items() if kind == role]
    found = [s for s in samples if s.source == "server" and s.metric in names]
    for name in names:
        points = series(found, "server", name)
        if points:
            return points
    return []


def _by_metric(samples: Iterable[Sample]) -> dict[tuple[str, str], list[Sample]]:
    """Samples grouped by (source, metric): one pass over a long run's samples."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.source, s.metric), []).append(s)
    return groups


def _within(points: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [v for t, v in points if start <= t <= end]


def output_tokens_between(records: Iterable[RequestRecord], start_ns: int, end_ns: int) -> float:
    """Output tokens that arrived in [start_ns, end_ns]: each token event counts for its
    request's share (``output_tokens / events`` when an event carried several tokens)."""
    total = 0.0
    for r in records:
        if not r.token_ns:
            continue
        per_event = (r.output_tokens / len(r.token_ns)) if r.output_tokens else 1.0
        total += per_event * sum(1 for t in r.token_ns if start_ns <= t <= end_ns)
    return total


def record_timeline(records: list[RequestRecord], origin_ns: int, bin_s: float
                    ) -> tuple[list[float], list[int], list[float]]:
    """From our own records: bin centres (s since origin), requests in flight at each centre,
    and output tokens/s in each bin."""
    sent = [(r.sent_ns or r.scheduled_ns, r.end_ns) for r in records]
    stamps = [t for (s, _) in sent for t in ([s] if s else [])]
    ends = [e for (_, e) in sent if e is not None]
    if not stamps:
        return [], [], []
    first = (min(stamps) - origin_ns) / 1e9
    last = (max(ends + stamps) - origin_ns) / 1e9
    bins = max(1, int(math.ceil((last - first) / bin_s)))
    start0 = math.floor(first / bin_s) * bin_s
    centres = [start0 + (i + 0.5) * bin_s for i in range(bins + 1)]
    tokens = [0.0] * len(centres)
    for r in records:
        if not r.token_ns:
            continue
        per_event = (r.output_tokens / len(r.token_ns)) if r.output_tokens else 1.0
        for t in r.token_ns:
            index = int(((t - origin_ns) / 1e9 - start0) // bin_s)
            if 0 <= index < len(tokens):
                tokens[index] += per_event
    in_flight = []
    for c in centres:
        c_ns = origin_ns + int(c * 1e9)
        in_flight.append(sum(1 for s, e in sent if s and s <= c_ns and (e is None or e > c_ns)))
    return centres, in_flight, [t / bin_s for t in tokens]


# ---------------------------------------------------------------------------------------------
# Per step


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _peak(values: list[float]) -> float | None:
    return max(values) if values else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _at(points: list[tuple[float, float]], t: float) -> float | None:
    """A counter's value at ``t``, read linearly between the readings around it; None outside
    the readings."""
    if not points or t < points[0][0] or t > points[-1][0]:
        return None
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return points[-1][1]


def _energy(data: Telemetry, energy: list[Sample], span: tuple[float, float] | None
            ) -> float | None:
    """Joules all GPUs used over ``span`` (``energy``: the energy counters' samples, read
    between readings); None when a GPU does not count energy or the readings do not cover the
    span."""
    if span is None:
        return None
    counted = {s.labels for s in energy}
    if not counted or len(counted) < len(data.gpus):
        return None
    points = series(energy, "gpu", "energy_j")
    start, end = _at(points, span[0]), _at(points, span[1])
    if start is None or end is None or end < start:
        return None
    return end - start


def _span(data: Telemetry, records: list[RequestRecord]) -> tuple[float, float] | None:
    """When a step's measured requests were in flight: first sent to last ended (s)."""
    starts = [r.sent_ns or r.scheduled_ns for r in records if r.sent_ns or r.scheduled_ns]
    ends = [r.end_ns for r in records if r.end_ns is not None]
    if not starts or not ends:
        return None
    return data.seconds(min(starts)), data.seconds(max(ends))


def client_bound(cpu_pct: float | None, lag_ms: float | None, lag_limit_ms: float,
                 worker_cpu_pct: float | None = None, worker_lag_ms: float | None = None
                 ) -> str | None:
    """Why the client may have limited a step (a sentence), or None when it kept up: the
    parent's event loop (``cpu_pct``, ``lag_ms``) or, with worker processes, the busiest
    worker's (``worker_cpu_pct``, ``worker_lag_ms``), each judged alone: one loop is one core."""
    reasons = (_loop_reasons("its event loop", cpu_pct, lag_ms, lag_limit_ms)
               + _loop_reasons("its busiest worker's event loop", worker_cpu_pct, worker_lag_ms,
                               lag_limit_ms))
    if not reasons:
        return None
    return f"{CLIENT_BOUND_WORDS[0].upper()}{CLIENT_BOUND_WORDS[1:]}: {' and '.join(reasons)}."


def _loop_reasons(who: str, cpu_pct: float | None, lag_ms: float | None, lag_limit_ms: float
                  ) -> list[str]:
    reasons = []
    if cpu_pct is not None and cpu_pct >= CPU_SATURATED_PCT:
        reasons.append(f"{who} used {cpu_pct:.0f}% of a CPU core (median)")
    if lag_ms is not None and lag_ms > lag_limit_ms:
        reasons.append(f"{who} ran {lag_ms:.2f} ms late (median), more than the "
                       f"{lag_limit_ms:g} ms the client is accurate within")
    return reasons


def step_figures(data: Telemetry, records: list[RequestRecord],
                 calibration: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per step window: GPU power (mean, peak; all GPUs together), energy per output token and
    tokens per kWh (when the GPUs count energy), peak server queue / batch / KV-cache use, the
    client's CPU and loop lag (the parent's, and with worker processes the busiest worker's),
    and the client-bound verdict."""
    limit = DEFAULT_LAG_LIMIT_MS
    if isinstance(calibration, dict):
        tol = calibration.get("tolerance_ms") or (calibration.get("settings") or {}).get(
            "tolerance_ms")
        if isinstance(tol, (int, float)) and not isinstance(tol, bool) and tol > 0:
            limit = float(tol)
    groups = _by_metric(data.samples)

    def get(source: str, metric: str) -> list[tuple[float, float]]:
        return series(groups.get((source, metric), []), source, metric)

    power = get("gpu", "power_w")
    util = get("gpu", "utilization_pct")
    energy = groups.get(("gpu", "energy_j"), [])
    server = [s for (source, _), found in groups.items() if source == "server" for s in found]
    roles = {role: role_series(server, role) for role in ROLES}
    cpu = get("client", "loop_cpu_pct")
    lag = get("client", "loop_lag_p50_ms")
    lag_max = get("client", "loop_lag_max_ms")

    def busiest(metric: str) -> list[tuple[float, float]]:
        return busiest_series(groups.get(("client", metric), []), "client", metric)

    worker_cpu = busiest("worker_loop_cpu_pct")
    worker_lag = busiest("worker_loop_lag_p50_ms")
    worker_lag_max = busiest("worker_loop_lag_max_ms")
    out = []
    for window in data.steps:
        start = window.get("start_s")
        end = window.get("end_s")
        if start is None:
            continue
        start = float(start)
        end = float("inf") if end is None else float(end)
        step = int(window["step"])
        mine = [r for r in records if r.step == step]
        span = _span(data, mine)
        # The client and the energy are judged while the measured requests were in flight:
        # not while prompts were built or warm-ups ran.
        low, high = span if span is not None else (start, end)
        joules = _energy(data, energy, span)
        tokens = output_tokens_between(mine, data.origin_ns + int(low * 1e9),
                                       data.origin_ns + int(high * 1e9)) if span else None
        per_token = joules / tokens if joules is not None and tokens else None
        cpus = _within(cpu, low, high)
        cpu_median = statistics.median(cpus) if cpus else None
        lags = _within(lag, low, high)
        lag_median = statistics.median(lags) if lags else None
        worker_cpus = _within(worker_cpu, low, high)
        worker_cpu_median = statistics.median(worker_cpus) if worker_cpus else None
        worker_lags = _within(worker_lag, low, high)
        worker_lag_median = statistics.median(worker_lags) if worker_lags else None
        reason = client_bound(cpu_median, lag_median, limit, worker_cpu_median,
                              worker_lag_median)
        util_points = [v / max(1, len(data.gpus)) for v in _within(util, start, end)]
        out.append({
            "step": step, "start_s": _round(float(start)),
            "end_s": None if end == float("inf") else _round(end),
            "power_w_mean": _round(_mean(_within(power, start, end)), 1),
            "power_w_peak": _round(_peak(_within(power, start, end)), 1),
            "gpu_utilization_pct_mean": _round(_mean(util_points), 1),
            "energy_j": _round(joules),
            "energy_output_tokens": _round(tokens, 1) if joules is not None else None,
            "j_per_output_token": _round(per_token, 6),
            "output_tokens_per_kwh": _round(3.6e6 / per_token, 0) if per_token else None,
            "peak_queue": _round(_peak(_within(roles["queue"], start, end))),
            "peak_batch": _round(_peak(_within(roles["batch"], start, end))),
            "peak_kv_cache": _round(_peak(_within(roles["kv_cache"], start, end)), 4),
            "client_cpu_pct": _round(cpu_median, 1),
            "loop_lag_p50_ms": _round(lag_median),
            "loop_lag_max_ms": _round(_peak(_within(lag_max, low, high))),
            "worker_loop_cpu_pct": _round(worker_cpu_median, 1),
            "worker_loop_lag_p50_ms": _round(worker_lag_median),
            "worker_loop_lag_max_ms": _round(_peak(_within(worker_lag_max, low, high))),
            "lag_limit_ms": limit,
            "client_bound": reason is not None,
            "client_bound_reason": reason,
        })
    return out
