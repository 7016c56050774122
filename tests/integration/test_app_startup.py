"""``python app.py`` at start-up (issue 18, items 11, 13, 14): a RESULTS_DIR that cannot be
created or written is one sentence and exit code 2 before anything starts; runs left "running"
by a dead process are ended and the app says what it found; a run is refused before its
server is started when its results folder cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmark.app.form import example_values, build_plan
from benchmark.app.jobs import FAILED, Runner
from benchmark.config import RunConfig
from benchmark.core.results import RunResult
from support.app_harness import AppProcess
from support.helpers import ROOT, free_port


def start_app(results_dir: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "RESULTS_DIR": results_dir, "GRADIO_SERVER_PORT": str(free_port()),
           "GRADIO_SERVER_NAME": "127.0.0.1", "PYTHONPATH": str(ROOT),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "app.py"], cwd=str(ROOT), env=env, text=True,
                          capture_output=True, timeout=timeout_s)


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_an_unusable_results_dir_is_one_sentence_and_exit_2(tmp_path, where):
    if where == "under a file":
        (tmp_path / "plain-file").write_text("x")
        results = str(tmp_path / "plain-file" / "results")
    else:
        results = "/proc/self"            # exists, and nobody (not even root) can write there
    done = start_app(results)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: RESULTS_DIR (") and "cannot be used" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_the_restarted_app_ends_runs_left_running_and_says_so(tmp_path, tiny_tokenizer):
    results = tmp_path / "results"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = RunResult(run_id="20261203-200000-left-abcd",
                     config=RunConfig(tokenizer_name="tok", batch_sizes=(1,)))
    left.environment = {"pid": dead.pid}
    left.save(results / left.run_id)
    with AppProcess(results, tokenizer=tiny_tokenizer) as app:
        log = app.log()
    assert "20261203-200000-left-abcd" in log and "interrupted" in log
    result = RunResult.load(results / left.run_id)
    assert result.status == "failed" and "Interrupted" in result.message


class RecordingManager:
    def __init__(self):
        self.started = []

    def ensure(self, settings, **_):
        self.started.append(settings)
        raise AssertionError("the server was started before the results folder was checked")

    def stop(self):
        pass


def test_a_run_whose_results_folder_cannot_be_written_is_refused_before_the_server(tmp_path):
    manager = RecordingManager()
    runner = Runner("/proc/self/results", env=dict(os.environ), server_manager=manager)
    plan = build_plan(example_values())
    runner.submit(plan, "run-ro")
    assert runner.wait("run-ro", timeout=30)
    view = runner.view("run-ro")
    runner.close()
    assert view.state == FAILED and manager.started == []
    assert "results folder (/proc/" in view.message and "nothing was started" in view.message
