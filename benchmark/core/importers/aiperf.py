"""AIPerf ``profile_export_aiperf.json`` (and its per-request ``profile_export.jsonl``).

Schema from AIPerf's documentation (docs/tutorials/working-with-profile-exports.md in
ai-dynamo/aiperf): per metric an object with ``unit``, ``avg``, ``min``, ``max``,
``p1`` ... ``p99``, ``std``; ``request_count``, ``benchmark_duration``, ``error_request_count``,
``was_cancelled``, ``start_time``/``end_time``, ``input_config``. Each metric's ``unit`` is
read and converted explicitly (ms as is, s/sec x1000, ns /1e6); an unknown time unit is refused.

    time_to_first_token -> prefill_latency_ms
    inter_token_latency -> decode_token_latency_ms   ((request latency - TTFT) / (OSL - 1))
    request_latency     -> e2e_latency_ms
    output_sequence_length -> output_tokens;  input_sequence_length -> input_tokens
    request_throughput  -> requests_per_s;  output_token_throughput -> output_throughput_tok_s

The JSONL rows hold ``metadata`` (``request_start_ns``, ``request_end_ns``, ids) and
``metrics`` (``{"value", "unit"}`` each, ``inter_chunk_latency`` a list of gaps) and ``error``.
"""

from __future__ import annotations

from typing import Any

from .common import (Imported, ImportedStep, Reader, ms_from_ns, only_known,
                     record_from_times)

TOOL = "aiperf"

_TO_MS = {"ms": 1.0, "s": 1000.0, "sec": 1000.0, "seconds": 1000.0, "us": 0.001,
          "ns": 1e-6}
_TIMES = (("time_to_first_token", "prefill_latency_ms"),
          ("inter_token_latency", "decode_token_latency_ms"),
          ("request_latency", "e2e_latency_ms"))
_PLAIN = (("output_sequence_length", "output_tokens"),
          ("input_sequence_length", "input_tokens"),
          ("request_throughput", "requests_per_s"),
          ("output_token_throughput", "output_throughput_tok_s"))


def matches(document: Any) -> bool:
    """A dict whose ``time_to_first_token`` / ``request_latency`` is ``{"unit", "avg", ...}``."""
    if not isinstance(document, dict):
        return False
    for key in ("request_latency", "time_to_first_token", "request_throughput"):
        block = document.get(key)
        if isinstance(block, dict) and "unit" in block and "avg" in block:
            return True
    return False


def matches_rows(document: Any) -> bool:
    """AIPerf's per-request JSONL: a list of ``{"metadata", "metrics", ...}`` rows (one row
    alone parses as a single object)."""
    rows = [document] if isinstance(document, dict) else document
    return (isinstance(rows, list) and bool(rows)
            and all(isinstance(r, dict) and "metadata" in r and "metrics" in r
                    for r in rows[:5]))


def convert(document: Any, name: str, companion: Any = None,
            companion_name: str | None = None) -> Imported:
    read = Reader(name)
    found: dict[str, Any] = {}
    for key, ours in _TIMES:
        block = document.get(key)
        if isinstance(block, dict):
            found[ours] = read.metric(block, key, scale=_scale(read, block, key))
    for key, ours in _PLAIN:
        block = document.get(key)
        if isinstance(block, dict):
            found[ours] = read.metric(block, key)
    requests = _avg_count(read, document, "request_count")
    errors = _avg_count(read, document, "error_request_count")
    if errors is None and document.get("error_summary") == []:
        errors = 0          # AIPerf writes null, with an empty error summary, when none failed
    duration = document.get("benchmark_duration")
    duration_s = None
    if isinstance(duration, dict):
        scale = _scale(read, duration, "benchmark_duration") / 1000.0
        value = read.number(duration.get("avg"), "benchmark_duration.avg")
        duration_s = None if value is None else value * scale
    config = document.get("input_config") if isinstance(document.get("input_config"),
                                                        dict) else {}
    endpoint = config.get("endpoint") if isinstance(config.get("endpoint"), dict) else {}
    loadgen = config.get("loadgen") if isinstance(config.get("loadgen"), dict) else {}
    models = endpoint.get("model_names")
    model = str(models[0])[:200] if isinstance(models, list) and models else "unknown model"
    concurrency = read.field_count(loadgen, "concurrency", "input_config.loadgen.")
    rate = read.field_number(loadgen, "request_rate", "input_config.loadgen.")
    if concurrency:
        step, label = concurrency, f"{concurrency} concurrent requests"
    else:
        step, label = 1, f"request rate {rate:g} req/s" if rate else "load not in the file"
    ok = None if requests is None else requests - (errors or 0)
    for key in ("prefill_latency_ms", "e2e_latency_ms"):
        stats = found.get(key)
        if stats is not None and stats.count is None and ok is not None:
            found[key] = type(stats)(**{**stats.to_dict(), "count": ok})
    records: list[Any] = []
    if companion is not None:
        rows = [companion] if isinstance(companion, dict) else companion
        records = _records(Reader(companion_name or "profile_export.jsonl"), rows, step)
    return Imported(
        tool=TOOL, tool_version=read.text(document, "aiperf_version", "not in the source file"),
        file_name=name, format="AIPerf profile_export_aiperf.json", model=model,
        url=read.text(endpoint, "url"), started_at=read.text(document, "start_time") or None,
        ended_at=read.text(document, "end_time") or None,
        cancelled=document.get("was_cancelled") is True,
        steps=(ImportedStep(step=step, label=label, metrics=only_known(found),
                            requests=requests, ok=ok, errors=errors,
                            duration_s=duration_s),),
        records=tuple(records), every_token_stamp=bool(records),
        steps_are_concurrency=bool(concurrency),
        notes=("AIPerf's inter-token latency ((request latency - TTFT) / (output tokens - 1)) "
               "is shown as decode token latency.",),
        companion_file=companion_name if companion is not None else None,
    )


def _scale(read: Reader, block: dict[str, Any], key: str) -> float:
    unit = str(block.get("unit") or "").strip().lower()
    if unit not in _TO_MS:
        raise read.fail(f"field {key}.unit is {unit or 'missing'!r}; a time in ms, s, us or "
                        f"ns was expected.")
    return _TO_MS[unit]


def _avg_count(read: Reader, document: Any, key: str) -> int | None:
    block = document.get(key)
    if not isinstance(block, dict):
        return None
    value = read.number(block.get("avg"), f"{key}.avg")
    return None if value is None else int(round(value))


def _value_ms(read: Reader, metrics: dict[str, Any], key: str, where: str) -> float | None:
    block = metrics.get(key)
    if not isinstance(block, dict):
        return None
    value = read.number(block.get("value"), f"{where}{key}.value")
    return None if value is None else value * _scale(read, block, f"{where}{key}")


def _records(read: Reader, rows: list[Any], step: int) -> list[Any]:
    starts = [r["metadata"].get("request_start_ns") for r in rows
              if isinstance(r, dict) and isinstance(r.get("metadata"), dict)]
    starts = [s for s in starts if isinstance(s, int) and not isinstance(s, bool)]
    origin = min(starts) if starts else None
    out = []
    for i, row in enumerate(rows):
        where = f"line {i + 1}: "
        if not isinstance(row, dict):
            raise read.fail(f"{where}not an object.")
        meta = read.obj(row, "metadata", where)
        metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
        start = read.field_count(meta, "request_start_ns", f"{where}metadata.")
        end = read.field_count(meta, "request_end_ns", f"{where}metadata.")
        if start is not None and end is not None and end < start:
            raise read.fail(f"{where}metadata.request_end_ns is before request_start_ns.")
        gaps_block = metrics.get("inter_chunk_latency")
        gaps: list[float] = []
        if isinstance(gaps_block, dict) and isinstance(gaps_block.get("value"), list):
            scale = _scale(read, gaps_block, f"{where}inter_chunk_latency")
            gaps = [(read.number(g, f"{where}inter_chunk_latency") or 0.0) * scale
                    for g in gaps_block["value"]]
        error = row.get("error")
        message = None
        if error:
            message = (f"{error.get('type') or 'error'}: {error.get('message') or ''}"
                       if isinstance(error, dict) else str(error))
        out.append(record_from_times(
            step=step, index=i,
            start_ms=ms_from_ns(start - origin) if start is not None and origin is not None
            else None,
            ttft_ms=_value_ms(read, metrics, "time_to_first_token", where), gaps_ms=gaps,
            e2e_ms=(ms_from_ns(end - start) if start is not None and end is not None
                    else _value_ms(read, metrics, "request_latency", where)),
            input_tokens=_int_value(read, metrics, "input_sequence_length", where),
            output_tokens=_int_value(read, metrics, "output_sequence_length", where),
            error=message, request_id=read.text(meta, "x_request_id") or None,
            status=error.get("code") if isinstance(error, dict) and isinstance(
                error.get("code"), int) else None))
    return out


def _int_value(read: Reader, metrics: dict[str, Any], key: str, where: str) -> int | None:
    block = metrics.get(key)
    return read.count(block.get("value"), f"{where}{key}.value") if isinstance(
        block, dict) else None
