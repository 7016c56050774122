"""inference-benchmarker's results JSON (huggingface/inference-benchmarker).

Schema from its results writer (``src/writers.rs``: ``BenchmarkReportWriter`` with ``config``,
``results``, ``start_time``, ``end_time``, ``system``; each result a
``BenchmarkResultsWriter``): ``id``, ``executor_type``, ``config`` (``max_vus``, ``rate``, ...),
``total_requests``, ``successful_requests``, ``failed_requests``, ``request_rate``,
``total_tokens``, ``total_tokens_sent``, ``token_throughput_secs``, ``duration_ms``, and
``time_to_first_token_ms`` / ``inter_token_latency_ms`` / ``e2e_latency_ms``, each with ``p50``,
``p60`` ... ``p99`` and ``avg`` (ms). The file does not carry the tool's version.

    time_to_first_token_ms -> prefill_latency_ms
    inter_token_latency_ms -> decode_token_latency_ms  (per request: (end - first token) /
                                                         (generated tokens - 1))
    e2e_latency_ms -> e2e_latency_ms;  request_rate -> requests_per_s
    token_throughput_secs -> output_throughput_tok_s
A result whose id is "warmup" is skipped (the tool's own warm-up).
"""

from __future__ import annotations

from typing import Any

from .common import Imported, ImportedStep, Reader, only_known

TOOL = "inference-benchmarker"

_LATENCIES = (("time_to_first_token_ms", "prefill_latency_ms"),
              ("inter_token_latency_ms", "decode_token_latency_ms"),
              ("e2e_latency_ms", "e2e_latency_ms"))
_NAMES = {"avg": "avg", "p50": "p50", "p90": "p90", "p99": "p99"}


def matches(document: Any) -> bool:
    """A dict with ``results`` whose entries hold ``executor_type`` and latency blocks."""
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return False
    first = document["results"][0] if document["results"] else None
    return isinstance(first, dict) and "executor_type" in first and (
        "time_to_first_token_ms" in first or "token_throughput_secs" in first)


def convert(document: Any, name: str, companion: Any = None) -> Imported:
    read = Reader(name)
    results = read.items(document, "results")
    steps: list[ImportedStep] = []
    for index, result in enumerate(results):
        where = f"results[{index}]."
        if not isinstance(result, dict):
            raise read.fail(f"results[{index}] is not an object.")
        ident = read.text(result, "id", f"result {index}")
        if ident == "warmup":
            continue
        found: dict[str, Any] = {}
        for key, ours in _LATENCIES:
            block = result.get(key)
            if isinstance(block, dict):
                found[ours] = read.metric(block, f"{where}{key}", names=_NAMES)
        found["requests_per_s"] = read.metric(result, where.rstrip("."),
                                              names={"avg": "request_rate"})
        found["output_throughput_tok_s"] = read.metric(
            result, where.rstrip("."), names={"avg": "token_throughput_secs"})
        ok = read.field_count(result, "successful_requests", where)
        config = result.get("config") if isinstance(result.get("config"), dict) else {}
        users = read.field_count(config, "max_vus", f"{where}config.")
        rate = read.field_number(config, "rate", f"{where}config.")
        kind = read.text(result, "executor_type", "unknown")[:40]
        label = f"{ident} ({kind}" + (f", rate {rate:g} req/s" if rate else "") + (
            f", up to {users} users)" if users else ")")
        duration_ms = read.field_number(result, "duration_ms", where)
        steps.append(ImportedStep(
            step=len(steps) + 1, label=label, metrics=only_known(found),
            requests=read.field_count(result, "total_requests", where), ok=ok,
            errors=read.field_count(result, "failed_requests", where),
            input_tokens=read.field_count(result, "total_tokens_sent", where),
            output_tokens=read.field_count(result, "total_tokens", where),
            duration_s=None if duration_ms is None else duration_ms / 1000.0))
    if not steps:
        raise read.fail("field results holds no benchmark besides the warm-up.")
    config = document.get("config") if isinstance(document.get("config"), dict) else {}
    return Imported(
        tool=TOOL, tool_version=read.text(config, "version", "not in the source file"),
        file_name=name, format="inference-benchmarker results",
        model=read.text(config, "model_name") or read.text(config, "tokenizer_name")
        or "unknown model",
        url=read.text(config, "url"), started_at=read.text(document, "start_time") or None,
        ended_at=read.text(document, "end_time") or None, steps=tuple(steps),
        steps_are_concurrency=False,
        prompt_tokens=_tokens(config, "prompt_options"),
        output_tokens=_tokens(config, "decode_options"),
        notes=("Steps are the file's benchmarks in order (1, 2, ...); each one's label says "
               "its executor and rate. inference-benchmarker's inter-token latency is shown "
               "as decode token latency.",),
        settings={"benchmark_kind": read.text(config, "benchmark_kind")},
    )


def _tokens(config: dict[str, Any], key: str) -> int | None:
    options = config.get(key)
    if isinstance(options, dict):
        value = options.get("num_tokens")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
