"""What the page shows for saved runs and for a run in progress: text and figures, no gradio.

    view = results_view([RunResult.load(folder)], share_url="http://host/?run=...")
    view.headline, view.tables, view.figures, view.downloads, view.banner, ...

Numbers come from tables.py (headline, the three tables) and charts.py (figures); this module
only arranges them, says when the server was simulated, and formats the progress of a run.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .costs import plan_defaults, plan_markdown
from ..core.calibration_note import verdict_for
from ..report import tables
from ..report.tables import md_text
from ..report.charts import chart_figures
from ..core.results import REQUESTS_FILE, RUN_FILE, SUMMARY_FILE, RunResult, RunSummaryRow
from ..core.telemetry_data import TELEMETRY_FILE
from .jobs import CANCELLED, CHAT_WAIT, COMPLETE, FAILED, QUEUED, RUNNING, STARTING, JobView
from ..core.stats import StepSummary

SIMULATED_BANNER = (
    "**SIMULATED SERVER.** These numbers come from the built-in TGI simulator, not from a "
    "real model on a GPU: they show how the tool works, not how fast any model is."
)
SERVER_INFO_FIELDS = (
    ("model_id", "Model"), ("model_sha", "Model revision"), ("version", "TGI version"),
    ("router", "Router"), ("max_input_tokens", "Max input tokens"),
    ("max_total_tokens", "Max total tokens"),
    ("max_concurrent_requests", "Max concurrent requests"),
    ("max_client_batch_size", "Max client batch size"), ("docker_label", "Docker label"),
    ("sha", "TGI commit"),
)
DOWNLOAD_FILES = (SUMMARY_FILE, REQUESTS_FILE, TELEMETRY_FILE, RUN_FILE)


@dataclass
class ResultsView:
    """Everything the results area shows, ready to put into components."""

    title: str = ""
    banner: str = ""
    headline: str = ""
    calibration: str = ""
    tables: str = ""
    server_info: str = ""
    figures: list[tuple[str, Any]] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    share_url: str = ""
    run_ids: list[str] = field(default_factory=list)
    # The deployment plan's fields (None: not a capacity run with an answer; section hidden)
    # and the plan for the run's own traffic when it had one.
    plan_values: dict[str, str] | None = None
    plan: str = ""


def results_view(results: list[RunResult], share_url: str = "",
                 folder: Path | None = None,
                 calibration: dict[str, Any] | None = None) -> ResultsView:
    """The results area for one run, or a comparison of several (same charts, one trace each)."""
    if not results:
        return ResultsView()
    view = ResultsView(share_url=share_url, run_ids=[r.run_id for r in results])
    steps = [_summaries(r) for r in results]    # once per run, for the charts and the tables
    view.figures = chart_figures(results, None if None in steps else steps)
    if any(r.simulated for r in results):
        view.banner = SIMULATED_BANNER
    if len(results) == 1:
        result = results[0]
        view.title = run_title(result)
        view.headline = _safe(lambda: headline_markdown(result, steps[0]))
        view.tables = _safe(lambda: tables.markdown_tables(result, steps[0]))
        view.server_info = server_info_markdown(result)
        view.calibration = ("" if result.source is not None
                            else calibration_markdown(result, calibration))
        view.downloads = download_paths(folder) if folder is not None else []
        view.plan_values = plan_defaults(result)
        if view.plan_values and (view.plan_values["plan_peak_rps"]
                                 or view.plan_values["plan_daily_users"]):
            view.plan = _safe(lambda: plan_markdown(result, view.plan_values or {}))
        return view
    view.title = f"### Comparing {len(results)} runs\n" + "\n".join(
        f"- `{r.run_id}`: {md_text(r.model)}" + (" (simulated server)" if r.simulated else "")
        for r in results)
    view.headline = "\n\n".join(
        f"**{md_text(r.model)}** (`{r.run_id}`)\n\n"
        f"{_safe(lambda r=r, s=s: headline_markdown(r, s))}"
        for r, s in zip(results, steps))
    view.tables = "\n\n".join(
        f"#### {md_text(r.model)} (`{r.run_id}`)\n\n"
        f"{_safe(lambda r=r, s=s: tables.markdown_tables(r, s))}"
        for r, s in zip(results, steps))
    view.server_info = "\n\n".join(server_info_markdown(r, name_run=True) for r in results)
    if len(results) == 2 and None not in steps:
        differences = _safe(lambda: tables.compare_table(results, steps))  # type: ignore[arg-type]
        if differences:
            view.tables = differences + "\n\n" + view.tables
    return view


def headline_markdown(result: RunResult, steps: list[StepSummary] | None = None) -> str:
    """tables.headline's plain sentences as a short list under a heading."""
    return "#### In short\n" + "\n".join(f"- {s}" for s in tables.headline(result, steps))


def _summaries(result: RunResult) -> list[StepSummary] | None:
    """``result.steps()``, or None when they cannot be computed: each part then tries itself
    and shows the error in its own place."""
    try:
        return result.steps()
    except Exception:  # noqa: BLE001 - one broken part must not blank the page
        return None


def _safe(make: Any) -> str:
    try:
        return str(make())
    except Exception as exc:  # noqa: BLE001 - one broken part must not blank the page
        return f"_This part could not be shown ({type(exc).__name__}: {md_text(exc)})._"


def run_title(result: RunResult) -> str:
    status = {
        "complete": "complete",
        "running": "in progress (partial results)",
        "cancelled": "stopped early: partial results",
        "failed": "failed: partial results",
    }.get(result.status, result.status)
    lines = [f"### {md_text(result.model)}", f"Run `{result.run_id}` · started "
                                    f"{md_text(readable_time(result.started_at))} · **{md_text(status)}**"]
    if result.source is not None:
        lines.append(f"Imported from **{md_text(result.source.get('tool'))}** (version "
                     f"{md_text(result.source.get('tool_version'))}), file "
                     f"{md_text(result.source.get('file'))}.")
    if result.message:
        lines.append(f"> {md_text(result.message)}")
    for warning in result.warnings:
        lines.append(f"> **Warning:** {md_text(warning)}")
    return "\n\n".join(lines)


def readable_time(stamp: Any) -> str:
    """An ISO timestamp as people read it: 2026-11-28 17:54:38 UTC (unchanged if not ISO)."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def server_info_markdown(result: RunResult, *, name_run: bool = False) -> str:
    if result.source is not None:
        whose = f" of run `{result.run_id}`" if name_run else ""
        return (f"_The run{whose} was imported from a {md_text(result.source.get('tool'))} file: "
                f"the server's /info is not in the source file._")
    info = result.server_info or {}
    rows = [(label, info[key]) for key, label in SERVER_INFO_FIELDS if info.get(key) is not None]
    whose = f" of run `{result.run_id}`" if name_run else ""
    if not rows:
        return f"_The server{whose} did not report its /info._"
    text = [f"**Server{whose}** (/info of {md_text(result.config.url)})", "",
            "| Reported by the server | Value |", "|---|---|"]
    text += [f"| {label} | {md_text(value)} |" for label, value in rows]
    if result.server:
        launched = {k: v for k, v in result.server.items() if v not in (None, False, "")}
        text += ["", "Launched with: " + ", ".join(f"{md_text(k)}={md_text(v)}"
                                                   for k, v in launched.items())]
    return "\n".join(text)


def calibration_markdown(result: RunResult, latest: dict[str, Any] | None = None) -> str:
    """How far the client's own timing can be trusted at this run's concurrency.

    Uses the calibration stored in the run, else the machine's latest one (``latest``, from
    ``python -m benchmark calibrate``); calibrate.verdict_for words the warning.
    """
    calibration = result.calibration or latest
    if not calibration:
        return ("**Measurement check:** the client's own timing error has not been measured on "
                "this machine; `python -m benchmark calibrate` measures it.")
    if result.config.mode == "rate":
        # The calibration measures concurrency levels, not a schedule: the run's own schedule
        # lag (Schedule table) says how well the client kept up.
        return ("**Measurement check:** at a request rate the client reports its own accuracy: "
                "see the schedule lag and the achieved send rate in the Schedule table.")
    concurrency = max(result.config.batch_sizes or (1,))
    warning = verdict_for(concurrency, calibration)
    if warning:
        return f"**Measurement check:** {md_text(warning)}"
    sentence = (calibration.get("verdict") or {}).get("sentence") if isinstance(
        calibration, dict) else None
    within = f"batch size {concurrency} is within what the client measures accurately."
    return f"**Measurement check:** {within}" + (f" {md_text(sentence)}" if sentence else "")


def download_paths(folder: Path | str) -> list[str]:
    """summary.csv, requests.csv, telemetry.csv and run.json of a run folder (those that
    exist)."""
    base = Path(folder)
    return [str(base / name) for name in DOWNLOAD_FILES if (base / name).is_file()]


# ---------------------------------------------------------------------------------------------
# History


HISTORY_HEADERS = ["Run id", "Model", "Started (UTC)", "Status", "Simulated", "Batch sizes",
                   "Best decode throughput (tok/s)", "At batch size", "Requests", "Errors",
                   "Measured by"]


def history_rows(rows: list[RunSummaryRow]) -> list[list[Any]]:
    return [[r.run_id, r.model, r.started_at[:19].replace("T", " "), r.status,
             "yes" if r.simulated else "no", ",".join(str(b) for b in r.batch_sizes),
             None if r.best_decode_throughput_tok_s is None
             else round(r.best_decode_throughput_tok_s, 1),
             r.best_batch_size, r.requests, r.errors,
             f"{r.source} (imported)" if r.source else "TGI Benchmark"] for r in rows]


# ---------------------------------------------------------------------------------------------
# A run in progress


def progress_html(view: JobView | None) -> str:
    """Phase, queue place and one bar per batch size, as small self-contained HTML."""
    if view is None:
        return ""
    esc = html.escape
    parts: list[str] = []
    if view.state == QUEUED and not view.behind_another:
        parts.append("<p><b>Starting…</b></p>")
    elif view.state == QUEUED:
        place = view.queue_position
        parts.append(f"<p><b>A benchmark is already running for another visitor.</b> Yours is "
                     f"number {place} in the queue and starts automatically; keep this page "
                     f"open.</p>")
    elif view.state == STARTING:
        parts.append(f"<p><b>Starting the server:</b> {esc(view.phase or 'starting')} "
                     f"({view.elapsed_s:.0f} s). A large model can take many minutes to "
                     f"download and warm up.</p>")
    elif view.state == RUNNING and view.phase == CHAT_WAIT:
        parts.append("<p><b>Waiting for a chat answer to finish</b> (Try the model tab): the "
                     "benchmark starts measuring right after it.</p>")
    elif view.state == RUNNING:
        parts.append(f"<p><b>Benchmark running</b> ({view.elapsed_s:.0f} s)."
                     + (" Server: simulated." if view.simulated else "") + "</p>")
    elif view.state == COMPLETE:
        parts.append("<p><b>Benchmark complete.</b></p>")
    elif view.state == CANCELLED:
        parts.append(f"<p><b>Stopped.</b> {esc(view.message or '')}</p>")
    elif view.state == FAILED:
        parts.append(f"<p><b>The benchmark failed:</b> {esc(view.message or '')}</p>")
    if view.steps and view.mode == "capacity":
        parts.append("<p><b>Finding the capacity:</b> one request at a time, then many users at "
                     "once, then request rates closing in on the limit.</p>")
        for p in view.progress:
            parts.append(_probe_line(p, view.current_step))
    elif view.steps:
        def name(step: float) -> str:
            if view.mode == "rate":
                return f"{step:g} requests/s"
            if view.mode == "concurrency":
                return f"{step} user" + ("" if step == 1 else "s")
            return f"Batch size {step}"

        total = len(view.steps)
        done = sum(1 for p in view.progress if p.done)
        unit = "batch sizes" if view.mode == "rounds" else "steps"
        parts.append(_bar("All " + unit, done, total, f"{done} of {total} {unit}"))
        for p in view.progress:
            if p.done:
                parts.append(_bar(name(p.step), 1, 1, "done" + _errors_text(p)))
            elif p.requests_total or p.requests_done:
                label = (f"{p.requests_done} of {p.requests_total} requests" if p.requests_total
                         else f"{p.requests_done} requests")
                parts.append(_bar(name(p.step), p.requests_done,
                                  p.requests_total or 0, label + _errors_text(p)))
            elif p.rounds:
                kind = "warm-up" if p.warmup else "run"
                parts.append(_bar(name(p.step), 0 if p.warmup else p.rounds_done,
                                  p.rounds, f"{kind} {p.rounds_done} of {p.rounds}"
                                  + _errors_text(p)))
            else:
                waiting = "running" if view.current_step == p.step else "waiting"
                parts.append(_bar(name(p.step), 0, 1, waiting))
    for warning in view.warnings:
        parts.append(f"<p><b>Warning:</b> {esc(warning)}</p>")
    for note in view.notes:
        parts.append(f"<p class='bench-note'>{esc(note)}</p>")
    return "<div class='bench-progress'>" + "".join(parts) + "</div>"


def _errors_text(progress: Any) -> str:
    """`` · 1 error · 2 warm-up errors (not measured)``: measured errors, as the Requests table
    counts them, and the failures of warm-up rounds apart; empty when nothing failed."""
    text = ""
    if progress.errors:
        text += f" · {progress.errors} error{'s' if progress.errors != 1 else ''}"
    warmups = progress.warmup_errors
    if warmups:
        text += f" · {warmups} warm-up error{'s' if warmups != 1 else ''} (not measured)"
    return text
def _probe_line(p: Any, current: int | None) -> str:
    """One capacity probe: what it was and its verdict, or that it is running."""
    probe = p.probe
    if not probe:
        state = "running" if current == p.step and not p.done else "done"
        done = f", {p.requests_done} requests so far" if p.requests_done and state == "running" else ""
        return f"<p>Probe {p.step}: {state}{done}</p>"
    attainment = probe.get("attainment")
    share = "no request counted" if attainment is None else f"{attainment:.0%} within target"
    verdict = "passed" if probe.get("passed") else "missed"
    early = " (stopped early: already over the limit)" if probe.get("stopped_early") else ""
    return (f"<p>Probe {p.step} ({html.escape(str(probe.get('kind')))}): "
            f"{float(probe.get('rate_rps') or 0):.3g} requests/s, {share}: "
            f"<b>{verdict}</b>{early}</p>")


def _bar(label: str, value: int, maximum: int, text: str) -> str:
    pct = 0 if maximum <= 0 else max(0, min(100, round(100 * value / maximum)))
    esc = html.escape
    return (f"<div class='bench-bar' data-label='{esc(label)}'>"
            f"<span class='bench-bar-label'>{esc(label)}</span>"
            f"<progress max='100' value='{pct}'></progress>"
            f"<span class='bench-bar-text'>{esc(text)}</span></div>")
