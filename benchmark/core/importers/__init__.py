"""Open other tools' result files as runs of ours.

    runs = import_files(["benchmarks.json", "profile_export_aiperf.json"], "results")
    imported = convert_documents([("x.json", json.loads(text))])    # pure: documents in
    result = to_run_result(imported[0])                               # a RunResult, unsaved

Formats are recognised by content, never by file name (``FORMATS``, tried in order):
GuideLLM ``benchmarks.json``/``.yaml``, vLLM ``bench serve --save-result``, AIPerf
``profile_export_aiperf.json``, inference-benchmarker's results, llmperf ``_summary.json``.
Per-request companions (AIPerf's ``profile_export.jsonl``, llmperf's
``_individual_responses.json``) join the one summary of the same tool given with them.

Every file is checked and converted before anything is written; a bad one is refused with its
name and what was wrong (``ImportFileError``) and nothing is saved. Each run is written into a
temporary folder and renamed into place (``results.save_new_run``), so the results folder never
holds half a run. An imported run keeps the statistics its file gave (``RunResult.source``,
``stored_steps``); a metric the file lacks is absent ("not in the source file"), never 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ...config import RunConfig
from ...errors import ImportFileError
from ..results import RunResult, new_run_id, now_iso, save_new_run
from ..stats import METRIC_KEYS, StepSummary
from . import aiperf, guidellm, inference_benchmarker, llmperf, vllm
from .common import Imported, ImportedStep

__all__ = [
    "FORMATS",
    "Imported",
    "ImportedStep",
    "MAX_FILE_BYTES",
    "parse_document",
    "detect",
    "convert_documents",
    "to_run_result",
    "import_files",
]

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Format:
    """A peer's file kind: how to recognise it, how to convert it."""

    key: str
    title: str
    matches: Callable[[Any], bool]
    convert: Callable[..., Imported] | None = None
    companion_of: str | None = None    # a per-request file that joins this format's summary


FORMATS: tuple[Format, ...] = (
    Format("guidellm", "GuideLLM benchmarks report", guidellm.matches, guidellm.convert),
    Format("vllm", "vLLM bench serve result", vllm.matches, vllm.convert),
    Format("aiperf", "AIPerf profile_export_aiperf.json", aiperf.matches, aiperf.convert),
    Format("inference-benchmarker", "inference-benchmarker results",
           inference_benchmarker.matches, inference_benchmarker.convert),
    Format("llmperf", "llmperf summary", llmperf.matches, llmperf.convert),
    Format("aiperf-requests", "AIPerf profile_export.jsonl", aiperf.matches_rows,
           companion_of="aiperf"),
    Format("llmperf-requests", "llmperf individual responses", llmperf.matches_rows,
           companion_of="llmperf"),
)
_KNOWN = ("GuideLLM benchmarks.json/.yaml, vLLM bench serve --save-result JSON, AIPerf "
          "profile_export_aiperf.json (+ profile_export.jsonl), inference-benchmarker results "
          "JSON, llmperf _summary.json (+ _individual_responses.json)")


def parse_document(name: str, data: bytes) -> Any:
    """The parsed content of one file: JSON, JSON lines (a list) or YAML (GuideLLM's .yaml).

    Refuses (``ImportFileError``) an empty, oversized, non-UTF-8 or unparsable file, naming
    where parsing stopped (a truncated JSON file ends early)."""
    if len(data) > MAX_FILE_BYTES:
        raise ImportFileError(name, f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFileError(name, "the file is not UTF-8 text (JSON or YAML was expected).")
    stripped = text.strip()
    if not stripped:
        raise ImportFileError(name, "the file is empty.")
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        error = exc
    lines = [line for line in stripped.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].lstrip().startswith("{"):
        try:
            return [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            pass
    if not stripped.startswith(("{", "[")):
        parsed = _yaml(stripped)
        if isinstance(parsed, dict):
            return parsed
    where = f"line {error.lineno}, column {error.colno}"
    ending = " (the file ends early: it may be truncated)" if _ends_early(stripped) else ""
    raise ImportFileError(name, f"not valid JSON: {error.msg} at {where}{ending}.")


def _ends_early(text: str) -> bool:
    """True when JSON ``text`` stops inside a string or with brackets still open."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return in_string or depth > 0


def _yaml(text: str) -> Any:
    try:
        import yaml     # optional: GuideLLM's .yaml reports; JSON needs nothing
    except ImportError:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def detect(document: Any) -> Format | None:
    """The format whose shape ``document`` has, or None."""
    for fmt in FORMATS:
        try:
            if fmt.matches(document):
                return fmt
        except (AttributeError, TypeError, KeyError, IndexError):
            continue
    return None


def convert_documents(documents: Sequence[tuple[str, Any]]) -> list[Imported]:
    """Convert parsed documents (name, content), companions joined to their summary.

    Raises ``ImportFileError`` for the first file that cannot be used; pure otherwise."""
    kinds: list[tuple[str, Any, Format]] = []
    for name, document in documents:
        fmt = detect(document)
        if fmt is None:
            raise ImportFileError(name, f"not a result file this version can read "
                                        f"({_shape(document)}). It reads: {_KNOWN}.")
        kinds.append((name, document, fmt))
    companions: dict[int, tuple[str, Any]] = {}
    for name, document, fmt in kinds:
        if fmt.companion_of is None:
            continue
        owners = [i for i, (_, _, f) in enumerate(kinds) if f.key == fmt.companion_of]
        if len(owners) != 1:
            raise ImportFileError(name, f"this is a per-request file ({fmt.title}); import it "
                                        f"together with exactly one summary file of the same "
                                        f"run (found {len(owners)}).")
        if owners[0] in companions:
            raise ImportFileError(name, "a second per-request file for the same summary.")
        companions[owners[0]] = (name, document)
    out: list[Imported] = []
    for index, (name, document, fmt) in enumerate(kinds):
        if fmt.convert is None:
            continue
        if index in companions:
            extra_name, extra = companions[index]
            out.append(fmt.convert(document, name, extra, extra_name))
        else:
            out.append(fmt.convert(document, name))
    return out


def _shape(document: Any) -> str:
    if isinstance(document, dict):
        keys = ", ".join(repr(str(k)[:30]) for k in list(document)[:6])
        return f"an object with keys {keys}" if keys else "an empty object"
    if isinstance(document, list):
        return f"a list of {len(document)} entries"
    return f"a single {type(document).__name__}"


def to_run_result(imported: Imported, run_id: str | None = None) -> RunResult:
    """The run of ours that shows ``imported``: its statistics as stored steps, its
    per-request rows as records, marked with the tool, version and file it came from."""
    steps = tuple(imported.steps)
    config = RunConfig(
        tokenizer_name=imported.model, url=imported.url or "", api="openai",
        model=imported.model, batch_sizes=tuple(s.step for s in steps), mode="concurrency",
        sequence_length=imported.prompt_tokens or 0,
        decode_length=imported.output_tokens or 0, runs=1, warmups=0)
    stored = [_step_summary(s, config) for s in steps]
    source = {
        "tool": imported.tool,
        "tool_version": imported.tool_version,
        "file": imported.file_name,
        "companion_file": imported.companion_file,
        "format": imported.format,
        "imported_at": now_iso(),
        "every_token_stamp": imported.every_token_stamp,
        "steps_are_concurrency": imported.steps_are_concurrency,
        "step_labels": {str(s.step): s.label for s in steps},
        "notes": list(imported.notes),
        "settings": dict(imported.settings),
    }
    return RunResult(
        run_id=run_id or new_run_id(f"{imported.model}-{imported.tool}"),
        config=config, server_info={"model_id": imported.model}, simulated=False,
        started_at=imported.started_at or source["imported_at"],
        ended_at=imported.ended_at,
        status="cancelled" if imported.cancelled else "complete",
        message=None, records=list(imported.records), source=source, stored_steps=stored,
    )


def _step_summary(step: ImportedStep, config: RunConfig) -> StepSummary:
    metrics = {key: None for key in METRIC_KEYS}
    metrics.update(step.metrics)
    return StepSummary(
        step=step.step, mode=config.mode, sequence_length=config.sequence_length,
        decode_length=config.decode_length, metrics=metrics,
        requests=step.requests, ok=step.ok, errors=step.errors,   # type: ignore[arg-type]
        timeouts=None, cancelled=step.cancelled, short_outputs=None,  # type: ignore[arg-type]
        rounds=1, input_tokens=step.input_tokens, output_tokens=step.output_tokens,  # type: ignore[arg-type]
        duration_s=step.duration_s)


def import_files(paths: Sequence[str | Path], root: str | Path, *,
                 names: Sequence[str] | None = None) -> list[Path]:
    """Import ``paths`` into ``root``; return the new run folders.

    ``names``: how to call each file in messages (the app passes the uploaded file's own
    name); default its base name. Every file is read, parsed and converted before any run is
    saved; each run then lands atomically."""
    shown = list(names) if names is not None else [Path(p).name for p in paths]
    documents = []
    for path, name in zip(paths, shown):
        try:
            if Path(path).stat().st_size > MAX_FILE_BYTES:
                raise ImportFileError(name, f"the file is larger than "
                                            f"{MAX_FILE_BYTES // 2**20} MiB.")
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ImportFileError(name, f"cannot be read ({exc.strerror or exc}).") from exc
        documents.append((name, parse_document(name, data)))
    results = [to_run_result(item) for item in convert_documents(documents)]
    return [save_new_run(result, root) for result in results]
