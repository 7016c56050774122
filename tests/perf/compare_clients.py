"""Our engine vs a plain aiohttp client (the way vLLM's ``bench serve`` measures), same server.

    .venv/bin/python tests/perf/compare_clients.py [--concurrency 64,256] [--decode-length 64]
        [--runs 3] [--repeat 3] [--token-ms 10]

A benchmark, not a test. It starts one simulated TGI server with ``--trace`` (10 ms per decode
step at any batch size, like ``python -m benchmark calibrate``), then, for each concurrency,
measures TGI-style rounds (N requests sent at once, wait for all; one warm-up round) twice:

- **engine**: ``benchmark.core.engine.run`` (our clients, stamps before JSON parsing, dispatch lag
  reported apart);
- **vllm-style**: a few lines of plain aiohttp written here after vLLM's ``async_request_tgi``
  (``benchmark_serving`` / ``vllm bench serve``): one shared ``ClientSession``, ``json=`` payload
  serialised per request, ``st = perf_counter()`` before ``session.post``, ``async for`` over
  the response lines, ``json.loads`` then ``perf_counter()`` per event.

Both send the same prompts with the same ``X-Request-Id`` scheme, so every request is matched
to the server's trace and the error is client-measured minus server-traced (same monotonic
clock). Printed side by side, medians over ``--repeat`` repetitions:

- TTFT error as each client reports it (the engine from the send, vLLM-style from ``st``);
- TTFT error from the moment the round started (includes dispatch, for both);
- first-token delivery: the client's stamp of the first token minus the server's write stamp
  (most of the TTFT error: the server stamps arrival with the kernel's receive time, so the
  rest is transit and the accuracy of the send stamp);
- decode token latency (TPOT) error, per-token gap (ITL) error, client CPU % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmark.calibration import (CalibrationSettings, SimulatedServer, cpu_seconds,  # noqa
                                 match_errors, measure_level)
from benchmark.core.clients.tgi import tgi_parameters  # noqa: E402
from benchmark.config import SamplingParams  # noqa: E402
from benchmark.core.prompts import build_prompts, build_tiny_tokenizer, load_tokenizer  # noqa: E402
from benchmark.core.records import RequestRecord  # noqa: E402
from benchmark.core.stats import percentile  # noqa: E402

AIOHTTP_TIMEOUT = aiohttp.ClientTimeout(total=6 * 60 * 60)  # vLLM's


# -- the vLLM-style client (a few lines, after vllm's async_request_tgi) ------------------------

async def vllm_style_request(session: aiohttp.ClientSession, url: str, payload: dict,
                             request_id: str) -> dict[str, Any]:
    st = time.perf_counter()
    most_recent = st
    ttft = 0.0
    stamps: list[float] = []
    async with session.post(url, json=payload, headers={"X-Request-Id": request_id}) as response:
        async for chunk_bytes in response.content:
            chunk_bytes = chunk_bytes.strip()
            if not chunk_bytes:
                continue
            chunk = chunk_bytes.decode("utf-8").removeprefix("data:")
            data = json.loads(chunk)
            timestamp = time.perf_counter()
            if data.get("token") is None:
                continue
            if ttft == 0.0:
                ttft = timestamp - st
            most_recent = timestamp
            stamps.append(timestamp)
    return {"st": st, "stamps": stamps, "latency": most_recent - st, "ttft": ttft}


async def vllm_style_rounds(url: str, payloads: list[dict], concurrency: int, runs: int,
                            prefix: str) -> tuple[list[RequestRecord], float, float]:
    """Warm-up round + ``runs`` rounds; records (stamps in ns), window seconds, CPU seconds."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                     ttl_dns_cache=300, keepalive_timeout=60,
                                     enable_cleanup_closed=True)
    records: list[RequestRecord] = []
    async with aiohttp.ClientSession(trust_env=True, timeout=AIOHTTP_TIMEOUT,
                                     connector=connector) as session:
        position = 0
        t0 = c0 = 0.0
        for run in range(runs + 1):
            if run == 1:
                t0, c0 = time.perf_counter(), cpu_seconds() or 0.0
            batch = payloads[position:position + concurrency]
            position += concurrency
            ids = [f"{prefix}-{run}-{i}" for i in range(len(batch))]
            scheduled = time.perf_counter_ns()
            outs = await asyncio.gather(*(vllm_style_request(session, url, p, rid)
                                          for p, rid in zip(batch, ids)))
            if run == 0:
                continue
            for rid, out in zip(ids, outs):
                stamps = [int(s * 1e9) for s in out["stamps"]]
                records.append(RequestRecord(
                    step=concurrency, run=run, request=0, scheduled_ns=scheduled,
                    sent_ns=int(out["st"] * 1e9), token_ns=stamps,
                    end_ns=stamps[-1] if stamps else None, output_tokens=len(stamps),
                    request_id=rid))
        window = time.perf_counter() - t0
        cpu = (cpu_seconds() or 0.0) - c0
    return records, window, cpu


# -- summaries ------------------------------------------------------------------------------------

@dataclass
class Errors:
    ttft_p50: float
    ttft_p99: float
    ttft_sched_p50: float
    ttft_sched_p99: float
    delivery_p50: float
    delivery_p99: float
    tpot_p50: float
    tpot_p99: float
    itl_p50: float
    itl_p99: float
    cpu_pct: float


def errors_of(records: list[RequestRecord], trace: dict, cpu_pct: float) -> Errors:
    reported = match_errors(records, trace)
    from_round = match_errors([replace(r, sent_ns=r.scheduled_ns) for r in records], trace)
    p = percentile
    return Errors(p(reported.ttft_error, 50), p(reported.ttft_error, 99),
                  p(from_round.ttft_error, 50), p(from_round.ttft_error, 99),
                  p(reported.first_delivery, 50), p(reported.first_delivery, 99),
                  p(reported.token_error, 50), p(reported.token_error, 99),
                  p(reported.itl_error, 50), p(reported.itl_error, 99), cpu_pct)


def median_errors(samples: list[Errors]) -> Errors:
    return Errors(*(statistics.median(getattr(s, f) for s in samples)
                    for f in Errors.__dataclass_fields__))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="64,256")
    ap.add_argument("--decode-length", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--token-ms", type=float, default=10.0)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    settings = CalibrationSettings(levels=tuple(levels), token_ms=args.token_ms,
                                   prefill_ms=args.token_ms, decode_length=args.decode_length,
                                   runs=args.runs)
    results: dict[tuple[str, int], list[Errors]] = {}
    with tempfile.TemporaryDirectory(prefix="compare-clients-") as tmp:
        work = Path(tmp)
        tokenizer_dir = str(build_tiny_tokenizer(work / "tokenizer"))
        tokenizer = load_tokenizer(tokenizer_dir)
        server = SimulatedServer(settings, work / "trace.jsonl").start()
        params = tgi_parameters(SamplingParams(), decode_length=args.decode_length,
                                sequence_length=settings.sequence_length, seed=None)
        url = server.url + "/generate_stream"
        try:
            for rep in range(args.repeat):
                for level in levels:
                    level_result = measure_level(level, settings, server, tokenizer_dir,
                                                 work / f"r{rep}")
                    row = level_result.row
                    results.setdefault(("engine", level), []).append(
                        errors_of(level_result.records, level_result.trace,
                                  row.client_cpu_pct or 0.0))
                    prompts = build_prompts(tokenizer, length=settings.sequence_length,
                                            count=level * (args.runs + 1), seed=rep)
                    payloads = [{"inputs": text, "parameters": params, "stream": True}
                                for text in prompts.texts]
                    records, window, cpu = asyncio.run(vllm_style_rounds(
                        url, payloads, level, args.runs, f"vllm-{rep}-{level}"))
                    trace = server.rows(wait_for=[r.request_id for r in records if r.ok])
                    results.setdefault(("vllm-style", level), []).append(
                        errors_of(records, trace, 100.0 * cpu / window))
                    print(f"repetition {rep + 1}/{args.repeat}, concurrency {level}: done",
                          file=sys.stderr, flush=True)
        finally:
            server.stop()

    print(f"Same simulated TGI server ({args.token_ms:g} ms per token), TGI-style rounds, "
          f"{args.decode_length} tokens, {args.runs} rounds; medians of {args.repeat} "
          f"repetitions. Errors in ms = client-measured minus server-traced.\n")
    print("| users | client | TTFT err p50 | TTFT err p99 | TTFT from round start err p50 | "
          "p99 | 1st token delivery p50 | p99 | TPOT err p50 | TPOT err p99 | ITL err p50 | "
          "ITL err p99 | client CPU % |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        for name in ("engine", "vllm-style"):
            e = median_errors(results[(name, level)])
            print(f"| {level} | {name} | {e.ttft_p50:+.2f} | {e.ttft_p99:+.2f} | "
                  f"{e.ttft_sched_p50:+.2f} | {e.ttft_sched_p99:+.2f} | {e.delivery_p50:.2f} | "
                  f"{e.delivery_p99:.2f} | {e.tpot_p50:+.3f} | "
                  f"{e.tpot_p99:+.3f} | {e.itl_p50:+.3f} | {e.itl_p99:+.3f} | "
                  f"{e.cpu_pct:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
