"""The app's run queue: one run at a time, progress from the engine's stream, Stop, failures.

A small fake engine (a script standing in for ``python -m benchmark``) writes the progress
stream the real CLI writes, so these tests are fast and need no server.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmark.config import ServerSettings
from benchmark.errors import ServerStartError
from benchmark.app.jobs import (CANCELLED, CHAT_WAIT, COMPLETE, FAILED, QUEUED, RUNNING, Job,
                                Runner, engine_argv)
from benchmark.app.form import TARGET_ENDPOINT, build_plan, DEFAULTS
from benchmark.app.render import progress_html
from support.helpers import wait_until

FAKE_ENGINE = textwrap.dedent("""\
    #!{python}
    import json, os, signal, sys, time
    from benchmark.core.progress import (Done, JsonLinesProgress, RoundDone, RunWarning, Start,
                                         StepDone, StepStart)
    argv = sys.argv[1:]
    progress = argv[argv.index("--progress-jsonl") + 1]
    out = argv[argv.index("--output-dir") + 1]
    mode = os.environ.get("FAKE_ENGINE", "complete")
    with open(os.environ["FAKE_ENGINE_ARGV"], "w") as f:
        json.dump(argv, f)
    emit = JsonLinesProgress(open(progress, "a"))
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    if mode == "crash":
        print("error: the tokenizer hf_abcdefghijklmnop could not be loaded", flush=True)
        sys.exit(1)
    emit(Start(run_id="x", output_dir=out, steps=(1, 2), planned_requests=6, simulated=True))
    for index, step in enumerate([1, 2], 1):
        emit(StepStart(step=step, index=index, of=2))
        for run in (1, 2):
            time.sleep(0.05 if mode == "complete" else 0.4)
            if stopped:
                emit(Done(status="cancelled", message=None, output_dir=out))
                sys.exit(130)
            emit(RoundDone(step=step, run=run, runs=2, warmup=False, errors=0))
        emit(StepDone(step=step))
        if mode == "slow":
            for _ in range(100):
                time.sleep(0.05)
                if stopped:
                    emit(Done(status="cancelled", message=None, output_dir=out))
                    sys.exit(130)
    emit(RunWarning(message="server counted 5 prompt tokens"))
    emit(Done(status="complete", message=None, output_dir=out))
    """)


@dataclass
class FakeHandle:
    url: str
    simulated: bool = True
    info: dict | None = None


class FakeManager:
    def __init__(self, fail: bool = False, wait_for_cancel: bool = False):
        self.fail = fail
        self.wait_for_cancel = wait_for_cancel
        self.started: list[ServerSettings] = []
        self.stopped = 0

    def ensure(self, settings, *, on_status=None, cancel=None, **_):
        self.started.append(settings)
        if on_status:
            on_status(type("S", (), {"message": "Downloading the model weights", "phase":
                                     "downloading"})())
        if self.wait_for_cancel:
            assert cancel.wait(10), "Stop never came"
            raise ServerStartError("cancelled", "Start-up was cancelled.")
        if self.fail:
            raise ServerStartError("oom", "Not enough GPU memory for max batch prefill tokens.",
                                   ["INFO loading", "ERROR Not enough memory hf_secret12345678"])
        return FakeHandle(url="http://127.0.0.1:5999",
                          info={"max_input_tokens": 100, "max_total_tokens": 200})

    def log_tail(self, n):
        return ["Download file: model.safetensors"]

    def stop(self):
        self.stopped += 1


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    script = tmp_path / "fake-engine"
    script.write_text(FAKE_ENGINE.replace("{python}", sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_ENGINE_ARGV", str(tmp_path / "argv.json"))
    return script


def make_runner(tmp_path, fake_engine, manager=None, mode="complete") -> Runner:
    env = {**os.environ, "FAKE_ENGINE": mode}
    return Runner(tmp_path / "results", env=env, python=str(fake_engine),
                  server_manager=manager or FakeManager())


def endpoint_plan():
    values = dict(DEFAULTS, target=TARGET_ENDPOINT, url="http://127.0.0.1:5998",
                  tokenizer_name="org/model", batch_sizes="1,2", runs="2")
    return build_plan(values)


def wait_done(runner: Runner, run_id: str):
    assert runner.wait(run_id, timeout=30), "the job did not finish"
    return runner.view(run_id)


def test_a_run_reports_progress_and_completes(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine)
    runner.submit(endpoint_plan(), "run-a")
    seen = set()
    deadline = time.monotonic() + 30
    while not (view := runner.view("run-a")).finished:
        assert time.monotonic() < deadline
        seen.add(view.state)
        time.sleep(0.01)
    assert view.state == COMPLETE and view.message is None
    assert view.steps == (1, 2) and all(p.done for p in view.progress)
    assert view.result_version >= 2                   # one reload per finished batch size
    assert view.simulated is True
    assert view.warnings == ("server counted 5 prompt tokens",)
    assert RUNNING in seen
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / "results" / "run-a")
    assert argv[:2] == ["-m", "benchmark"] and "--url" in argv


def test_second_visitor_waits_in_line_and_can_leave_the_line(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine, mode="slow")
    runner.submit(endpoint_plan(), "first")
    assert wait_until(lambda: runner.view("first").state == RUNNING, 10)
    runner.submit(endpoint_plan(), "second")
    runner.submit(endpoint_plan(), "third")
    second, third = runner.view("second"), runner.view("third")
    assert (second.state, second.queue_position, second.behind_another) == (QUEUED, 1, True)
    assert (third.state, third.queue_position) == (QUEUED, 2)
    assert runner.busy() == ("first", 2)

    assert runner.cancel("second")
    assert runner.view("second").state == CANCELLED
    assert runner.view("third").queue_position == 1
    assert not (tmp_path / "results" / "second").exists()     # never started, no folder
    runner.cancel("first")
    assert wait_done(runner, "first").state == CANCELLED
    runner.cancel("third")
    wait_done(runner, "third")


def test_stop_sends_sigterm_and_keeps_what_was_measured(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine, mode="slow")
    runner.submit(endpoint_plan(), "stopped")
    assert wait_until(lambda: runner.view("stopped").result_version >= 1, 20)  # 1st size saved
    assert runner.cancel("stopped")
    view = wait_done(runner, "stopped")
    assert view.state == CANCELLED
    assert "kept" in view.message
    assert [p.done for p in view.progress] == [True, False]
    assert not runner.cancel("stopped")                        # already over


def test_engine_that_fails_shows_its_last_line_without_secrets(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine, mode="crash")
    runner.submit(endpoint_plan(), "crashed")
    view = wait_done(runner, "crashed")
    assert view.state == FAILED
    assert "could not be loaded" in view.message
    assert "hf_abcdefghijklmnop" not in view.message


def test_launch_uses_the_started_server_and_reports_its_start(tmp_path, fake_engine):
    manager = FakeManager()
    runner = make_runner(tmp_path, fake_engine, manager=manager)
    plan = build_plan(dict(DEFAULTS, model_id="org/model", batch_sizes="1,2", runs="2"))
    runner.submit(plan, "launched")
    view = wait_done(runner, "launched")
    assert view.state == COMPLETE and view.launches_server
    assert manager.started == [plan.server]
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--url") + 1] == "http://127.0.0.1:5999"


def test_server_that_cannot_start_fails_the_run_with_its_log(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine, manager=FakeManager(fail=True))
    plan = build_plan(dict(DEFAULTS, model_id="org/model", batch_sizes="1"))
    runner.submit(plan, "no-server")
    view = wait_done(runner, "no-server")
    assert view.state == FAILED and "Not enough GPU memory" in view.message
    assert any("Not enough memory" in line for line in view.server_log)
    assert not any("hf_secret12345678" in line for line in view.server_log)
    assert not (tmp_path / "argv.json").exists()               # the engine never ran


def test_stop_while_the_server_starts_cancels_without_running_the_engine(tmp_path,
                                                                           fake_engine):
    runner = make_runner(tmp_path, fake_engine, manager=FakeManager(wait_for_cancel=True))
    runner.submit(build_plan(dict(DEFAULTS, model_id="org/model")), "early")
    assert wait_until(lambda: runner.view("early").state == "starting server", 10)
    assert runner.view("early").phase == "Downloading the model weights"
    assert runner.cancel("early")
    view = wait_done(runner, "early")
    assert view.state == CANCELLED and "nothing was measured" in view.message
    assert not (tmp_path / "argv.json").exists()


def test_limits_from_the_started_server_are_checked_before_the_engine(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine)                 # its /info: max_total 200
    plan = build_plan(dict(DEFAULTS, model_id="org/model", sequence_length="90",
                           decode_length="150"))
    runner.submit(plan, "too-long")
    view = wait_done(runner, "too-long")
    assert view.state == FAILED and "max_total_tokens = 200" in view.message
    assert not (tmp_path / "argv.json").exists()


def test_engine_argv_carries_every_setting():
    plan = build_plan(dict(DEFAULTS, model_id="org/model", batch_sizes="1,8", temperature="0.5",
                           top_k="5", do_sample=True, mode="Sustained concurrency",
                           duration_s="30", requests="50"))
    argv = engine_argv("python", plan, Path("/out"), Path("/p.jsonl"))
    text = " ".join(argv)
    for piece in ("--batch-size 1 --batch-size 8", "--mode concurrency", "--duration 30",
                  "--slo-ttft-ms 1000 --slo-tpot-ms 50 --slo-attainment 0.9",
                  "--requests 50", "--temperature 0.5", "--top-k 5", "--do-sample",
                  "--output-dir /out", "--progress-jsonl /p.jsonl", "--tokenizer-name org/model"):
        assert piece in text
    from benchmark.cli import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(argv[3:]))   # the real CLI accepts it
    assert config.batch_sizes == (1, 8) and config.sampling.do_sample


def test_stop_after_the_engine_exited_says_nothing_to_stop(tmp_path, fake_engine):
    """A Stop clicked as the run ends must not promise a stop that cannot happen any more."""
    runner = make_runner(tmp_path, fake_engine)
    job = Job("run-late", endpoint_plan(), tmp_path / "results" / "run-late", state=RUNNING)
    job.proc = subprocess.Popen([sys.executable, "-c", "pass"])
    job.proc.wait()
    runner._jobs["run-late"] = job          # the engine is done; the results are being saved
    assert runner.cancel("run-late") is False
    assert not job.cancel_event.is_set()


def test_engine_argv_of_find_capacity_passes_the_targets_and_no_batch_sizes():
    plan = build_plan(dict(DEFAULTS, model_id="org/model", mode="Find capacity",
                           slo_attainment="95", max_duration_s="120"))
    argv = engine_argv("python", plan, Path("/out"), Path("/p.jsonl"))
    assert "--batch-size" not in argv
    from benchmark.cli import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(argv[3:]))   # the real CLI accepts it
    assert (config.mode, config.slo_ttft_ms, config.slo_tpot_ms) == ("capacity", 1000.0, 50.0)
    assert config.slo_attainment == 0.95 and config.max_duration_s == 120.0


def test_engine_argv_carries_the_price_and_hardware_to_the_cli():
    plan = build_plan(dict(DEFAULTS, model_id="org/model", hardware="l4x1",
                           gpu_price_per_hour="0.65"))
    argv = engine_argv("python", plan, Path("/out"), Path("/p.jsonl"))
    from benchmark.cli import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(argv[3:]))
    assert (config.hardware, config.gpu_price_per_hour) == ("l4x1", 0.65)
    plain = build_plan(dict(DEFAULTS, model_id="org/model"))
    assert "--gpu-price-per-hour" not in engine_argv("python", plain, Path("/o"), Path("/p"))


def test_engine_argv_of_a_rate_run_is_accepted_by_the_cli(tmp_path):
    plan = build_plan(dict(DEFAULTS, model_id="org/model", mode="Request rate",
                           rates="2.5, 10", arrivals="constant", duration_s="30",
                           max_concurrency="16"))
    argv = engine_argv("python", plan, tmp_path / "out", Path("/p.jsonl"))
    text = " ".join(argv)
    assert "--batch-size" not in text
    for piece in ("--mode rate", "--rate 2.5,10", "--arrivals constant", "--duration 30",
                  "--max-concurrency 16"):
        assert piece in text
    from benchmark.cli import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(argv[3:]))
    assert (config.rates, config.arrivals, config.max_concurrency) == ((2.5, 10), "constant", 16)


def test_server_only_job_starts_the_server_and_measures_nothing(tmp_path, fake_engine):
    """The chat tab's "Start the server in the form": the launcher runs, the engine does not."""
    manager = FakeManager()
    runner = make_runner(tmp_path, fake_engine, manager)
    plan = build_plan(dict(DEFAULTS, model_id="org/model", batch_sizes="1", runs="1"))
    runner.submit(plan, "chat-server", server_only=True)
    view = wait_done(runner, "chat-server")
    assert view.state == COMPLETE and view.message == "The server is ready."
    assert view.server_only and len(manager.started) == 1
    assert not (tmp_path / "argv.json").exists(), "the engine must not run"
    assert not (tmp_path / "results" / "chat-server").exists()
    assert runner.benchmark_url() is None
    with pytest.raises(Exception, match="no server to start"):
        runner.submit(endpoint_plan(), "nothing", server_only=True)


def test_benchmark_url_names_the_server_a_benchmark_is_using(tmp_path, fake_engine):
    runner = make_runner(tmp_path, fake_engine, mode="slow")
    assert runner.benchmark_url() is None
    runner.submit(endpoint_plan(), "busy")
    assert wait_until(lambda: runner.view("busy").state == RUNNING, 10)
    assert runner.benchmark_url() == "http://127.0.0.1:5998"
    runner.cancel("busy")
    wait_done(runner, "busy")
    assert runner.benchmark_url() is None


def test_a_benchmark_waits_for_a_chat_answer_on_its_server(tmp_path, fake_engine):
    """A chat answer still streaming when a run starts would disturb its first requests."""
    runner = make_runner(tmp_path, fake_engine)
    assert runner.begin_chat("http://127.0.0.1:5998/")
    runner.submit(endpoint_plan(), "after-chat")
    assert wait_until(lambda: runner.view("after-chat").phase == CHAT_WAIT, 10)
    assert "Waiting for a chat answer to finish" in progress_html(runner.view("after-chat"))
    assert not (tmp_path / "argv.json").exists(), "the engine must wait"
    assert not runner.begin_chat("http://127.0.0.1:5998"), "no new chat once a run is due"
    assert runner.begin_chat("http://127.0.0.1:7777")           # another server is not held
    runner.end_chat("http://127.0.0.1:7777")
    runner.end_chat("http://127.0.0.1:5998/")
    assert wait_done(runner, "after-chat").state == COMPLETE
    assert (tmp_path / "argv.json").exists()
    assert runner.begin_chat("http://127.0.0.1:5998")           # free again after the run
    runner.end_chat("http://127.0.0.1:5998")
