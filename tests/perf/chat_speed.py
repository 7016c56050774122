"""How close the chat tab's speed line is to the server's own stamps (simulated TGI, traced).

    .venv/bin/python tests/perf/chat_speed.py [--turns 20] [--max-new-tokens 64]

A benchmark, not a test. It starts the simulated server with ``--trace`` (every request's
arrival and each token's write, on the same monotonic clock as ours), sends ``--turns`` chat
turns through ``benchmark.core.chat.stream_chat`` (each with its own ``X-Request-Id``), and
prints, per turn and as medians, the chat's time to first token and tokens/s next to the same
quantities from the server's trace (first token written - request arrived; (tokens - 1) / (last
token written - first token written)). The differences are what the chat adds: transit, the
HTTP client, parsing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.core.chat import ChatResult, stream_chat  # noqa: E402
from benchmark.simulator import SimulatorConfig, run_in_thread, trace_rows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        results: dict[str, ChatResult] = {}
        with run_in_thread(SimulatorConfig(trace=str(trace))) as sim:
            for turn in range(args.turns):
                request_id = f"chat-{turn}"
                messages = [{"role": "user", "content": f"Question number {turn}, please."}]
                for item in stream_chat(sim.url, messages, max_new_tokens=args.max_new_tokens,
                                        headers={"X-Request-Id": request_id}):
                    if isinstance(item, ChatResult):
                        results[request_id] = item
        rows = {row["request_id"]: row for row in trace_rows(trace)}
    print(f"{'turn':>5} {'TTFT chat':>10} {'TTFT server':>12} {'tok/s chat':>11} "
          f"{'tok/s server':>13} {'tokens':>7}")
    ttft_err, rate_err = [], []
    for request_id, result in results.items():
        row = rows[request_id]
        stamps = row["token_ns"]
        server_ttft = (stamps[0] - row["arrived_ns"]) / 1e6
        server_rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
        ttft_err.append(result.ttft_ms - server_ttft)
        rate_err.append(result.tokens_per_s - server_rate)
        print(f"{request_id:>8} {result.ttft_ms:8.2f}ms {server_ttft:10.2f}ms "
              f"{result.tokens_per_s:11.2f} {server_rate:13.2f} {result.tokens:7d}")
    print(f"\nmedian TTFT difference (chat - server): {statistics.median(ttft_err):+.2f} ms "
          f"(max {max(ttft_err):+.2f})")
    print(f"median tokens/s difference (chat - server): {statistics.median(rate_err):+.3f} "
          f"(max |d| {max(abs(e) for e in rate_err):.3f})")


if __name__ == "__main__":
    main()
