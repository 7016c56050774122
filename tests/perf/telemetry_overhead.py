"""Does the telemetry sampler change what the engine measures? Calibrate's harness, sampler on
vs off.

    .venv/bin/python tests/perf/telemetry_overhead.py [--concurrency 64,256] [--repeat 3]
        [--intervals 0,1,0.1]

A benchmark, not a test. It starts one simulated TGI server with ``--trace`` (10 ms per decode
step, as ``python -m benchmark calibrate`` does) and measures each concurrency level with the
engine (``calibration.measure_level``: rounds, 5 measured + 1 warm-up, 64 tokens) once per
telemetry interval, the intervals interleaved within each repetition so that drift of the
machine hits all of them alike. ``0`` is the sampler off; ``1`` is the default; ``0.1`` is ten
times the default rate, to make any cost visible. Every request is matched to the server's
trace, so each number is an error: client-measured minus server-traced, in ms.

First, the sampler's own cost, free of the machine's noise: the CPU time (``thread_time``) of
one reading (``Sampler.sample_once``: the simulator's /metrics over HTTP and parsed, a fake
8-GPU reader, the client's counters), and of parsing a vLLM-sized /metrics page (3,000 lines,
of which 3 are kept). At one reading a second, that cost is the share of a core the sampler
takes from the load generator.

Then, per level and interval (medians over ``--repeat``): TTFT error p50/p99, time per output
token error p50/p99, per-token gap (ITL) error p50/p99, token delivery p50/p99 (client stamp
minus the server's write stamp of the same token), client CPU (% of one core), and how many
telemetry rows the run saved (server rows read from the simulator's /metrics).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.calibration import CalibrationSettings, SimulatedServer, measure_level  # noqa
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402
from benchmark.core.telemetry import LoopProbe, Sampler  # noqa: E402
from benchmark.core.telemetry_data import parse_server_metrics  # noqa: E402

GPU_METRICS = ("utilization_pct", "memory_used_mib", "memory_used_pct", "power_w",
               "sm_clock_mhz", "temperature_c", "energy_j")


class EightGpus:
    def open(self):
        return [{"index": i, "name": "fake", "memory_total_mib": 1, "energy_counter": True}
                for i in range(8)]

    def read(self):
        return [(i, m, 1.0) for i in range(8) for m in GPU_METRICS]

    def close(self):
        pass


def vllm_page(lines: int = 3000) -> str:
    out = ["# TYPE vllm:num_requests_running gauge",
           'vllm:num_requests_running{engine="0",model_name="m"} 12.0',
           "# TYPE vllm:num_requests_waiting gauge",
           'vllm:num_requests_waiting{engine="0",model_name="m"} 3.0',
           "# TYPE vllm:kv_cache_usage_perc gauge",
           'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.4']
    out.append("# TYPE vllm:e2e_request_latency_seconds histogram")
    for i in range(lines - len(out)):
        out.append(f'vllm:e2e_request_latency_seconds_bucket{{le="{i}",model_name="m"}} {i}')
    return "\n".join(out) + "\n"


def reading_cost(url: str, calls: int = 200) -> tuple[float, float]:
    """(ms of CPU per reading, ms of CPU per vLLM-sized page parse)."""
    sampler = Sampler(interval_s=1.0, origin_ns=time.perf_counter_ns(),
                      metrics_url=url + "/metrics", gpu_reader=EightGpus(), probe=LoopProbe())
    sampler._open()
    sampler.sample_once()
    start = time.thread_time()
    for _ in range(calls):
        sampler.sample_once()
    per_reading = (time.thread_time() - start) / calls * 1e3
    sampler._close()
    assert sampler.data.missing == [], sampler.data.missing
    page = vllm_page()
    start = time.thread_time()
    for _ in range(20):
        assert len(parse_server_metrics(page, 0.0)) == 3
    return per_reading, (time.thread_time() - start) / 20 * 1e3

FIELDS = ("ttft_error_p50_ms", "ttft_error_p99_ms", "token_error_p50_ms", "token_error_p99_ms",
          "itl_error_p50_ms", "itl_error_p99_ms", "delivery_p50_ms", "delivery_p99_ms",
          "client_cpu_pct")


def telemetry_rows(folder: Path) -> tuple[int, int]:
    """(all rows, server rows) of a run's telemetry.csv; (0, 0) when it has none."""
    file = folder / "telemetry.csv"
    if not file.is_file():
        return 0, 0
    with open(file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return len(rows), sum(1 for r in rows if r["source"] == "server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--intervals", default="0,1,0.1")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    intervals = [float(x) for x in args.intervals.split(",")]
    results: dict[tuple[int, float], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="telemetry-overhead-") as tmp:
        work = Path(tmp)
        tokenizer = str(build_tiny_tokenizer(work / "tokenizer"))
        base = CalibrationSettings(levels=tuple(levels))
        server = SimulatedServer(base, work / "trace.jsonl").start()
        try:
            per_reading, per_page = reading_cost(server.url)
            print(f"One reading (TGI /metrics over HTTP + 8 fake GPUs + client): "
                  f"{per_reading:.2f} ms of CPU; parsing a 3,000-line vLLM page: "
                  f"{per_page:.2f} ms of CPU.\n")
            for rep in range(args.repeat):
                for level in levels:
                    order = intervals if rep % 2 == 0 else list(reversed(intervals))
                    for interval in order:
                        settings = CalibrationSettings(levels=tuple(levels),
                                                       telemetry_interval_s=interval)
                        folder = work / f"r{rep}-i{interval:g}"
                        row = measure_level(level, settings, server, tokenizer, folder).row
                        found = row.to_dict()
                        found["rows"], found["server_rows"] = telemetry_rows(folder / f"c{level}")
                        results.setdefault((level, interval), []).append(found)
                        print(f"rep {rep + 1} c={level} interval={interval:g}: ttft err p50 "
                              f"{found['ttft_error_p50_ms']:.3f} ms, itl err p99 "
                              f"{found['itl_error_p99_ms']:.3f} ms, cpu "
                              f"{found['client_cpu_pct']:.0f}%", file=sys.stderr, flush=True)
        finally:
            server.stop()
    header = ["streams", "interval s", *[f.replace("_ms", "").replace("_pct", " %")
                                          for f in FIELDS], "telemetry rows (server)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for level in levels:
        for interval in intervals:
            rows = results[(level, interval)]
            cells = []
            for name in FIELDS:
                values = [r[name] for r in rows if r.get(name) is not None]
                cells.append(f"{statistics.median(values):.3f}" if values else "n/a")
            total = statistics.median(r["rows"] for r in rows)
            server_rows = statistics.median(r["server_rows"] for r in rows)
            label = "off" if interval == 0 else f"{interval:g}"
            print(f"| {level} | {label} | " + " | ".join(cells)
                  + f" | {total:.0f} ({server_rows:.0f}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
