"""What every importer shares: the converted run (``Imported``), strict readers of numbers, and
the explicit unit conversions.

An importer is a pure function ``convert(document, name, companion) -> Imported``: a parsed
document in, our data out, no I/O. ``Reader`` refuses what a result file must not hold (a
negative latency, a NaN, a count that is not a whole number, a missing field the run cannot be
understood without) with ``ImportFileError``, whose message starts with the file's name.

Units: every time a peer writes in seconds goes through ``ms_from_s``; every nanosecond stamp
through ``ms_from_ns``; nothing is converted implicitly.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ...errors import ImportFileError
from ..records import RequestRecord
from ..stats import ALL_METRICS, MetricStats

__all__ = [
    "Imported",
    "ImportedStep",
    "Reader",
    "ms_from_s",
    "ms_from_ns",
    "MS_PER_S",
    "NS_PER_MS",
    "stats_of",
    "record_from_times",
]

MS_PER_S = 1000.0
NS_PER_MS = 1_000_000
_MAX_ROWS = 1_000_000


def ms_from_s(seconds: float | None) -> float | None:
    """Seconds (vLLM's per-request arrays, llmperf, GuideLLM's request_latency) to ms."""
    return None if seconds is None else float(seconds) * MS_PER_S


def ms_from_ns(nanoseconds: float | None) -> float | None:
    """Nanoseconds (AIPerf's request stamps) to ms."""
    return None if nanoseconds is None else float(nanoseconds) / NS_PER_MS


@dataclass(frozen=True)
class ImportedStep:
    """One load level of the source file (a concurrency, a rate, a sweep point).

    ``step``: the number of concurrent streams when the file says so, else the level's
    position (1, 2, ...); ``label`` says in words what the level was ("4 concurrent streams",
    "constant rate 2.5 req/s"). ``metrics`` holds only what the file had (keys of
    ``stats.ALL_METRICS``); counts the file did not give are None.
    """

    step: int
    label: str
    metrics: Mapping[str, MetricStats]
    requests: int | None = None
    ok: int | None = None
    errors: int | None = None
    cancelled: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Imported:
    """A peer's result file converted to our terms (see ``to_run_result``).

    ``every_token_stamp``: the records carry a stamp for every streamed chunk (vLLM's
    ``itls``, AIPerf's inter-chunk latencies), so gaps between tokens can be drawn; False when
    only the first/last token times are known. ``steps_are_concurrency``: each step number is
    a number of concurrent requests (False: the file's levels in order, 1, 2, ..., e.g. rates).
    ``notes``: how the file's metrics were read (which of its names became which of ours,
    where definitions differ).
    """

    tool: str
    tool_version: str
    file_name: str
    format: str
    model: str
    steps: tuple[ImportedStep, ...]
    records: tuple[RequestRecord, ...] = ()
    url: str = ""
    started_at: str | None = None
    ended_at: str | None = None
    cancelled: bool = False
    every_token_stamp: bool = False
    steps_are_concurrency: bool = True
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    notes: tuple[str, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    companion_file: str | None = None


class Reader:
    """Strict access to a parsed document; every refusal names the file and the field."""

    def __init__(self, name: str):
        self.name = name

    def fail(self, problem: str) -> ImportFileError:
        return ImportFileError(self.name, problem)

    # -- structure -------------------------------------------------------------------------
    def obj(self, data: Any, key: str, where: str = "") -> dict[str, Any]:
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, dict):
            raise self.fail(f"field {where}{key} is missing or not an object.")
        return value

    def items(self, data: Any, key: str, where: str = "") -> list[Any]:
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, list):
            raise self.fail(f"field {where}{key} is missing or not a list.")
        if len(value) > _MAX_ROWS:
            raise self.fail(f"field {where}{key} has more than {_MAX_ROWS} entries.")
        return value

    def text(self, data: Any, key: str, default: str = "") -> str:
        value = data.get(key) if isinstance(data, dict) else None
        if value is None:
            return default
        return str(value)[:300]

    # -- numbers ---------------------------------------------------------------------------
    def number(self, value: Any, where: str, *, required: bool = False,
               negative_ok: bool = False) -> float | None:
        """A finite number (None when absent and not ``required``); refuses text, NaN,
        infinity and, unless ``negative_ok``, negative values (no latency, count or rate
        can be below zero)."""
        if value is None:
            if required:
                raise self.fail(f"field {where} is missing.")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(f"field {where} is {_shown(value)}, not a number.")
        number = float(value)
        if not math.isfinite(number):
            raise self.fail(f"field {where} is {value!r}, not a finite number.")
        if number < 0 and not negative_ok:
            raise self.fail(f"field {where} is negative ({number:g}); a latency, count or "
                            f"rate cannot be below zero.")
        return number

    def field_number(self, data: Any, key: str, where: str = "", *,
                     required: bool = False) -> float | None:
        value = data.get(key) if isinstance(data, dict) else None
        return self.number(value, f"{where}{key}", required=required)

    def count(self, value: Any, where: str, *, required: bool = False) -> int | None:
        number = self.number(value, where, required=required)
        if number is None:
            return None
        if number != int(number):
            raise self.fail(f"field {where} is {number:g}, not a whole number.")
        return int(number)

    def field_count(self, data: Any, key: str, where: str = "", *,
                    required: bool = False) -> int | None:
        value = data.get(key) if isinstance(data, dict) else None
        return self.count(value, f"{where}{key}", required=required)

    def metric(self, values: Mapping[str, Any], where: str, *, scale: float = 1.0,
               names: Mapping[str, str] | None = None) -> MetricStats | None:
        """``MetricStats`` from a peer's summary block: ``names`` maps our stat names (avg,
        min, max, p50, p90, p99, count) to the block's keys ("percentiles.p50" reaches one
        level down); each number is multiplied by ``scale`` (1000 for seconds -> ms). None
        when the block holds none of them."""
        names = names or {"avg": "avg", "min": "min", "max": "max", "p50": "p50",
                          "p90": "p90", "p99": "p99", "count": "count"}
        found: dict[str, Any] = {}
        for ours, theirs in names.items():
            raw: Any = values
            for part in theirs.split("."):
                raw = raw.get(part) if isinstance(raw, Mapping) else None
            at = f"{where}.{theirs}" if where else theirs
            if ours == "count":
                found[ours] = self.count(raw, at)
            else:
                number = self.number(raw, at)
                found[ours] = None if number is None else number * scale
        return stats_of(**found)


def stats_of(avg: float | None = None, min: float | None = None, max: float | None = None,
             p50: float | None = None, p90: float | None = None, p99: float | None = None,
             count: int | None = None) -> MetricStats | None:
    """``MetricStats`` with what is known; None when no statistic is known at all."""
    if all(v is None for v in (avg, min, max, p50, p90, p99)):
        return None
    return MetricStats(avg=avg, min=min, max=max, p50=p50, p90=p90, p99=p99, count=count)


def only_known(metrics: Mapping[str, MetricStats | None]) -> dict[str, MetricStats]:
    """The metrics that have a value, in ``ALL_METRICS`` order."""
    return {k: metrics[k] for k in ALL_METRICS if metrics.get(k) is not None}  # type: ignore[misc]


def record_from_times(*, step: int, index: int, start_ms: float | None, ttft_ms: float | None,
                      gaps_ms: Iterable[float] = (), last_token_ms: float | None = None,
                      e2e_ms: float | None = None, input_tokens: int | None = None,
                      output_tokens: int | None = None, error: str | None = None,
                      request_id: str | None = None, status: int | None = None) -> RequestRecord:
    """A ``RequestRecord`` from a peer's per-request times (ms, relative to the request's send).

    Stamps are nanoseconds from the start of the source run (``start_ms``, 0 when the file
    does not say when the request went): the first token at ``ttft_ms``, then one stamp per
    gap of ``gaps_ms`` (or one at ``last_token_ms`` when only the last token's time is
    known), the end at ``e2e_ms``.
    """
    sent = round((start_ms or 0.0) * NS_PER_MS)
    tokens: list[int] = []
    if error is None and ttft_ms is not None:
        at = ttft_ms
        tokens.append(sent + round(at * NS_PER_MS))
        for gap in gaps_ms:
            at += gap
            tokens.append(sent + round(at * NS_PER_MS))
        if last_token_ms is not None and len(tokens) == 1 and last_token_ms > ttft_ms:
            tokens.append(sent + round(last_token_ms * NS_PER_MS))
    end = None if e2e_ms is None else sent + round(e2e_ms * NS_PER_MS)
    return RequestRecord(
        step=step, run=0, request=index, scheduled_ns=sent, sent_ns=sent, token_ns=tokens,
        end_ns=end, input_tokens=input_tokens, output_tokens=output_tokens,
        error=None if error is None else str(error)[:500],
        error_kind=None if error is None else "source", request_id=request_id, status=status,
    )


def iso_from_epoch_s(epoch_s: float) -> str:
    """A Unix time in seconds as ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
