"""The Gradio app: a form, one Run button, progress, results, share links, history.

    from benchmark.ui import create_app, launch_options
    demo = create_app()                    # results under $RESULTS_DIR (default results/)
    demo.launch(**launch_options(demo))

The app adds no measurement logic. It validates the form with config.py (through ui_form),
hands the run to the app-wide queue (runner.py: starts or reuses TGI with launcher.ServerManager,
then runs the engine CLI in a child process), follows its progress stream, and shows the saved
files with tables.py and charts.py (through ui_render). Who may run is access.py's decision.

The "Try the model" tab (chat.py) talks to the same server, with the same access rules, and
pauses while a benchmark runs on it.

A link ``<page>?run=<id>`` opens a saved run read-only (also after a restart: runs are folders
under the results directory); the "Saved runs" tab lists them and compares several on the same
charts.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit, urlunsplit

import gradio as gr

from . import access, costs, hub
from .chat import ChatTab
from ..config import DEFAULT_SERVER_PORT, auto_workers, field_label, parse_int, price_table
from ..errors import (BenchmarkError, ConfigError, ResultFileError, ServerUnreachable,
                     redact)
from ..core.calibration_note import load_latest
from ..core.probe import probe_server
from ..core.importers import import_files
from ..core.results import (RUN_FILE, RunResult, check_results_dir, list_runs, new_run_id,
                            reconcile_runs, record_server_settings, run_dir)
from ..report.html import write_html_report
from ..server.process import reap_orphans
from .jobs import FINISHED, STARTING, Job, Runner
from .form import (
    API_OPTIONS,
    ARRIVAL_OPTIONS,
    DEFAULTS,
    DTYPE_OPTIONS,
    EXAMPLE_MODEL_ID,
    FIELDS,
    MODE_LABELS,
    QUANTIZE_OPTIONS,
    TARGET_ENDPOINT,
    TARGET_LAUNCH,
    Plan,
    build_plan,
    example_values,
)
from .render import (
    HISTORY_HEADERS,
    ResultsView,
    download_paths,
    history_rows,
    md_text,
    progress_html,
    results_view,
)

MAX_FIGURES = 13    # a priced rate run with latency targets draws 12 (13: headroom)
VIEW_CACHE = 16     # results areas kept drawn (runs being followed)
MAX_COMPARE = 8      # runs on the same charts at most
# Gradio's /upload route takes files this large: enough for other tools' result files in the
# import box (a GuideLLM report holds ~20 kB per request), small enough that nobody fills the
# disk through it. The CLI (python -m benchmark import) reads files up to 64 MiB.
MAX_UPLOAD = "16mb"
IMPORT_TYPES = [".json", ".jsonl", ".yaml", ".yml"]
MAX_IMPORT_FILES = 8
POLL_S = 0.5
REFRESH_S = 3.0
STALE_S = 15 * 60   # a "running" run.json untouched this long is not followed any more
ENDPOINT_PROBE_S = 5.0

INTRO = """# TGI Benchmark
Measure how fast a model answers on
[Text Generation Inference](https://github.com/huggingface/text-generation-inference):
time to first token, time per token and tokens per second at each batch size, the same numbers
as TGI's own benchmark tool, measured over HTTP. Pick a model (or paste the URL of a server that
is already running), click **Run benchmark**, and read the charts below."""

SHARED_READ_ONLY = ("**Shared results, read-only.** [Open the app](./) to run your own "
                    "benchmark.")
WAITING_FOR_RESULTS = ("**This run is in progress.** Its results appear here as soon as its "
                       "first batch size is measured.")

CSS = """
.bench-progress progress { width: 55%; height: 0.9em; vertical-align: middle; }
.bench-bar { display: flex; gap: 0.8em; align-items: center; margin: 0.15em 0; }
.bench-bar-label { min-width: 9em; font-weight: 600; }
.bench-error { border-left: 4px solid #d33; padding-left: 0.6em; }
.bench-banner { border: 2px solid #e0a100; border-radius: 6px; padding: 0.4em 0.8em;
                background: rgba(224, 161, 0, 0.08); }
"""


def _shown(message: str) -> Any:
    """The form's message box: visible only while it holds a message."""
    return gr.update(value=message, visible=bool(message))


def _error_markdown(exc: BenchmarkError) -> str:
    """The form's error box: the field's label in bold, then the sentence as text (it may
    echo what the visitor typed or what a server said: md_text keeps that from being markup)."""
    message = str(exc)
    if isinstance(exc, ConfigError):
        label = field_label(exc.field)
        if message.startswith(label + " "):       # "Runs must be ..." -> "**Runs:** must be ..."
            message = message[len(label) + 1:]
        return f"**{label}:** {md_text(message)}"
    if isinstance(exc, ServerUnreachable) and exc.reason:
        # The engine's advice speaks to the command line (--url); the page has a field.
        return (f"**{field_label('url')}:** nothing answers at {md_text(exc.url)} "
                f"({md_text(exc.reason)}). Check the address and port, and that the server is "
                f"running and reachable from here.")
    return md_text(message)


class App:
    """The page's components and its event handlers (methods, so each is testable)."""

    def __init__(self, root: Path, env: Mapping[str, str], runner: Runner):
        self.root = root
        self.env = dict(env)
        self.runner = runner
        self.blocks: gr.Blocks | None = None
        self.fields: dict[str, gr.components.Component] = {}
        self.repo, self.hub_problem = _results_repo(self.env)
        self._session_runs: dict[str, str] = {}   # browser session -> its latest run id
        self.plots: list[gr.Plot] = []
        self._views: OrderedDict[tuple[Any, ...], ResultsView] = OrderedDict()
        self._views_lock = threading.Lock()
        # The Space's hardware and its price, to prefill the price fields (read once).
        self.hardware = costs.space_hardware(self.env)
        self.plan_fields: dict[str, gr.Textbox] = {}

    # -- layout -----------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        with gr.Blocks(title="TGI Benchmark") as demo:
            gr.Markdown(INTRO)
            with gr.Row():
                if access.oauth_enabled(self.env):
                    gr.LoginButton(size="sm", scale=0, min_width=240)
                self.access_md = gr.Markdown(label="Access", elem_id="access-message")
            self.readonly_md = gr.Markdown(label="Page message", visible=False,
                                           elem_id="readonly-message")
            with gr.Column() as self.main_col:
                with gr.Tabs():
                    with gr.Tab("Run a benchmark", id="run") as self.run_tab:
                        self._form()
                    with gr.Tab("Try the model", id="chat") as self.chat_tab:
                        self.chat = ChatTab(self, rules=self._access, server_port=server_port,
                                            error_markdown=_error_markdown)
                        self.chat.build()
                    with gr.Tab("Saved runs", id="history") as self.history_tab:
                        self._history()
            self._results()
            self.job_state = gr.State(None)
            self._events(demo)
        return demo

    def _text(self, name: str, info: str | None = None, **kwargs: Any) -> gr.Textbox:
        box = gr.Textbox(value=kwargs.pop("value", DEFAULTS[name]), label=field_label(name),
                         info=info, elem_id=f"field-{name}", **kwargs)
        self.fields[name] = box
        return box

    def _form(self) -> None:
        f = self.fields
        f["target"] = gr.Radio([TARGET_LAUNCH, TARGET_ENDPOINT], value=DEFAULTS["target"],
                               label="What to benchmark", elem_id="field-target")
        with gr.Group(visible=True) as self.launch_group:
            self._text("model_id", "A Hugging Face model id (org/name) or a local folder.",
                       placeholder=EXAMPLE_MODEL_ID)
            self.example_btn = gr.Button(f"Try the guide's example: {EXAMPLE_MODEL_ID} (gptq)",
                                         size="sm", variant="secondary",
                                         elem_id="example-button")
            with gr.Row():
                f["quantize"] = gr.Dropdown(list(QUANTIZE_OPTIONS), value=DEFAULTS["quantize"],
                                            label=field_label("quantize"),
                                            elem_id="field-quantize",
                                            info="How the weights are compressed (gptq, awq, "
                                                 "...), or none.")
                self._text("max_input_tokens", "Longest prompt the server accepts. Empty: "
                                               "TGI's default.")
                self._text("max_total_tokens", "Prompt + generated tokens per request. Empty: "
                                               "TGI's default.")
                self._text("max_batch_size", "Most requests the server batches together. "
                                             "Empty: TGI decides.")
        with gr.Group(visible=False) as self.endpoint_group:
            with gr.Row():
                self._text("url", "An existing TGI or OpenAI-compatible server, e.g. "
                                  "http://10.0.0.5:8080", placeholder="http://host:port")
                self._text("tokenizer_name", "The model it serves (Hub id or folder), used to "
                                             "build prompts of an exact length.")
        gr.Markdown("#### The benchmark")
        with gr.Row():
            self._text("batch_sizes", "Several, separated by commas: 1,2,4,8")
            self._text("sequence_length", "Prompt length, in tokens.")
            self._text("decode_length", "Tokens to generate per request.")
            self._text("runs", "Measured rounds per batch size.")
            self._text("warmups", "Unmeasured rounds first.")
        gr.Markdown("#### Latency targets: what counts as a good answer\n\nEvery run reports "
                    "the share of requests that met them; the **Find capacity** load pattern "
                    "(Advanced settings) searches the highest request rate that keeps it.")
        with gr.Row():
            self._text("slo_ttft_ms", "Wait before the first word appears. 1,000 ms still "
                                      "feels responsive in a chat. Empty: no target.")
            self._text("slo_tpot_ms", "Time between words once the answer streams. 50 ms is "
                                      "20 tokens a second, a bit faster than people read, so "
                                      "the text never seems to stall. Empty: no target.")
            self._text("slo_attainment", "Share of requests that must meet both targets. 90% "
                                         "allows a few slow answers, as users do.")
        gr.Markdown("#### What it costs (optional)\n\nWith a price, every step shows dollars "
                    "per million tokens; after **Find capacity**, the results page plans how "
                    "many servers your traffic needs.")
        with gr.Row():
            f["hardware"] = gr.Dropdown(costs.hardware_choices(),
                                        value=self.hardware.name or DEFAULTS["hardware"],
                                        label=field_label("hardware"), elem_id="field-hardware",
                                        info="Hugging Face hardware the server runs on: sets "
                                             "the price from Hugging Face's price table.")
            self._text("gpu_price_per_hour", self.hardware.note,
                       value=self.hardware.price_text or DEFAULTS["gpu_price_per_hour"])
        with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
            gr.Markdown("**API and load pattern**")
            with gr.Row():
                f["api"] = gr.Dropdown(list(API_OPTIONS), value=DEFAULTS["api"],
                                       label=field_label("api"), elem_id="field-api",
                                       info="tgi: /generate_stream; openai-*: /v1 routes.")
                f["mode"] = gr.Radio(list(MODE_LABELS), value=DEFAULTS["mode"],
                                     label=field_label("mode"), elem_id="field-mode")
                self._text("duration_s", "Concurrency and request rate: seconds per step.")
                self._text("requests", "Concurrency and request rate: requests per step.")
                self._text("timeout_s", "Give up on one request after this many seconds.")
                self._text("workers", "Processes sending the load, each one CPU core (auto: "
                                      "one per core but one). Keep 1 on a Space: TGI shares "
                                      "its machine.")
            with gr.Row():
                self._text("rates", "Request rate pattern: requests per second, each a step, "
                                    "e.g. 5,10,20.")
                f["arrivals"] = gr.Dropdown(list(ARRIVAL_OPTIONS), value=DEFAULTS["arrivals"],
                                            label=field_label("arrivals"),
                                            elem_id="field-arrivals",
                                            info="Request rate: poisson = random gaps, as real "
                                                 "users; constant = even gaps.")
                self._text("max_concurrency", "Request rate: at most this many requests in "
                                              "flight (the wait is measured). Empty: no cap.")
                self._text("max_duration_s", "Find capacity: seconds the whole search may "
                                             "take. Empty: 300.")
            gr.Markdown("**Sampling** (TGI's benchmark flags)")
            with gr.Row():
                for name in ("temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
                             "frequency_penalty", "top_n_tokens"):
                    self._text(name, "Empty: not sent.")
            with gr.Row():
                for name in ("do_sample", "watermark"):
                    f[name] = gr.Checkbox(value=DEFAULTS[name], label=field_label(name),
                                          elem_id=f"field-{name}")
            gr.Markdown("**Server** (when the app launches TGI)")
            with gr.Row():
                f["dtype"] = gr.Dropdown(list(DTYPE_OPTIONS), value=DEFAULTS["dtype"],
                                         label=field_label("dtype"), elem_id="field-dtype")
                self._text("num_shard", "Empty: all GPUs.")
                self._text("max_batch_prefill_tokens", "Empty: TGI's default.")
                self._text("max_concurrent_requests", "Empty: TGI's default (128).")
        with gr.Row():
            self.run_btn = gr.Button("Run benchmark", variant="primary", elem_id="run-button")
            self.stop_btn = gr.Button("Stop", variant="stop", visible=False,
                                      elem_id="stop-button")
        self.form_error = gr.Markdown(label="Form message", elem_id="form-error", visible=False,
                                      elem_classes=["bench-error"])
        self.status_html = gr.HTML(label="Run status", elem_id="run-status")
        self.server_log = gr.Textbox(label="Server log (last lines)", lines=8, max_lines=8,
                                     interactive=False, visible=False, elem_id="server-log")

    def _history(self) -> None:
        gr.Markdown("Every run is saved with its id. Click a row (or pick below) to choose "
                    "a run and **Open** it, or choose several and **Compare** them on the same "
                    "charts.")
        self.history_table = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False,
                                          label="Saved runs",
                                          elem_id="history-table", wrap=True)
        with gr.Row():
            self.history_pick = gr.Dropdown([], value=[], multiselect=True, label="Runs",
                                            allow_custom_value=True,
                                            elem_id="history-pick", scale=4)
            self.refresh_btn = gr.Button("Refresh", size="sm", scale=0)
            self.open_btn = gr.Button("Open", size="sm", scale=0, elem_id="open-button")
            self.compare_btn = gr.Button("Compare", size="sm", scale=0,
                                         elem_id="compare-button")
        found = getattr(self, "startup_notes", None) or []
        self.history_msg = gr.Markdown(
            "\n".join(f"- **At start-up:** {md_text(note)}" for note in found),
            label="History message", elem_id="history-message")
        with gr.Accordion("Import results from another tool", open=False,
                          elem_id="import-accordion"):
            gr.Markdown("GuideLLM `benchmarks.json`/`.yaml`, vLLM `bench serve --save-result` "
                        "JSON, AIPerf `profile_export_aiperf.json` (with its "
                        "`profile_export.jsonl`), inference-benchmarker results, llmperf "
                        "`_summary.json` (with its `_individual_responses.json`). Each file "
                        "becomes a saved run that opens, compares and shares like any other.")
            self.import_files = gr.File(label="Result files", file_count="multiple",
                                        file_types=IMPORT_TYPES, type="filepath",
                                        elem_id="import-files")
            self.import_btn = gr.Button("Import", size="sm", elem_id="import-button")
            self.import_msg = gr.Markdown(label="Import message", elem_id="import-message")

    def _results(self) -> None:
        with gr.Column(elem_id="results"):
            self.banner = gr.Markdown(label="Simulated banner", visible=False,
                                      elem_id="simulated-banner",
                                      elem_classes=["bench-banner"])
            self.title_md = gr.Markdown(label="Run title", elem_id="results-title")
            self.share = gr.Textbox(label="Share link: opens these results read-only",
                                    buttons=["copy"], interactive=False, visible=False,
                                    elem_id="share-link")
            self.headline = gr.Markdown(label="Headline", elem_id="headline")
            self.calibration = gr.Markdown(label="Calibration", elem_id="calibration")
            for i in range(MAX_FIGURES):
                self.plots.append(gr.Plot(label=f"Chart {i}", show_label=False, visible=False,
                                          elem_id=f"chart-{i}"))
            self._plan_section()
            self.tables = gr.Markdown(label="Tables", elem_id="tables")
            self.server_md = gr.Markdown(label="Server info", elem_id="server-info")
            self.downloads = gr.File(label="Downloads",
                                     file_count="multiple", interactive=False, visible=False,
                                     elem_id="downloads")
            self.report_btn = gr.Button("Download as one HTML file (works offline)",
                                        size="sm", visible=False, elem_id="report-button")
            with gr.Row():
                self.upload_md = gr.Markdown(label="Results dataset", visible=False,
                                             elem_id="upload-status")
                self.upload_btn = gr.Button("Upload this run to the results dataset again",
                                            size="sm", visible=False, scale=0,
                                            elem_id="upload-button")
            self.shown_run = gr.State(None)
            # Keeps a shared link of a run still in progress up to date.
            self.refresh_timer = gr.Timer(REFRESH_S, active=False)

    def _plan_section(self) -> None:
        """A capacity run's deployment plan: traffic, headroom and prices typed here recompute
        it from the saved capacity, without running again."""
        with gr.Group(visible=False, elem_id="plan") as self.plan_group:
            gr.Markdown("#### Deployment plan: how many servers your traffic needs\n\nType "
                        "your traffic at its busiest, or daily users and how many requests each "
                        "sends a day. Nothing is run again.")
            hints = {
                "plan_peak_rps": "Requests per second at the busiest moment, e.g. 40.",
                "plan_daily_users": "Or: users a day (with requests per user).",
                "plan_requests_per_user": "Requests each user sends a day.",
                "plan_peak_factor": "Busiest hour / average hour (2: the peak is twice the "
                                    "average).",
                "plan_headroom": "Spare capacity above the peak, in %, for bursts and a server "
                                 "restarting.",
                "gpu_price_per_hour": "One server's price per hour. Empty: the run's price.",
                "api_price_per_million": "Optional: a hosted API's price per million tokens, "
                                         "to compare.",
            }
            with gr.Row():
                for name in costs.PLAN_FIELDS:
                    self.plan_fields[name] = gr.Textbox(
                        value=costs.PLAN_DEFAULTS[name], label=field_label(name),
                        info=hints[name], elem_id=f"plan-{name}", max_length=40)
            self.plan_btn = gr.Button("Plan", size="sm", elem_id="plan-button")
            self.plan_md = gr.Markdown(label="Deployment plan", elem_id="plan-result")

    @property
    def result_outputs(self) -> list[Any]:
        return [self.banner, self.title_md, self.share, self.headline, self.calibration,
                *self.plots, self.plan_group, *self.plan_fields.values(), self.plan_md,
                self.tables, self.server_md, self.downloads, self.report_btn, self.upload_md,
                self.upload_btn, self.shown_run]

    @property
    def history_outputs(self) -> list[Any]:
        return [self.history_table, self.history_pick]

    def _events(self, demo: gr.Blocks) -> None:
        form = [self.fields[name] for name in FIELDS]
        demo.load(self.on_load, inputs=None,
                  outputs=[self.access_md, self.readonly_md, self.main_col, self.history_msg,
                           self.run_btn, self.form_error,
                           *self.result_outputs, *self.history_outputs, self.refresh_timer],
                  api_name="load")
        self.refresh_timer.tick(self.refresh_shared, [self.shown_run],
                                [self.readonly_md, *self.result_outputs, self.refresh_timer],
                                api_name=False, show_progress="hidden")
        self.example_btn.click(self.use_example, None,
                               [self.fields["model_id"], self.fields["quantize"],
                                self.fields["target"]], api_name=False)
        self.fields["target"].change(self.switch_target, [self.fields["target"]],
                                     [self.launch_group, self.endpoint_group], api_name=False)
        self.run_btn.click(
            self.run, inputs=form,
            outputs=[self.job_state, self.form_error, self.status_html, self.server_log,
                     self.run_btn, self.stop_btn, *self.result_outputs, *self.history_outputs],
            api_name="run", concurrency_limit=None, show_progress="hidden")
        self.stop_btn.click(self.stop, [self.job_state], [self.form_error], api_name="stop",
                            concurrency_limit=None)
        self.refresh_btn.click(self.refresh_history, None, self.history_outputs,
                               api_name="history")
        self.history_table.select(self.pick_row, [self.history_pick], [self.history_pick],
                                  api_name=False)
        self.open_btn.click(self.open_runs, [self.history_pick],
                            [self.history_msg, *self.result_outputs], api_name="open")
        self.compare_btn.click(self.compare_runs, [self.history_pick],
                               [self.history_msg, *self.result_outputs], api_name="compare")
        self.upload_btn.click(self.upload_again, [self.shown_run], [self.upload_md],
                              api_name="upload")
        self.fields["hardware"].change(self.hardware_price, [self.fields["hardware"]],
                                       [self.fields["gpu_price_per_hour"]], api_name=False)
        plan_inputs = [self.shown_run, *self.plan_fields.values()]
        self.plan_btn.click(self.plan, plan_inputs, [self.plan_md], api_name="plan")
        for box in self.plan_fields.values():
            box.submit(self.plan, plan_inputs, [self.plan_md], api_name=False)
        self.import_btn.click(self.import_runs, [self.import_files],
                              [self.import_msg, self.import_files, *self.result_outputs,
                               *self.history_outputs], api_name="import")
        self.report_btn.click(self.html_report, [self.shown_run], [self.downloads],
                              api_name="report")
        self.chat.wire(demo, tab=self.chat_tab, other_tabs=[self.run_tab, self.history_tab])

    # -- rendering --------------------------------------------------------------------------
    def show(self, view: ResultsView) -> dict[Any, Any]:
        out: dict[Any, Any] = {
            self.banner: gr.update(value=view.banner, visible=bool(view.banner)),
            self.title_md: view.title,
            self.share: gr.update(value=view.share_url, visible=bool(view.share_url)),
            self.headline: view.headline,
            self.calibration: view.calibration,
            self.tables: view.tables,
            self.server_md: view.server_info,
            self.downloads: gr.update(value=view.downloads or None,
                                      visible=bool(view.downloads)),
            self.report_btn: gr.update(visible=len(view.run_ids) == 1),
        }
        for i, plot in enumerate(self.plots):
            if i < len(view.figures) and view.figures[i][1] is not None:
                title, figure = view.figures[i]
                out[plot] = gr.update(value=figure, label=title, visible=True)
            else:
                out[plot] = gr.update(value=None, visible=False)
        values = view.plan_values
        out[self.plan_group] = gr.update(visible=values is not None)
        for name, box in self.plan_fields.items():
            out[box] = (values or costs.PLAN_DEFAULTS)[name]
        out[self.plan_md] = view.plan
        single = view.run_ids[0] if len(view.run_ids) == 1 else None
        out[self.shown_run] = single
        out.update(self.upload_updates(single))
        return out

    def upload_updates(self, run_id: str | None) -> dict[Any, Any]:
        """The results dataset's word on the shown run, and the button to upload it again."""
        if self.repo is None or run_id is None:
            return {self.upload_md: gr.update(value="", visible=False),
                    self.upload_btn: gr.update(visible=False)}
        status = self.repo.last_status(run_id)
        message = status.message if status is not None else ""
        return {self.upload_md: gr.update(value=message, visible=bool(message)),
                self.upload_btn: gr.update(visible=status is not None and not status.ok)}

    def view_of(self, result: RunResult, share: str, folder: Path) -> ResultsView:
        """One run's results area, drawn once per version of its run.json.

        Every page following a run (its own, and each shared link's timer) asks for it again;
        the charts are drawn once per change, not once per visitor, so that viewers do not take
        CPU from the benchmark they are watching.
        """
        calibration = self.latest_calibration()
        try:
            stamp = (folder / RUN_FILE).stat().st_mtime_ns   # a file version, not a timing
        except OSError:
            stamp = -1
        key = (result.run_id, share, str(folder), stamp,
               json.dumps(calibration, sort_keys=True, default=str))
        with self._views_lock:
            cached = self._views.get(key)
            if cached is not None:
                self._views.move_to_end(key)
                return cached
        view = results_view([result], share, folder, calibration)
        with self._views_lock:
            self._views[key] = view
            while len(self._views) > VIEW_CACHE:
                self._views.popitem(last=False)
        return view

    def latest_calibration(self) -> dict[str, Any] | None:
        """The machine's latest client calibration ($RESULTS_DIR/calibration.json), if any."""
        return load_latest(self.root)

    def share_url(self, request: gr.Request | None, run_id: str) -> str:
        return page_url(request, self.env) + "?run=" + quote(run_id)

    def load_run(self, run_id: str) -> tuple[RunResult, Path]:
        """A saved run by id (from this disk, else from the results dataset when set up)."""
        folder = run_dir(self.root, run_id)          # refuses ../, slashes, odd characters
        if not (folder / RUN_FILE).is_file() and self.repo is not None:
            self.repo.fetch_run(run_id, self.root)
        if not (folder / RUN_FILE).is_file():
            raise ResultFileError(
                f"No saved run has the id {run_id!r} here. It may have been deleted, or this "
                f"app restarted without a results dataset (RESULTS_REPO) to keep its runs.")
        return RunResult.load(folder), folder

    def history_updates(self) -> dict[Any, Any]:
        rows = list_runs(self.root)
        ids = [r.run_id for r in rows]
        return {self.history_table: gr.update(value=history_rows(rows) or None),
                self.history_pick: gr.update(choices=ids)}

    # -- events -----------------------------------------------------------------------------
    def hardware_price(self, name: str | None) -> Any:
        """The chosen hardware's price from the table (``none``: the price stays as typed)."""
        entry = price_table()["hardware"].get(name or "")
        return gr.update() if entry is None else f"{entry['usd_per_hour']:g}"

    def plan(self, run_id: str | None, *values: str) -> str:
        """The deployment plan of the shown capacity run for the typed traffic."""
        if not run_id:
            return "Open a capacity run first (load pattern: Find capacity)."
        try:
            result, _ = self.load_run(str(run_id))
        except BenchmarkError as exc:
            return md_text(exc)
        return costs.plan_markdown(result, dict(zip(costs.PLAN_FIELDS, values)))

    def on_load(self, request: gr.Request, profile: gr.OAuthProfile | None) -> dict[Any, Any]:
        rules = self._access(profile)
        active, waiting = self.runner.busy()
        busy = ""
        if active:
            busy = ("A benchmark is running now" + (f" and {waiting} more wait in line" if waiting
                                                    else "") + "; a new run starts after them.")
        out: dict[Any, Any] = {self.access_md: " ".join(
            part for part in (rules.reason, self.hub_problem, busy) if part)}
        if not rules.can_run:   # the button is a hint only: run() checks again on the server
            out[self.run_btn] = gr.update(interactive=False)
            out[self.form_error] = _shown(f"**Not allowed to run here.** {rules.reason}")
        out.update(self.history_updates())
        run_id = (request.query_params.get("run") if request is not None else None)
        if run_id is None:
            return out
        try:
            result, folder = self.load_run(run_id)
        except BenchmarkError as exc:
            if self._in_progress(run_id):
                out[self.readonly_md] = gr.update(value=WAITING_FOR_RESULTS, visible=True)
                out[self.main_col] = gr.update(visible=False)
                out[self.shown_run] = run_id
                out[self.refresh_timer] = gr.Timer(active=True)
                return out
            out[self.readonly_md] = gr.update(
                value=f"**This link does not open a saved run.** {md_text(exc)}",
                visible=True)
            return out
        out[self.readonly_md] = gr.update(value=SHARED_READ_ONLY, visible=True)
        out[self.main_col] = gr.update(visible=False)
        out.update(self.show(self.view_of(result, self.share_url(request, result.run_id),
                                          folder)))
        out[self.refresh_timer] = gr.Timer(active=self._follow(result, folder))
        return out

    def _in_progress(self, run_id: str) -> bool:
        view = self.runner.view(run_id)
        return view is not None and not view.finished

    def _follow(self, result: RunResult, folder: Path) -> bool:
        """Whether a shared page should keep reloading this run (it is still being measured)."""
        if result.status != "running" and not self._in_progress(result.run_id):
            return False
        try:
            modified = (folder / RUN_FILE).stat().st_mtime     # a file's age, not a timing
            age_s = datetime.now(timezone.utc).timestamp() - modified
        except OSError:
            return False
        return age_s < STALE_S or self._in_progress(result.run_id)

    def refresh_shared(self, run_id: str | None, request: gr.Request) -> dict[Any, Any]:
        """Timer tick on a shared page: reload the run until it has finished."""
        stop = {self.refresh_timer: gr.Timer(active=False)}
        if not run_id:
            return stop
        try:
            result, folder = self.load_run(run_id)
        except BenchmarkError:
            return {} if self._in_progress(run_id) else stop
        out = self.show(self.view_of(result, self.share_url(request, run_id), folder))
        out[self.readonly_md] = gr.update(value=SHARED_READ_ONLY, visible=True)
        out[self.refresh_timer] = gr.Timer(active=self._follow(result, folder))
        return out

    def use_example(self) -> tuple[str, str, str]:
        example = example_values()
        return example["model_id"], example["quantize"], TARGET_LAUNCH

    def switch_target(self, target: str) -> tuple[Any, Any]:
        endpoint = target == TARGET_ENDPOINT
        return gr.update(visible=not endpoint), gr.update(visible=endpoint)

    def _access(self, profile: Any) -> access.Access:
        username = getattr(profile, "username", None) if profile is not None else None
        return access.decide(self.env, username)

    def run(self, request: gr.Request, profile: gr.OAuthProfile | None, *values: Any):
        """Validate, queue, follow the run; yields page updates until it ends."""
        form = dict(zip(FIELDS, values))
        rules = self._access(profile)
        endpoint = str(form.get("target") or "") == TARGET_ENDPOINT
        if not rules.can_run or (endpoint and not rules.can_use_endpoint):
            yield {self.form_error: _shown(f"**Not allowed to run here.** {rules.reason}")}
            return
        try:
            plan = build_plan(form, endpoint_request_cap=rules.request_cap(endpoint=endpoint),
                              allow_trust_remote_code=access.allow_trust_remote_code(self.env),
                              server_port=server_port(self.env),
                              max_workers=auto_workers() if access.is_space(self.env) else None)
        except BenchmarkError as exc:
            yield {self.form_error: _shown(_error_markdown(exc))}
            return
        if plan.server is None:
            try:
                check_endpoint(plan)   # its /info limits, before anything is queued
            except BenchmarkError as exc:
                yield {self.form_error: _shown(_error_markdown(exc))}
                return
        run_id = new_run_id(plan.run.tokenizer_name)   # the model's id when launching it
        try:
            job = self.runner.submit(plan, run_id, after_finish=self._after_finish)
        except BenchmarkError as exc:
            yield {self.form_error: _shown(_error_markdown(exc))}
            return
        session = getattr(request, "session_hash", None)
        if session:
            self._session_runs[session] = run_id
        share = self.share_url(request, run_id)
        first = {self.job_state: run_id, self.form_error: _shown(""),
                 self.status_html: progress_html(self.runner.view(run_id)),
                 self.run_btn: gr.update(interactive=False),
                 self.stop_btn: gr.update(visible=True, interactive=True)}
        first.update(self.show(ResultsView(share_url=share)))
        yield first
        shown_version = -1
        while True:
            view = self.runner.view(job.run_id)
            if view is None:
                return
            out: dict[Any, Any] = {self.status_html: progress_html(view)}
            show_log = view.launches_server and (view.state == STARTING or
                                                 (view.state in FINISHED and view.server_log
                                                  and view.result_version == 0))
            out[self.server_log] = gr.update(value="\n".join(view.server_log),
                                             visible=bool(show_log))
            if view.result_version != shown_version or view.finished:
                # Once finished: the final files (with the launched server's settings).
                shown_version = view.result_version
                out.update(self._partial(job, share))
            if view.finished:
                if not (job.output_dir / RUN_FILE).is_file():
                    out[self.share] = gr.update(value="", visible=False)   # nothing to share
                out.update({self.run_btn: gr.update(interactive=True),
                            self.stop_btn: gr.update(visible=False),
                            self.form_error: _shown("")})   # "Stopping…" is over: status says
                out.update(self.upload_updates(job.run_id))
                out.update(self.history_updates())
                yield out
                return
            yield out
            time.sleep(POLL_S)

    def _partial(self, job: Job, share: str) -> dict[Any, Any]:
        try:
            result = RunResult.load(job.output_dir)
        except ResultFileError:
            return {}
        return self.show(self.view_of(result, share, job.output_dir))

    def _after_finish(self, job: Job) -> str | None:
        """Record the launched server's settings in the run; upload it when RESULTS_REPO is set.

        Runs in the queue's worker once the engine has exited (nothing else writes the folder
        then). Returns the sentence to show (upload result), or None.
        """
        if job.plan.server is not None:
            record_server_settings(job.output_dir, job.plan.server.to_dict())
        if self.repo is not None:
            self.repo.upload_with_retries(job.output_dir)
        return None   # the outcome is shown beside the results (upload_updates)

    def upload_again(self, run_id: str | None, request: gr.Request,
                     profile: gr.OAuthProfile | None) -> Any:
        """The "upload again" button: only for visitors who may run (it writes with HF_TOKEN)."""
        rules = self._access(profile)
        if not rules.can_run:
            return gr.update(value=f"**Not allowed here.** {rules.reason}", visible=True)
        if self.repo is None or not run_id:
            return gr.update(value="No results dataset is set up (RESULTS_REPO).", visible=True)
        try:
            folder = run_dir(self.root, run_id)
        except BenchmarkError as exc:
            return gr.update(value=md_text(exc), visible=True)
        status = self.repo.upload_run(folder)
        return gr.update(value=status.message, visible=True)

    def import_runs(self, paths: list[Any] | None, request: gr.Request,
                    profile: gr.OAuthProfile | None) -> dict[Any, Any]:
        """The import box: other tools' files become saved runs; the first one is opened.

        Only for visitors who may run (it writes into the results folder). Every file is
        checked before anything is written; a bad one is named with what was wrong."""
        rules = self._access(profile)
        if not rules.can_run:
            return {self.import_msg: f"**Not allowed to import here.** {md_text(rules.reason)}"}
        files = [str(getattr(p, "name", p)) for p in (paths or []) if p]
        if not files:
            return {self.import_msg: "Choose one or more result files first."}
        if len(files) > MAX_IMPORT_FILES:
            return {self.import_msg: f"Import at most {MAX_IMPORT_FILES} files at once "
                                     f"({len(files)} chosen)."}
        try:
            folders = import_files(files, self.root, names=[Path(f).name for f in files])
        except BenchmarkError as exc:
            return {self.import_msg: f"**Not imported:** {md_text(exc)} Nothing was saved."}
        if self.repo is not None:      # kept with the other runs, so links survive restarts
            for folder in folders:
                self.repo.upload_with_retries(folder)
        out = self._show_runs([folders[0].name], request)
        out.pop(self.history_msg, None)
        out.update(self.history_updates())
        names = ", ".join(f"`{f.name}`" for f in folders)
        out[self.import_msg] = (f"Imported {len(folders)} run{'s' if len(folders) != 1 else ''}"
                                f": {names}. The first one is shown below.")
        out[self.import_files] = None
        return out

    def html_report(self, run_id: str | None) -> Any:
        """Write the shown run's report.html and offer it with the run's other files."""
        if not run_id:
            return gr.update()
        try:
            folder = run_dir(self.root, run_id)
            path = write_html_report(folder)
        except (BenchmarkError, OSError) as exc:
            gr.Warning(f"The report could not be written: {redact(str(exc))}")
            return gr.update()
        return gr.update(value=[str(path), *download_paths(folder)], visible=True)

    def stop(self, run_id: str | None, request: gr.Request) -> Any:
        """Stop this visitor's run (the one in the page's state, else the session's latest)."""
        run_id = run_id or self._session_runs.get(getattr(request, "session_hash", None) or "")
        if not run_id or not self.runner.cancel(run_id):
            return _shown("Nothing to stop: no benchmark of yours is running.")
        return _shown("Stopping… the results measured so far are kept.")

    def pick_row(self, picked: list[str] | None, evt: gr.SelectData) -> list[str]:
        """A click on a row of the saved runs adds (or removes) that run in the picker."""
        row = getattr(evt, "row_value", None) or []
        run_id = str(row[0]) if row else ""
        chosen = [str(r) for r in (picked or [])]
        if not run_id:
            return chosen
        return [r for r in chosen if r != run_id] if run_id in chosen else [*chosen, run_id]

    def refresh_history(self) -> dict[Any, Any]:
        return self.history_updates()

    def open_runs(self, run_ids: list[str] | None, request: gr.Request) -> dict[Any, Any]:
        return self._show_runs((run_ids or [])[:1], request)

    def compare_runs(self, run_ids: list[str] | None, request: gr.Request) -> dict[Any, Any]:
        picked = list(dict.fromkeys(str(r) for r in (run_ids or [])))   # each run once
        if len(picked) < 2:
            return {self.history_msg: "Pick two or more runs to compare."}
        if len(picked) > MAX_COMPARE:
            # Anyone may call this endpoint: a long list would tie up the CPU the runs share.
            return {self.history_msg: f"Pick at most {MAX_COMPARE} runs to compare "
                                      f"({len(picked)} picked): the charts would be unreadable."}
        return self._show_runs(picked, request)

    def _show_runs(self, run_ids: list[str], request: gr.Request) -> dict[Any, Any]:
        if not run_ids:
            return {self.history_msg: "Pick a run first."}
        results, folder = [], None
        try:
            for run_id in run_ids:
                result, folder = self.load_run(run_id)
                results.append(result)
        except BenchmarkError as exc:
            return {self.history_msg: f"**Cannot open:** {md_text(exc)}"}
        share = self.share_url(request, results[0].run_id) if len(results) == 1 else ""
        out = self.show(results_view(results, share, folder if len(results) == 1 else None,
                                     self.latest_calibration()))
        out[self.history_msg] = ""
        return out


def page_url(request: Any, env: Mapping[str, str]) -> str:
    """The page's address without its query: the Space's address, else what the browser used."""
    space = access.space_url(env)
    if space:
        return space.rstrip("/") + "/"
    headers = getattr(request, "headers", None) or {}
    referer = headers.get("referer") or ""
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    if referer:
        parts = urlsplit(referer)
        if parts.scheme in ("http", "https") and parts.netloc == host:
            return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
    proto = headers.get("x-forwarded-proto") or "http"
    return f"{proto}://{host}/"


def check_endpoint(plan: Plan) -> None:
    """An existing server: that it answers, and that the run fits its /info limits."""
    probe = probe_server(plan.run, timeout_s=ENDPOINT_PROBE_S)
    plan.run.check_against_server(probe.info)


def _results_repo(env: Mapping[str, str]) -> tuple[Any, str]:
    """The results dataset (RESULTS_REPO) or None, and a sentence when it is misconfigured."""
    try:
        return hub.from_env(env), ""
    except BenchmarkError as exc:
        return None, f"Results are kept on this disk only: {md_text(exc)}"


def server_port(env: Mapping[str, str]) -> int:
    """The port TGI is launched on: $BENCHMARK_TGI_PORT, default 1337 (TGI's own default is
    3000; a Space exposes only the app's port, so the server stays private either way)."""
    return parse_int("port", env.get("BENCHMARK_TGI_PORT") or DEFAULT_SERVER_PORT,
                     minimum=1, maximum=65535)


def _root_from(results_root: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    return Path(results_root or env.get("RESULTS_DIR") or "results").resolve()


def build_app(results_root: str | os.PathLike[str] | None = None,
              env: Mapping[str, str] | None = None) -> App:
    """Build the app (its page is ``app.blocks``). ``results_root`` defaults to $RESULTS_DIR,
    then ``results``."""
    environment = dict(os.environ if env is None else env)
    root = check_results_dir(_root_from(results_root, environment))
    # What a dead predecessor left: runs still "running", servers it had started.
    found = reconcile_runs(root) + reap_orphans()
    for sentence in found:
        print(f"At start-up: {sentence}", file=sys.stderr, flush=True)
    try:
        remote_code = access.allow_trust_remote_code(environment)
    except BenchmarkError:
        remote_code = False   # a mistyped switch stays off; the form says why when asked
    runner = Runner(root, env=environment, allow_trust_remote_code=remote_code)
    app = App(root, environment, runner)
    app.startup_notes = found
    app.blocks = app.build()
    return app


def create_app(results_root: str | os.PathLike[str] | None = None,
               env: Mapping[str, str] | None = None) -> gr.Blocks:
    """The app's page alone (``build_app(...).blocks``)."""
    return build_app(results_root, env).blocks


def launch_options(app: App, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Host, port and the files the page may serve (the results folder)."""
    environment = dict(os.environ if env is None else env)
    default_host = "0.0.0.0" if access.is_space(environment) else "127.0.0.1"
    host = environment.get("GRADIO_SERVER_NAME") or default_host
    if host not in ("0.0.0.0", "127.0.0.1"):
        raise ConfigError("hostname", f"GRADIO_SERVER_NAME must be 0.0.0.0 or 127.0.0.1, "
                                      f"got {host!r}.")
    port_text = environment.get("GRADIO_SERVER_PORT") or "7860"
    port = parse_int("port", port_text, minimum=1, maximum=65535)
    return {"server_name": host, "server_port": port, "allowed_paths": [str(app.root)],
            "css": CSS, "show_error": False, "footer_links": [],
            # The form has no file field, yet Gradio accepts uploads from anyone on /upload and
            # serves them back: keep them too small to fill the Space's disk or host pages.
            "max_file_size": MAX_UPLOAD}


def main() -> None:
    """``python app.py``: build the app and serve it until stopped; the engine child and the
    TGI server it launched stop with it."""
    try:
        app = build_app()
        options = launch_options(app)
    except BenchmarkError as exc:   # a setting of the environment: one sentence, no traceback
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    atexit.register(app.runner.close)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app.blocks.launch(**options)


__all__ = ["App", "build_app", "create_app", "launch_options", "main", "page_url", "CSS"]
