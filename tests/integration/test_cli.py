"""``python -m benchmark``: flags like TGI's tool, one-line errors, exit codes, Ctrl-C/SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from benchmark.cli import build_parser, config_from_args, main
from benchmark.config import DEFAULT_BATCH_SIZES
from benchmark.simulator import SimulatorConfig, run_in_thread

ROOT = Path(__file__).resolve().parents[2]
FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


def parse(*argv: str):
    return config_from_args(build_parser().parse_args(["--tokenizer-name", "tok", *argv]))


def test_defaults_are_tgi_benchmarks():
    config = parse()
    assert config.batch_sizes == DEFAULT_BATCH_SIZES == (1, 2, 4, 8, 16, 32)
    assert (config.sequence_length, config.decode_length, config.runs, config.warmups) == \
        (10, 8, 10, 1)
    assert config.url == "http://localhost:3000" and config.api == "tgi"
    assert config.mode == "rounds"


def test_batch_size_repeatable_and_comma_lists():
    assert parse("-b", "4", "--batch-size", "1,2", "-b", "8 16").batch_sizes == (1, 2, 4, 8, 16)


def test_every_flag_reaches_the_config():
    config = parse("--revision", "main", "--sequence-length", "512", "--decode-length", "128",
                   "--runs", "5", "--warmups", "0", "--temperature", "0.7", "--top-k", "40",
                   "--top-p", "0.9", "--typical-p", "0.5", "--repetition-penalty", "1.1",
                   "--frequency-penalty", "0.5", "--watermark", "--do-sample",
                   "--top-n-tokens", "3", "--url", "http://127.0.0.1:8080/", "--api",
                   "openai-chat", "--model", "m", "--timeout", "30", "--seed", "7",
                   "--output-dir", "out", "--mode", "concurrency", "--duration", "60",
                   "--requests", "100")
    s = config.sampling
    assert (s.temperature, s.top_k, s.top_p, s.typical_p, s.repetition_penalty,
            s.frequency_penalty, s.watermark, s.do_sample, s.top_n_tokens) == \
        (0.7, 40, 0.9, 0.5, 1.1, 0.5, True, True, 3)
    assert (config.revision, config.sequence_length, config.decode_length, config.runs,
            config.warmups) == ("main", 512, 128, 5, 0)
    assert (config.url, config.api, config.model, config.timeout_s, config.seed) == \
        ("http://127.0.0.1:8080", "openai-chat", "m", 30.0, 7)
    assert (config.output_dir, config.mode, config.duration_s, config.requests) == \
        ("out", "concurrency", 60.0, 100)


def test_rate_flags_reach_the_config():
    config = parse("--mode", "rate", "--rate", "5,2.5", "--rate", "40", "--duration", "20",
                   "--arrivals", "gamma", "--burstiness", "0.5", "--ramp-up", "4",
                   "--max-concurrency", "16", "--schedule-seed", "99", "--requests", "300")
    assert (config.mode, config.rates, config.arrivals, config.burstiness) == \
        ("rate", (2.5, 5, 40), "gamma", 0.5)
    assert (config.duration_s, config.requests, config.ramp_up_s, config.max_concurrency,
            config.schedule_seed) == (20.0, 300, 4.0, 16, 99)


@pytest.mark.parametrize("argv, words", [
    (["-b", "0"], "argument --batch-size: Batch sizes must be at least 1"),
    (["--sequence-length", "-5"], "argument --sequence-length"),
    (["--runs", "two"], "argument --runs: Runs must be a whole number"),
    (["--api", "grpc"], "argument --api: invalid choice"),
    (["--url", "localhost:3000"], "argument --url: Endpoint URL must look like"),
    (["--top-p", "1.5"], "argument --top-p"),
    (["--mode", "concurrency"], "argument --duration"),
    (["--duration", "5"], "--mode concurrency"),
    (["--mode", "rate", "--duration", "5"], "argument --rate: Rates (requests/s) is empty: give at least one rate"),
    (["--mode", "rate", "--rate", "0", "--duration", "5"],
     "argument --rate: Rates (requests/s) must be greater than 0"),
    (["--mode", "rate", "--rate", "ten", "--duration", "5"], "argument --rate"),
    (["--mode", "rate", "--rate", "10"], "argument --duration: The rate pattern needs a duration"),
    (["--mode", "rate", "--rate", "10", "--duration", "5", "--burstiness", "0.5"],
     "argument --burstiness: Burstiness is the shape of gamma arrivals: choose gamma arrivals "
     "(--arrivals gamma)"),
    (["--mode", "rate", "--rate", "10", "--duration", "5", "--ramp-up", "9"],
     "argument --ramp-up: Ramp-up (9 s) is longer than the duration (5 s)"),
    (["--mode", "rate", "--rate", "10", "--duration", "5", "--max-concurrency", "0"],
     "argument --max-concurrency"),
    (["--mode", "rate", "--rate", "10", "--duration", "5", "--arrivals", "bursty"],
     "argument --arrivals: invalid choice"),
    (["--rate", "10"], "argument --mode: --rate applies to --mode rate"),
    (["--mode", "rate", "--rate", "10", "-b", "4", "--duration", "5"],
     "argument --mode: --batch-size applies to --mode rounds or --mode concurrency"),
])
def test_bad_flags_are_argparse_errors(capsys, argv, words):
    with pytest.raises(SystemExit) as info:
        main(["--tokenizer-name", "tok", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m benchmark: error:")


def test_nothing_listening_is_one_line_and_exit_1(capsys, tiny_tokenizer):
    from support.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    code = main(["--tokenizer-name", tiny_tokenizer, "--url", url, "-b", "1"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Nothing answers at " + url)


def test_calibrate_dispatches_to_calibrate_main(monkeypatch):
    seen = []
    import benchmark.cli.calibrate

    monkeypatch.setattr(benchmark.cli.calibrate, "main", lambda argv: seen.append(argv) or 3)
    assert main(["calibrate", "--url", "x"]) == 3
    assert seen == [["--url", "x"]]


def test_a_run_prints_the_tables_then_the_folder(capsys, tiny_tokenizer, tmp_path):
    out = tmp_path / "run"
    progress = tmp_path / "progress.jsonl"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", sim.url, "-b", "1,2",
                     "--sequence-length", "12", "--decode-length", "4", "--runs", "2",
                     "--output-dir", str(out), "--progress-jsonl", str(progress)])
    assert code == 0
    captured = capsys.readouterr()
    assert "### Latency" in captured.out and "### Throughput" in captured.out
    assert captured.out.strip().splitlines()[-1] == f"Results: {out}"
    assert "100%" in captured.err and "Run complete" in captured.err
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert (out / "run.json").is_file()


def test_an_output_dir_holding_a_run_is_refused_and_left_as_it_was(capsys, tiny_tokenizer,
                                                                     tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = ["--tokenizer-name", tiny_tokenizer, "-b", "1", "--sequence-length", "12",
            "--decode-length", "4", "--runs", "1", "--warmups", "0", "--output-dir", str(out)]
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        assert main(argv + ["--url", sim.url]) == 0
        first = (out / "run.json").read_bytes()
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(argv + ["--url", sim.url])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --output-dir:" in err and "already holds a run" in err
    assert (out / "run.json").read_bytes() == first
    # --launch checks it too, before any server is started.
    import benchmark.cli.launch as launcher_cli

    def no_launch(*args, **kwargs):
        raise AssertionError("a server was launched for a run that cannot be saved")

    monkeypatch.setattr(launcher_cli, "launch_and_run", no_launch)
    with pytest.raises(SystemExit) as exited:
        main(["--launch", "--model-id", "org/model", "--tokenizer-name", tiny_tokenizer,
              "--output-dir", str(out)])
    assert exited.value.code == 2 and "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_saves_partial_files_and_exits_130(simulator_process, tiny_tokenizer, tmp_path,
                                                   signum):
    url = simulator_process(tokenizer=tiny_tokenizer, **dict(FAST, decode_base_ms=10.0))
    out = tmp_path / "run"
    progress = tmp_path / "progress.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmark", "--tokenizer-name", tiny_tokenizer, "--url", url,
         "-b", "1,2", "--sequence-length", "12", "--decode-length", "50", "--runs", "50",
         "--output-dir", str(out), "--progress-jsonl", str(progress)],
        cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            if progress.exists() and '"round_done"' in progress.read_text() and \
                    progress.read_text().count('"round_done"') >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = json.loads((out / "run.json").read_text())
    assert saved["status"] == "cancelled" and saved["complete"] is False
    assert len(saved["requests"]) >= 2
    assert f"Results: {out}" in stdout
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "cancelled"


def test_credentials_in_the_url_are_sent_as_a_header_never_saved(capsys, tiny_tokenizer,
                                                                 tmp_path):
    out = tmp_path / "run"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        secret_url = sim.url.replace("http://", "http://bob:s3cret-pass@")
        args = build_parser().parse_args(["--tokenizer-name", tiny_tokenizer, "--url",
                                          secret_url])
        assert config_from_args(args).url == sim.url
        from benchmark.cli.run import auth_headers
        assert auth_headers(args) == {"Authorization": "Basic Ym9iOnMzY3JldC1wYXNz"}
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", secret_url, "-b", "1",
                     "--runs", "1", "--warmups", "0", "--output-dir", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err
    assert not [f for f in out.iterdir() if "s3cret" in f.read_text()]


def test_credentials_in_the_url_and_api_key_env_is_a_usage_error(capsys, monkeypatch,
                                                                 tiny_tokenizer):
    monkeypatch.setenv("MY_ENDPOINT_TOKEN", "tok-value-1234")
    with pytest.raises(SystemExit) as exited:
        main(["--tokenizer-name", tiny_tokenizer, "--url", "http://bob:pw@127.0.0.1:9",
              "--api-key-env", "MY_ENDPOINT_TOKEN"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--api-key-env" in err and "tok-value-1234" not in err and "pw@" not in err


def test_a_query_in_the_url_is_refused_before_it_is_saved(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--tokenizer-name", "tok", "--url", "http://127.0.0.1:9/?api_key=qsecret123"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--url" in err and "--api-key-env" in err and "qsecret123" not in err


def test_slo_flags_reach_the_config_and_bad_ones_name_their_flag(capsys):
    config = parse("--slo-ttft-ms", "1000", "--slo-tpot-ms", "50", "--slo-attainment", "95%")
    assert (config.slo_ttft_ms, config.slo_tpot_ms, config.slo_e2e_ms) == (1000.0, 50.0, None)
    assert config.slo_attainment == pytest.approx(0.95)
    assert parse().slo_attainment == 0.9
    for argv, words in ((["--slo-ttft-ms", "0"], "argument --slo-ttft-ms: TTFT target (ms) "
                                                   "must be a positive number"),
                        (["--slo-e2e-ms", "soon"], "argument --slo-e2e-ms"),
                        (["--slo-attainment", "90"], "argument --slo-attainment: Requests "
                                                     "within target (%) must be above 0")):
        with pytest.raises(SystemExit) as info:
            main(["--tokenizer-name", "tok", *argv])
        assert info.value.code == 2
        assert words in capsys.readouterr().err


def test_a_run_with_latency_targets_reports_attainment_and_goodput(capsys, tiny_tokenizer,
                                                                  tmp_path):
    out = tmp_path / "run"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        # a generous first-token target and an impossible end-to-end one: no request is good
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", sim.url, "-b", "2",
                     "--sequence-length", "12", "--decode-length", "4", "--runs", "2",
                     "--slo-ttft-ms", "60000", "--slo-e2e-ms", "0.001",
                     "--output-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### Latency targets" in printed
    step = json.loads((out / "run.json").read_text())["steps"][0]
    assert step["slo"]["sent"] == 4 and step["slo"]["good"] == 0
    assert step["slo"]["missed"] == {"e2e": 4} and step["slo"]["passed"] is False


def test_a_run_whose_every_request_timed_out_fails_and_exits_1(tiny_tokenizer, tmp_path,
                                                               capsys):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer,
                                       **dict(FAST, decode_base_ms=50.0))) as s:
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", s.url, "-b", "2",
                     "--sequence-length", "8", "--decode-length", "40", "--runs", "1",
                     "--warmups", "0", "--timeout", "0.4", "--output-dir", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 1
    assert "Every measured request failed" in captured.err and "2 timed out" in captured.err
    assert "Run complete" not in captured.err + captured.out


@pytest.mark.parametrize("full_at", [2, 3])   # run.json's 2nd save (after the step), 3rd (final)
def test_a_full_disk_mid_run_is_one_sentence_and_exit_1(tiny_tokenizer, tmp_path, capsys,
                                                       monkeypatch, full_at):
    import errno

    from benchmark.core import results

    saves = []
    real = results.atomic_write

    def filling(path, text):
        if path.name == results.RUN_FILE:
            saves.append(path)
        if len(saves) >= full_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(results, "atomic_write", filling)
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as s:
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", s.url, "-b", "1",
                     "--sequence-length", "8", "--decode-length", "3", "--runs", "1",
                     "--warmups", "0", "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "During handling" not in err
    assert "No space left on device" in err and "could not be saved" in err
