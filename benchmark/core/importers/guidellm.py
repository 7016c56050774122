"""GuideLLM ``benchmarks.json`` / ``.yaml`` (its report: ``metadata``, ``config``, ``benchmarks``).

Read from a real file (GuideLLM 0.8.1 run against our simulator, tests/fixtures/imports).
Each entry of ``benchmarks`` becomes one step. From ``metrics.<name>.successful`` (``mean``,
``min``, ``max``, ``count``, ``percentiles.p50/p90/p99``):

    time_to_first_token_ms  (ms)  -> prefill_latency_ms
    inter_token_latency_ms  (ms)  -> decode_token_latency_ms  (same per-request definition:
                                     (last token - first token) / (output tokens - 1); GuideLLM
                                     weights its statistics by tokens)
    request_latency         (s)   -> e2e_latency_ms (x1000)
    time_per_output_token_ms (ms) -> time_per_output_token_incl_ttft_ms (includes the TTFT)
    output_token_count            -> output_tokens;  prompt_token_count -> input_tokens
    output_tokens_per_second / tokens_per_second -> output/total_throughput_tok_s: the mean
        only (the other statistics describe the rate over time, not a per-request value)
    requests_per_s: request_totals.successful / duration (our definition: successful
        requests over the window; GuideLLM's requests_per_second.mean averages a rate over
        time and differs, 15.6 against 18.7 req/s at 2 streams in the fixture)

Per-request rows (``requests.successful`` / ``errored`` / ``incomplete``) become records with
their send, first token, last token and end times.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .common import (Imported, ImportedStep, Reader, iso_from_epoch_s, ms_from_s, only_known,
                     record_from_times)

TOOL = "guidellm"

_LATENCIES = (
    ("time_to_first_token_ms", "prefill_latency_ms", 1.0),
    ("inter_token_latency_ms", "decode_token_latency_ms", 1.0),
    ("request_latency", "e2e_latency_ms", 1000.0),           # seconds -> ms
    ("time_per_output_token_ms", "time_per_output_token_incl_ttft_ms", 1.0),
    ("output_token_count", "output_tokens", 1.0),
    ("prompt_token_count", "input_tokens", 1.0),
)
_RATES = (
    ("output_tokens_per_second", "output_throughput_tok_s"),
    ("tokens_per_second", "total_throughput_tok_s"),
)
_NAMES = {"avg": "mean", "min": "min", "max": "max", "count": "count"}


def matches(document: Any) -> bool:
    """A dict with a ``benchmarks`` list whose entries hold ``metrics`` and a ``config``."""
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        return False
    first = document["benchmarks"][0] if document["benchmarks"] else None
    version = (document.get("metadata") or {}).get("guidellm_version") if isinstance(
        document.get("metadata"), dict) else None
    return bool(version) or (isinstance(first, dict) and "metrics" in first
                             and "config" in first)


def convert(document: Any, name: str, companion: Any = None) -> Imported:
    read = Reader(name)
    benchmarks = read.items(document, "benchmarks")
    if not benchmarks:
        raise read.fail("field benchmarks is empty: the file holds no benchmark.")
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    steps: list[ImportedStep] = []
    records = []
    model, url = "", ""
    starts: list[float] = []
    all_concurrent = True
    ends: list[float] = []
    for index, bench in enumerate(benchmarks):
        where = f"benchmarks[{index}]."
        if not isinstance(bench, dict):
            raise read.fail(f"benchmarks[{index}] is not an object.")
        config = read.obj(bench, "config", where)
        metrics = read.obj(bench, "metrics", where)
        strategy = config.get("strategy") if isinstance(config.get("strategy"), dict) else {}
        backend = config.get("backend") if isinstance(config.get("backend"), dict) else {}
        model = model or read.text(backend, "model")
        url = url or read.text(backend, "target")
        step, label, concurrent = _level(read, strategy, index, where)
        all_concurrent = all_concurrent and concurrent
        found: dict[str, Any] = {}
        for theirs, ours, scale in _LATENCIES:
            block = _successful(metrics, theirs)
            if block is not None:
                found[ours] = read.metric(block, f"{where}metrics.{theirs}.successful",
                                          scale=scale, names=_with_percentiles(block))
        for theirs, ours in _RATES:
            block = _successful(metrics, theirs)
            if block is not None:
                found[ours] = read.metric(block, f"{where}metrics.{theirs}.successful",
                                          names={"avg": "mean"})
        totals = metrics.get("request_totals") if isinstance(
            metrics.get("request_totals"), dict) else {}
        ok = read.field_count(totals, "successful", f"{where}metrics.request_totals.")
        errored = read.field_count(totals, "errored", f"{where}metrics.request_totals.")
        incomplete = read.field_count(totals, "incomplete", f"{where}metrics.request_totals.")
        total = read.field_count(totals, "total", f"{where}metrics.request_totals.")
        duration = read.field_number(bench, "duration", where)
        if ok is not None and duration:
            # Our requests/s: successful requests over the measured window. GuideLLM's own
            # requests_per_second.mean averages a rate over time, a different number.
            found["requests_per_s"] = read.metric({"r": ok / duration}, "", names={"avg": "r"})
        start = read.field_number(bench, "start_time", where)
        end = read.field_number(bench, "end_time", where)
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
        if start is not None and end is not None and end < start:
            raise read.fail(f"{where}end_time is before {where}start_time.")
        prompt = _sum(read, metrics, "prompt_token_count", where)
        output = _sum(read, metrics, "output_token_count", where)
        steps.append(ImportedStep(
            step=step, label=label, metrics=only_known(found), requests=total, ok=ok,
            errors=errored, cancelled=incomplete, input_tokens=prompt, output_tokens=output,
            duration_s=duration))
        records += _records(read, bench, step, start, where)
    if len({s.step for s in steps}) != len(steps):    # two levels with the same streams
        steps = [dataclasses.replace(s, step=i + 1) for i, s in enumerate(steps)]
        records = []
        all_concurrent = False
    data = (document.get("config") or {}) if isinstance(document.get("config"), dict) else {}
    spec = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    return Imported(
        tool=TOOL, tool_version=read.text(metadata, "guidellm_version", "unknown"),
        file_name=name, format="GuideLLM benchmarks report", model=model or "unknown model",
        url=url, started_at=iso_from_epoch_s(min(starts)) if starts else None,
        ended_at=iso_from_epoch_s(max(ends)) if ends else None, steps=tuple(steps),
        records=tuple(records), every_token_stamp=False, steps_are_concurrency=all_concurrent,
        prompt_tokens=_data_tokens(spec, "prompt_tokens"),
        output_tokens=_data_tokens(spec, "output_tokens"),
        notes=("GuideLLM's inter-token latency is shown as decode token latency (same "
               "per-request definition; GuideLLM weights its statistics by tokens). Its time "
               "per output token includes the time to first token and is shown apart.",),
        settings={"profile": (spec.get("profile") or {}).get("kind")
                  if isinstance(spec.get("profile"), dict) else None},
    )


def _successful(metrics: dict[str, Any], key: str) -> dict[str, Any] | None:
    block = metrics.get(key)
    if not isinstance(block, dict):
        return None
    part = block.get("successful")
    return part if isinstance(part, dict) and part.get("count") not in (None, 0) else None


def _with_percentiles(block: dict[str, Any]) -> dict[str, str]:
    return {**_NAMES, "p50": "percentiles.p50", "p90": "percentiles.p90",
            "p99": "percentiles.p99"}


def _sum(read: Reader, metrics: dict[str, Any], key: str, where: str) -> int | None:
    block = _successful(metrics, key)
    if block is None:
        return None
    total = read.number(block.get("total_sum"), f"{where}metrics.{key}.successful.total_sum")
    return None if total is None else int(round(total))


def _level(read: Reader, strategy: dict[str, Any], index: int,
           where: str) -> tuple[int, str, bool]:
    """(step, label, whether the step is a number of concurrent requests)."""
    kind = str(strategy.get("type_") or strategy.get("type") or "unknown")[:40]
    streams = read.field_count(strategy, "streams", f"{where}config.strategy.")
    if kind == "synchronous":
        return 1, "synchronous (one request at a time)", True
    if kind == "concurrent" and streams:
        return streams, f"{streams} concurrent stream{'' if streams == 1 else 's'}", True
    rate = read.field_number(strategy, "rate", f"{where}config.strategy.")
    if rate is not None:
        return index + 1, f"{kind} rate {rate:g} req/s", False
    return index + 1, kind, False


def _records(read: Reader, bench: dict[str, Any], step: int, start: float | None,
             where: str) -> list[Any]:
    groups = bench.get("requests")
    if not isinstance(groups, dict):
        return []
    out = []
    for kind in ("successful", "errored", "incomplete"):
        rows = groups.get(kind)
        if not isinstance(rows, list):
            continue
        for i, row in enumerate(rows):
            at = f"{where}requests.{kind}[{i}]."
            if not isinstance(row, dict):
                raise read.fail(f"{at[:-1]} is not an object.")
            begin = read.field_number(row, "request_start_time", at)
            ttft = read.field_number(row, "time_to_first_token_ms", at)
            latency = ms_from_s(read.field_number(row, "request_latency", at))
            timings = ((row.get("info") or {}).get("timings") or {}) if isinstance(
                row.get("info"), dict) else {}
            first = read.field_number(timings, "first_token_iteration", f"{at}info.timings.")
            last = read.field_number(timings, "last_token_iteration", f"{at}info.timings.")
            last_ms = (ms_from_s(last - begin) if last is not None and begin is not None
                       and first is not None and last > first else None)
            error = None
            if kind != "successful":
                info = row.get("info") if isinstance(row.get("info"), dict) else {}
                error = str(info.get("error") or kind)
            out.append(record_from_times(
                step=step, index=len(out),
                start_ms=ms_from_s(begin - start) if begin is not None and start is not None
                else None,
                ttft_ms=ttft, last_token_ms=last_ms, e2e_ms=latency,
                input_tokens=read.field_count(row, "prompt_tokens", at),
                output_tokens=read.field_count(row, "output_tokens", at), error=error,
                request_id=read.text(row, "request_id") or None))
    return out


def _data_tokens(spec: dict[str, Any], key: str) -> int | None:
    data = spec.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        value = data[0].get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
