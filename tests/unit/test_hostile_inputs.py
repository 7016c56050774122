"""Hostile and unlucky values typed into the CLI (and the same parsers behind the app's form):
each gets one sentence naming the field and exit code 2, never a traceback.

The table below is the hostile probe of issue 18 (items 13 and 14), kept as a regression suite.
"""

from __future__ import annotations

import pytest

from benchmark.app.form import TARGET_ENDPOINT, build_plan, example_values
from benchmark.cli import build_parser, config_from_args, main
from benchmark.config import parse_float, parse_int
from benchmark.errors import ConfigError

HUGE = "9" * 5000

# (flags, the field the error names, words the sentence must hold)
HOSTILE_FLAGS = [
    (["--runs", HUGE], "runs", "Runs"),
    (["--top-k", HUGE], "top_k", "Top-k"),
    (["--seed", HUGE], "seed", "Seed"),
    (["--temperature", "1" * 5000], "temperature", "Temperature"),
    (["--runs", "１２"], "runs", "digits 0-9"),            # full-width digits
    (["--runs", "١٢"], "runs", "digits 0-9"),              # Arabic-Indic digits
    (["--temperature", "０.５"], "temperature", "digits 0-9"),
    (["--timeout", "٣٠"], "timeout_s", "digits 0-9"),
    (["--url", "http://[::1"], "url", "Endpoint URL"),
    (["--url", "http://[zz]:80"], "url", "Endpoint URL"),
    (["--url", "http://h" + "o" * 100_000 + "st:80"], "url", "characters"),
    (["--url", "http://host\x01:80"], "url", "control character"),
    (["--url", "http://host:80/\x7f"], "url", "control character"),
    (["--output-dir", "/"], "output_dir", "system folder"),
    (["--output-dir", "/usr"], "output_dir", "system folder"),
]


@pytest.mark.parametrize("flags, field, words", HOSTILE_FLAGS,
                         ids=[f"{f[0]}={f[1][:12]!r}" for f, _, _ in HOSTILE_FLAGS])
def test_hostile_flags_get_a_sentence_naming_the_flag_and_exit_2(flags, field, words, capsys):
    with pytest.raises(ConfigError) as info:
        config_from_args(build_parser().parse_args(["--tokenizer-name", "tok", *flags]))
    assert info.value.field == field
    assert words in info.value.message
    assert len(info.value.message) < 400          # the value is not echoed back whole

    with pytest.raises(SystemExit) as exit_info:
        main(["--tokenizer-name", "tok", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and words in err
    assert len(err) < 4000


def test_an_output_folder_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as info:
        config_from_args(build_parser().parse_args(
            ["--tokenizer-name", "tok", "--output-dir", str(tmp_path)]))
    assert info.value.field == "output_dir" and "not empty" in info.value.message
    # an empty or missing folder is fine
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        config_from_args(build_parser().parse_args(
            ["--tokenizer-name", "tok", "--output-dir", str(folder)]))


@pytest.mark.parametrize("value", ["１２", "١٢", "۱۲", "12\u0663"])
def test_only_ascii_digits_are_numbers(value):
    with pytest.raises(ConfigError):
        parse_int("runs", value)
    with pytest.raises(ConfigError):
        parse_float("temperature", value)


def test_ascii_numbers_still_parse():
    assert parse_int("runs", " 1_000 ") == 1000 and parse_int("runs", "+3") == 3
    assert parse_float("temperature", "0.5") == 0.5 and parse_float("temperature", "1e-2") == 0.01


# The same values typed into the app's form: a sentence naming the field, never a bare "Error".
HOSTILE_FORM = [
    ({"runs": HUGE}, "runs"),
    ({"runs": "１２"}, "runs"),
    ({"top_k": HUGE}, "top_k"),
    ({"temperature": "０.５"}, "temperature"),
    ({"target": TARGET_ENDPOINT, "url": "http://[::1"}, "url"),
    ({"target": TARGET_ENDPOINT, "url": "http://[zz]:80"}, "url"),
    ({"target": TARGET_ENDPOINT, "url": "http://h" + "o" * 100_000 + "st"}, "url"),
    ({"target": TARGET_ENDPOINT, "url": "http://host\x01:80"}, "url"),
]


@pytest.mark.parametrize("changes, field", HOSTILE_FORM,
                         ids=[f"{k}={v[:12]!r}" for c, _ in HOSTILE_FORM
                              for k, v in list(c.items())[-1:]])
def test_hostile_form_values_name_the_field(changes, field):
    values = {**example_values(), **changes}
    with pytest.raises(ConfigError) as info:
        build_plan(values)
    assert info.value.field == field
    assert len(info.value.message) < 400
