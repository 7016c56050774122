"""The launcher against a fake ``text-generation-launcher`` (tests/fake_launcher) placed first on
PATH: the exact argv, the token, masking, readiness and phases, reuse vs restart, every failure
message, stopping, crash mid-run with partial results, and no process left behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from benchmark.config import ServerSettings
from benchmark.errors import ServerStartError
from benchmark.server.manager import ServerManager, launcher_args
from support.helpers import FAKE_LAUNCHER_DIR, ROOT, free_port, gone, wait_until

FAKE_DIR = FAKE_LAUNCHER_DIR
TOKEN = "hf_FakeTokenForTests0123456789"


def read_args(path: Path) -> dict:
    assert wait_until(path.exists), "the fake launcher did not record its arguments"
    return json.loads(path.read_text())


@pytest.fixture
def fake_env(tmp_path) -> dict[str, str]:
    """Environment in which text-generation-launcher is the fake one."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env["PATH"] = os.pathsep.join([str(FAKE_DIR), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    env["FAKE_TGI_PYTHON"] = sys.executable
    env["FAKE_TGI_ARGS_FILE"] = str(tmp_path / "fake-args.json")
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture
def make_manager(tmp_path, fake_env):
    managers: list[ServerManager] = []

    def make(**env_overrides: str) -> ServerManager:
        manager = ServerManager(log_dir=tmp_path / "logs", env={**fake_env, **env_overrides},
                                grace_s=5.0, poll_interval_s=0.1)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.stop(grace_s=1.0)


def settings(**overrides) -> ServerSettings:
    values = dict(model_id="org/model", port=free_port(), max_input_tokens=100,
                  max_total_tokens=200)
    values.update(overrides)
    return ServerSettings(**values)


def start_failure(manager: ServerManager, server: ServerSettings, **kwargs) -> ServerStartError:
    with pytest.raises(ServerStartError) as err:
        manager.ensure(server, **kwargs)
    return err.value


# -- start, argv, token, masking, phases -------------------------------------------------------


def test_ready_server_with_exact_argv_token_in_env_only_and_phases(make_manager, fake_env,
                                                                  tmp_path):
    manager = make_manager(HF_TOKEN=TOKEN, FAKE_TGI_LEAK_TOKEN="1", FAKE_TGI_SLOW_START="0.4",
                           PORT="80", HOSTNAME="space-host", QUANTIZE="awq",
                           MAX_INPUT_LENGTH="50", OAUTH_CLIENT_SECRET="oauth-secret-value")
    server = settings(quantize="gptq")
    statuses = []
    handle = manager.ensure(server, timeout_s=60, on_status=statuses.append)

    recorded = read_args(Path(fake_env["FAKE_TGI_ARGS_FILE"]))
    assert recorded["argv"] == launcher_args(server)
    assert recorded["hf_token_present"] is True
    assert recorded["hf_token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert not any(TOKEN in arg for arg in recorded["argv"])
    # Variables the launcher would read instead of our flags never reach it.
    assert recorded["env"] == {"PORT": False, "HOSTNAME": False, "MODEL_ID": False,
                               "QUANTIZE": False, "MAX_INPUT_LENGTH": False,
                               "HUGGING_FACE_HUB_TOKEN": False, "OAUTH_CLIENT_SECRET": False}

    assert handle.url == server.url and handle.pid == recorded["pid"]
    assert handle.info["model_id"] == "org/model" and handle.info["max_total_tokens"] == 200
    assert handle.simulated is True  # the fake serves the simulator, which says so in /info
    phases = [s.phase for s in statuses]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == [
        "starting", "downloading", "loading", "warming up", "ready"]
    assert any("file 2 of 2" in s.message for s in statuses)
    assert manager.status.phase == "ready" and manager.status.elapsed_s > 0.3

    # The token printed by the launcher is masked in the buffer and in the file.
    assert any("Using token ***" in line for line in manager.log_tail(200))
    text = handle.log_path.read_text()
    assert "Using token ***" in text and "Warming up model" in text
    assert TOKEN not in text and all(TOKEN not in line for line in manager.log_tail(2000))
    assert httpx.get(f"{handle.url}/health").status_code == 200


def test_a_secret_without_the_hf_prefix_is_masked_too(make_manager):
    secret = "plain-secret-value-42"
    manager = make_manager(HF_TOKEN=secret, FAKE_TGI_LEAK_TOKEN="1")
    handle = manager.ensure(settings(), timeout_s=60)
    assert any("Using token ***" in line for line in manager.log_tail(200))
    assert secret not in handle.log_path.read_text()


def test_reuse_identical_settings_restart_changed_ones(make_manager, fake_env):
    manager = make_manager()
    server = settings()
    first = manager.ensure(server, timeout_s=60)
    again = manager.ensure(ServerSettings(**server.to_dict()), timeout_s=60)
    assert again.pid == first.pid and manager.status.phase == "ready"

    changed = manager.ensure(ServerSettings(**{**server.to_dict(), "max_total_tokens": 300}),
                             timeout_s=60)
    assert changed.pid != first.pid
    assert wait_until(lambda: gone(first.pid), 5)
    assert changed.info["max_total_tokens"] == 300


def test_a_dead_server_is_restarted_not_reused(make_manager):
    manager = make_manager()
    server = settings()
    first = manager.ensure(server, timeout_s=60)
    os.killpg(first.pid, signal.SIGKILL)
    assert wait_until(lambda: gone(first.pid), 5)
    second = manager.ensure(server, timeout_s=60)
    assert second.pid != first.pid


# -- every failure, in plain words; the process never outlives it ------------------------------


def test_out_of_memory_at_warm_up(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="oom")
    err = start_failure(manager, settings(max_batch_prefill_tokens=4096), timeout_s=60)
    assert err.reason == "oom"
    assert "did not fit in the GPU's memory" in str(err)
    assert "--max-batch-prefill-tokens" in str(err) and "quantized" in str(err)
    assert any("Webserver Crashed" in line for line in err.log_tail)
    assert manager.status.phase == "failed" and manager.status.reason == "oom"
    assert manager.error is err and "Warming up" in manager.status.last_line + "".join(
        manager.log_tail(5))


def test_gated_model_without_token(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="gated")
    err = start_failure(manager, settings(model_id="meta-llama/Meta-Llama-3-8B"), timeout_s=60)
    assert err.reason == "gated"
    assert "secret named HF_TOKEN in the Space settings" in str(err)
    assert "https://huggingface.co/meta-llama/Meta-Llama-3-8B" in str(err)


def test_gated_model_with_a_token_that_lacks_access(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="gated", HF_TOKEN=TOKEN)
    err = start_failure(manager, settings(), timeout_s=60)
    assert err.reason == "gated" and "does not give access" in str(err)
    assert TOKEN not in str(err)


def test_unknown_model_id(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="not_found")
    err = start_failure(manager, settings(model_id="org/no-such-model"), timeout_s=60)
    assert err.reason == "not_found"
    assert "'org/no-such-model'" in str(err) and "spelling" in str(err)


def test_bad_flags_show_the_launchers_own_error(make_manager):
    # An older TGI that only knows --max-input-length.
    manager = make_manager(FAKE_TGI_UNKNOWN_FLAGS="--max-input-tokens")
    err = start_failure(manager, settings(), timeout_s=60)
    assert err.reason == "bad_flags"
    assert "error: unexpected argument '--max-input-tokens' found" in str(err)
    assert "similar argument exists: '--max-input-length'" in str(err)


def test_unexplained_exit_shows_the_last_lines(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="unknown")
    err = start_failure(manager, settings(), timeout_s=60)
    assert err.reason == "exited" and "exit code 1" in str(err)
    assert "segfault in a CUDA kernel" in str(err)


def test_image_trap_libpython(make_manager):
    err = start_failure(make_manager(FAKE_TGI_FAIL="libpython"), settings(), timeout_s=60)
    assert err.reason == "exited" and "chmod 755 /root" in str(err)


def test_timeout_stops_the_server(make_manager, fake_env):
    manager = make_manager(FAKE_TGI_SLOW_START="60")
    err = start_failure(manager, settings(), timeout_s=1.0)
    assert err.reason == "timeout"
    assert "not ready after 1 s" in str(err) and "Downloading the model" in str(err)
    assert "--server-timeout" in str(err)
    pid = read_args(Path(fake_env["FAKE_TGI_ARGS_FILE"]))["pid"]
    assert gone(pid)


def test_port_already_in_use(make_manager):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        manager = make_manager()
        err = start_failure(manager, settings(port=port), timeout_s=60)
    assert err.reason == "port_in_use" and f"Port {port}" in str(err)
    assert manager.status.phase == "failed" and manager.status.reason == "port_in_use"
    assert manager.error is err


def test_another_model_answering_is_refused(make_manager):
    manager = make_manager(FAKE_TGI_SERVE_MODEL="other/model")
    err = start_failure(manager, settings(), timeout_s=60)
    assert err.reason == "wrong_model" and "'other/model'" in str(err)


def test_cancel_during_start_up_stops_it(make_manager, fake_env):
    manager = make_manager(FAKE_TGI_SLOW_START="60")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    err = start_failure(manager, settings(), timeout_s=60, cancel=cancel)
    assert err.reason == "cancelled"
    assert gone(read_args(Path(fake_env["FAKE_TGI_ARGS_FILE"]))["pid"])


def test_stop_from_another_thread_ends_the_start_up(make_manager, fake_env):
    manager = make_manager(FAKE_TGI_SLOW_START="60")

    def stop_once_downloading() -> None:
        wait_until(lambda: manager.status.phase == "downloading", 30)
        manager.stop()

    threading.Thread(target=stop_once_downloading, daemon=True).start()
    err = start_failure(manager, settings(), timeout_s=60)
    assert err.reason == "cancelled" and manager.status.phase == "stopped"


# -- stopping ----------------------------------------------------------------------------------


def test_stop_kills_a_launcher_that_ignores_sigterm(make_manager, fake_env):
    from benchmark.server.process import state_path

    manager = make_manager(FAKE_TGI_IGNORE_TERM="1")
    handle = manager.ensure(settings(), timeout_s=60)
    child = read_args(Path(fake_env["FAKE_TGI_ARGS_FILE"]))["child_pid"]
    assert not gone(child) and state_path(handle.settings.port).exists()
    manager.stop(grace_s=0.5)
    assert gone(handle.pid) and wait_until(lambda: gone(child), 5)
    assert manager.status.phase == "stopped" and manager.handle is None
    assert not state_path(handle.settings.port).exists()


def test_crash_after_ready_is_reported_with_the_last_lines(make_manager):
    manager = make_manager(FAKE_TGI_FAIL="crash_after=2")
    handle = manager.ensure(settings(), timeout_s=60)
    manager.check_alive()  # fine right after start
    assert wait_until(lambda: gone(handle.pid), 20)
    with pytest.raises(ServerStartError) as err:
        manager.check_alive()
    assert err.value.reason == "crashed"
    assert "stopped while it was in use (exit code 1)" in str(err.value)
    assert "Shard 0 crashed" in str(err.value) and "Results measured until then are kept" in \
        str(err.value)
    assert manager.status.phase == "failed"


# -- without text-generation-launcher: the simulator stands in ---------------------------------


def test_without_the_launcher_the_simulator_is_started(tmp_path, fake_env):
    env = {**fake_env, "PATH": str(Path(sys.executable).parent)}
    manager = ServerManager(log_dir=tmp_path / "logs", env=env, poll_interval_s=0.1,
                            launcher_cmd="text-generation-launcher-not-installed")
    try:
        statuses = []
        handle = manager.ensure(settings(), timeout_s=60, on_status=statuses.append)
        assert handle.simulated and statuses[0].simulated
        assert handle.info["model_id"] == "org/model" and handle.info["max_input_tokens"] == 100
        assert "benchmark.simulator" in handle.log_path.read_text().splitlines()[0]
        assert "warming up" in [s.phase for s in statuses]
    finally:
        manager.stop()
    assert gone(handle.pid)


# -- leaving nothing behind --------------------------------------------------------------------

SCRIPT = """
import sys, time
from benchmark.config import ServerSettings
from benchmark.server.manager import ServerManager
manager = ServerManager(poll_interval_s=0.1)
handle = manager.ensure(ServerSettings(model_id="org/model", port={port}), timeout_s=60)
print("READY", handle.pid, flush=True)
if sys.argv[1] == "wait":
    time.sleep(120)
"""


@pytest.mark.parametrize("ending", ["exit", "sigterm"])
def test_a_program_that_exits_leaves_no_server(fake_env, ending):
    script = SCRIPT.replace("{port}", str(free_port()))
    proc = subprocess.Popen([sys.executable, "-c", script, "wait" if ending == "sigterm" else
                             "exit"], env=fake_env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        pid = int(line.split()[1])
        child = read_args(Path(fake_env["FAKE_TGI_ARGS_FILE"]))["child_pid"]
        if ending == "sigterm":
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert wait_until(lambda: gone(pid) and gone(child), 10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_stale_state_file_never_makes_it_stop_a_stranger(make_manager):
    """A kept-server state file whose pid now belongs to another program is ignored."""
    from benchmark.server import process as launcher

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    server = settings()
    try:
        launcher.state_dir().mkdir(mode=0o700, exist_ok=True)
        other = ServerSettings(**{**server.to_dict(), "max_total_tokens": 300})
        launcher.state_path(server.port).write_text(json.dumps(
            {"pid": stranger.pid, "settings": other.to_dict(), "simulated": False,
             "log_path": "/nonexistent.log"}))
        handle = make_manager().ensure(server, timeout_s=60)
        assert not handle.reused and handle.pid != stranger.pid
        assert stranger.poll() is None  # untouched
        state = json.loads(launcher.state_path(server.port).read_text())
        assert state["pid"] == handle.pid and state["kept"] is False  # now the new server's
    finally:
        stranger.kill()
        stranger.wait()


def test_a_server_left_by_a_killed_program_is_cleaned_up_by_the_next_start(fake_env,
                                                                          make_manager):
    """SIGKILL leaves no chance to stop the server; the next start on that port stops it."""
    port = free_port()
    script = SCRIPT.replace("{port}", str(port))
    proc = subprocess.Popen([sys.executable, "-c", script, "wait"], env=fake_env,
                            cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        orphan = int(line.split()[1])
        proc.kill()
        proc.wait(10)
        assert not gone(orphan)  # in its own session: SIGKILL of its parent did not reach it
        handle = make_manager().ensure(ServerSettings(model_id="org/model", port=port),
                                       timeout_s=60)
        assert handle.pid != orphan and not handle.reused
        assert wait_until(lambda: gone(orphan), 10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_an_unwritable_log_folder_is_a_plain_error(tmp_path, fake_env):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    manager = ServerManager(log_dir=not_a_folder / "logs", env=fake_env)
    err = start_failure(manager, settings(), timeout_s=60)
    assert "Could not write the server's log file" in str(err)
    assert "--server-log-dir" in str(err)
    assert not Path(fake_env["FAKE_TGI_ARGS_FILE"]).exists()  # nothing was started


def test_the_simulated_stand_in_counts_tokens_with_the_models_tokenizer(tmp_path, fake_env,
                                                                        tiny_tokenizer):
    """Like TGI, the stand-in counts prompt tokens with the model's tokenizer, so a local run
    on the simulator reports the prompt length the engine built (no 'server counted' warning)."""
    from transformers import AutoTokenizer

    env = {**fake_env, "PATH": str(Path(sys.executable).parent)}
    manager = ServerManager(log_dir=tmp_path / "logs", env=env, poll_interval_s=0.1,
                            launcher_cmd="text-generation-launcher-not-installed")
    prompt = "the quick brown fox jumps over a lazy dog"
    expected = len(AutoTokenizer.from_pretrained(tiny_tokenizer).encode(prompt))
    try:
        handle = manager.ensure(ServerSettings(model_id=tiny_tokenizer, port=free_port()),
                                timeout_s=60)
        reply = httpx.post(handle.url + "/generate", timeout=30, json={
            "inputs": prompt, "parameters": {"max_new_tokens": 2}})
        assert reply.status_code == 200
        assert int(reply.headers["x-prompt-tokens"]) == expected
        assert len(httpx.post(handle.url + "/tokenize", json={"inputs": prompt},
                              timeout=30).json()) == expected
    finally:
        manager.stop()


def test_default_log_folder_is_private_not_a_shared_temp_folder(tmp_path, fake_env,
                                                                  monkeypatch):
    import tempfile

    from benchmark.server.process import state_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    manager = ServerManager(env={**fake_env, "FAKE_TGI_FAIL": "unknown"}, grace_s=1.0,
                            poll_interval_s=0.1)
    start_failure(manager, settings())
    assert manager.log_path.parent == state_dir() / "logs"  # per user, under the temp folder
    for folder in (state_dir(), state_dir() / "logs"):
        info = folder.stat()
        assert info.st_uid == os.getuid() and info.st_mode & 0o077 == 0
    # A folder open to others (as another user of the machine could plant it) is not used.
    planted = state_dir() / "logs"
    planted.chmod(0o777)
    start_failure(manager, settings())
    log = manager.log_path
    assert log.is_file() and planted not in log.parents
    assert log.parent.stat().st_mode & 0o077 == 0
