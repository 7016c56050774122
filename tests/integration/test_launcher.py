"""The launcher's pure parts: the argument list, log phases, failure explanations, masking,
and the CLI's --launch flags (no process is started here; see test_launcher_process.py)."""

from __future__ import annotations

import json

import pytest

from benchmark import cli
from benchmark.config import ServerSettings
from benchmark.errors import ConfigError
from benchmark.cli.launch import settings_from_args
from benchmark.server.manager import launcher_args, mask_line
from benchmark.server.logs import (clean_line, describe_phase, download_progress, explain_crash,
                                     explain_exit, later_phase, phase_of)

GUIDE_MODEL = "astronomer/Llama-3-8B-Instruct-GPTQ-8-Bit"


# -- the argument list -------------------------------------------------------------------------


def test_guide_example_argv_is_exact():
    settings = ServerSettings(model_id=GUIDE_MODEL, quantize="gptq", max_input_tokens=1024,
                              max_total_tokens=2048, max_batch_prefill_tokens=4096)
    assert launcher_args(settings) == [
        "--model-id", GUIDE_MODEL, "--quantize", "gptq", "--max-input-tokens", "1024",
        "--max-total-tokens", "2048", "--max-batch-prefill-tokens", "4096",
        "--port", "1337", "--hostname", "127.0.0.1",
    ]


def test_every_flag_in_tgi_names_and_port_hostname_always_explicit():
    settings = ServerSettings(
        model_id="org/model", revision="main", dtype="bfloat16", num_shard=2,
        max_input_tokens=10, max_total_tokens=20, max_batch_size=8,
        max_batch_prefill_tokens=64, max_concurrent_requests=32, trust_remote_code=True,
        port=8080, hostname="0.0.0.0")
    assert launcher_args(settings) == [
        "--model-id", "org/model", "--revision", "main", "--dtype", "bfloat16",
        "--num-shard", "2", "--max-input-tokens", "10", "--max-total-tokens", "20",
        "--max-batch-size", "8", "--max-batch-prefill-tokens", "64",
        "--max-concurrent-requests", "32", "--trust-remote-code",
        "--port", "8080", "--hostname", "0.0.0.0",
    ]
    minimal = launcher_args(ServerSettings(model_id="org/model"))
    assert minimal == ["--model-id", "org/model", "--port", "1337", "--hostname", "127.0.0.1"]


def test_no_token_in_the_argument_list(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnop")
    assert not any("hf_" in arg for arg in launcher_args(ServerSettings(model_id="org/model")))


# -- phases from log lines (real TGI 3.x lines) ------------------------------------------------

REAL_START = [
    ("2026-01-10T10:00:00.000Z  INFO text_generation_launcher: Args { model_id: \"org/m\" }", None),
    ("INFO download: text_generation_launcher: Starting check and download process for org/m",
     "downloading"),
    ("INFO text_generation_launcher: Download file: model-00001-of-00004.safetensors",
     "downloading"),
    ("INFO text_generation_launcher: Download: [1/4] -- ETA: 0:03:10", "downloading"),
    ("INFO download: text_generation_launcher: Successfully downloaded weights for org/m",
     "downloading"),
    ("INFO shard-manager: text_generation_launcher: Starting shard rank=0", "loading"),
    ("INFO shard-manager: text_generation_launcher: Waiting for shard to be ready... rank=0",
     "loading"),
    ("INFO shard-manager: text_generation_launcher: Shard ready in 25.31s rank=0", "loading"),
    ("INFO text_generation_launcher: Starting Webserver", "loading"),
    ("INFO text_generation_router_v3: backends/v3/src/lib.rs:125: Warming up model",
     "warming up"),
    ("INFO text_generation_router_v3: backends/v3/src/lib.rs:137: Setting max batch total "
     "tokens to 59616", "warming up"),
    ("INFO text_generation_router::server: router/src/server.rs:2329: Connected", "warming up"),
]


@pytest.mark.parametrize("line,phase", REAL_START)
def test_phase_of_real_tgi_lines(line, phase):
    assert phase_of(line) == phase


def test_phases_never_go_back_and_ready_comes_only_from_http():
    phase = "starting"
    seen = []
    for line, _ in REAL_START:
        phase = later_phase(phase, phase_of(line))
        seen.append(phase)
    assert seen[-1] == "warming up"
    assert later_phase("warming up", "downloading") == "warming up"
    assert sorted(set(seen), key=seen.index) == ["starting", "downloading", "loading",
                                                  "warming up"]


def test_download_progress_counts_files():
    assert download_progress("Download: [2/4] -- ETA: 0:01:00") == (2, 4)
    assert download_progress("Download file: model-00003-of-00004.safetensors") == (3, 4)
    assert download_progress("Starting Webserver") is None
    assert describe_phase("downloading", (2, 4)).endswith("(file 2 of 4)")


# -- masking and cleaning ----------------------------------------------------------------------


def test_mask_line_hides_tokens_and_secret_values():
    line = mask_line(b"\x1b[32mINFO\x1b[0m token hf_AbCdEfGh123456 and s3cretvalue!\r",
                     ["s3cretvalue!"])
    assert "hf_AbCdEfGh123456" not in line and "s3cretvalue!" not in line
    assert "\x1b" not in line and line.startswith("INFO token hf_***")
    assert mask_line(b"   \n") == ""


def test_a_secret_hidden_by_json_escapes_is_masked_after_unwrapping():
    raw = '{"level":"INFO","fields":{"message":"token \\u0070lain-secret-1"}}'
    assert "plain-secret-1" in json.loads(raw)["fields"]["message"]
    line = mask_line(raw.encode(), ["plain-secret-1"])
    assert "plain-secret-1" not in line and line == "INFO token ***"


def test_json_output_lines_are_unwrapped():
    raw = json.dumps({"timestamp": "t", "level": "INFO", "target": "text_generation_launcher",
                      "fields": {"message": "Warming up model"}})
    assert clean_line(raw) == "INFO text_generation_launcher: Warming up model"
    assert phase_of(clean_line(raw)) == "warming up"


# -- failure explanations (from the lines TGI prints) ------------------------------------------

OOM_LINES = [
    "INFO text_generation_router_v3: backends/v3/src/lib.rs:125: Warming up model",
    "ERROR warmup: text_generation_router_v3::client: Server error: Not enough memory to handle "
    "4096 prefill tokens. You need to decrease `--max-batch-prefill-tokens`",
    "ERROR text_generation_launcher: Webserver Crashed",
]
GATED_LINES = [
    "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6745)",
    "Cannot access gated repo for url https://huggingface.co/api/models/meta-llama/x.",
    "Error: DownloadError",
]
NOT_FOUND_LINES = [
    "huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error.",
    "Repository Not Found for url: https://huggingface.co/api/models/org/typo.",
    "Error: DownloadError",
]
CLAP_LINES = [
    "error: unexpected argument '--max-input-tokens' found",
    "  tip: a similar argument exists: '--max-input-length'",
    "Usage: text-generation-launcher [OPTIONS]",
    "For more information, try '--help'.",
]


def explain(lines, code=1, model_id="org/model", has_token=False):
    return explain_exit(lines, code, model_id=model_id, has_token=has_token)


def test_oom_says_what_to_lower():
    failure = explain(OOM_LINES)
    assert failure.reason == "oom"
    for words in ("did not fit in the GPU's memory", "--max-batch-prefill-tokens",
                  "--max-total-tokens", "quantized", "more memory", "4096 prefill tokens"):
        assert words in failure.message
    assert explain(["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"]).reason \
        == "oom"


def test_gated_without_token_says_how_to_add_the_secret():
    failure = explain(GATED_LINES, model_id="meta-llama/x")
    assert failure.reason == "gated"
    assert "HF_TOKEN" in failure.message and "Space settings" in failure.message
    assert "https://huggingface.co/meta-llama/x" in failure.message
    assert "licence" in failure.message


def test_gated_with_a_token_says_the_token_lacks_access():
    failure = explain(GATED_LINES, model_id="meta-llama/x", has_token=True)
    assert failure.reason == "gated"
    assert "does not give access" in failure.message and "accept the model's licence" in \
        failure.message


def test_bare_401_is_a_gated_or_private_model():
    assert explain(["requests.exceptions.HTTPError: 401 Client Error: Unauthorized"]).reason \
        == "gated"


def test_not_found_says_check_the_spelling():
    failure = explain(NOT_FOUND_LINES, model_id="org/typo")
    assert failure.reason == "not_found"
    assert "'org/typo'" in failure.message and "spelling" in failure.message
    assert "HF_TOKEN" in failure.message  # it may be private
    # The Hub answers 401 + "Repository Not Found" for unknown ids without a token.
    assert explain(["RepositoryNotFoundError: 401 Client Error. Repository Not Found for url"]
                   ).reason == "not_found"


def test_bad_flags_show_the_launchers_own_message():
    failure = explain(CLAP_LINES, code=2)
    assert failure.reason == "bad_flags"
    assert "error: unexpected argument '--max-input-tokens' found" in failure.message
    assert "'--max-input-length'" in failure.message
    validation = explain(['Error: ArgumentValidation("`max_input_tokens` must be < '
                          '`max_total_tokens`")'])
    assert validation.reason == "bad_flags"
    assert "`max_input_tokens` must be < `max_total_tokens`" in validation.message


def test_unknown_exit_shows_code_and_last_lines():
    lines = [f"line {i}" for i in range(30)]
    failure = explain(lines, code=-11)
    assert failure.reason == "exited" and "exit code -11" in failure.message
    assert "line 29" in failure.message and "line 10" not in failure.message


def test_libpython_trap_of_the_official_image_gets_its_fix():
    failure = explain(["text-generation-launcher: error while loading shared libraries: "
                       "libpython3.11.so.1.0: cannot open shared object file"], code=127)
    assert failure.reason == "exited" and "chmod 755 /root" in failure.message


def test_forbidden_token_is_a_gated_model():
    failure = explain(["huggingface_hub.errors.HfHubHTTPError: 403 Client Error: Forbidden. "
                       "Access to model org/x is restricted and you are not in the authorized "
                       "list."], has_token=True)
    assert failure.reason == "gated" and "does not give access" in failure.message


def test_full_disk_while_downloading():
    failure = explain(["OSError: [Errno 28] No space left on device"])
    assert failure.reason == "no_space" and "disk is full" in failure.message


def test_port_in_use_from_the_router():
    assert explain(["Error: WebServer(Axum(Os { code: 98, kind: AddrInUse, message: \"Address "
                    "already in use\" }))"]).reason == "port_in_use"


def test_crash_keeps_results_and_names_oom():
    failure = explain_crash(["INFO x", "ERROR text_generation_launcher: Shard 0 crashed"], 1)
    assert failure.reason == "crashed"
    assert "Results measured until then are kept" in failure.message
    assert "Shard 0 crashed" in failure.message
    assert "GPU memory" in explain_crash(["CUDA out of memory"], 1).message


# -- the CLI's flags ---------------------------------------------------------------------------


def parse(argv):
    parser = cli.build_parser()
    return parser, parser.parse_args(argv)


def test_launch_flags_build_server_settings():
    _, args = parse(["--launch", "--model-id", GUIDE_MODEL, "--quantize", "gptq",
                     "--max-input-tokens", "1024", "--max-total-tokens", "2048", "--port",
                     "8080", "--revision", "main"])
    settings = settings_from_args(args)
    assert settings == ServerSettings(model_id=GUIDE_MODEL, revision="main", quantize="gptq",
                                      max_input_tokens=1024, max_total_tokens=2048, port=8080)


def test_launch_without_model_id_names_the_flag():
    _, args = parse(["--launch"])
    with pytest.raises(ConfigError) as err:
        settings_from_args(args)
    assert err.value.field == "model_id"


@pytest.mark.parametrize("argv,words", [
    (["--tokenizer-name", "gpt2", "--model-id", "org/m"], "--model-id: only used with --launch"),
    (["--tokenizer-name", "gpt2", "--keep-server"], "--keep-server: only used with --launch"),
    (["--launch", "--model-id", "org/m", "--url", "http://h:1"], "--url"),
    (["--launch", "--model-id", "org/m", "--max-input-tokens", "20", "--max-total-tokens", "10"],
     "--max-input-tokens"),
    (["--launch", "--model-id", "org/m", "--quantize", "gptq", "--dtype", "float16"], "--dtype"),
    (["--launch", "--model-id", "not a model"], "--model-id"),
    (["--launch", "--model-id", "org/m", "--server-timeout", "0"], "--server-timeout"),
    (["--launch", "--model-id", "org/m", "--runs", "0"], "--runs"),
])
def test_bad_launch_flags_exit_2_before_starting_anything(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_tokenizer_still_required_without_launch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--url", "http://127.0.0.1:9"])
    assert exit_info.value.code == 2
    assert "--tokenizer-name" in capsys.readouterr().err


def test_launch_wires_the_run_to_the_started_server(monkeypatch, tmp_path):
    """--launch: tokenizer defaults to the model id, the URL is the server's, the run's folder
    is fixed up front, and the server's settings go into the run (nothing is started here)."""
    from benchmark.cli import launch as launcher_cli
    from benchmark.server.manager import ServerHandle

    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    seen = {}

    def fake_run_cli(config, args, parser, *, server=None):
        seen.update(config=config, server=server)
        return 0

    def fake_launch_and_run(settings, run, **kwargs):
        seen.update(settings=settings, kwargs=kwargs)
        handle = ServerHandle(url=settings.url, settings=settings, simulated=False, pid=1,
                              info={"model_id": settings.model_id})
        return run(handle, kwargs["manager"])

    monkeypatch.setattr(launcher_cli.cli, "run_cli", fake_run_cli)
    monkeypatch.setattr(launcher_cli, "launch_and_run", fake_launch_and_run)
    code = cli.main(["--launch", "--model-id", GUIDE_MODEL, "--quantize", "gptq", "--port",
                     "4242", "--keep-server", "--server-timeout", "90", "-b", "1,2"])
    assert code == 0
    config = seen["config"]
    assert config.tokenizer_name == GUIDE_MODEL and config.url == "http://127.0.0.1:4242"
    assert config.batch_sizes == (1, 2)
    assert config.output_dir.startswith(str(tmp_path)) and "llama-3-8b" in config.output_dir
    assert seen["server"] == seen["settings"].to_dict() and seen["server"]["quantize"] == "gptq"
    assert seen["kwargs"]["keep"] is True and seen["kwargs"]["timeout_s"] == 90.0


def _stored_lines(data: bytes, secrets: list[str], chunk: int = 4096) -> list[str]:
    """What the reader stores for ``data`` arriving ``chunk`` bytes at a time."""
    from benchmark.server.process import split_lines

    pending, dropping, stored = b"", False, []
    for start in range(0, len(data), chunk):
        lines, pending, dropping = split_lines(pending + data[start:start + chunk], dropping)
        stored += [mask_line(raw, secrets) for raw in lines]
    return stored + ([mask_line(pending, secrets)] if pending else [])


def test_a_secret_cut_by_an_overlong_line_leaves_no_fragment():
    secret = "Zq9secretvalueXYZ1234"
    for offset in range(0, 40, 3):  # the 64 KiB cut falls at every place inside the secret
        data = b"x" * (69632 - offset) + secret.encode() + b" tail\nnext line\n"
        stored = _stored_lines(data, [secret])
        assert not any(secret[i:i + 6] in line for line in stored for i in range(16)), offset
        assert stored[-1] == "next line"


def test_a_secret_broken_by_colour_codes_is_masked():
    line = mask_line(b"token Zq9sec\x1b[1mretvalueXYZ\x1b[0m done", ["Zq9secretvalueXYZ"])
    assert "Zq9secretvalueXYZ" not in line and line == "token *** done"


def test_oauth_and_organization_tokens_are_masked_without_being_in_the_environment():
    from benchmark.errors import redact

    for token in ("hf_oauth_AbCdEfGh1234567890abcdefXYZ", "api_org_AbCdEfGhIjKlMnOpQrStUvWx"):
        text = redact(f"Invalid token {token} for the endpoint")
        assert token[-12:] not in text and text.startswith("Invalid token ")


def test_a_secret_broken_over_two_lines_leaves_neither_half():
    secret = "hf_FakeTokenForTests0123456789"
    first = mask_line(b"INFO Using token " + secret[:13].encode(), [secret])
    second = mask_line(secret[13:].encode() + b" from HF_TOKEN", [secret])
    assert secret[:13] not in first and first.startswith("INFO Using token ")
    assert "ForTests0123456789" not in second and second.endswith(" from HF_TOKEN")
    plain = "Zq9secretvalueXYZ1234"
    assert mask_line(b"key=" + plain[:9].encode(), [plain]) == "key=***"
    assert mask_line(plain[9:].encode() + b" done", [plain]) == "*** done"
    # ordinary words that merely share a few characters with a secret stay readable
    assert mask_line(b"Zq9 starts here", [plain]) == "Zq9 starts here"
