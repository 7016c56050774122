"""How many streamed token events per second the simulator sustains (a benchmark, not a test).

    .venv/bin/python tests/perf/simulator_throughput.py [--streams 256] [--tokens 200]
        [--rounds 3] [--route generate_stream|chat] [--no-uvloop]

Starts ``python -m benchmark.simulator --zero-cost`` (no simulated GPU time, so only the HTTP
path is measured) as a subprocess, then a raw-asyncio client in THIS process opens ``--streams``
connections that each stream ``--tokens`` tokens, ``--rounds`` times. Prints events per second
of wall time and per second of the server's own CPU time, the second being the "one core"
figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.calibration import cpu_seconds  # noqa: E402
from benchmark.simulator.process import SimulatorProcess  # noqa: E402


async def one_stream(host: str, port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    events = 0
    tail = b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        events += data.count(b"\n\n")
        tail = (tail + data)[-7:]
        if tail.endswith(b"0\r\n\r\n"):
            break
    writer.close()
    return events


async def run_round(host: str, port: int, streams: int, request: bytes) -> int:
    counts = await asyncio.gather(*(one_stream(host, port, request) for _ in range(streams)))
    return sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--route", choices=("generate_stream", "chat"), default="generate_stream")
    parser.add_argument("--no-uvloop", action="store_true", help="client loop: plain asyncio")
    args = parser.parse_args()

    sim = SimulatorProcess(["--zero-cost", "--max-concurrent-requests", "100000",
                            "--max-batch-total-tokens", "100000000"], keep_lines=50)
    url = sim.start()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    if args.route == "chat":
        path = "/v1/chat/completions"
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": args.tokens, "stream": True}).encode()
    else:
        path = "/generate_stream"
        body = json.dumps({"inputs": "hello", "parameters": {"max_new_tokens": args.tokens}}
                          ).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    runner = asyncio.run
    if not args.no_uvloop:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            pass
    try:
        for r in range(args.rounds):
            cpu0 = cpu_seconds(sim.proc.pid)
            t0 = time.perf_counter_ns()
            events = runner(run_round(host, int(port), args.streams, request))
            wall = (time.perf_counter_ns() - t0) / 1e9
            cpu = cpu_seconds(sim.proc.pid) - cpu0
            expected = args.streams * (args.tokens + (1 if args.route == "chat" else 0))
            print(f"round {r + 1}: {events} events ({expected} expected) from {args.streams} "
                  f"streams in {wall:.2f} s: {events / wall:,.0f} events/s wall, server CPU "
                  f"{cpu:.2f} s: {events / max(cpu, 1e-9):,.0f} events per server CPU second",
                  flush=True)
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
