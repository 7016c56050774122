"""What the page says about a run: banner, measurement check, server info, progress, history."""

from __future__ import annotations

from benchmark.config import RunConfig
from benchmark.core.results import RunResult
from benchmark.app.jobs import JobView, StepProgress
from benchmark.app.render import (
    SIMULATED_BANNER,
    calibration_markdown,
    progress_html,
    results_view,
    server_info_markdown,
)

CALIBRATION = {
    "kind": "calibration",
    "ended_at": "2026-11-28T12:00:00+00:00",
    "settings": {"tolerance_ms": 1.0},
    "verdict": {"accurate_concurrency": 64, "accurate_token_rate": 6000.0,
                "highest_measured": 128, "stopped_because": "token latency error",
                "sentence": "This machine measures within 1 ms up to 64 concurrent streams."},
}


def result(batch_sizes=(1, 2), simulated=True, server_info=None, **extra) -> RunResult:
    config = RunConfig(tokenizer_name="org/model", batch_sizes=batch_sizes)
    return RunResult(run_id="20261128-120000-model-abcd", config=config, simulated=simulated,
                     server_info={"model_id": "org/model", "version": "3.3.6",
                                  "max_total_tokens": 4096, "router": "text-generation-router"}
                     if server_info is None else server_info,
                     status="complete", **extra)


def view(**changes) -> JobView:
    base = dict(run_id="r", state="running", phase="", message=None, warnings=(),
                server_log=(), steps=(1, 2), progress=(StepProgress(1, done=True),
                                                       StepProgress(2, rounds_done=3, rounds=10)),
                current_step=2, result_version=1, queue_position=0, notes=(), done=False,
                behind_another=False, mode="rounds", simulated=True, launches_server=True, output_dir="/x",
                elapsed_s=12.0)
    base.update(changes)
    return JobView(**base)


def test_measurement_check_follows_the_machines_calibration():
    assert "has not been measured" in calibration_markdown(result(), None)
    within = calibration_markdown(result(batch_sizes=(1, 32)), CALIBRATION)
    assert "batch size 32 is within" in within and "64 concurrent streams" in within
    beyond = calibration_markdown(result(batch_sizes=(1, 256)), CALIBRATION)
    assert "Concurrency 256 is beyond" in beyond
    stored = calibration_markdown(result(batch_sizes=(256,), calibration=CALIBRATION), None)
    assert "beyond" in stored                       # the run's own calibration wins


def test_simulated_runs_carry_the_banner_and_real_ones_do_not():
    assert results_view([result(simulated=True)]).banner == SIMULATED_BANNER
    assert results_view([result(simulated=False)]).banner == ""
    compared = results_view([result(simulated=False), result(simulated=True)])
    assert compared.banner == SIMULATED_BANNER and "Comparing 2 runs" in compared.title


def test_server_info_shows_model_version_and_limits():
    text = server_info_markdown(result())
    for piece in ("org/model", "3.3.6", "4096", "text-generation-router"):
        assert piece in text
    assert "| | |" not in text                       # the table has headers, not an empty row
    compared = results_view([result(), result()]).server_info
    assert compared.count("of run `20261128-120000-model-abcd`") == 2   # whose server is whose


def test_run_title_gives_the_start_time_in_plain_utc():
    title = results_view([result(started_at="2026-11-28T17:54:38+00:00")]).title
    assert "started 2026-11-28 17:54:38 UTC" in title


def test_progress_says_phase_queue_place_and_runs():
    running = progress_html(view())
    assert "Benchmark running" in running and "1 of 2 batch sizes" in running
    assert "run 3 of 10" in running
    waiting = progress_html(view(state="queued", queue_position=2, behind_another=True,
                                 steps=(), progress=()))
    assert "already running for another visitor" in waiting and "number 2 in the queue" in waiting
    starting = progress_html(view(state="starting server", phase="Downloading the weights",
                                  steps=(), progress=()))
    assert "Starting the server" in starting and "Downloading the weights" in starting
    users = progress_html(view(mode="concurrency", progress=(
        StepProgress(1, done=True), StepProgress(4, requests_done=7, requests_total=20))))
    assert "4 users" in users and "7 of 20 requests" in users and "Batch size" not in users
    failed = progress_html(view(state="failed", message="<b>boom</b>"))
    assert "&lt;b&gt;boom" in failed                 # messages are escaped, never HTML


def test_followers_of_a_run_share_one_drawing_per_version_of_it(tmp_path):
    """Shared pages poll a running run: its charts are drawn once per change, not per viewer."""
    import os

    from benchmark.app import build_app

    app = build_app(tmp_path / "results", env={})
    folder = tmp_path / "results" / "20261128-120000-model-abcd"
    folder.mkdir(parents=True)
    run = result()
    run.save(folder)
    first = app.view_of(run, "http://x/?run=1", folder)
    assert app.view_of(run, "http://x/?run=1", folder) is first       # a second viewer
    stat = (folder / "run.json").stat()
    os.utime(folder / "run.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert app.view_of(run, "http://x/?run=1", folder) is not first   # the run moved on


def test_a_hostile_servers_words_cannot_add_links_images_or_html_to_a_shared_page():
    evil = "[click](http://evil.example) ![t](http://evil.example/t.png) <img src=x> `code`"
    run = result(message=f"Server said: {evil}", warnings=[evil])
    run.server_info["model_id"] = evil
    single = results_view([run])
    compared = results_view([run, result()])
    for text in (single.title, compared.title, compared.headline, compared.tables):
        for trap in ("[click](", "![t](", "<img", "`code`"):
            assert trap not in text, (trap, text)
    # In the /info table the name stays inside its code span (no backtick of its own to leave it).
    row = next(line for line in single.server_info.splitlines() if "click" in line)
    assert row.count("`") == 2, row
    assert "click" in single.title and "evil.example" in single.title   # still readable


def test_progress_names_warm_up_errors_apart_from_measured_errors():
    page = progress_html(view(progress=(
        StepProgress(1, done=True, warmup_errors=2),
        StepProgress(2, rounds_done=3, rounds=10, errors=1, warmup_errors=4))))
    assert "1 error" in page and "4 warm-up errors (not measured)" in page
    assert "2 warm-up errors (not measured)" in page
    clean = progress_html(view())
    assert "error" not in clean


def test_an_openai_server_that_reports_no_info_never_shows_none_on_the_page():
    page = results_view([result(server_info={}, simulated=False)])
    text = "\n".join([page.title, page.headline, page.tables, page.server_info,
                      page.calibration])
    assert "None" not in text
    assert "not reported by the server" in page.tables


def test_capacity_progress_shows_each_probe_as_it_finishes_and_the_headline_comes_first():
    from benchmark.core.capacity import Capacity, Probe
    from benchmark.core.slo import Slo

    html_text = progress_html(view(mode="capacity", steps=(1, 2, 3), current_step=3, progress=(
        StepProgress(1, done=True, probe={"kind": "one at a time", "rate_rps": 1.4,
                                          "attainment": 1.0, "passed": True}),
        StepProgress(2, done=True, probe={"kind": "saturation", "rate_rps": 20.0,
                                          "attainment": 0.05, "passed": False}),
        StepProgress(3, requests_done=12))))
    assert "Probe 1 (one at a time): 1.4 requests/s, 100% within target: <b>passed</b>" \
        in html_text
    assert "Probe 2 (saturation): 20 requests/s, 5% within target: <b>missed</b>" in html_text
    assert "Probe 3: running, 12 requests so far" in html_text
    probes = (Probe(kind="one at a time", step=1, rate_rps=1.4, attainment=1.0, passed=True),)
    capacity = Capacity(slo=Slo(ttft_ms=1000, tpot_ms=50), rate_rps=12.4, in_flight=37.0,
                        output_tokens_per_s=1590.0, bracket=(12.4, 13.0), converged=True,
                        ended="converged", max_throughput_rps=20.0, probes=probes)
    shown = results_view([result(capacity=capacity)])
    assert shown.headline.split("\n")[1].startswith(
        "- This server keeps 90% of requests within 1 s to the first token and 50 ms per token "
        "up to **12.4 requests per second**")
    assert shown.tables.index("### Capacity") < shown.tables.index("### Parameters")
