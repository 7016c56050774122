"""vLLM ``vllm bench serve --save-result`` JSON (also ``benchmarks/benchmark_serving.py``).

Schema from vLLM's source (``vllm/benchmarks/serve.py``: the ``result`` dict of
``benchmark()`` merged into ``result_json`` in ``main``): flat keys ``completed``, ``failed``,
``duration`` (s), ``total_input_tokens``/``total_output_tokens`` (``total_input``/
``total_output`` in newer versions), ``request_throughput``, ``output_throughput``,
``total_token_throughput``, and for each of ttft, tpot, itl, e2el: ``mean_X_ms``,
``median_X_ms``, ``std_X_ms``, ``pNN_X_ms`` (the percentiles chosen by
``--metric-percentiles``). With ``--save-detailed``: per-request ``ttfts`` (seconds),
``itls`` (lists of seconds), ``input_lens``, ``output_lens``, ``errors``. The file does not
carry vLLM's version.

    ttft -> prefill_latency_ms;  tpot -> decode_token_latency_ms ((e2e - ttft)/(out - 1));
    itl  -> inter_token_latency_ms (every gap pooled, as ours);  e2el -> e2e_latency_ms
    request_throughput -> requests_per_s; output_throughput -> output_throughput_tok_s
"""

from __future__ import annotations

from typing import Any

from .common import Imported, ImportedStep, Reader, ms_from_s, only_known, record_from_times

TOOL = "vllm bench serve"

_LATENCIES = (("ttft", "prefill_latency_ms"), ("tpot", "decode_token_latency_ms"),
              ("itl", "inter_token_latency_ms"), ("e2el", "e2e_latency_ms"))
_RATES = (("request_throughput", "requests_per_s"),
          ("output_throughput", "output_throughput_tok_s"),
          ("total_token_throughput", "total_throughput_tok_s"))


def matches(document: Any) -> bool:
    """A flat dict with ``completed`` and vLLM's ``mean_ttft_ms`` / ``request_throughput``."""
    return (isinstance(document, dict) and "completed" in document
            and ("mean_ttft_ms" in document or "median_ttft_ms" in document
                 or "request_throughput" in document))


def convert(document: Any, name: str, companion: Any = None) -> Imported:
    read = Reader(name)
    completed = read.field_count(document, "completed", required=True)
    failed = read.field_count(document, "failed")
    found: dict[str, Any] = {}
    for key, ours in _LATENCIES:
        names = {"avg": f"mean_{key}_ms", "p50": f"median_{key}_ms",
                 "p90": f"p90_{key}_ms", "p99": f"p99_{key}_ms"}
        found[ours] = read.metric(document, "", names=names)
    for key, ours in _RATES:
        found[ours] = read.metric(document, "", names={"avg": key})
    for stats_key in ("prefill_latency_ms", "e2e_latency_ms", "decode_token_latency_ms"):
        stats = found.get(stats_key)
        if stats is not None:     # one value per successful request
            found[stats_key] = type(stats)(**{**stats.to_dict(), "count": completed})
    concurrency = read.field_count(document, "max_concurrency")
    rate = document.get("request_rate")
    rate_text = "no rate limit" if rate in (None, "inf") else f"{_rate(read, rate)} req/s"
    if concurrency:
        step, label = concurrency, f"at most {concurrency} concurrent, {rate_text}"
    else:
        step, label = 1, f"no concurrency limit, {rate_text}"
    input_tokens = _first_count(read, document, "total_input_tokens", "total_input")
    output_tokens = _first_count(read, document, "total_output_tokens", "total_output")
    records = _records(read, document, step)
    return Imported(
        tool=TOOL, tool_version=read.text(document, "vllm_version", "not in the source file"),
        file_name=name, format="vLLM bench serve --save-result",
        model=read.text(document, "model_id", "unknown model"),
        url=read.text(document, "base_url"),
        steps=(ImportedStep(
            step=step, label=label, metrics=only_known(found),
            requests=None if failed is None else completed + failed, ok=completed,
            errors=failed, input_tokens=input_tokens, output_tokens=output_tokens,
            duration_s=read.field_number(document, "duration")),),
        records=tuple(records), every_token_stamp=bool(records),
        steps_are_concurrency=bool(concurrency),
        notes=("vLLM's TPOT ((e2e - TTFT) / (output tokens - 1)) is shown as decode token "
               "latency; its ITL keeps every gap, as ours does.",),
        settings={"backend": read.text(document, "backend"),
                  "date": read.text(document, "date")},
    )


def _rate(read: Reader, value: Any) -> str:
    number = read.number(value, "request_rate")
    return f"{number:g}"


def _first_count(read: Reader, document: Any, *keys: str) -> int | None:
    for key in keys:
        value = read.field_count(document, key)
        if value is not None:
            return value
    return None


def _records(read: Reader, document: Any, step: int) -> list[Any]:
    if not isinstance(document.get("ttfts"), list):
        return []
    ttfts = read.items(document, "ttfts")
    count = len(ttfts)
    columns = {}
    for key in ("itls", "input_lens", "output_lens", "errors"):
        values = document.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != count:
            raise read.fail(f"field {key} does not have one entry per request "
                            f"({count} in ttfts).")
        columns[key] = values
    out = []
    for i, ttft in enumerate(ttfts):
        error = (columns.get("errors") or [None] * count)[i] or None
        gaps = (columns.get("itls") or [[]] * count)[i]
        if not isinstance(gaps, list):
            raise read.fail(f"field itls[{i}] is not a list.")
        gap_ms = [ms_from_s(read.number(g, f"itls[{i}]")) or 0.0 for g in gaps]
        ttft_s = read.number(ttft, f"ttfts[{i}]")
        out.append(record_from_times(
            step=step, index=i, start_ms=None,
            ttft_ms=None if error else ms_from_s(ttft_s), gaps_ms=gap_ms,
            input_tokens=read.count((columns.get("input_lens") or [None] * count)[i],
                                    f"input_lens[{i}]"),
            output_tokens=read.count((columns.get("output_lens") or [None] * count)[i],
                                     f"output_lens[{i}]"),
            error=None if not error else str(error)))
    return out
