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
from ..core.telemetry_data import record_timeline, role_series, series

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
    "throughput_vs_rate",
    "rate_charts_apply",
    "prefill_throughput_over_latency",
    "decode_throughput_over_latency",
    "ttft_distribution",
    "token_latency_distribution",
    "inter_token_latency_distribution",
    "output_length",
    "output_length_differs",
    "slo_attainment_vs_batch",
    "has_slo",
    "capacity_attainment",
    "capacity_latency",
    "CAPACITY_CHARTS",
    "cost_per_million_tokens",
    "has_cost",
    "timeline",
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
    if results and all(r.config.mode == "rate" for r in results):
        title = title.replace("by batch size", "by request rate")
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
    if modes == {"rate"}:
        return "Request rate offered (requests/s)"
    return "Step (batch size, users or requests/s)"


def _step_word(result: Any) -> str:
    return {"concurrency": "users", "rate": "req/s", "capacity": "probe"}.get(result.config.mode,
                                                                         "batch")


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
# Latency targets

SLO_TITLE = "Requests within the latency targets, and goodput, by batch size"


def has_slo(results: Any) -> bool:
    """True when some run set latency targets (and so has an attainment per step)."""
    return any(_slo_target(r) is not None for r in _as_list(results))


def _slo_target(result: Any) -> float | None:
    config = result.config
    if all(getattr(config, k, None) is None for k in ("slo_ttft_ms", "slo_tpot_ms",
                                                      "slo_e2e_ms")):
        return None
    return float(getattr(config, "slo_attainment", 0.9))


@_safe(SLO_TITLE)
def slo_attainment_vs_batch(results: list[Any],
                            steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Share of good requests (%) per step with the target as a dashed line, and goodput."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["Requests within targets (%)", "Goodput (good requests/s)"])
    all_steps: set[int] = set()
    drawn = 0
    for index, (result, run_steps) in enumerate(zip(results, _run_steps(results, steps))):
        target = _slo_target(result)
        judged = [s for s in run_steps if s.slo is not None and s.slo.attainment is not None]
        if target is None or not judged:
            continue
        label = run_label(result, results)
        xs = [s.step for s in judged]
        all_steps.update(xs)
        fig.add_trace(go.Scatter(
            x=xs, y=[100 * s.slo.attainment for s in judged],  # type: ignore[union-attr,operator]
            name=label, mode="lines+markers", legendgroup=label,
            line={"color": _color(index)},
            hovertemplate=f"{_step_word(result)} %{{x}}<br>%{{y:.1f}}%<extra>{label}</extra>",
        ), row=1, col=1)
        fig.add_hline(y=100 * target, line={"color": _color(index), "dash": "dash"},
                      annotation_text=f"target {target:.0%}", row=1, col=1)
        fig.add_trace(go.Scatter(
            x=xs, y=[s.slo.goodput_rps for s in judged],  # type: ignore[union-attr]
            name=label, mode="lines+markers", legendgroup=label, showlegend=False,
            line={"color": _color(index)},
            hovertemplate=f"{_step_word(result)} %{{x}}<br>%{{y:.2f}} req/s<extra>{label}</extra>",
        ), row=1, col=2)
        drawn += 1
    if not drawn:
        raise _NoData("No latency target was set, or no request has been measured yet.")
    for col in (1, 2):
        fig.update_xaxes(title_text=_x_title(results), row=1, col=col, **_batch_axis(all_steps))
    fig.update_yaxes(title_text="% of requests", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="good requests/s", rangemode="tozero", row=1, col=2)
    return _layout(fig, SLO_TITLE, results)


# ---------------------------------------------------------------------------------------------
# Capacity search

CAPACITY_ATTAINMENT_TITLE = "Capacity search: requests within the targets by request rate"
CAPACITY_LATENCY_TITLE = "Capacity search: time to first token and time per token by request rate"


def _capacity_runs(results: list[Any]) -> list[Any]:
    runs = [r for r in results if getattr(r, "capacity", None) is not None
            and r.capacity.probes]
    if not runs:
        raise _NoData("No capacity search in these results.")
    return runs


def _rate_probes(capacity: Any) -> list[Any]:
    """The probes drawn against the rate axis, in rate order (one-at-a-time and saturation
    probes included at the rate they completed)."""
    return sorted((p for p in capacity.probes if p.rate_rps and p.rate_rps > 0),
                  key=lambda p: p.rate_rps)


@_safe(CAPACITY_ATTAINMENT_TITLE)
def capacity_attainment(results: list[Any]) -> go.Figure:
    """Share of requests within the targets at every probe's rate, the target as a dashed
    line and the capacity found as a vertical line."""
    fig = go.Figure()
    for index, result in enumerate(_capacity_runs(results)):
        capacity = result.capacity
        label = run_label(result, results)
        probes = [p for p in _rate_probes(capacity) if p.attainment is not None]
        fig.add_trace(go.Scatter(
            x=[p.rate_rps for p in probes], y=[100 * p.attainment for p in probes],
            mode="lines+markers", name=label, line={"color": _color(index)},
            marker={"symbol": ["circle" if p.passed else "x" for p in probes], "size": 10},
            text=[f"probe {p.step} ({p.kind}){', stopped early' if p.stopped_early else ''}"
                  for p in probes],
            hovertemplate="%{x:.2f} req/s<br>%{y:.1f}% within target<br>%{text}"
                          f"<extra>{label}</extra>"))
        fig.add_hline(y=100 * capacity.slo.attainment, line={"dash": "dash", "color": "gray"},
                      annotation_text=f"target {capacity.slo.attainment:.0%}")
        if capacity.rate_rps is not None:
            fig.add_vline(x=capacity.rate_rps, line={"color": _color(index), "dash": "dot"},
                          annotation_text=f"capacity {capacity.rate_rps:.3g} req/s")
    fig.update_xaxes(title_text="Request rate (requests/s)", rangemode="tozero")
    fig.update_yaxes(title_text="% of requests within the targets", range=[0, 105])
    return _layout(fig, CAPACITY_ATTAINMENT_TITLE, results)


@_safe(CAPACITY_LATENCY_TITLE)
def capacity_latency(results: list[Any]) -> go.Figure:
    """TTFT and time per output token (p50, p90, p99) at every probe's rate, with each
    target as a dashed line."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["Time to first token", "Time per output token"])
    for index, result in enumerate(_capacity_runs(results)):
        capacity = result.capacity
        label = run_label(result, results)
        probes = _rate_probes(capacity)
        for col, (attr, target) in enumerate((("ttft_ms", capacity.slo.ttft_ms),
                                              ("tpot_ms", capacity.slo.tpot_ms)), start=1):
            points = [p for p in probes if getattr(p, attr)]
            for stat in ("p50", "p90", "p99"):
                name = f"{label} {stat}"
                fig.add_trace(go.Scatter(
                    x=[p.rate_rps for p in points], y=[getattr(p, attr)[stat] for p in points],
                    mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                    line={"color": _color(index), "dash": PERCENTILE_DASH[stat]},
                    hovertemplate=f"%{{x:.2f}} req/s<br>{stat} %{{y:.1f}} ms<extra>{name}</extra>",
                ), row=1, col=col)
            if target is not None:
                fig.add_hline(y=target, line={"dash": "dash", "color": "red"},
                              annotation_text=f"target {target:g} ms", row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="Request rate (requests/s)", rangemode="tozero",
                         row=1, col=col)
        fig.update_yaxes(title_text="ms", type="log", row=1, col=col)
    return _layout(fig, CAPACITY_LATENCY_TITLE, results)


CAPACITY_CHARTS = ("capacity_attainment", "capacity_latency")


# ---------------------------------------------------------------------------------------------
# Cost

COST_TITLE = "Cost per million tokens by batch size"


def _priced(result: Any, steps: list[StepSummary] | None = None) -> dict[str, Any] | None:
    """``result``'s cost block when it has a price (None otherwise)."""
    cost = result.cost(steps) if callable(getattr(result, "cost", None)) else None
    return cost if cost and cost.get("price") else None


def has_cost(results: Any) -> bool:
    """True when some run was given a price (so its steps have a cost per token)."""
    return any(getattr(r.config, "gpu_price_per_hour", None) is not None
               or getattr(r.config, "hardware", None) is not None for r in _as_list(results))


@_safe(COST_TITLE)
def cost_per_million_tokens(results: list[Any],
                            steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Dollars per million output tokens (solid) and per million tokens in all (prompt +
    output, dashed) at each step; a capacity run's steps are drawn at their probe's rate, with
    the capacity point marked."""
    fig = go.Figure()
    drawn = 0
    x_titles: set[str] = set()
    for index, (result, run_steps) in enumerate(zip(results, _run_steps(results, steps))):
        cost = _priced(result, run_steps)
        if cost is None:
            continue
        label = run_label(result, results)
        capacity = getattr(result, "capacity", None)
        rates = {} if capacity is None else {p.step: p.rate_rps for p in capacity.probes}
        points = []
        for c in cost["steps"]:
            x = rates.get(int(c["step"])) if capacity is not None else c["step"]
            if x and c.get("usd_per_million_output_tokens") is not None:
                points.append((x, c))
        points.sort(key=lambda item: item[0])
        if not points:
            continue
        x_titles.add("Request rate (requests/s)" if capacity is not None or
                     result.config.mode == "rate" else _x_title([result]))
        for key, dash, what in (("usd_per_million_output_tokens", "solid", "output tokens"),
                                ("usd_per_million_tokens", "dash", "all tokens")):
            fig.add_trace(go.Scatter(
                x=[x for x, _ in points], y=[c.get(key) for _, c in points],
                mode="lines+markers", name=f"{label}: $ per million {what}",
                line={"color": _color(index), "dash": dash},
                hovertemplate=f"%{{x:g}}<br>$%{{y:.3f}} per million {what}<extra>{label}</extra>"))
        at = cost.get("capacity")
        if at and at.get("usd_per_million_output_tokens") is not None:
            fig.add_vline(x=at["rate_rps"], line={"color": _color(index), "dash": "dot"},
                          annotation_text=(f"capacity: ${at['usd_per_million_output_tokens']:.3g}"
                                           f" per million output tokens"))
        drawn += 1
    if not drawn:
        raise _NoData("No price was given (--gpu-price-per-hour or --hardware), or no request "
                      "has been measured yet.")
    title = COST_TITLE
    if x_titles == {"Request rate (requests/s)"}:
        title = title.replace("by batch size", "by request rate")
    fig.update_xaxes(title_text=" / ".join(sorted(x_titles)), type="log")
    fig.update_yaxes(title_text="US dollars", type="log")
    return _layout(fig, title, results)


# ---------------------------------------------------------------------------------------------
# Rate mode: what came out against what was offered

THROUGHPUT_VS_RATE_TITLE = "Achieved throughput against offered rate"


def rate_charts_apply(results: Any) -> bool:
    """True when at least one run is in rate mode (the rate charts have something to show)."""
    return any(r.config.mode == "rate" for r in _as_list(results))


@_safe(THROUGHPUT_VS_RATE_TITLE)
def throughput_vs_rate(results: list[Any],
                       steps: list[list[StepSummary]] | None = None) -> go.Figure:
    """Completed and sent requests/s against the offered rate, with the diagonal (y = x) where
    a server that keeps up would sit: the completed line bending away from it is saturation."""
    fig = go.Figure()
    highest = 0.0
    drawn = 0
    for index, (result, run_steps) in enumerate(zip(results, _run_steps(results, steps))):
        if result.config.mode != "rate":
            continue
        label = run_label(result, results)
        for key, word, dash in (("completed_rate_per_s", "completed", "solid"),
                                ("sent_rate_per_s", "sent", "dot")):
            points = [(s.step, s.value(key)) for s in run_steps]
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            highest = max(highest, *(x for x, _ in points), *(y for _, y in points))
            name = f"{label}: {word}"
            fig.add_trace(go.Scatter(
                x=[x for x, _ in points], y=[y for _, y in points], name=name,
                mode="lines+markers", line={"color": _color(index), "dash": dash},
                hovertemplate=(f"offered %{{x:g}} req/s<br>{word} %{{y:.2f}} req/s"
                               f"<extra>{name}</extra>")))
            drawn += 1
    if not drawn:
        extra = "" if rate_charts_apply(results) else (
            " This chart shows request-rate runs (--mode rate) only.")
        raise _NoData("No successful request has been measured yet." + extra)
    fig.add_trace(go.Scatter(x=[0, highest * 1.05], y=[0, highest * 1.05], mode="lines",
                             name="offered = achieved", hoverinfo="skip",
                             line={"color": "#888888", "dash": "dash", "width": 1}))
    fig.update_xaxes(title_text="Request rate offered (requests/s)", rangemode="tozero")
    fig.update_yaxes(title_text="Requests per second achieved", rangemode="tozero")
    return _layout(fig, THROUGHPUT_VS_RATE_TITLE, results)


# ---------------------------------------------------------------------------------------------
# The run's timeline: our own records, the server's metrics, the GPUs

TIMELINE_TITLE = "Timeline of the run: load, server, GPU"
TIMELINE_ROW_HEIGHT = 190


def _origin(result: Any) -> int | None:
    data = getattr(result, "telemetry", None)
    if data is not None and data.origin_ns:
        return int(data.origin_ns)
    stamps = [r.sent_ns or r.scheduled_ns for r in result.records if r.sent_ns or r.scheduled_ns]
    return min(stamps) if stamps else None


def _step_starts(result: Any, origin: int) -> list[tuple[float, int]]:
    """(seconds, step) where each step began: the sampler's marks, else the first request."""
    data = getattr(result, "telemetry", None)
    if data is not None and data.steps:
        return [(float(w["start_s"]), int(w["step"])) for w in data.steps
                if w.get("start_s") is not None]
    first: dict[int, int] = {}
    for r in result.records:
        stamp = r.sent_ns or r.scheduled_ns
        if stamp:
            first[r.step] = min(first.get(r.step, stamp), stamp)
    return sorted(((t - origin) / 1e9, step) for step, t in first.items())


def _bin_s(result: Any, origin: int) -> float:
    ends = [r.end_ns for r in result.records if r.end_ns is not None]
    span = (max(ends) - origin) / 1e9 if ends else 1.0
    return round(max(0.1, min(5.0, span / 100)), 2)


def _timeline_rows(result: Any) -> dict[str, list[tuple[str, str, list[float], list[float]]]]:
    """Per row of the timeline, its traces: (name, dash, x, y)."""
    origin = _origin(result)
    rows: dict[str, list[tuple[str, str, list[float], list[float]]]] = {
        "requests": [], "tokens": [], "gpu_pct": [], "power": []}
    if origin is None:
        return rows
    if any(r.ok for r in result.records):
        x, in_flight, tokens = record_timeline(result.records, origin, _bin_s(result, origin))
        rows["requests"].append(("requests in flight (measured)", "solid", x,
                                 [float(v) for v in in_flight]))
        rows["tokens"].append(("output tokens/s (measured)", "solid", x, tokens))
    data = getattr(result, "telemetry", None)
    samples = list(data.samples) if data is not None else []
    gpus = max(1, len(data.gpus)) if data is not None else 1
    for role, name, dash in (("queue", "server queue", "dot"), ("batch", "server batch", "dash")):
        points = role_series(samples, role)
        if points:
            rows["requests"].append((name, dash, [t for t, _ in points],
                                     [v for _, v in points]))
    for metric, name, dash in (("utilization_pct", "GPU utilization %", "solid"),
                               ("memory_used_pct", "GPU memory used %", "dot")):
        points = series(samples, "gpu", metric)
        if points:  # the mean over the GPUs
            rows["gpu_pct"].append((name, dash, [t for t, _ in points],
                                    [v / gpus for _, v in points]))
    points = series(samples, "gpu", "power_w")
    if points:
        rows["power"].append(("GPU power W (all GPUs)", "solid", [t for t, _ in points],
                              [v for _, v in points]))
    return rows


_TIMELINE_ROWS = (
    ("requests", "Requests: in flight (ours), the server's queue and batch", "Requests"),
    ("tokens", "Output tokens per second (ours)", "Tokens/s"),
    ("gpu_pct", "GPU utilization and memory (mean of the GPUs)", "%"),
    ("power", "GPU power (all GPUs together)", "Watts"),
)


@_safe(TIMELINE_TITLE)
def timeline(results: list[Any]) -> go.Figure:
    """The run over time, with a line where each step began: requests in flight and output
    tokens/s from our own records, the server's queue and batch size from its /metrics, GPU
    utilization, memory and power from NVML (rows without data are left out)."""
    per_run = [_timeline_rows(r) for r in results]
    keys = [key for key, _, _ in _TIMELINE_ROWS if any(rows[key] for rows in per_run)]
    if not any(r.ok for res in results for r in res.records) and keys in ([], ["requests"]):
        raise _NoData("No successful request has been measured yet.")
    if not keys:
        raise _NoData("No successful request has been measured yet.")
    specs = [spec for spec in _TIMELINE_ROWS if spec[0] in keys]
    fig = make_subplots(rows=len(specs), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[title for _, title, _ in specs])
    for index, (result, rows) in enumerate(zip(results, per_run)):
        label = run_label(result, results)
        for row, (key, _, _) in enumerate(specs, start=1):
            for name, dash, x, y in rows[key]:
                full = f"{label}: {name}" if len(results) > 1 else name
                fig.add_trace(go.Scatter(
                    x=x, y=y, name=full, mode="lines",
                    line={"color": _color(index if len(results) > 1 else
                                          len(fig.data)), "dash": dash, "width": 1.6},
                    hovertemplate=f"%{{x:.1f}} s<br>%{{y:.3g}}<extra>{full}</extra>",
                ), row=row, col=1)
        origin = _origin(result)
        if origin is None:
            continue
        for t_s, step in _step_starts(result, origin):
            fig.add_vline(x=t_s, line={"color": _color(index), "dash": "dot", "width": 1},
                          row="all", col=1)
            fig.add_annotation(x=t_s, y=1.0, xref="x", yref="y domain", yanchor="top",
                               text=f"{_step_word(result)} {step}", showarrow=False,
                               font={"size": 10, "color": _color(index)}, xanchor="left")
    for row, (_, _, y_title) in enumerate(specs, start=1):
        fig.update_yaxes(title_text=y_title, rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="Seconds since the run started", row=len(specs), col=1)
    _layout(fig, TIMELINE_TITLE, results)
    fig.update_layout(height=120 + TIMELINE_ROW_HEIGHT * len(specs), hovermode="x unified",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.08, "x": 0})
    return fig


# ---------------------------------------------------------------------------------------------
# Everything at once

CHART_FUNCTIONS: dict[str, Callable[[Any], go.Figure]] = {
    "capacity_attainment": capacity_attainment,
    "capacity_latency": capacity_latency,
    "throughput_vs_batch": throughput_vs_batch,
    "latency_vs_batch": latency_vs_batch,
    "throughput_vs_rate": throughput_vs_rate,
    "prefill_throughput_over_latency": prefill_throughput_over_latency,
    "decode_throughput_over_latency": decode_throughput_over_latency,
    "timeline": timeline,
    "ttft_distribution": ttft_distribution,
    "token_latency_distribution": token_latency_distribution,
    "inter_token_latency_distribution": inter_token_latency_distribution,
    "output_length": output_length,
    "slo_attainment_vs_batch": slo_attainment_vs_batch,
    "cost_per_million_tokens": cost_per_million_tokens,
}


# The charts drawn from step summaries: they also take ``steps`` (one list per run).
STEP_CHARTS = frozenset((*LINE_CHARTS, *SCATTER_CHARTS, "slo_attainment_vs_batch",
                         "throughput_vs_rate", "cost_per_million_tokens"))


def all_figures(results: Any) -> dict[str, go.Figure]:
    """Every chart of ``CHART_FUNCTIONS`` for ``results`` (never raises)."""
    return {name: draw(results) for name, draw in CHART_FUNCTIONS.items()}


def chart_figures(results: list[Any],
                  steps: list[list[StepSummary]] | None = None) -> list[tuple[str, Any]]:
    """(title, plotly figure) for every chart of this module, in its declared order.

    ``steps``: each run's summaries when already computed. The output-length chart is left out
    when every request got the tokens it asked for, the latency-target chart when no run set
    a target. Capacity runs get the two capacity charts (with the timeline and output length)
    instead of the charts by batch size.
    """
    out: list[tuple[str, Any]] = []
    imported = any(getattr(r, "source", None) for r in _as_list(results))
    flags = [getattr(r, "capacity", None) is not None for r in _as_list(results)]
    all_capacity = bool(flags) and all(flags)
    for name, draw in CHART_FUNCTIONS.items():
        # A capacity run's steps are probes, not batch sizes: it gets its own two charts.
        if name in CAPACITY_CHARTS and not all_capacity:
            continue
        if all_capacity and name not in (*CAPACITY_CHARTS, "timeline", "output_length",
                                         "cost_per_million_tokens"):
            continue
        if name == "cost_per_million_tokens" and not has_cost(results):
            continue
        if name == "output_length" and (imported or not output_length_differs(results)):
            continue
        if imported and (name == "timeline" or not _has_data(name, results, steps)):
            # A file without these numbers: say nothing rather than "no data". The timeline
            # is our own load and the server's and GPUs' readings, which no file carries.
            continue
        if name == "slo_attainment_vs_batch" and not has_slo(results):
            continue
        if name == "throughput_vs_rate" and not rate_charts_apply(results):
            continue
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
