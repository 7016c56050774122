"""A priced capacity run against the simulator: what the Cost section says, end to end.

    .venv/bin/python tests/perf/cost_plan.py [--hardware l4x1] [--peak-rps 40]
        [--api-price-per-million 0.6] [--max-duration 90]

A demonstration, not a test. It starts the simulated TGI server in this process (its default
timing model), runs ``--mode capacity`` with 256-token prompts, 64 new tokens and targets of
500 ms to the first token and 50 ms per token, priced by ``--hardware``, with a deployment plan
for ``--peak-rps``, and prints the Capacity and Cost sections of the tables. The simulator is
not a GPU: the dollars show how the arithmetic reads, not what an L4 costs per token.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.cli import main  # noqa: E402
from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402
from benchmark.simulator import SimulatorConfig, run_in_thread  # noqa: E402


def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="cost-plan-"))
    tokenizer = str(build_tiny_tokenizer(folder / "tokenizer"))
    out = io.StringIO()
    with run_in_thread(SimulatorConfig(tokenizer=tokenizer)) as sim, \
            contextlib.redirect_stdout(out):
        code = main(["--tokenizer-name", tokenizer, "--url", sim.url, "--mode", "capacity",
                     "--sequence-length", "256", "--decode-length", "64",
                     "--slo-ttft-ms", "500", "--slo-tpot-ms", "50",
                     "--max-duration", str(args.max_duration), "--hardware", args.hardware,
                     "--peak-rps", str(args.peak_rps),
                     "--api-price-per-million", str(args.api_price_per_million),
                     "--output-dir", str(folder / "run")])
    text = out.getvalue()
    keep = False
    for line in text.splitlines():
        if line.startswith("### "):
            keep = line in ("### Capacity", "### Cost")
        if keep or line.startswith("Results:"):
            print(line)
    print(f"exit code {code}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="l4x1")
    parser.add_argument("--peak-rps", type=float, default=40.0)
    parser.add_argument("--api-price-per-million", type=float, default=0.6)
    parser.add_argument("--max-duration", type=float, default=90.0)
    run(parser.parse_args())
