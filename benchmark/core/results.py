"""A run as data (``RunResult``), its three files, and run ids.

    result = RunResult(run_id=new_run_id("gpt2"), config=config, server_info=info,
                       simulated=False)
    result.records.append(record)          # the engine appends measured records
    result.save("results/" + result.run_id)   # run.json, summary.csv, requests.csv (atomic)
    again = RunResult.load("results/" + result.run_id)   # raises ResultFileError
    rows = list_runs("results")            # history, newest first

Files written by ``save`` (each replaced atomically: temp file + ``os.replace``, so a reader
never sees half a file):

- ``run.json``: self-describing: schema and tool version, the whole config, server ``/info``,
  whether the server was simulated, start/end, status, per-step summaries, and every measured
  request with its raw stamps (``load`` rebuilds the ``RequestRecord`` list exactly).
- ``summary.csv``: one row per step and metric (``SUMMARY_COLUMNS``).
- ``requests.csv``: one row per measured request, warm-ups excluded (``REQUEST_COLUMNS``).
- ``telemetry.csv``: when the sampler ran (``RunResult.telemetry``), one row per reading
  (``telemetry_data.TELEMETRY_COLUMNS``); run.json's ``telemetry`` block holds the per-step
  figures (power, energy per token, peak queue and batch, the client-bound verdict).

Secrets: config and server dicts never hold tokens; messages, warnings and request errors are
passed through ``errors.redact`` on the way out anyway.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import RunConfig, strip_credentials
from ..errors import BenchmarkError, ConfigError, ResultFileError, redact
from .records import RequestRecord
from .capacity import Capacity, Probe
from .cost import COST_COLUMNS, cost_document
from .telemetry_data import TELEMETRY_FILE, Telemetry, read_telemetry_csv, telemetry_csv
from .stats import (ALL_METRICS, COUNT_KEYS, METRIC_KEYS, STAT_KEYS, StepSummary,
                    summarize)

__all__ = [
    "SCHEMA_VERSION",
    "TOOL_NAME",
    "RUN_FILE",
    "SUMMARY_FILE",
    "REQUESTS_FILE",
    "SUMMARY_COLUMNS",
    "SLO_COLUMNS",
    "CAPACITY_COLUMNS",
    "COST_COLUMNS",
    "REQUEST_COLUMNS",
    "STATUSES",
    "RunResult",
    "RunSummaryRow",
    "new_run_id",
    "check_run_id",
    "run_dir",
    "results_root",
    "default_output_dir",
    "check_output_dir_free",
    "check_results_dir",
    "mark_interrupted",
    "reconcile_runs",
    "list_runs",
    "now_iso",
    "environment_info",
    "save_new_run",
]

SCHEMA_VERSION = 1
TOOL_NAME = "tgi-benchmark"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.csv"
REQUESTS_FILE = "requests.csv"
# telemetry.csv (telemetry_data.TELEMETRY_FILE) sits beside them when the sampler ran.
STATUSES = ("running", "complete", "cancelled", "failed")

# The last four: the step's result against the latency targets (empty when none was set).
SLO_COLUMNS = ("good", "slo_attainment", "goodput_rps", "good_output_tokens_per_s")
# Capacity runs: each step is a probe; its kind, its rate, its verdict, and the answer.
CAPACITY_COLUMNS = ("probe_kind", "probe_rate_rps", "probe_passed", "probe_stopped_early",
                    "capacity_rps")
# Cost columns (core/cost.COST_COLUMNS): $ per million tokens and per thousand requests when a
# price was given, kWh per million output tokens when telemetry measured energy.
SUMMARY_COLUMNS = ("step", "metric", "unit", *STAT_KEYS, "count", "mode", *COUNT_KEYS,
                   *SLO_COLUMNS, *CAPACITY_COLUMNS, *COST_COLUMNS)
REQUEST_COLUMNS = (
    "batch_size", "run", "request", "ttft_ms", "e2e_ms", "decode_ms", "token_latency_ms",
    "input_tokens", "output_tokens", "finish_reason", "error",
    "requested_output_tokens", "token_events", "dispatch_lag_ms", "status", "error_kind",
    "request_id", "mode", "scheduled_ms", "sent_ms", "schedule_lag_ms", "client_queue_ms",
    "queued_e2e_ms", "retried", "coalesced_events", "tokens_from_events",
)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_RUN_JSON_BYTES = 512 * 1024 * 1024


def now_iso() -> str:
    """Wall-clock time for display, UTC, ISO 8601 to the second (``2026-11-28T16:30:12+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def environment_info() -> dict[str, Any]:
    """Where the client ran (no host name); ``pid``: the process writing the run (its owner:
    while it runs, the run is "running"; once it is gone, ``reconcile_runs`` ends the run)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "pid": os.getpid(),
    }


# ---------------------------------------------------------------------------------------------
# Run ids and folders


def new_run_id(model: str) -> str:
    """A fresh id like ``20261128-163012-llama-3-8b-3f9a`` (UTC time, model slug, random)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = (model or "").strip().rstrip("/\\").replace("\\", "/").split("/")[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "run"
    return f"{stamp}-{slug}-{secrets.token_hex(2)}"


def check_run_id(run_id: Any) -> str:
    """``run_id`` when it is safe as a folder name, else ``ResultFileError``.

    Allowed: letters, digits, '-', '_', '.', starting with a letter or digit, at most 128
    characters, no '..'. Slashes, backslashes and anything else are refused.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        shown = repr(run_id)[:80]
        raise ResultFileError(
            f"Run id {shown} is not valid: a run id uses only letters, digits, '-', '_' and '.' "
            f"(for example 20261128-163012-gpt2-3f9a). Check the link you opened."
        )
    return run_id


def results_root() -> Path:
    """The folder holding every run: env ``RESULTS_DIR``, default ``results``."""
    return Path(os.environ.get("RESULTS_DIR") or "results")


def check_results_dir(root: str | os.PathLike[str], name: str = "RESULTS_DIR") -> Path:
    """``root`` created if needed and proved writable (a file written and removed), so that a
    folder the runs cannot be saved in is refused before anything starts; ``ConfigError``
    naming ``name`` (the variable or flag it came from) otherwise."""
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError("results_dir", f"{name} ({path}) cannot be used to save runs "
                                         f"({exc.strerror or type(exc).__name__}). Set "
                                         f"RESULTS_DIR to a folder this user can create and "
                                         f"write to.") from None
    return path


def run_dir(root: str | os.PathLike[str], run_id: str) -> Path:
    """The folder of ``run_id`` under ``root``; refuses ids that would leave ``root``."""
    base = Path(root)
    folder = base / check_run_id(run_id)
    if folder.resolve().parent != base.resolve():
        raise ResultFileError(f"Run id {run_id!r} does not name a folder inside {base}.")
    return folder


def default_output_dir(model: str) -> Path:
    """``<RESULTS_DIR>/<new run id>`` for a run of ``model`` (the folder is not created)."""
    return results_root() / new_run_id(model)


# Folders a run must never be written into, even when empty (``--output-dir /`` as root once
# wrote /run.json): the file system's root, its standard top-level folders, the home folder.
SYSTEM_FOLDERS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32",
                            "/lib64", "/media", "/mnt", "/opt", "/proc", "/root", "/run",
                            "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var"})


def check_output_dir_free(folder: str | os.PathLike[str]) -> None:
    """Refuse a folder a new run must not write into: one that already holds a run or any other
    file (a run never overwrites or mixes with what is there), or a system folder.

    Raises ``ConfigError("output_dir", ...)``; a folder that does not exist yet, or is empty,
    is fine."""
    path = Path(folder)
    try:
        resolved = path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError("output_dir", f"Output folder {str(path)[:200]!r} cannot be used "
                                        f"({exc}).") from None
    if str(resolved) in SYSTEM_FOLDERS or resolved == Path.home().resolve() \
            or resolved.parent == resolved:
        raise ConfigError("output_dir", f"Output folder {resolved} is a system folder: a run "
                                        f"writes run.json, summary.csv and requests.csv there. "
                                        f"Give a new folder, like ./results/my-run.")
    if (path / RUN_FILE).exists():
        raise ConfigError("output_dir", f"{path} already holds a run ({RUN_FILE}); a new "
                                        "run would overwrite it. Choose a new folder, or move "
                                        "that run away first.")
    try:
        busy = path.is_dir() and any(path.iterdir())
    except OSError as exc:
        raise ConfigError("output_dir", f"Output folder {path} cannot be read "
                                        f"({exc.strerror or exc}).") from None
    if busy:
        raise ConfigError("output_dir", f"Output folder {path} is not empty: a run writes its "
                                        f"files into a folder of its own. Give a new or empty "
                                        f"folder.")
    if path.exists() and not path.is_dir():
        raise ConfigError("output_dir", f"Output folder {path} is a file, not a folder.")


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    """Everything about one run. ``records`` holds measured requests only (no warm-ups).

    ``status``: "running" while the engine works, then "complete", "cancelled" or "failed".
    ``server_info``: the server's ``/info``; ``server``: the launched ``ServerSettings`` as a
    dict (None when an existing endpoint was benchmarked); ``calibration``: the client's own
    measurement error when known; ``environment``: where the client ran (filled on save).

    Runs imported from another tool (``benchmark.core.importers``) carry ``source`` (the tool,
    its version, the file's name, what the file held) and ``stored_steps``: the statistics the
    file gave, which ``steps()`` returns as they are (there are no raw stamps to recompute them
    from). Their ``records`` are the per-request rows the file had, when it had any.
    """

    run_id: str
    config: RunConfig
    server_info: dict[str, Any] = field(default_factory=dict)
    simulated: bool = False
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    status: str = "running"
    message: str | None = None
    warnings: list[str] = field(default_factory=list)
    records: list[RequestRecord] = field(default_factory=list)
    server: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    tool_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    environment: dict[str, Any] | None = None
    # A capacity run's answer and probes (None in the other load patterns).
    capacity: Capacity | None = None
    telemetry: Telemetry | None = None   # the sampler's readings (None when it was off)
    source: dict[str, Any] | None = None
    stored_steps: list[StepSummary] | None = None

    # -- derived ---------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def model(self) -> str:
        """The model's name for display: server's model id, else --model, else the tokenizer."""
        return str(self.server_info.get("model_id") or self.config.model
                   or self.config.tokenizer_name)

    @property
    def measured_records(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.warmup]

    @property
    def imported(self) -> bool:
        """True for a run converted from another tool's file (see ``source``)."""
        return self.source is not None

    def steps(self) -> list[StepSummary]:
        """Per-step statistics of the measured records (computed, never stale); for an imported
        run, the statistics its source file gave."""
        if self.stored_steps is not None:
            return list(self.stored_steps)
        return summarize(self.measured_records, self.config)

    # -- files -----------------------------------------------------------------------------
    def to_dict(self, steps: list[StepSummary] | None = None) -> dict[str, Any]:
        """The content of run.json (``steps``: already computed summaries, to save work)."""
        steps = self.steps() if steps is None else steps
        document = {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": TOOL_NAME, "version": self.tool_version},
            "run_id": self.run_id,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "status": self.status,
            "complete": self.complete,
            "message": None if self.message is None else redact(self.message),
            "simulated": bool(self.simulated),
            "config": {**self.config.to_dict(), "url": strip_credentials(self.config.url),
                       "metrics_url": self.config.metrics_url and strip_credentials(
                           self.config.metrics_url)},
            "server_info": self.server_info,
            "server": self.server,
            "environment": self.environment or environment_info(),
            "warnings": [redact(w) for w in self.warnings],
            "steps": [s.to_dict() for s in steps],
            "calibration": self.calibration,
            "capacity": None if self.capacity is None else self.capacity.to_dict(),
            "files": self.files(),
            "telemetry": None if self.telemetry is None else self.telemetry.to_dict(
                self.measured_records, self.calibration),
            "source": self.source,
            "requests": [_record_out(r) for r in self.measured_records],
        }
        document["cost"] = cost_document(self.config, steps, self.capacity,
                                         document.get("telemetry"))
        return document

    def cost(self, steps: list[StepSummary] | None = None,
             telemetry_steps: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """run.json's ``cost`` block (core/cost.cost_document): the price, each step's $ per
        million tokens (and kWh where telemetry measured energy), the capacity point's cost and
        the deployment plan; None without a price or an energy measurement.
        ``telemetry_steps``: the telemetry's step figures when already computed."""
        telemetry = getattr(self, "telemetry", None)
        block = None if telemetry_steps is None else {"steps": telemetry_steps}
        if block is None and telemetry is not None and hasattr(telemetry, "to_dict"):
            try:
                block = telemetry.to_dict(self.measured_records, self.calibration)
            except (TypeError, ValueError, KeyError, AttributeError):
                block = None
        return cost_document(self.config, self.steps() if steps is None else steps,
                             self.capacity, block)

    def files(self) -> list[str]:
        """The files of this run's folder: run.json, summary.csv, requests.csv, and
        telemetry.csv when the sampler ran."""
        names = [RUN_FILE, SUMMARY_FILE]
        if not (self.imported and not self.measured_records):
            names.append(REQUESTS_FILE)   # an imported file without per-request rows has none
        return names + ([TELEMETRY_FILE] if self.telemetry is not None else [])

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write run.json, summary.csv and requests.csv (and telemetry.csv when the sampler
        ran) into ``folder`` (created); return it."""
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        steps = self.steps()
        document = self.to_dict(steps)
        atomic_write(path / RUN_FILE, run_json_text(document))
        atomic_write(path / SUMMARY_FILE, summary_csv(steps, self.capacity,
                                                      document.get("cost"),
                                                      imported=self.imported))
        if not (self.imported and not self.measured_records):
            # (an imported file without per-request rows has no requests.csv)
            atomic_write(path / REQUESTS_FILE, requests_csv(
                self.measured_records, self.config.mode, imported=self.imported))
        if self.telemetry is not None:
            # A copy: the sampler's thread may append while the file is written.
            atomic_write(path / TELEMETRY_FILE, telemetry_csv(list(self.telemetry.samples)))
        return path

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "run.json") -> "RunResult":
        """Rebuild a run from the content of run.json; ``ResultFileError`` when it is unusable."""
        if not isinstance(data, dict):
            raise ResultFileError(f"{source} does not hold a benchmark run (not a JSON object).")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultFileError(
                f"{source} has schema version {version!r}, and this version of TGI Benchmark "
                f"reads version {SCHEMA_VERSION}. Open it with the version that wrote it "
                f"(tool {(data.get('tool') or {}).get('version', 'unknown')})."
            )
        try:
            config = RunConfig.from_dict(data["config"])
            records = [_record_in(r) for r in data.get("requests") or []]
            tool = data.get("tool") or {}
            origin = data.get("source")     # another tool's file, for an imported run
            if origin is not None and not isinstance(origin, dict):
                raise TypeError("source is not a JSON object")
            stored = ([StepSummary.from_dict(s) for s in data.get("steps") or []]
                      if origin is not None else None)
            status = str(data.get("status") or "running")
            if status not in STATUSES:
                raise ResultFileError(f"{source} has an unknown status {status!r}; it was not "
                                      f"written by TGI Benchmark.")
            return cls(
                run_id=check_run_id(data["run_id"]),
                config=config,
                server_info=dict(data.get("server_info") or {}),
                simulated=bool(data.get("simulated", False)),
                started_at=str(data["started_at"]),
                ended_at=data.get("ended_at"),
                status=status,
                message=data.get("message"),
                warnings=list(data.get("warnings") or []),
                records=records,
                server=data.get("server"),
                calibration=data.get("calibration"),
                tool_version=str(tool.get("version") or "unknown"),
                schema_version=SCHEMA_VERSION,
                environment=data.get("environment"),
                capacity=(None if not data.get("capacity")
                          else Capacity.from_dict(data["capacity"])),
                telemetry=Telemetry.from_dict(data.get("telemetry")),
                source=origin,
                stored_steps=stored,
            )
        except ResultFileError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ResultFileError(
                f"{source} is damaged or incomplete ({type(exc).__name__}: {exc}); "
                f"run the benchmark again to get a fresh file."
            ) from exc

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "RunResult":
        """Read a saved run from its folder (or its run.json); ``ResultFileError`` when unusable."""
        path = Path(folder)
        file = path if path.name == RUN_FILE and not path.is_dir() else path / RUN_FILE
        if not file.parent.is_dir():
            raise ResultFileError(f"No saved run at {file.parent}: the folder does not exist.")
        if not file.is_file():
            raise ResultFileError(
                f"No saved run at {file.parent}: {RUN_FILE} is missing (the run may not have "
                f"finished its first step yet)."
            )
        try:
            if file.stat().st_size > _MAX_RUN_JSON_BYTES:
                raise ResultFileError(f"{file} is too large to be a benchmark run.")
            text = file.read_text(encoding="utf-8")
            data = json.loads(text)
        except ResultFileError:
            raise
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ResultFileError(
                f"{file} cannot be read as a benchmark run ({type(exc).__name__}); it may be "
                f"damaged. Run the benchmark again to get a fresh file."
            ) from exc
        result = cls.from_dict(data, source=str(file))
        if result.telemetry is not None:
            try:
                text = (file.parent / TELEMETRY_FILE).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = ""   # no samples: the page says what run.json says, without a timeline
            result.telemetry.samples = read_telemetry_csv(text)
        return result


# ---------------------------------------------------------------------------------------------
# File content


def run_json_text(document: dict[str, Any]) -> str:
    """run.json text: indented, except that each request is one compact line (files stay small
    and a request's token stamps do not take one line each)."""
    clean = dict(document)
    requests = clean.pop("requests", [])   # ints, text and None only: nothing to clean
    clean = finite(clean)
    head = json.dumps(clean, indent=1, ensure_ascii=False, allow_nan=False)
    lines = ",\n".join("  " + json.dumps(r, ensure_ascii=False, allow_nan=False,
                                         separators=(",", ":")) for r in requests)
    body = f'[\n{lines}\n ]' if requests else "[]"
    return head[:-2] + f',\n "requests": {body}\n}}\n'



def summary_csv(steps: list[StepSummary], capacity: Capacity | None = None,
                cost: dict[str, Any] | None = None, *, imported: bool = False) -> str:
    """summary.csv: one row per step and metric; empty cells where a metric has no sample.
    ``capacity``: a capacity run's answer, whose probes are the steps; ``cost``: run.json's
    cost block (its per-step costs fill the cost columns, repeated on each metric's row).
    ``imported``: a run converted from another tool's file lists only the metrics the file
    had (a missing one is not in the source file, not a measurement of nothing)."""
    probes = {} if capacity is None else {p.step: p for p in capacity.probes}
    costs = {float(c["step"]): [_num(c.get(k)) for k in COST_COLUMNS]
             for c in (cost or {}).get("steps") or []}
    answer = "" if capacity is None else _num(capacity.rate_rps)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for step in steps:
        counts = step.counts()
        extra = [k for k in ALL_METRICS if k not in METRIC_KEYS and step.metrics.get(k)]
        for key in (*METRIC_KEYS, *extra):
            stats = step.metrics.get(key)
            if imported and stats is None:
                continue
            values = ["" if stats is None else _num(getattr(stats, s)) for s in STAT_KEYS]
            count = 0 if stats is None else stats.count
            writer.writerow([step.step, key, ALL_METRICS[key].unit, *values,
                             "" if count is None else count, step.mode,
                             *(counts[k] for k in COUNT_KEYS), *_slo_cells(step),
                             *_probe_cells(probes.get(step.step)), answer,
                             *costs.get(float(step.step), [""] * len(COST_COLUMNS))])
    return buffer.getvalue()


def _probe_cells(probe: Probe | None) -> list[str]:
    if probe is None:
        return ["", "", "", ""]
    stopped = (probe.stopped_why or "yes") if probe.stopped_early else ""
    return [probe.kind, _num(probe.rate_rps), "true" if probe.passed else "false", stopped]


def _slo_cells(step: StepSummary) -> list[Any]:
    """The SLO_COLUMNS cells of a step: empty without targets or without a number."""
    slo = step.slo
    if slo is None:
        return [""] * len(SLO_COLUMNS)
    return [slo.good, *(_num(v) for v in
                        (slo.attainment, slo.goodput_rps, slo.good_output_tokens_per_s))]


def requests_csv(records: list[RequestRecord], mode: str, *, imported: bool = False) -> str:
    """requests.csv: one row per record of ``records`` (a run's measured requests).

    ``imported``: the records came from another tool's file, which says nothing of when a
    request was meant to go: the dispatch lag is left empty instead of a made-up 0."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REQUEST_COLUMNS)
    for r in records:
        row = {
            "batch_size": r.step, "run": r.run, "request": r.request,
            "ttft_ms": _num(r.ttft_ms), "e2e_ms": _num(r.e2e_ms),
            "decode_ms": _num(r.decode_ms),
            "token_latency_ms": _num(r.token_latency_ms),
            "input_tokens": _opt(r.input_tokens), "output_tokens": _opt(r.output_tokens),
            "finish_reason": _opt(r.finish_reason),
            "error": "" if r.error is None else redact(r.error),
            "requested_output_tokens": _opt(r.requested_output_tokens),
            "token_events": len(r.token_ns),
            "dispatch_lag_ms": "" if imported else _num(r.dispatch_lag_ms),
            "status": _opt(r.status), "error_kind": _opt(r.error_kind),
            "request_id": _opt(r.request_id), "mode": mode,
            "scheduled_ms": _num(r.scheduled_ms), "sent_ms": _num(r.sent_ms),
            "schedule_lag_ms": _num(r.dispatch_lag_ms if mode == "rate" else None),
            "client_queue_ms": _num(r.client_queue_ms), "queued_e2e_ms": _num(r.queued_e2e_ms),
            "retried": _flag(r.retried), "coalesced_events": r.coalesced_events,
            "tokens_from_events": _flag(r.tokens_from_events),
        }
        writer.writerow([row[c] for c in REQUEST_COLUMNS])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return repr(round(float(value), 6))


def _flag(value: bool) -> str:
    """A yes/no column as ``true`` / ``false`` (pandas reads them as booleans)."""
    return "true" if value else "false"


def _opt(value: Any) -> str:
    return "" if value is None else str(value)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRecord))


def _record_out(record: RequestRecord) -> dict[str, Any]:
    """``record.to_dict()`` without dataclasses.asdict's deep copy (100x faster on long streams)."""
    data = {name: getattr(record, name) for name in _RECORD_FIELDS}
    data["token_ns"] = list(record.token_ns)
    if data.get("error"):
        data["error"] = redact(data["error"])
    return data


_INT_FIELDS = ("run", "request", "scheduled_ns")
_OPTIONAL_INT_FIELDS = ("sent_ns", "end_ns", "input_tokens", "output_tokens",
                        "requested_output_tokens", "status", "step_start_ns", "queued_ns",
                        "admitted_ns")
_OPTIONAL_STR_FIELDS = ("finish_reason", "error", "error_kind", "request_id")


def _record_in(data: Any) -> RequestRecord:
    """A RequestRecord from run.json, refusing values of the wrong type (TypeError)."""
    if not isinstance(data, dict):
        raise TypeError("a request is not a JSON object")
    record = RequestRecord.from_dict(data)
    if isinstance(record.step, bool) or not isinstance(record.step, (int, float)) or not (
            math.isfinite(record.step)):
        raise TypeError("request field step is not a number")
    for name in _INT_FIELDS:
        if not isinstance(getattr(record, name), int):
            raise TypeError(f"request field {name} is not a whole number")
    for name in _OPTIONAL_INT_FIELDS:
        value = getattr(record, name)
        if value is not None and not isinstance(value, int):
            raise TypeError(f"request field {name} is not a whole number")
    for name in _OPTIONAL_STR_FIELDS:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"request field {name} is not text")
    if not isinstance(record.token_ns, list) or not all(
            isinstance(t, int) for t in record.token_ns):
        raise TypeError("request field token_ns is not a list of whole numbers")
    record.warmup = bool(record.warmup)
    record.retried = bool(record.retried)
    return record


def add_failure_reason(folder: str | os.PathLike[str], reason: str) -> None:
    """Add ``reason`` (say, the launcher's explanation of a crash with its last log lines) to
    the message of the failed run saved in ``folder``; nothing when no failed run is there."""
    try:
        result = RunResult.load(folder)
    except BenchmarkError:
        return  # the run never started: nothing was saved
    if result.status != "failed":
        return
    result.message = redact(f"{result.message or ''} {reason}".strip())
    result.save(folder)


def record_server_settings(folder: str | os.PathLike[str], server: dict[str, Any]) -> None:
    """Write the launched server's settings into the run saved in ``folder`` when it has none
    (the engine child does not know them when the app launched the server)."""
    try:
        result = RunResult.load(folder)
    except ResultFileError:
        return
    if not result.server:
        result.server = server
        result.save(folder)


def mark_interrupted(folder: str | os.PathLike[str], reason: str, *,
                     message: str | None = None) -> RunResult | None:
    """End the run saved in ``folder`` that still reads "running" though nothing measures it
    any more: status "failed", message "Interrupted: <reason> ..." (or ``message`` as it is:
    the engine's own sentence when it could not save it), with what it had measured.
    Returns the updated run, or None when there was nothing to change (or it cannot be read
    or written)."""
    try:
        result = RunResult.load(folder)
    except BenchmarkError:
        return None
    if result.status != "running":
        return None
    kept = len(result.measured_records)
    result.status = "failed"
    result.message = redact(message or f"Interrupted: {reason}. The files hold the {kept} "
                                       f"request{'s' if kept != 1 else ''} measured until then.")
    result.ended_at = result.ended_at or now_iso()
    try:
        result.save(folder)
    except OSError:
        return None
    return result


def owner_alive(pid: Any) -> bool:
    """Whether process ``pid`` (a run's owner) still runs; a zombie does not. (A pid reused by
    an unrelated process after a reboot reads as alive: the run then waits for the next
    start-up.)"""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def reconcile_runs(root: str | os.PathLike[str] | None = None) -> list[str]:
    """At start-up: end every run under ``root`` left "running" by a process that is gone (an
    engine killed with SIGKILL, a full disk, a machine that restarted); one sentence per run
    ended, to tell the user what was found."""
    found: list[str] = []
    for row in list_runs(root):
        if row.status != "running":
            continue
        try:
            data = json.loads((row.path / RUN_FILE).read_text(encoding="utf-8"))
            pid = (data.get("environment") or {}).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if owner_alive(pid):
            continue
        who = f"process {pid}" if pid else "the process that wrote it"
        if mark_interrupted(row.path, f"{who} ended without finishing the run (found at "
                                      f"start-up)") is not None:
            found.append(f"Run {row.run_id} was left running by {who}, which is gone: marked "
                         f"interrupted, its partial results kept.")
    return found


def save_new_run(result: RunResult, root: str | os.PathLike[str]) -> Path:
    """Save ``result`` as the new folder ``root/<run_id>``, all or nothing.

    The files are written into a hidden temporary folder of ``root`` (``list_runs`` skips it,
    its name is not a run id) that is then renamed: a reader never sees half a run, and a
    failure leaves nothing behind. Refuses (``ResultFileError``) a run id already present.
    """
    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    final = run_dir(base, result.run_id)
    if final.exists():
        raise ResultFileError(f"{final} already exists; a saved run is never overwritten.")
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".incoming-"))
    try:
        result.save(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ---------------------------------------------------------------------------------------------
# History


@dataclass(frozen=True)
class RunSummaryRow:
    """One line of the history view."""

    run_id: str
    model: str
    started_at: str
    ended_at: str | None
    status: str
    complete: bool
    simulated: bool
    mode: str
    batch_sizes: tuple[float, ...]  # the steps: batch sizes, users, or rates in rate mode
    best_decode_throughput_tok_s: float | None
    best_batch_size: float | None
    requests: int
    errors: int
    path: Path
    source: str | None = None     # "guidellm 0.5.0" for a run imported from another tool


def list_runs(root: str | os.PathLike[str] | None = None) -> list[RunSummaryRow]:
    """Saved runs under ``root`` (default ``results_root()``), newest first.

    Reads each run.json's stored step summaries (not the records), skips folders whose name is
    not a run id and files that cannot be read.
    """
    base = Path(root) if root is not None else results_root()
    if not base.is_dir():
        return []
    rows: list[RunSummaryRow] = []
    for folder in base.iterdir():
        if not folder.is_dir() or not _RUN_ID.fullmatch(folder.name) or ".." in folder.name:
            continue
        row = _cached_summary_row(folder)
        if row is not None:
            rows.append(row)
    rows.sort(key=lambda r: (_sort_time(r.started_at), r.run_id), reverse=True)
    return rows


# run.json files can be large (every token stamp); the history re-reads one only when it changed
# (each save replaces the file, so a new inode, mtime or size means new content).
_ROW_CACHE: dict[Path, tuple[tuple[int, int, int], RunSummaryRow | None]] = {}
_ROW_CACHE_MAX = 2048


def _cached_summary_row(folder: Path) -> RunSummaryRow | None:
    try:
        stat = (folder / RUN_FILE).stat()
    except OSError:
        return None
    key, stamp = folder.resolve(), (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _ROW_CACHE.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    row = _summary_row(folder)
    if len(_ROW_CACHE) >= _ROW_CACHE_MAX:
        _ROW_CACHE.clear()
    _ROW_CACHE[key] = (stamp, row)
    return row


def _summary_row(folder: Path) -> RunSummaryRow | None:
    file = folder / RUN_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            return None
        config = data.get("config") or {}
        info = data.get("server_info") or {}
        steps = [s for s in data.get("steps") or [] if isinstance(s, dict)]
        best, best_step = None, None
        for s in steps:
            stats = (s.get("metrics") or {}).get("decode_throughput_tok_s")
            if stats and stats.get("avg") is not None and (best is None or stats["avg"] > best):
                best, best_step = float(stats["avg"]), _step_number(s["step"])
        status = str(data.get("status") or "running")
        return RunSummaryRow(
            run_id=folder.name,
            model=str(info.get("model_id") or config.get("model")
                      or config.get("tokenizer_name") or ""),
            started_at=str(data.get("started_at") or ""),
            ended_at=data.get("ended_at"),
            status=status,
            complete=status == "complete",
            simulated=bool(data.get("simulated", False)),
            mode=str(config.get("mode") or "rounds"),
            batch_sizes=tuple(_step_number(s["step"]) for s in steps) or tuple(
                _step_number(b) for b in (config.get("rates") if config.get("mode") == "rate"
                                          else config.get("batch_sizes")) or ()),
            best_decode_throughput_tok_s=best,
            best_batch_size=best_step,
            requests=sum(int(s.get("requests") or 0) for s in steps),
            errors=sum(int(s.get("errors") or 0) for s in steps),
            path=folder,
            source=_source_name(data.get("source")),
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _step_number(value: Any) -> float:
    """A step from a file: a whole number as an int (batch sizes, users, whole rates)."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("step is not a finite number")
    return int(number) if number.is_integer() else number


def _source_name(source: Any) -> str | None:
    if not isinstance(source, dict):
        return None
    tool, version = source.get("tool") or "unknown", source.get("tool_version")
    if not version or version == "not in the source file":
        return f"{tool} (version not in the source file)"
    return f"{tool} {version}"


def _sort_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
