"""The capacity search against the simulator, checked against a brute-force ladder of rates.

    .venv/bin/python tests/perf/capacity_search.py [--sequence-length 512] [--decode-length 128]
        [--ttft-ms 1000] [--tpot-ms 50] [--max-duration 300] [--ladder 0.8,0.9,1.0,1.1,1.2]
        [--ladder-s S]

A benchmark, not a test. It starts the simulated TGI server in its own process with its
default timing model (an 8B model on one A100/H100-class GPU: see benchmark/simulator), then:

1. runs ``--mode capacity`` (the engine's search: one-at-a-time probe, saturation probe,
   Poisson rate probes) with the targets given, and prints every probe, how many there were,
   how long the search took and its answer;
2. runs a ladder of fixed Poisson rates around that answer (``--ladder`` multiples of it),
   each measured exactly as a search probe is: a 3 s warm-up not counted, then the counted
   seconds of the search's probe at that rate (``probe_plan``; ``--ladder-s`` to change),
   requests sent in the counted seconds judged by the same function (``summarize_step`` with
   the targets: errors and requests still running at the end count as sent and not good);
   it prints each rate's attainment;
3. says whether the two agree, defined as: every ladder rate at or below 0.9x the answer
   passes and every one at or above 1.1x fails. The rate of the answer itself (1.0x) is printed
   but not judged: the answer is the highest rate seen to pass once, so a second 30 s window
   there passes or fails by chance (README, "Capacity": at one rate near the limit, 30 s
   windows scatter by 20 points or more).

The issue's targets: the search brackets the capacity within ±5% in at most 8 probes and 5
minutes on the 2-core machine, where the ~10 fixed rates of a GuideLLM or
inference-benchmarker sweep would still leave the reading to the user.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.config import RunConfig  # noqa: E402
from benchmark.core.capacity import WARMUP_S, probe_plan  # noqa: E402
from benchmark.core.engine import run  # noqa: E402
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402
from benchmark.core.slo import Slo  # noqa: E402
from benchmark.core.stats import summarize_step  # noqa: E402
from benchmark.simulator.process import SimulatorProcess  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequence-length", type=int, default=512)
    parser.add_argument("--decode-length", type=int, default=128)
    parser.add_argument("--ttft-ms", type=float, default=1000.0)
    parser.add_argument("--tpot-ms", type=float, default=50.0)
    parser.add_argument("--attainment", type=float, default=0.9)
    parser.add_argument("--max-duration", type=float, default=300.0)
    parser.add_argument("--ladder", default="0.8,0.9,1.0,1.1,1.2")
    parser.add_argument("--ladder-s", type=float, default=None,
                        help="counted seconds per ladder rate (default: as the search's probe)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = str(build_tiny_tokenizer(Path(tmp) / "tokenizer"))
        sim = SimulatorProcess(["--tokenizer", tokenizer])
        url = sim.start()
        try:
            base = RunConfig(tokenizer_name=tokenizer, url=url,
                             sequence_length=args.sequence_length,
                             decode_length=args.decode_length, slo_ttft_ms=args.ttft_ms,
                             slo_tpot_ms=args.tpot_ms, slo_attainment=args.attainment,
                             timeout_s=60.0)
            search_config = dataclasses.replace(base, mode="capacity",
                                                max_duration_s=args.max_duration,
                                                output_dir=str(Path(tmp) / "search"))
            started = time.monotonic()
            result = run(search_config)
            took = time.monotonic() - started
            capacity = result.capacity
            assert capacity is not None, result.message
            print("\nSearch probes:")
            print(f"  {'#':>2} {'kind':<14} {'rate/s':>8} {'reqs':>5} {'within':>7} "
                  f"{'pass':>5} {'TTFT p90':>9} {'TPOT p90':>9}")
            for p in capacity.probes:
                ttft = p.ttft_ms["p90"] if p.ttft_ms else float("nan")
                tpot = p.tpot_ms["p90"] if p.tpot_ms else float("nan")
                print(f"  {p.step:>2} {p.kind:<14} {p.rate_rps:>8.2f} {p.requests:>5} "
                      f"{(p.attainment or 0) * 100:>6.1f}% {'yes' if p.passed else 'no':>5} "
                      f"{ttft:>7.0f}ms {tpot:>7.1f}ms"
                      + (f"  (stopped early: {p.stopped_why})" if p.stopped_early else ""))
            print(f"\nSearch: {len(capacity.probes)} probes in {took:.0f} s; ended: "
                  f"{capacity.ended}; answer {capacity.rate_rps} req/s; bracket "
                  f"{capacity.bracket}; in flight {capacity.in_flight}; "
                  f"tokens/s {capacity.output_tokens_per_s}")
            if capacity.rate_rps is None:
                print("No rate passed; no ladder to compare.")
                return 1
            low, high = capacity.bracket or (capacity.rate_rps, capacity.rate_rps)
            half = (high - low) / (high + low)
            print(f"Bracket half width: ±{half:.1%} of its middle")

            factors = [float(f) for f in args.ladder.split(",")]
            rates = tuple(round(capacity.rate_rps * f, 3) for f in factors)
            ladder_s = (args.ladder_s if args.ladder_s is not None
                        else max(probe_plan(r).measure_s for r in rates))
            ladder_config = dataclasses.replace(
                base, mode="rate", rates=rates, duration_s=ladder_s + WARMUP_S,
                output_dir=str(Path(tmp) / "ladder"))
            started = time.monotonic()
            ladder = run(ladder_config)
            ladder_took = time.monotonic() - started
            slo = Slo(ttft_ms=args.ttft_ms, tpot_ms=args.tpot_ms, attainment=args.attainment)
            print(f"\nLadder ({len(rates)} fixed Poisson rates, {ladder_s:g} s counted "
                  f"each after {WARMUP_S:g} s not counted, {ladder_took:.0f} s):")
            agrees = True
            for factor, rate in zip(factors, rates):
                records = [r for r in ladder.records if r.step == rate]
                start = min((r.step_start_ns for r in records if r.step_start_ns), default=0)
                for record in records:   # as the search's _settle marks its warm-up
                    record.warmup = record.scheduled_ns < start + int(WARMUP_S * 1e9)
                outcome = summarize_step(records, step=rate, mode="rate",
                                         sequence_length=args.sequence_length,
                                         decode_length=args.decode_length, slo=slo).slo
                assert outcome is not None
                expected = ("pass" if factor <= 0.9 + 1e-9 else
                            "fail" if factor >= 1.1 - 1e-9 else "either")
                got = "pass" if outcome.passed else "fail"
                ok = expected in ("either", got)
                agrees = agrees and ok
                print(f"  {rate:>8.2f} req/s ({factor:.1f}x): "
                      f"{(outcome.attainment or 0) * 100:5.1f}% within target "
                      f"({outcome.good}/{outcome.sent}) {got}; expected {expected}"
                      f"{'' if ok else '  <-- DISAGREES'}")
            print(f"\nLadder {'agrees' if agrees else 'DISAGREES'} with the search's answer "
                  f"{capacity.rate_rps:.2f} req/s (rates <= 0.9x pass, >= 1.1x fail).")
            targets = (len(capacity.probes) <= 8 and took <= 300 and half <= 0.05)
            print(f"Targets (≤ 8 probes, ≤ 300 s, ±5%): {'met' if targets else 'NOT met'}")
            print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            return 0 if (agrees and targets) else 1
        finally:
            sim.stop()


if __name__ == "__main__":
    raise SystemExit(main())
