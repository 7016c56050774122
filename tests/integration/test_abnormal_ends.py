"""Abnormal ends (issue 18, items 11 and 12): an engine killed with SIGKILL, an app killed with
SIGKILL, runs left "running" by a process that is gone, servers left by a dead app.

A run whose engine is gone is marked ended (interrupted, with the reason) with its partial data,
by the app at once and again at start-up; the app's children die with it; the restarted app
stops what the dead one left and says what it found.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark.app.form import DEFAULTS, TARGET_ENDPOINT, build_plan
from benchmark.app.jobs import FAILED, Runner
from benchmark.app.render import results_view
from benchmark.config import RunConfig
from benchmark.core.results import RUN_FILE, RunResult, reconcile_runs
from benchmark.server import process
from benchmark.simulator import SimulatorConfig, run_in_thread
from support.helpers import ROOT, free_port, gone, wait_until

SLOW = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=40.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


class NoServers:
    def stop(self):
        pass


def long_plan(url: str, tokenizer: str):
    return build_plan(dict(DEFAULTS, target=TARGET_ENDPOINT, url=url, tokenizer_name=tokenizer,
                           batch_sizes="1,2", runs="200", warmups="0", sequence_length="8",
                           decode_length="10"))


def assert_not_shown_as_running(result: RunResult) -> None:
    view = results_view([result])
    assert "in progress" not in view.title
    assert "still going" not in view.headline and "still going" not in view.tables


def test_an_engine_killed_mid_run_ends_the_run_interrupted(tmp_path, tiny_tokenizer):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SLOW)) as sim:
        runner = Runner(tmp_path / "results", env=dict(os.environ), server_manager=NoServers())
        job = runner.submit(long_plan(sim.url, tiny_tokenizer), "run-killed")
        assert wait_until(lambda: job.proc is not None and job.steps, 60), "never started"
        assert wait_until(lambda: job.result_version > 0 or any(
            p.rounds_done for p in job.progress.values()), 60)
        os.kill(job.proc.pid, signal.SIGKILL)
        assert runner.wait("run-killed", timeout=30)
        view = runner.view("run-killed")
        runner.close()
    assert view.state == FAILED
    assert "Interrupted" in view.message and "SIGKILL" in view.message
    assert "[" not in view.message                      # not the progress bar's last line
    result = RunResult.load(job.output_dir)
    assert result.status == "failed" and "Interrupted" in result.message
    assert result.ended_at is not None
    assert_not_shown_as_running(result)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_no_live_process_owns_are_marked_interrupted_at_start_up(tmp_path):
    root = tmp_path / "results"
    config = RunConfig(tokenizer_name="tok", batch_sizes=(1,))
    for run_id, owner in (("orphan-run", _dead_pid()), ("live-run", os.getpid()),
                          ("old-run-without-owner", None)):
        result = RunResult(run_id=run_id, config=config, status="running")
        result.environment = {"python": "3", **({"pid": owner} if owner else {})}
        result.save(root / run_id)
    done = RunResult(run_id="done-run", config=config, status="complete")
    done.environment = {"pid": _dead_pid()}
    done.save(root / "done-run")

    found = reconcile_runs(root)

    assert len(found) == 2 and all("interrupted" in sentence for sentence in found)
    for run_id in ("orphan-run", "old-run-without-owner"):
        result = RunResult.load(root / run_id)
        assert result.status == "failed" and result.message.startswith("Interrupted")
        assert_not_shown_as_running(result)
    assert RunResult.load(root / "live-run").status == "running"
    assert RunResult.load(root / "done-run").status == "complete"
    assert reconcile_runs(root) == []                   # once is enough


DRIVER = textwrap.dedent("""\
    import os, sys, time
    from pathlib import Path
    from benchmark.app.form import DEFAULTS, TARGET_ENDPOINT, build_plan
    from benchmark.app.jobs import Runner
    from benchmark.config import ServerSettings
    from benchmark.server.manager import ServerManager
    root, url, tokenizer, port = sys.argv[1:5]
    manager = ServerManager(env=dict(os.environ), die_with_parent=True,
                            fallback_to_simulator=False)
    handle = manager.ensure(ServerSettings(model_id="org/model", port=int(port)),
                            timeout_s=60)
    runner = Runner(Path(root), env=dict(os.environ), server_manager=manager)
    plan = build_plan(dict(DEFAULTS, target=TARGET_ENDPOINT, url=url, tokenizer_name=tokenizer,
                           batch_sizes="1,2", runs="200", warmups="0", sequence_length="8",
                           decode_length="10"))
    job = runner.submit(plan, "run-orphan")
    while job.proc is None:
        time.sleep(0.05)
    print(job.proc.pid, handle.pid, flush=True)
    time.sleep(600)
    """)


def test_children_die_with_an_app_killed_with_sigkill(tmp_path, tiny_tokenizer, monkeypatch):
    from support.helpers import FAKE_LAUNCHER_DIR

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "PATH": f"{FAKE_LAUNCHER_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
           "FAKE_TGI_PYTHON": sys.executable,
           "FAKE_TGI_SIM_ARGS": f"--tokenizer {tiny_tokenizer}",
           "TMPDIR": str(tmp_path)}
    root = tmp_path / "results"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SLOW)) as sim:
        app = subprocess.Popen([sys.executable, str(driver), str(root), sim.url, tiny_tokenizer,
                                str(free_port())], env=env, stdout=subprocess.PIPE, text=True)
        try:
            engine_pid, server_pid = map(int, app.stdout.readline().split())
            assert wait_until(lambda: (root / "run-orphan" / RUN_FILE).is_file(), 120)
            app.send_signal(signal.SIGKILL)
            app.wait(30)
            # Generous bounds: a loaded CI machine takes its time to stop a Python process.
            assert wait_until(lambda: gone(engine_pid), 90), "the engine outlived the app"
            assert wait_until(lambda: gone(server_pid), 90), "the server outlived the app"
        finally:   # nothing left behind, even when the test fails (groups: their children)
            for pid in (locals().get("engine_pid"), locals().get("server_pid")):
                if pid:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            app.kill()
    result = RunResult.load(root / "run-orphan")
    assert result.status != "running", result.message
    assert "app" in (result.message or ""), (result.status, result.message)
    assert_not_shown_as_running(result)


def test_the_restarted_app_stops_a_server_a_dead_app_left_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "state_dir", lambda: tmp_path / "state")
    port = free_port()
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "--port",
                             str(port)], start_new_session=True)
    try:
        (tmp_path / "state").mkdir(mode=0o700)
        state = {"pid": left.pid, "settings": {"model_id": "org/model", "port": port},
                 "simulated": True, "log_path": str(tmp_path / "log"), "kept": False,
                 "owner_pid": _dead_pid(), "saved_at": "2026-12-03T20:00:00+00:00"}
        (tmp_path / "state" / f"server-{port}.json").write_text(json.dumps(state))
        found = process.reap_orphans(grace_s=5)
        assert wait_until(lambda: left.poll() is not None, 10)
        assert len(found) == 1 and str(port) in found[0] and "stopped" in found[0]
        assert process.reap_orphans(grace_s=5) == []
    finally:
        if left.poll() is None:
            left.kill()


FULL_DISK_ENGINE = textwrap.dedent("""\
    #!{python}
    import json, sys
    from benchmark.config import RunConfig
    from benchmark.core.results import RunResult
    argv = sys.argv[1:]
    out = argv[argv.index("--output-dir") + 1]
    progress = argv[argv.index("--progress-jsonl") + 1]
    RunResult(run_id="run-full", config=RunConfig(tokenizer_name="tok", batch_sizes=(1,))
              ).save(out)          # its first save worked; then the disk filled
    with open(progress, "a") as stream:
        stream.write(json.dumps({{"event": "done", "status": "failed", "output_dir": out,
                                  "message": "The results could not be saved to " + out +
                                             " (No space left on device); the run stopped."}})
                     + "\\n")
    print("error: The results could not be saved (No space left on device)")
    sys.exit(1)
    """)


def test_a_run_whose_engine_could_not_save_its_end_is_ended_by_the_app(tmp_path):
    """The engine said why it failed, but its run.json (disk full) still reads "running": the
    app writes the end once it can, so the page does not show the run as still going."""
    script = tmp_path / "engine"
    script.write_text(FULL_DISK_ENGINE.format(python=sys.executable))
    script.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runner = Runner(tmp_path / "results", env=env, python=str(script),
                    server_manager=NoServers())
    job = runner.submit(long_plan("http://127.0.0.1:5998", "tok"), "run-full")
    assert runner.wait("run-full", timeout=30)
    view = runner.view("run-full")
    runner.close()
    assert view.state == FAILED and "No space left" in view.message
    result = RunResult.load(job.output_dir)
    assert result.status == "failed" and "No space left" in result.message
    assert_not_shown_as_running(result)
