"""How much a capacity probe's verdict scatters at one request rate: long fixed-rate runs.

    .venv/bin/python tests/perf/capacity_windows.py [--rates 6.3,7.0,7.7] [--seconds 90]
        [--ttft-ms 1000] [--tpot-ms 50]

A benchmark, not a test. Against the simulator with its default timing model (512-token
prompts, 128 new tokens), it runs each rate as one Poisson step of 3 s not counted + ``--seconds``
counted, and prints the share of requests within the targets over the whole counted time (the
long-run attainment, the quantity a capacity probe estimates) and over each 10 s and 30 s
window of it (what a probe of that length would have seen). The spread of the windows at one
rate is the noise a probe's verdict carries; README, "Capacity", quotes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.config import RunConfig  # noqa: E402
from benchmark.core.capacity import WARMUP_S  # noqa: E402
from benchmark.core.engine import run  # noqa: E402
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402
from benchmark.core.slo import Slo, evaluate  # noqa: E402
from benchmark.simulator.process import SimulatorProcess  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="6.3,7.0,7.7")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--ttft-ms", type=float, default=1000.0)
    parser.add_argument("--tpot-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    rates = tuple(float(r) for r in args.rates.split(","))
    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    slo = Slo(ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = str(build_tiny_tokenizer(Path(tmp) / "tokenizer"))
        sim = SimulatorProcess(["--tokenizer", tokenizer])
        url = sim.start()
        try:
            config = RunConfig(tokenizer_name=tokenizer, url=url, sequence_length=512,
                               decode_length=128, mode="rate", rates=rates,
                               duration_s=WARMUP_S + args.seconds, timeout_s=60.0,
                               schedule_seed=args.seed, output_dir=str(Path(tmp) / "out"))
            result = run(config)
            for rate in rates:
                records = [r for r in result.records if r.step == rate]
                start = min(r.step_start_ns for r in records if r.step_start_ns)

                def share(lo: float, hi: float) -> str:
                    outcome = evaluate([r for r in records
                                        if lo <= (r.scheduled_ns - start) / 1e9 < hi], slo, None)
                    return f"{(outcome.attainment or 0) * 100:.0f}%"

                whole = evaluate([r for r in records
                                  if r.scheduled_ns >= start + WARMUP_S * 1e9], slo, None)
                print(f"{rate:g} req/s: {(whole.attainment or 0) * 100:.1f}% within target over "
                      f"{args.seconds:g} s ({whole.good}/{whole.sent}); 10 s windows "
                      + " ".join(share(WARMUP_S + 10 * i, WARMUP_S + 10 * (i + 1))
                                 for i in range(int(args.seconds // 10)))
                      + "; 30 s windows "
                      + " ".join(share(WARMUP_S + 30 * i, WARMUP_S + 30 * (i + 1))
                                 for i in range(int(args.seconds // 30))))
        finally:
            sim.stop()
    print("load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
