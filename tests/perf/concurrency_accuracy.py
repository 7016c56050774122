"""TTFT error of the concurrency (and rate) patterns against the simulator's kernel stamps
(a benchmark, not a test).

    .venv/bin/python tests/perf/concurrency_accuracy.py [--users 256] [--requests 768]
        [--decode-length 64] [--token-ms 10] [--runs 2]

Starts the calibration's simulated server (``--token-ms`` per decode step whatever the batch,
a trace with the kernel's arrival stamp of every request) and runs the engine's concurrency
pattern against it: ``--users`` virtual users until ``--requests`` requests. Every request is
matched to its trace row by X-Request-Id; TTFT error = client TTFT - server TTFT (first token
written - request arrived). Prints, per run: TTFT error p50 / p99 / max, how many requests
were more than 20 ms off, dispatch lag p99 and the client's CPU use. Issue 12 saw 156 of 768
requests above 20 ms (p99 +60 ms) at 256 users, 64 tokens, 10 ms each: many requests end
together (one decode step) and restart together; the error was all on the read side (the
loop ran ~250 restarts back to back, ~30-60 ms, before it read its sockets again), which
``core/pacing.StartPacer`` now cuts into ~1 ms slices.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.calibration.analysis import CalibrationSettings, match_errors  # noqa: E402
from benchmark.calibration.measure import SimulatedServer, cpu_seconds  # noqa: E402
from benchmark.config import RunConfig  # noqa: E402
from benchmark.core.engine import run  # noqa: E402
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402
from benchmark.core.stats import percentile  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--requests", type=int, default=768)
    parser.add_argument("--decode-length", type=int, default=64)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    settings = CalibrationSettings(levels=(args.users,), token_ms=args.token_ms,
                                   prefill_ms=args.token_ms, decode_length=args.decode_length)
    with tempfile.TemporaryDirectory(prefix="concurrency-accuracy-") as tmp:
        work = Path(tmp)
        tokenizer = str(build_tiny_tokenizer(work / "tokenizer"))
        server = SimulatedServer(settings, work / "trace.jsonl").start()
        print(f"load average before: {os.getloadavg()}", flush=True)
        try:
            for attempt in range(1, args.runs + 1):
                config = RunConfig(tokenizer_name=tokenizer, url=server.url,
                                   mode="concurrency", batch_sizes=(args.users,),
                                   requests=args.requests, sequence_length=32,
                                   decode_length=args.decode_length, timeout_s=120.0,
                                   output_dir=str(work / f"run{attempt}"))
                cpu0, wall0 = cpu_seconds(), time.perf_counter()
                result = run(config)
                cpu = 100 * (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
                trace = server.rows(wait_for=[r.request_id for r in result.records if r.ok])
                samples = match_errors(result.records, trace)
                errors = samples.ttft_error
                print(f"run {attempt}: {result.status}, {samples.matched} of "
                      f"{len(result.records)} matched; TTFT error p50 "
                      f"{percentile(errors, 50):+.2f} p99 {percentile(errors, 99):+.2f} max "
                      f"{max(errors):+.2f} ms; over 20 ms: {sum(e > 20 for e in errors)}; "
                      f"of which send side (server arrival - sent) p99 "
                      f"{percentile(samples.send_to_server, 99):+.2f}, read side (first "
                      f"token stamped - written) p99 {percentile(samples.first_delivery, 99):+.2f}"
                      f" ms; dispatch p50 {percentile(samples.dispatch, 50):.2f} p99 "
                      f"{percentile(samples.dispatch, 99):.2f} ms; client CPU {cpu:.0f}%",
                      flush=True)
        finally:
            server.stop()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
