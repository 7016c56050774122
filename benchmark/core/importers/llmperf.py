"""llmperf ``*_summary.json`` (and ``*_individual_responses.json``), ray-project/llmperf.

Schema from llmperf's ``token_benchmark_ray.py`` (the summary is the flattened ``results``
dict: ``results_<metric>_<stat>``, stats ``mean``, ``min``, ``max``, ``stddev`` and
``quantiles_p25`` ... ``quantiles_p99``) and ``common_metrics.py``. Every time is in SECONDS
and is converted to ms here:

    results_ttft_s_*                -> prefill_latency_ms (x1000)
    results_end_to_end_latency_s_*  -> e2e_latency_ms (x1000)
    results_inter_token_latency_s_* -> time_per_output_token_incl_ttft_ms (x1000): llmperf
        divides the whole request time by the output tokens, so the TTFT is included
    results_number_output_tokens_*  -> output_tokens;  results_number_input_tokens_* ->
        input_tokens
    results_mean_output_throughput_token_per_s -> output_throughput_tok_s
    results_num_completed_requests_per_min / 60 -> requests_per_s

Individual responses: a list of ``{"ttft_s", "end_to_end_latency_s", "number_input_tokens",
"number_output_tokens", "error_code", "error_msg", ...}``.
"""

from __future__ import annotations

from typing import Any

from .common import (Imported, ImportedStep, Reader, ms_from_s, only_known,
                     record_from_times)

TOOL = "llmperf"

_METRICS = (("ttft_s", "prefill_latency_ms", 1000.0),
            ("end_to_end_latency_s", "e2e_latency_ms", 1000.0),
            ("inter_token_latency_s", "time_per_output_token_incl_ttft_ms", 1000.0),
            ("number_output_tokens", "output_tokens", 1.0),
            ("number_input_tokens", "input_tokens", 1.0))


def matches(document: Any) -> bool:
    """A flat dict with llmperf's ``results_ttft_s_mean``-style keys."""
    return isinstance(document, dict) and any(
        k in document for k in ("results_ttft_s_mean", "results_end_to_end_latency_s_mean",
                                "results_num_completed_requests"))


def matches_rows(document: Any) -> bool:
    """llmperf's individual responses: a list of dicts with ``ttft_s``/``end_to_end_latency_s``."""
    return (isinstance(document, list) and bool(document)
            and all(isinstance(r, dict) and ("ttft_s" in r or "end_to_end_latency_s" in r
                                             or "error_code" in r) for r in document[:5]))


def convert(document: Any, name: str, companion: Any = None,
            companion_name: str | None = None) -> Imported:
    read = Reader(name)
    found: dict[str, Any] = {}
    completed = read.field_count(document, "results_num_completed_requests")
    for key, ours, scale in _METRICS:
        prefix = f"results_{key}_"
        found[ours] = read.metric(document, "", scale=scale, names={
            "avg": prefix + "mean", "min": prefix + "min", "max": prefix + "max",
            "p50": prefix + "quantiles_p50", "p90": prefix + "quantiles_p90",
            "p99": prefix + "quantiles_p99"})
    found["output_throughput_tok_s"] = read.metric(
        document, "", names={"avg": "results_mean_output_throughput_token_per_s"})
    per_min = read.field_number(document, "results_num_completed_requests_per_min")
    if per_min is not None:
        found["requests_per_s"] = read.metric({"r": per_min / 60.0}, "", names={"avg": "r"})
    for key in ("prefill_latency_ms", "e2e_latency_ms"):
        stats = found.get(key)
        if stats is not None and completed is not None:
            found[key] = type(stats)(**{**stats.to_dict(), "count": completed})
    started = read.field_count(document, "results_num_requests_started")
    errors = read.field_count(document, "results_number_errors")
    concurrency = read.field_count(document, "num_concurrent_requests")
    step = concurrency or 1
    label = (f"{concurrency} concurrent requests" if concurrency
             else "concurrency not in the source file")
    records: list[Any] = []
    if companion is not None:
        records = _records(Reader(companion_name or "individual_responses.json"), companion,
                           step)
    return Imported(
        tool=TOOL, tool_version=read.text(document, "version", "not in the source file"),
        file_name=name, format="llmperf summary", model=read.text(document, "model",
                                                                  "unknown model"),
        steps=(ImportedStep(step=step, label=label, metrics=only_known(found),
                            requests=started, ok=completed, errors=errors),),
        records=tuple(records), every_token_stamp=False,
        steps_are_concurrency=bool(concurrency),
        prompt_tokens=_whole(document.get("mean_input_tokens")),
        output_tokens=_whole(document.get("mean_output_tokens")),
        notes=("llmperf writes seconds; every time here was converted to ms. Its inter-token "
               "latency includes the time to first token and is shown apart from decode token "
               "latency.",),
        companion_file=companion_name if companion is not None else None,
    )


def _whole(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return int(value)
    return None


def _records(read: Reader, rows: list[Any], step: int) -> list[Any]:
    out = []
    for i, row in enumerate(rows):
        where = f"[{i}]."
        if not isinstance(row, dict):
            raise read.fail(f"entry {i} is not an object.")
        code = row.get("error_code")
        message = row.get("error_msg")
        error = (f"error {code}: {message}".strip() if code not in (None, "", 200)
                 or message else None)
        out.append(record_from_times(
            step=step, index=i, start_ms=None,
            ttft_ms=ms_from_s(read.field_number(row, "ttft_s", where)),
            e2e_ms=ms_from_s(read.field_number(row, "end_to_end_latency_s", where)),
            input_tokens=read.field_count(row, "number_input_tokens", where),
            output_tokens=read.field_count(row, "number_output_tokens", where),
            error=error, status=code if isinstance(code, int) else None))
    return out
