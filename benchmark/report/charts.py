"""Plotly figures from saved runs: results in, figures out, no gradio.

    fig = throughput_vs_batch([result])              # one run
    fig = latency_vs_batch([run_a, run_b])           # two runs compared on the same axes
    figures = all_figures([result])                  # {name: Figure} for every chart

Every function takes a list of ``RunResult`` (a single one is accepted too) and draws one trace
per run (and per panel / percentile), labelled by model, plus the run id when several runs are
compared; simulated runs carry "(simulated)" in the legend and the title. A chart that cannot be
drawn (no data yet, or an unexpected error) comes back as a figure holding a readable sentence,
never as an exception, so a page never breaks because of one chart. The charts drawn from step
summaries (``STEP_CHARTS``) also take ``steps``, one list per run, when the caller already has
them.

Which metric goes on which chart is declared in ``LINE_CHARTS``, ``SCATTER_CHARTS`` and
``DISTRIBUTION_CHARTS``; the functions below only draw what the tables say.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..core.records import RequestRecord
from ..core.stats import StepSummary, output_token_count

__all__ = [
    "chart_figures",
    "Panel",
    "LineChart",
    "ScatterChart",
    "DistributionChart",
    "LINE_CHARTS",
    "SCATTER_CHARTS",
    "DISTRIBUTION_CHARTS",
    "CHART_FUNCTIONS",
    "STEP_CHARTS",
    "throughput_vs_batch",
    "latency_vs_batch",
    "prefill_throughput_over_latency",
    "decode_throughput_over_latency",
    "ttft_distribution",
    "token_latency_distribution",
    "inter_token_latency_distribution",
    "output_length",
    "output_length_differs",
    "all_figures",
    "message_figure",
    "run_label",
]

COLORS = qualitative.Plotly
PERCENTILE_DASH = {"p50": "solid", "p90": "dash", "p99": "dot", "avg": "solid"}
HEIGHT = 440


# ---------------------------------------------------------------------------------------------
# What goes where


@dataclass(frozen=True)
class Panel:
    """One panel of a chart: a metric and how its axis is named."""

    metric: str
    title: str
    y_title: str


@dataclass(frozen=True)
class LineChart:
    """Metric(s) against batch size: ``stats`` are drawn as lines; error bars span min..max."""

    title: str
    panels: tuple[Panel, ...]
    stats: tuple[str, ...]
    error_bars: bool = False


@dataclass(frozen=True)
class ScatterChart:
    """TGI's "throughput over latency": one labelled point per batch size (averages)."""

    title: str
    x_metric: str
    x_title: str
    y_metric: str
    y_title: str


@dataclass(frozen=True)
class DistributionChart:
    """Per-request values as boxes, one box per batch size and run."""

    title: str
    y_title: str
    values: Callable[[RequestRecord], list[float]]


def _one(value: float | None) -> list[float]:
    return [] if value is None else [value]


LINE_CHARTS: dict[str, LineChart] = {
    "throughput_vs_batch": LineChart(
        title="Throughput by batch size",
        panels=(Panel("prefill_throughput_tok_s", "Prefill: prompt tokens read",
                      "Tokens per second"),
                Panel("decode_throughput_tok_s", "Decode: tokens generated, all users together",
                      "Tokens per second")),
        stats=("avg",), error_bars=True),
    "latency_vs_batch": LineChart(
        title="Latency by batch size (p50, p90, p99)",
        panels=(Panel("prefill_latency_ms", "Time to first token", "Milliseconds"),
                Panel("decode_token_latency_ms", "Time per output token", "Milliseconds")),
        stats=("p50", "p90", "p99")),
}

SCATTER_CHARTS: dict[str, ScatterChart] = {
    "prefill_throughput_over_latency": ScatterChart(
        title="Prefill throughput over latency",
        x_metric="prefill_latency_ms", x_title="Time to first token, average (ms)",
        y_metric="prefill_throughput_tok_s", y_title="Prompt tokens per second, average"),
    "decode_throughput_over_latency": ScatterChart(
        title="Decode throughput over latency",
        x_metric="decode_token_latency_ms", x_title="Time per output token, average (ms)",
        y_metric="decode_throughput_tok_s", y_title="Generated tokens per second, average"),
}

DISTRIBUTION_CHARTS: dict[str, DistributionChart] = {
    "ttft_distribution": DistributionChart(
        title="Time to first token per request", y_title="Milliseconds",
        values=lambda r: _one(r.ttft_ms)),
    "token_latency_distribution": DistributionChart(
        title="Time per output token per request", y_title="Milliseconds",
        values=lambda r: _one(r.token_latency_ms)),
    "inter_token_latency_distribution": DistributionChart(
        title="Gaps between tokens (inter-token latency)", y_title="Milliseconds",
        values=lambda r: r.itl_ms),
}


# ---------------------------------------------------------------------------------------------
# Shared helpers


def message_figure(sentence: str, title: str = "") -> go.Figure:
    """An empty chart that shows ``sentence`` in its middle."""
    fig = go.Figure()
    fig.add_annotation(text=sentence, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font={"size": 15})
    fig.update_layout(title={"text": title}, template="plotly_white", height=HEIGHT,
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def _as_list(results: Any) -> list[Any]:
    if results is None:
        return []
    if isinstance(results, (list, tuple)):
        return [r for r in results if r is not None]
    return [results]


def _safe(title: str) -> Callable[[Callable[..., go.Figure]], Callable[..., go.Figure]]:
    """Turn "no data" and unexpected errors into a figure with a sentence."""

    def wrap(draw: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
        @functools.wraps(draw)
        def inner(results: Any, *args: Any, **kwargs: Any) -> go.Figure:
            runs = _as_list(results)
            if not runs:
                return message_figure("No results to show yet.", title)
            try:
                return draw(runs, *args, **kwargs)
            except _NoData as exc:
                return message_figure(str(exc), _title(title, runs))
            except Exception as exc:  # a chart must never break the page
                return message_figure(
                    f"This chart could not be drawn ({type(exc).__name__}: {exc}).",
                    _title(title, runs))

        return inner

    return wrap


class _NoData(Exception):
    """Nothing to draw: the message says why."""


def run_label(result: Any, results: list[Any]) -> str:
    """Legend name of ``result``: its model, with the run id when several runs are compared."""
    label = result.model
    source = getattr(result, "source", None)
    if isinstance(source, dict):
        label = f"{label} [{source.get('tool')}]"
    if len(results) > 1:
        label = f"{label} · {result.run_id}"
    if result.simulated:
        label += " (simulated)"
    return label


def _title(title: str, results: list[Any]) -> str:
    if results and all(r.config.mode == "concurrency" for r in results):
        title = title.replace("by batch size", "by number of concurrent users")
    simulated = [bool(r.simulated) for r in results]
    if simulated and all(simulated):
        return title + " (simulated)"
    if any(simulated):
        return title + " (includes a simulated run)"
    return title


def _x_title(results: list[Any]) -> str:
    for result in results:
        source = getattr(result, "source", None)
        if isinstance(source, dict) and not source.get("steps_are_concurrency", True):
            return "Load level (the source file's order; see the tables)"
    modes = {r.config.mode for r in results}
    if modes == {"concurrency"}:
        return "Concurrent users"
    if modes == {"rounds"}:
        return "Batch size (requests sent together)"
    return "Batch size or concurrent users"


def _step_word(result: Any) -> str:
    return "users" if result.config.mode == "concurrency" else "batch"


def _layout(fig: go.Figure, title: str, results: list[Any]) -> go.Figure:
    fig.update_layout(
        title={"text": _title(title, results), "y": 0.97, "yanchor": "top"},
        template="plotly_white", height=HEIGHT,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        margin={"l": 60, "r": 20, "t": 95, "b": 40}, hovermode="closest",
    )
    return fig


def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]


def _batch_axis(steps: Iterable[int]) -> dict[str, Any]:
    values = sorted(set(steps))
    return {"type": "log", "tickvals": values, "ticktext": [str(v) for v in values]}


# ---------------------------------------------------------------------------------------------
# Lines against batch size


def _run_steps(results: list[Any],
               steps: list[list[StepSummary]] | None) -> list[list[StepSummary]]:
    """Each run's step summaries: ``steps`` when given (one list per run), else computed."""
    return [result.steps() for result in results] if steps is None else steps


def _line_chart(results: list[Any], spec: LineChart,
                steps: list[list[StepSummary]] | None = None) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(spec.panels),
                        subplot_titles=[p.title for p in spec.panels], horizontal_spacing=0.1)
    all_steps: set[int] = set()
    drawn = 0
    for index, (result, run_steps) in enumerate(zip(results, _run_steps(results, steps))):
        label = run_label(result, results)
        for col, panel in enumerate(spec.panels, start=1):
            points = [(s.step, s.metric(panel.metric)) for s in run_steps]
            points = [(step, stats) for step, stats in points if stats is not None]
            if not points:
                continue
            all_steps.update(step for step, _ in points)
            for stat in spec.stats:
                ys = [getattr(stats, stat) for _, stats in points]
                name = label if len(spec.stats) == 1 else f"{label} {stat}"
                error = None
                if spec.error_bars and all(
                        st.min is not None and st.max is not None and y is not None
                        for (_, st), y in zip(points, ys)):
                    error = {"type": "data", "symmetric": False,
                             "array": [st.max - y for (_, st), y in zip(points, ys)],
                             "arrayminus": [y - st.min for (_, st), y in zip(points, ys)]}
                fig.add_trace(go.Scatter(
                    x=[step for step, _ in points], y=ys, name=name, mode="lines+markers",
                    legendgroup=name, showlegend=col == 1,
                    line={"color": _color(index), "dash": PERCENTILE_DASH.get(stat, "solid")},
                    error_y=error,
                    hovertemplate=(f"{_step_word(result)} %{{x}}<br>{stat} %{{y:.2f}}"
                                   f"<extra>{name}</extra>"),
                ), row=1, col=col)
                drawn += 1
    if not drawn:
        raise _NoData("No successful request has been measured yet.")
    for col, panel in enumerate(spec.panels, start=1):
        fig.update_xaxes(title_text=_x_title(results), row=1, col=col, **_batch_axis(all_steps))
        fig.update_yaxes(title_text=panel.y_title, rangemode="tozero", row=1, col=col)
    return _layout(fig, spec.title, results)


@_safe(LINE_CHARTS["throughput_vs_batch"].title)
def throughput_vs_batch(results: list[Any],
                        steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Prefill and decode throughput (tokens/s) by batch size: average, bars from min to max."""
    return _line_chart(results, LINE_CHARTS["throughput_vs_batch"], steps)


@_safe(LINE_CHARTS["latency_vs_batch"].title)
def latency_vs_batch(results: list[Any],
                     steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Time to first token and time per output token by batch size, as p50, p90 and p99."""
    return _line_chart(results, LINE_CHARTS["latency_vs_batch"], steps)


# ---------------------------------------------------------------------------------------------
# Throughput over latency (TGI's scatter plots)


def _scatter_chart(results: list[Any], spec: ScatterChart,
                   steps: list[list[StepSummary]] | None = None) -> go.Figure:
    fig = go.Figure()
    for index, (result, run_steps) in enumerate(zip(results, _run_steps(results, steps))):
        points = [(s.step, s.value(spec.x_metric), s.value(spec.y_metric))
                  for s in run_steps]
        points = [p for p in points if p[1] is not None and p[2] is not None]
        if not points:
            continue
        label = run_label(result, results)
        word = _step_word(result)
        fig.add_trace(go.Scatter(
            x=[p[1] for p in points], y=[p[2] for p in points], name=label,
            mode="lines+markers+text", text=[f"{word} {p[0]}" for p in points],
            textposition="top center", marker={"size": 10, "color": _color(index)},
            line={"color": _color(index), "width": 1, "dash": "dot"},
            hovertemplate=("%{text}<br>latency %{x:.2f} ms<br>throughput %{y:.2f} tokens/s"
                           f"<extra>{label}</extra>"),
        ))
    if not fig.data:
        raise _NoData("No successful request has been measured yet.")
    fig.update_xaxes(title_text=spec.x_title, rangemode="tozero")
    fig.update_yaxes(title_text=spec.y_title, rangemode="tozero")
    fig.update_layout(showlegend=True)
    return _layout(fig, spec.title, results)


@_safe(SCATTER_CHARTS["prefill_throughput_over_latency"].title)
def prefill_throughput_over_latency(results: list[Any],
                                    steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Prompt tokens/s against time to first token, one labelled point per batch size."""
    return _scatter_chart(results, SCATTER_CHARTS["prefill_throughput_over_latency"], steps)


@_safe(SCATTER_CHARTS["decode_throughput_over_latency"].title)
def decode_throughput_over_latency(results: list[Any],
                                   steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Generated tokens/s against time per output token, one labelled point per batch size."""
    return _scatter_chart(results, SCATTER_CHARTS["decode_throughput_over_latency"], steps)


# ---------------------------------------------------------------------------------------------
# Distributions


def _measured_ok(result: Any) -> list[RequestRecord]:
    return [r for r in result.records if not r.warmup and r.ok]


def _every_gap_known(result: Any) -> bool:
    """False for a run imported from a file that gave only first/last token times: its
    records' stamps do not hold the gaps between tokens."""
    source = getattr(result, "source", None)
    return not isinstance(source, dict) or bool(source.get("every_token_stamp"))


def _distribution_chart(results: list[Any], spec: DistributionChart) -> go.Figure:
    fig = go.Figure()
    for index, result in enumerate(results):
        if spec is DISTRIBUTION_CHARTS["inter_token_latency_distribution"] and not \
                _every_gap_known(result):
            continue
        xs: list[str] = []
        ys: list[float] = []
        for record in sorted(_measured_ok(result), key=lambda r: r.step):
            for value in spec.values(record):
                xs.append(str(record.step))
                ys.append(value)
        if not ys:
            continue
        label = run_label(result, results)
        fig.add_trace(go.Box(x=xs, y=ys, name=label, marker={"color": _color(index)},
                             boxpoints="outliers", boxmean=True, legendgroup=label,
                             showlegend=True))
    if not fig.data:
        raise _NoData("No successful request has been measured yet.")
    order = sorted({int(x) for trace in fig.data for x in trace.x})
    fig.update_xaxes(title_text=_x_title(results), type="category",
                     categoryorder="array", categoryarray=[str(s) for s in order])
    fig.update_yaxes(title_text=spec.y_title, rangemode="tozero")
    fig.update_layout(boxmode="group")
    return _layout(fig, spec.title, results)


@_safe(DISTRIBUTION_CHARTS["ttft_distribution"].title)
def ttft_distribution(results: list[Any]) -> go.Figure:
    """Box plot of every request's time to first token, per batch size."""
    return _distribution_chart(results, DISTRIBUTION_CHARTS["ttft_distribution"])


@_safe(DISTRIBUTION_CHARTS["token_latency_distribution"].title)
def token_latency_distribution(results: list[Any]) -> go.Figure:
    """Box plot of every request's time per output token, per batch size."""
    return _distribution_chart(results, DISTRIBUTION_CHARTS["token_latency_distribution"])


@_safe(DISTRIBUTION_CHARTS["inter_token_latency_distribution"].title)
def inter_token_latency_distribution(results: list[Any]) -> go.Figure:
    """Box plot of every gap between two tokens, per batch size."""
    return _distribution_chart(results, DISTRIBUTION_CHARTS["inter_token_latency_distribution"])


# ---------------------------------------------------------------------------------------------
# Output length


def _requested(record: RequestRecord, result: Any) -> int:
    return int(record.requested_output_tokens or result.config.decode_length)


def output_length_differs(results: Any) -> bool:
    """True when some successful request produced a different number of tokens than asked."""
    return any(output_token_count(r) != _requested(r, result)
               for result in _as_list(results) for r in _measured_ok(result))


OUTPUT_LENGTH_TITLE = "Output length: tokens received vs requested"


@_safe(OUTPUT_LENGTH_TITLE)
def output_length(results: list[Any]) -> go.Figure:
    """Tokens each request received (boxes) against the length asked (a dashed line).

    Only meaningful when they differ (``output_length_differs``); otherwise the figure says that
    every request got the length asked.
    """
    if not any(_measured_ok(r) for r in results):
        raise _NoData("No successful request has been measured yet.")
    if not output_length_differs(results):
        asked = sorted({_requested(r, res) for res in results for r in _measured_ok(res)})
        raise _NoData(f"Every request received the {', '.join(map(str, asked))} tokens asked.")
    fig = go.Figure()
    for index, result in enumerate(results):
        records = sorted(_measured_ok(result), key=lambda r: r.step)
        if not records:
            continue
        label = run_label(result, results)
        fig.add_trace(go.Box(
            x=[str(r.step) for r in records], y=[output_token_count(r) for r in records],
            name=f"{label}: received", marker={"color": _color(index)}, boxpoints="all",
            jitter=0.3, pointpos=0, legendgroup=label))
        steps = sorted({r.step for r in records})
        asked = {s: max(_requested(r, result) for r in records if r.step == s) for s in steps}
        fig.add_trace(go.Scatter(
            x=[str(s) for s in steps], y=[asked[s] for s in steps], name=f"{label}: requested",
            mode="lines+markers", line={"color": _color(index), "dash": "dash"},
            marker={"symbol": "line-ew-open", "size": 14}, legendgroup=label))
    order = sorted({int(x) for trace in fig.data for x in trace.x})
    fig.update_xaxes(title_text=_x_title(results), type="category", categoryorder="array",
                     categoryarray=[str(s) for s in order])
    fig.update_yaxes(title_text="Output tokens per request", rangemode="tozero")
    fig.update_layout(boxmode="group")
    return _layout(fig, OUTPUT_LENGTH_TITLE, results)


# ---------------------------------------------------------------------------------------------
# Everything at once

CHART_FUNCTIONS: dict[str, Callable[[Any], go.Figure]] = {
    "throughput_vs_batch": throughput_vs_batch,
    "latency_vs_batch": latency_vs_batch,
    "prefill_throughput_over_latency": prefill_throughput_over_latency,
    "decode_throughput_over_latency": decode_throughput_over_latency,
    "ttft_distribution": ttft_distribution,
    "token_latency_distribution": token_latency_distribution,
    "inter_token_latency_distribution": inter_token_latency_distribution,
    "output_length": output_length,
}


# The charts drawn from step summaries: they also take ``steps`` (one list per run).
STEP_CHARTS = frozenset((*LINE_CHARTS, *SCATTER_CHARTS))


def all_figures(results: Any) -> dict[str, go.Figure]:
    """Every chart of ``CHART_FUNCTIONS`` for ``results`` (never raises)."""
    return {name: draw(results) for name, draw in CHART_FUNCTIONS.items()}


def chart_figures(results: list[Any],
                  steps: list[list[StepSummary]] | None = None) -> list[tuple[str, Any]]:
    """(title, plotly figure) for every chart of this module, in its declared order.

    ``steps``: each run's summaries when already computed. The output-length chart is left out
    when every request got the tokens it asked for.
    """
    out: list[tuple[str, Any]] = []
    imported = any(getattr(r, "source", None) for r in _as_list(results))
    for name, draw in CHART_FUNCTIONS.items():
        if name == "output_length" and (imported or not output_length_differs(results)):
            continue
        if imported and not _has_data(name, results, steps):
            continue    # a file without these numbers: say nothing rather than "no data"
        # Never raises: a failed chart is a figure with a sentence.
        figure = draw(results, steps=steps) if name in STEP_CHARTS else draw(results)
        title = getattr(getattr(figure.layout, "title", None), "text", None) or name
        out.append((_plain(str(title)), figure))
    return out


def _has_data(name: str, results: list[Any], steps: list[list[StepSummary]] | None) -> bool:
    """Whether chart ``name`` has anything to draw for ``results`` (imported runs lack some)."""
    runs = _as_list(results)
    if name in LINE_CHARTS or name in SCATTER_CHARTS:
        keys = ([p.metric for p in LINE_CHARTS[name].panels] if name in LINE_CHARTS
                else [SCATTER_CHARTS[name].x_metric, SCATTER_CHARTS[name].y_metric])
        need_all = name in SCATTER_CHARTS
        for run_steps in _run_steps(runs, steps):
            for step in run_steps:
                present = [step.metrics.get(k) is not None for k in keys]
                if all(present) if need_all else any(present):
                    return True
        return False
    spec = DISTRIBUTION_CHARTS.get(name)
    if spec is None:
        return True
    return any(spec.values(r) for result in runs for r in _measured_ok(result)
               if spec is not DISTRIBUTION_CHARTS["inter_token_latency_distribution"]
               or _every_gap_known(result))


def _plain(title: str) -> str:
    """Plotly titles may hold <br> and tags; a component label wants plain text."""
    return re.sub(r"<[^>]+>", " ", title).replace("  ", " ").strip()
