"""--workers 1 vs 2 at 256 streams against the simulator: TTFT error and merged files' shape
(a benchmark, not a test).

    .venv/bin/python tests/perf/workers.py [--streams 256] [--workers 1,2] [--repeats 2]
        [--decode-length 64] [--token-ms 10] [--runs 3] [--simulator-workers 1]

Uses calibrate's harness (``measure_level``: the rounds pattern at ``--streams`` concurrent
requests against the calibration's simulated server, every request matched to the server's
trace by X-Request-Id, error = client minus server on the one monotonic clock). Runs the
worker counts in turn (1, 2, 1, 2, ... so that the machine's changing load falls on both) and
prints per run: TTFT error p50 / p99, token latency error p99, token events/s, the busiest
client process's CPU. Then whether the merged requests.csv files have the same columns and
row count for every worker count, and unique request ids. Prints the load average before and
after: the development machine has 2 cores shared with other work.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.calibration.analysis import CalibrationSettings  # noqa: E402
from benchmark.calibration.measure import SimulatedServer, measure_level  # noqa: E402
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402


def shape(folder: Path) -> tuple[tuple[str, ...], int, bool]:
    """requests.csv's columns, row count and whether its request ids are unique."""
    with open(folder / "requests.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        ids = [r["request_id"] for r in rows]
        return tuple(reader.fieldnames or ()), len(rows), len(ids) == len(set(ids))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--decode-length", type=int, default=64)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--simulator-workers", type=int, default=1)
    args = parser.parse_args()
    counts = [int(c) for c in args.workers.split(",")]
    settings = CalibrationSettings(levels=(args.streams,), token_ms=args.token_ms,
                                   prefill_ms=args.token_ms, decode_length=args.decode_length,
                                   runs=args.runs, simulator_workers=args.simulator_workers)
    results: dict[int, list] = {c: [] for c in counts}
    shapes: dict[int, set] = {c: set() for c in counts}
    with tempfile.TemporaryDirectory(prefix="workers-perf-") as tmp:
        work = Path(tmp)
        tokenizer = str(build_tiny_tokenizer(work / "tokenizer"))
        server = SimulatedServer(settings, work / "trace.jsonl").start()
        print(f"load average before: {os.getloadavg()}; {os.cpu_count()} cores; "
              f"{args.streams} streams x {args.decode_length} tokens of {args.token_ms:g} ms, "
              f"{args.runs} rounds; simulator processes: {args.simulator_workers}", flush=True)
        try:
            for repeat in range(1, args.repeats + 1):
                for count in counts:
                    run_dir = work / f"r{repeat}"
                    run_dir.mkdir(exist_ok=True)
                    row = measure_level(args.streams, settings, server, tokenizer, run_dir,
                                        count).row
                    folder = run_dir / (f"c{args.streams}" if count == 1
                                        else f"c{args.streams}-w{count}")
                    shapes[count].add(shape(folder))
                    results[count].append(row)
                    print(f"workers {count} (repeat {repeat}): {row.matched} of "
                          f"{row.requests} matched; TTFT error p50 "
                          f"{row.ttft_error_p50_ms:+.2f} p99 {row.ttft_error_p99_ms:+.2f} ms; "
                          f"token error p99 {row.token_error_p99_ms:+.3f} ms; "
                          f"{row.token_events_per_s:,.0f} token events/s; busiest client CPU "
                          f"{row.client_cpu_pct or 0:.0f}%; load {os.getloadavg()[0]:.1f}",
                          flush=True)
        finally:
            server.stop()
    print(f"load average after: {os.getloadavg()}")
    for count in counts:
        rows = results[count]
        print(f"workers {count}: median over repeats: TTFT error p50 "
              f"{statistics.median(r.ttft_error_p50_ms for r in rows):+.2f} ms, p99 "
              f"{statistics.median(r.ttft_error_p99_ms for r in rows):+.2f} ms")
    every = set().union(*shapes.values())
    columns = {s[0] for s in every}
    print(f"merged files: same columns for every worker count: {len(columns) == 1}; rows: "
          f"{sorted({s[1] for s in every})}; request ids unique: {all(s[2] for s in every)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
