"""Prometheus text metrics with TGI's names, updated by the simulator's real traffic.

    metrics = Metrics()
    metrics.inc("tgi_request_count")
    metrics.observe("tgi_request_duration", 0.42)
    metrics.render()   # text/plain; version=0.0.4
"""

from __future__ import annotations

from collections import defaultdict

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0, 120.0)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

HISTOGRAMS = {
    "tgi_request_duration": DURATION_BUCKETS,
    "tgi_request_validation_duration": DURATION_BUCKETS,
    "tgi_request_queue_duration": DURATION_BUCKETS,
    "tgi_request_inference_duration": DURATION_BUCKETS,
    "tgi_request_mean_time_per_token_duration": DURATION_BUCKETS,
    "tgi_request_generated_tokens": TOKEN_BUCKETS,
    "tgi_request_input_length": TOKEN_BUCKETS,
    "tgi_request_max_new_tokens": TOKEN_BUCKETS,
    "tgi_batch_forward_duration": DURATION_BUCKETS,
    "tgi_batch_next_size": BATCH_BUCKETS,
}
COUNTERS = ("tgi_request_count", "tgi_request_success", "tgi_request_failure",
            "tgi_batch_inference_count", "tgi_batch_inference_success",
            "tgi_batch_concat")
GAUGES = ("tgi_queue_size", "tgi_batch_current_size", "tgi_batch_current_max_tokens",
          "tgi_batch_max_total_tokens")

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{v}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)  # counts.., sum, n

    def inc(self, name: str, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0.0) + 1.0

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets = HISTOGRAMS[name]
        key = tuple(sorted(labels.items()))
        series = self.hist[name].get(key)
        if series is None:
            series = self.hist[name][key] = [0.0] * (len(buckets) + 2)
        for i, bound in enumerate(buckets):
            if value <= bound:
                series[i] += 1
        series[-2] += value
        series[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        for name in COUNTERS:
            lines.append(f"# TYPE {name} counter")
            series = self.counters.get(name) or {(): 0.0}
            for key, value in sorted(series.items()):
                lines.append(f"{name}{_labels(key)} {value:g}")
        for name in GAUGES:
            lines.append(f"# TYPE {name} gauge")
            series = self.gauges.get(name) or {(): 0.0}
            for key, value in sorted(series.items()):
                lines.append(f"{name}{_labels(key)} {value:g}")
        for name, buckets in HISTOGRAMS.items():
            series = self.hist.get(name)
            if not series:
                continue
            lines.append(f"# TYPE {name} histogram")
            for key, values in sorted(series.items()):
                for bound, count in zip(buckets, values):
                    le = 'le="%g"' % bound
                    lines.append(f"{name}_bucket{_labels(key, le)} {count:g}")
                inf = 'le="+Inf"'
                lines.append(f"{name}_bucket{_labels(key, inf)} {values[-1]:g}")
                lines.append(f"{name}_sum{_labels(key)} {values[-2]:.9g}")
                lines.append(f"{name}_count{_labels(key)} {values[-1]:g}")
        return "\n".join(lines) + "\n"
