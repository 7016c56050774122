"""One settings table (config.SETTINGS) behind the CLI, the form and the app's engine argv."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmark.app.form import DEFAULTS, FIELDS, TARGET_ENDPOINT, Plan, build_plan
from benchmark.app.jobs import engine_argv
from benchmark.cli import build_parser, config_from_args, main
from benchmark.config import (KINDS, OWNERS, SETTINGS, RunConfig, SamplingParams,
                              ServerSettings, field_label, run_argv, settings_of)
from benchmark.errors import ConfigError

# Fields that are no setting a user types: the nested sampling block, and the Space's policy.
NOT_SETTINGS = {RunConfig: {"sampling", "max_total_requests"}, SamplingParams: set(),
                ServerSettings: set()}
OWNER = {RunConfig: "run", SamplingParams: "sampling", ServerSettings: "server"}


@pytest.mark.parametrize("cls", list(OWNER))
def test_every_dataclass_field_is_in_the_table_with_the_same_default(cls):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in NOT_SETTINGS[cls]}
    table = {s.name: s for s in settings_of(OWNER[cls])}
    assert set(fields) == set(table)
    for name, f in fields.items():
        expected = None if f.default is dataclasses.MISSING else f.default
        assert table[name].default == expected, name


def test_flags_are_unique_and_every_setting_has_a_label():
    flags = [(s.flag, s.name) for s in SETTINGS if s.flag]
    assert len({flag for flag, _ in flags}) == len({pair for pair in flags})  # --revision: shared
    shorts = [short for s in SETTINGS for short in s.short]
    assert len(shorts) == len(set(shorts))
    assert all(field_label(s.name) == s.label for s in SETTINGS if s.name != "revision")
    assert all(s.kind in KINDS and s.owner in OWNERS for s in SETTINGS)


def _non_default(entry, tmp_path: Path):
    """A valid value other than the default, from the entry's kind and bounds alone."""
    if entry.kind == "switch":
        return not entry.default
    if entry.kind == "sizes":
        return (3, 5)
    if entry.kind == "rates":
        return (2.5, 10)
    if entry.kind == "choice":
        return next(c for c in entry.choices if c != entry.default)
    if entry.kind == "url":
        return "http://10.1.2.3:8081"
    if entry.kind == "text":
        return str(tmp_path / "out") if entry.name == "output_dir" else f"{entry.name}-x"
    low = entry.minimum if entry.minimum is not None else 0
    if entry.kind == "int":
        return next(v for v in (int(low) + 1, int(low) + 2) if v != entry.default)
    high = entry.maximum if entry.maximum is not None else low + 100
    return low + (high - low) / 3          # 1/3: a float that :g alone would not write back


def _everything_changed(tmp_path: Path, mode: str) -> RunConfig:
    values = {s.name: _non_default(s, tmp_path) for s in settings_of("run")}
    sampling = {s.name: _non_default(s, tmp_path) for s in settings_of("sampling")}
    values["mode"] = mode
    # Settings of another pattern are not sent: they keep their defaults.
    values.update({s.name: s.default for s in settings_of("run") if not s.applies_to(mode)})
    if mode == "rate":
        values["arrivals"] = "gamma"       # burstiness is the shape of gamma arrivals
    return RunConfig(**values, sampling=SamplingParams(**sampling)).validate()


@pytest.mark.parametrize("mode", ["concurrency", "rounds", "rate"])
def test_config_to_argv_to_config_is_the_identity_for_every_setting(tmp_path, mode):
    config = _everything_changed(tmp_path, mode)
    default = RunConfig(tokenizer_name="")
    changed = {s.name for s in settings_of("run", "sampling") if s.applies_to(mode)}
    for s in settings_of("run", "sampling"):
        holder, base = ((config.sampling, default.sampling) if s.owner == "sampling"
                        else (config, default))
        if s.name in changed and s.name != "mode":
            assert getattr(holder, s.name) != getattr(base, s.name), s.name
    assert config_from_args(build_parser().parse_args(run_argv(config))) == config


def test_the_apps_engine_argv_reads_back_to_the_same_run(tmp_path):
    config = _everything_changed(tmp_path, "concurrency")
    out = tmp_path / "elsewhere"
    argv = engine_argv("python", Plan(run=config, server=None), out, tmp_path / "p.jsonl")
    assert argv[:3] == ["python", "-m", "benchmark"]
    args = build_parser().parse_args(argv[3:])
    assert args.progress_jsonl == str(tmp_path / "p.jsonl")
    assert config_from_args(args) == dataclasses.replace(config, output_dir=str(out))


def test_the_form_and_the_cli_start_from_the_same_defaults():
    assert FIELDS[0] == "target"
    form = build_plan(dict(DEFAULTS, target=TARGET_ENDPOINT, url="http://127.0.0.1:3000",
                           tokenizer_name="org/model")).run
    cli = config_from_args(build_parser().parse_args(["--tokenizer-name", "org/model"]))
    assert form.batch_sizes == cli.batch_sizes == (1, 2, 4, 8, 16, 32)
    # the form alone comes with chat-sized latency targets filled in (the CLI sets none)
    assert (form.slo_ttft_ms, form.slo_tpot_ms, form.slo_attainment) == (1000.0, 50.0, 0.9)
    assert dataclasses.replace(form, url=cli.url, slo_ttft_ms=None, slo_tpot_ms=None) == cli


# -- the same checks on both faces ------------------------------------------------------------


def test_a_batch_above_max_concurrent_requests_is_refused_by_the_form():
    with pytest.raises(ConfigError) as excinfo:
        build_plan(dict(DEFAULTS, model_id="org/model", batch_sizes="1,256"))
    assert excinfo.value.field == "batch_sizes"
    assert "max concurrent requests (128)" in str(excinfo.value)
    assert "--max-concurrent-requests" in str(excinfo.value)


def test_a_batch_above_max_concurrent_requests_is_refused_by_launch_before_starting(
        capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(["--launch", "--model-id", "org/model", "-b", "1,256",
              "--max-concurrent-requests", "200"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size" in err and "max concurrent requests (200)" in err
    assert "[server" not in err and not list(tmp_path.iterdir())   # nothing launched


def _cli_url_error(url: str) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        config_from_args(build_parser().parse_args(["--tokenizer-name", "t", "--url", url]))
    return excinfo.value


def _form_url_error(url: str) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        build_plan(dict(DEFAULTS, target=TARGET_ENDPOINT, url=url, tokenizer_name="t"))
    return excinfo.value


def test_a_query_in_the_url_gets_the_same_refusal_from_the_cli_and_the_form():
    url = "http://10.0.0.5:8080/?api_key=qsecret123"
    cli, form = _cli_url_error(url), _form_url_error(url)
    assert cli.field == form.field == "url" and str(cli) == str(form)
    assert "qsecret123" not in str(cli)


def test_credentials_in_the_url_never_reach_the_saved_config_on_either_face():
    url = "http://bob:pw-123@10.0.0.5:8080"
    cli = config_from_args(build_parser().parse_args(["--tokenizer-name", "t", "--url", url]))
    assert cli.url == "http://10.0.0.5:8080"            # the CLI sends them as a header
    form = _form_url_error(url)                          # the app has no header to put them in
    assert form.field == "url" and "pw-123" not in str(form) and "share link" in str(form)
