"""Charts: figures with the expected traces, readable sentences instead of errors (no server)."""

from __future__ import annotations

import ast
import dataclasses

import plotly.graph_objects as go
import pytest

from benchmark.report import charts
from benchmark.config import RunConfig
from benchmark.core.records import RequestRecord
from benchmark.core.results import RunResult

MS = 1_000_000


def make_run(run_id: str = "20261128-163012-tiny-3f9a", *, simulated: bool = False,
             batch_sizes=(1, 2, 4), tokens=lambda b, i: 5, model: str = "org/tiny",
             mode: str = "rounds") -> RunResult:
    records = []
    for b in batch_sizes:
        for run in range(2):
            sent = (b * 10 + run) * 1000 * MS
            for i in range(b):
                n = tokens(b, i)
                stamps = [sent + (10 * b + i) * MS + k * (5 + b) * MS for k in range(n)]
                records.append(RequestRecord(
                    step=b, run=run, request=i, scheduled_ns=sent, sent_ns=sent,
                    token_ns=stamps, end_ns=stamps[-1], input_tokens=16, output_tokens=n,
                    requested_output_tokens=5, finish_reason="length", status=200))
    config = RunConfig(tokenizer_name=model, batch_sizes=tuple(batch_sizes), sequence_length=16,
                       decode_length=5, runs=2, mode=mode,
                       duration_s=5.0 if mode == "concurrency" else None)
    return RunResult(run_id=run_id, config=config, server_info={"model_id": model},
                     simulated=simulated, status="complete", records=records)


def sentence(fig: go.Figure) -> str:
    return fig.layout.annotations[0].text


def test_throughput_vs_batch_has_prefill_and_decode_per_run():
    run = make_run()
    fig = charts.throughput_vs_batch([run])
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2                     # prefill panel, decode panel
    decode = fig.data[1]
    assert list(decode.x) == [1, 2, 4]
    steps = run.steps()
    assert list(decode.y) == pytest.approx([s.value("decode_throughput_tok_s") for s in steps])
    assert decode.name == "org/tiny"
    assert "Tokens per second" in fig.layout.yaxis.title.text
    assert fig.layout.xaxis.title.text == "Batch size (requests sent together)"


def test_latency_vs_batch_draws_three_percentiles_in_two_panels():
    run = make_run()
    fig = charts.latency_vs_batch(run)             # a single result is accepted too
    names = [t.name for t in fig.data]
    assert names == ["org/tiny p50", "org/tiny p90", "org/tiny p99"] * 2
    p90_ttft = fig.data[1]
    assert list(p90_ttft.y) == pytest.approx(
        [s.value("prefill_latency_ms", "p90") for s in run.steps()])
    assert fig.layout.yaxis.title.text == "Milliseconds"


def test_comparison_draws_one_trace_per_run_labelled_by_run_id():
    a = make_run("20261128-100000-a-aaaa")
    b = make_run("20261128-110000-b-bbbb", model="org/other", simulated=True)
    fig = charts.decode_throughput_over_latency([a, b])
    assert [t.name for t in fig.data] == ["org/tiny · 20261128-100000-a-aaaa",
                                         "org/other · 20261128-110000-b-bbbb (simulated)"]
    assert "includes a simulated run" in fig.layout.title.text
    assert len(charts.throughput_vs_batch([a, b]).data) == 4
    assert len(charts.ttft_distribution([a, b]).data) == 2


def test_scatter_has_one_labelled_point_per_batch_size():
    run = make_run()
    fig = charts.prefill_throughput_over_latency([run])
    trace = fig.data[0]
    assert list(trace.text) == ["batch 1", "batch 2", "batch 4"]
    steps = run.steps()
    assert list(trace.x) == pytest.approx([s.value("prefill_latency_ms") for s in steps])
    assert list(trace.y) == pytest.approx([s.value("prefill_throughput_tok_s") for s in steps])
    assert "(ms)" in fig.layout.xaxis.title.text


def test_distributions_hold_every_successful_request():
    run = make_run()
    run.records.append(RequestRecord(step=4, run=2, request=0, sent_ns=1, end_ns=2,
                                     error="HTTP 500: boom", error_kind="http"))
    run.records.append(RequestRecord(step=4, run=0, request=9, warmup=True, sent_ns=1,
                                     token_ns=[9_000 * MS, 9_001 * MS], end_ns=9_001 * MS))
    fig = charts.ttft_distribution([run])
    box = fig.data[0]
    assert isinstance(box, go.Box)
    assert len(box.y) == 2 * (1 + 2 + 4)           # failed and warm-up requests left out
    assert sorted(set(box.x)) == ["1", "2", "4"]
    assert list(fig.layout.xaxis.categoryarray) == ["1", "2", "4"]
    tokens = charts.token_latency_distribution([run]).data[0]
    assert min(tokens.y) == pytest.approx(6.0)     # batch 1: 6 ms between tokens
    gaps = charts.inter_token_latency_distribution([run]).data[0]
    assert len(gaps.y) == 2 * 7 * 4                 # 4 gaps for each 5-token request


def test_output_length_only_when_it_differs():
    same = make_run()
    assert charts.output_length_differs([same]) is False
    assert "Every request received the 5 tokens asked" in sentence(charts.output_length([same]))
    short = make_run(tokens=lambda b, i: 3 if i == 0 else 5)
    assert charts.output_length_differs(short) is True
    fig = charts.output_length([short])
    assert [t.name for t in fig.data] == ["org/tiny: received", "org/tiny: requested"]
    assert sorted(fig.data[0].y)[:6] == [3] * 6
    assert list(fig.data[1].y) == [5, 5, 5]


def test_simulated_runs_say_so_in_title_and_legend():
    fig = charts.throughput_vs_batch([make_run(simulated=True)])
    assert fig.layout.title.text.endswith("(simulated)")
    assert fig.data[0].name == "org/tiny (simulated)"


def test_concurrency_runs_talk_about_users():
    fig = charts.decode_throughput_over_latency([make_run(mode="concurrency")])
    assert fig.data[0].text[0] == "users 1"
    assert charts.latency_vs_batch([make_run(mode="concurrency")]).layout.xaxis.title.text == \
        "Concurrent users"
    title = charts.throughput_vs_batch([make_run(mode="concurrency")]).layout.title.text
    assert "by number of concurrent users" in title and "batch size" not in title


def test_no_results_and_no_success_give_a_sentence():
    assert sentence(charts.throughput_vs_batch([])) == "No results to show yet."
    failed = make_run()
    for r in failed.records:
        r.error, r.token_ns = "HTTP 500: boom", []
    for name, draw in charts.CHART_FUNCTIONS.items():
        fig = draw([failed])
        if name == "slo_attainment_vs_batch":   # failed requests are data there (0% good)
            assert "No latency target was set" in sentence(fig)
            continue
        if name in charts.CAPACITY_CHARTS:
            assert "No capacity search" in sentence(fig)
            continue
        if name == "cost_per_million_tokens":
            assert "No price was given" in sentence(fig)
            continue
        assert "No successful request has been measured yet." in sentence(fig), name


def test_a_broken_chart_returns_a_readable_figure(monkeypatch):
    def explode(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(RunResult, "steps", explode)
    fig = charts.latency_vs_batch([make_run()])
    assert isinstance(fig, go.Figure)
    assert "could not be drawn" in sentence(fig) and "disk on fire" in sentence(fig)


def test_all_figures_returns_every_chart():
    figures = charts.all_figures([make_run()])
    assert set(figures) == set(charts.CHART_FUNCTIONS)
    assert all(isinstance(f, go.Figure) for f in figures.values())
    assert all(f.layout.title.text for f in figures.values())


def test_charts_module_does_not_import_gradio():
    with open(charts.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "plotly" in imported and "gradio" not in imported


def test_slo_chart_draws_attainment_with_its_target_line_only_when_targets_were_set():
    plain = make_run()
    assert not charts.has_slo([plain])
    assert all("latency targets" not in title for title, _ in charts.chart_figures([plain]))
    # token gap 5 + b ms: within a 7.5 ms per-token target at batch sizes 1 and 2, not at 4
    config = dataclasses.replace(plain.config, slo_tpot_ms=7.5, slo_attainment=0.9)
    run = dataclasses.replace(plain, config=config)
    fig = charts.slo_attainment_vs_batch([run])
    attainment = fig.data[0]
    assert list(attainment.x) == [1, 2, 4]
    assert list(attainment.y) == pytest.approx([100.0, 100.0, 0.0])
    assert any(shape.y0 == pytest.approx(90.0) for shape in fig.layout.shapes)  # target line
    assert any("latency targets" in title for title, _ in charts.chart_figures([run]))


def test_capacity_charts_mark_the_target_and_the_capacity_and_replace_the_batch_charts():
    from benchmark.core.capacity import Capacity, Probe
    from benchmark.core.slo import Slo

    def probe(step, kind, rate, attainment):
        return Probe(kind=kind, step=step, rate_rps=rate, attainment=attainment,
                     passed=attainment >= 0.9,
                     ttft_ms={"p50": 100 * rate, "p90": 150 * rate, "p99": 200 * rate},
                     tpot_ms={"p50": 2 * rate, "p90": 3 * rate, "p99": 4 * rate})

    probes = (probe(1, "one at a time", 1.0, 1.0), probe(2, "saturation", 20.0, 0.1),
              probe(3, "rate", 4.5, 0.97), probe(4, "rate", 9.5, 0.4), probe(5, "rate", 6.5, 0.92))
    capacity = Capacity(slo=Slo(ttft_ms=1000, tpot_ms=50), rate_rps=6.5, in_flight=13.0,
                        output_tokens_per_s=800.0, bracket=(6.5, 6.9), converged=True,
                        ended="converged", max_throughput_rps=20.0, probes=probes)
    run = dataclasses.replace(make_run(), capacity=capacity)
    fig = charts.capacity_attainment([run])
    assert list(fig.data[0].x) == [1.0, 4.5, 6.5, 9.5, 20.0]          # in rate order
    assert list(fig.data[0].y) == pytest.approx([100, 97, 92, 40, 10])
    lines = [(shape.x0, shape.y0) for shape in fig.layout.shapes]
    assert any(y == pytest.approx(90) for _, y in lines)               # the target
    assert any(x == pytest.approx(6.5) for x, _ in lines)              # the capacity
    latency = charts.capacity_latency([run])
    assert {shape.y0 for shape in latency.layout.shapes} == {1000, 50}  # both targets drawn
    titles = [title for title, _ in charts.chart_figures([run])]
    assert titles[0].startswith("Capacity search") and titles[1].startswith("Capacity search")
    assert not any("batch size" in title for title in titles)   # no charts by step


def test_cost_chart_draws_dollars_per_million_tokens_by_batch_size_only_with_a_price():
    import dataclasses

    run = make_run()
    assert "Cost per million tokens" not in [t for t, _ in charts.chart_figures([run])]
    priced = dataclasses.replace(run, config=dataclasses.replace(run.config,
                                                                 hardware="l4x1"))
    titles = [t for t, _ in charts.chart_figures([priced])]
    assert any(t.startswith("Cost per million tokens by batch size") for t in titles)
    fig = charts.cost_per_million_tokens([priced])
    output, total = fig.data[0], fig.data[1]
    assert list(output.x) == [1, 2, 4]
    cost = priced.cost()
    assert list(output.y) == [c["usd_per_million_output_tokens"] for c in cost["steps"]]
    # prompt tokens make the all-tokens cost lower than the output-only one at every step
    assert all(t < o for t, o in zip(total.y, output.y))


def test_a_rate_run_gets_rate_axes_and_throughput_against_the_diagonal():
    from benchmark.config import RunConfig
    from benchmark.core.records import RequestRecord
    from benchmark.core.results import RunResult

    config = RunConfig(tokenizer_name="t", mode="rate", rates=(10, 40), duration_s=1,
                       decode_length=3)
    records = []
    for rate, n in ((10, 5), (40, 20)):
        gap = int(1e9 / rate)
        for i in range(n):
            t = i * gap
            records.append(RequestRecord(step=rate, run=1, request=i + 1, scheduled_ns=t,
                                         step_start_ns=0, queued_ns=t, admitted_ns=t,
                                         sent_ns=t + 1000,
                                         token_ns=[t + 5_000_000, t + 6_000_000, t + 7_000_000],
                                         end_ns=t + 8_000_000, output_tokens=3))
    result = RunResult(run_id="r", config=config, records=records, status="complete")
    titles = [title for title, _ in charts.chart_figures([result])]
    assert "Latency by request rate (p50, p90, p99)" in titles
    assert "Achieved throughput against offered rate" in titles
    figure = charts.throughput_vs_rate([result])
    names = [trace.name for trace in figure.data]
    assert "offered = achieved" in names
    diagonal = next(t for t in figure.data if t.name == "offered = achieved")
    assert list(diagonal.x) == list(diagonal.y)  # the line y = x
    completed = next(t for t in figure.data if t.name.endswith(": completed"))
    assert list(completed.x) == [10, 40]
    assert completed.y[1] == pytest.approx(20 / (19 * 0.025 + 0.008), rel=1e-3)
    latency = charts.latency_vs_batch([result])
    assert latency.layout.xaxis.title.text == "Request rate offered (requests/s)"
    rounds = charts.chart_figures([make_run()])
    assert not any("offered rate" in title for title, _ in rounds)
