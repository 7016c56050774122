"""``python -m benchmark --launch`` end to end with the fake ``text-generation-launcher``: a
complete run, a server crash mid-run (partial results + the launcher's last lines), Ctrl-C /
SIGTERM during start-up and during the run (no process left), and --keep-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from benchmark.core.results import RunResult
from support.helpers import ROOT, free_port, gone, wait_until
from test_launcher_process import FAKE_DIR, TOKEN, read_args

GUIDE_MODEL = "astronomer/Llama-3-8B-Instruct-GPTQ-8-Bit"


@pytest.fixture
def cli_env(tmp_path, tiny_tokenizer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(
        PATH=os.pathsep.join([str(FAKE_DIR), str(Path(sys.executable).parent),
                              env.get("PATH", "")]),
        PYTHONPATH=str(ROOT), FAKE_TGI_PYTHON=sys.executable,
        FAKE_TGI_ARGS_FILE=str(tmp_path / "fake-args.json"),
        RESULTS_DIR=str(tmp_path / "results"),
        HF_TOKEN=TOKEN, FAKE_TGI_LEAK_TOKEN="1",
    )
    return env


def launch_argv(tmp_path: Path, tokenizer: str, *extra: str, port: int | None = None,
                run: str = "run", max_total: int = 1024) -> list[str]:
    return [sys.executable, "-m", "benchmark", "--launch", "--model-id", GUIDE_MODEL,
            "--quantize", "gptq", "--tokenizer-name", tokenizer,
            "--port", str(port or free_port()), "--max-input-tokens", "512",
            "--max-total-tokens", str(max_total), "-b", "1,2", "--runs", "2",
            "--output-dir", str(tmp_path / run), "--server-log-dir", str(tmp_path / "logs"),
            *extra]


def run_cli(argv: list[str], env: dict[str, str],
            timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=timeout_s)


def test_launch_benchmark_stop(tmp_path, cli_env, tiny_tokenizer):
    done = run_cli(launch_argv(tmp_path, tiny_tokenizer), cli_env)
    assert done.returncode == 0, done.stderr
    recorded = read_args(Path(cli_env["FAKE_TGI_ARGS_FILE"]))
    assert recorded["argv"][:4] == ["--model-id", GUIDE_MODEL, "--quantize", "gptq"]
    assert gone(recorded["pid"]) and gone(recorded["child_pid"])  # stopped after the run
    for phase in ("Downloading the model weights", "Loading the model", "Warming up", "Ready",
                  "Stopped."):
        assert phase in done.stderr
    result = RunResult.load(tmp_path / "run")
    assert result.status == "complete" and len(result.records) == 2 * 1 + 2 * 2
    assert result.server["model_id"] == GUIDE_MODEL and result.server["quantize"] == "gptq"
    assert result.simulated  # the fake serves the simulator
    logs = list((tmp_path / "logs").glob("*.log"))
    assert len(logs) == 1 and "Using token ***" in logs[0].read_text()
    for text in (done.stdout, done.stderr, logs[0].read_text(),
                 (tmp_path / "run" / "run.json").read_text()):
        assert TOKEN not in text


def test_server_crash_mid_run_keeps_partial_results_and_says_why(tmp_path, cli_env,
                                                                 tiny_tokenizer):
    env = {**cli_env, "FAKE_TGI_FAIL": "crash_after_requests=4"}
    done = run_cli(launch_argv(tmp_path, tiny_tokenizer, "--runs", "30"), env)
    assert done.returncode == 1, done.stderr
    assert "The TGI server stopped while it was in use (exit code 1)" in done.stderr
    assert "Shard 0 crashed" in done.stderr
    result = RunResult.load(tmp_path / "run")
    assert result.status == "failed"
    ok = [r for r in result.records if r.ok]
    assert 1 <= len(ok) < 30 * 1 + 30 * 2
    assert "Shard 0 crashed" in result.message and "Results measured until then are kept" in \
        result.message


def test_start_up_failure_is_one_plain_message(tmp_path, cli_env, tiny_tokenizer):
    env = {**cli_env, "FAKE_TGI_FAIL": "oom"}
    done = run_cli(launch_argv(tmp_path, tiny_tokenizer), env)
    assert done.returncode == 1
    assert "error: The model did not fit in the GPU's memory" in done.stderr
    assert "Full log:" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_during_start_up_stops_the_server(tmp_path, cli_env, tiny_tokenizer,
                                                           sig):
    env = {**cli_env, "FAKE_TGI_SLOW_START": "60"}
    proc = subprocess.Popen(launch_argv(tmp_path, tiny_tokenizer), env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = read_args(Path(env["FAKE_TGI_ARGS_FILE"]))["pid"]
        assert wait_until(lambda: "download process" in _read_log(tmp_path), 20)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "Start-up interrupted: the server was stopped." in err
        assert gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_during_the_run_saves_and_stops_the_server(tmp_path, cli_env, tiny_tokenizer):
    env = {**cli_env, "FAKE_TGI_SIM_ARGS": "--decode-base-ms 30"}
    progress = tmp_path / "progress.jsonl"
    argv = launch_argv(tmp_path, tiny_tokenizer, "--runs", "200", "--progress-jsonl",
                       str(progress))
    proc = subprocess.Popen(argv, env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: progress.exists() and '"round_done"' in progress.read_text(),
                          60)
        recorded = read_args(Path(env["FAKE_TGI_ARGS_FILE"]))
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        assert wait_until(lambda: gone(recorded["pid"]) and gone(recorded["child_pid"]), 10)
        assert RunResult.load(tmp_path / "run").status == "cancelled"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_keep_server_then_reuse_then_restart_with_other_settings(tmp_path, cli_env,
                                                                 tiny_tokenizer):
    port = free_port()
    args_file = Path(cli_env["FAKE_TGI_ARGS_FILE"])
    first = run_cli(launch_argv(tmp_path, tiny_tokenizer, "--keep-server", port=port), cli_env)
    kept = read_args(args_file)
    try:
        assert first.returncode == 0, first.stderr
        assert f"kill -TERM -- -{kept['pid']}" in first.stderr
        assert not gone(kept["pid"])  # it outlived the command
        log = next((tmp_path / "logs").glob("*.log"))
        relays = [p.pid for p in psutil.process_iter(["cmdline"])
                  if "--relay" in (p.info["cmdline"] or []) and str(log) in p.info["cmdline"]]
        assert len(relays) == 1  # a relay keeps reading (and masking) its output
        assert httpx.get(_url(first.stderr) + "/info").json()["model_id"] == GUIDE_MODEL

        # Same settings: the kept server is reused (no new launcher, no waiting).
        args_file.unlink()
        second = run_cli(launch_argv(tmp_path, tiny_tokenizer, "--keep-server", port=port,
                                     run="run2"), cli_env)
        assert second.returncode == 0, second.stderr
        assert "Reusing the simulated server already running" in second.stderr
        assert not args_file.exists() and not gone(kept["pid"])
        assert RunResult.load(tmp_path / "run2").status == "complete"

        # Other settings: the kept server is stopped, a new one started, then stopped.
        third = run_cli(launch_argv(tmp_path, tiny_tokenizer, port=port, run="run3",
                                    max_total=2048), cli_env)
        assert third.returncode == 0, third.stderr
        restarted = read_args(args_file)
        assert restarted["pid"] != kept["pid"]
        assert "--max-total-tokens" in restarted["argv"] and "2048" in restarted["argv"]
        assert wait_until(lambda: gone(kept["pid"]) and gone(restarted["pid"]), 15)
    finally:
        if not gone(kept["pid"]):
            os.killpg(kept["pid"], signal.SIGKILL)
    # The relay wrote the kept server's last lines (masked) and ended with it.
    assert wait_until(lambda: "Shutting down shards" in log.read_text(), 15)
    assert "Using token ***" in log.read_text() and TOKEN not in log.read_text()
    assert wait_until(lambda: gone(relays[0]), 10)


def _url(stderr: str) -> str:
    return stderr.split("server at ", 1)[1].split(" ", 1)[0]


def _read_log(tmp_path: Path) -> str:
    logs = list((tmp_path / "logs").glob("*.log"))
    return logs[0].read_text() if logs else ""
