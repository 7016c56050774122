"""A server that answers with hostile or broken data: a sentence naming the server's fault and
exit code 1, never a traceback; what is kept from it is bounded, and the run says what was cut.

The table is the server half of issue 18's hostile probe (items 10 and 13)."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.core.probe import MAX_INFO_TEXT, probe_server
from benchmark.core.results import RUN_FILE
from benchmark.simulator import SimulatorConfig, run_in_thread
from support.routes import RouteServer as StandIn

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)
DEEP = ("[" * 100_000 + "]" * 100_000).encode()

HOSTILE_INFO = [
    ("limit as text", json.dumps({"model_id": "m", "max_input_tokens": "4095"}).encode(),
     ["max_input_tokens", "'4095'", "whole number"]),
    ("limit negative", json.dumps({"model_id": "m", "max_total_tokens": -5}).encode(),
     ["max_total_tokens", "whole number"]),
    ("limit a float", json.dumps({"model_id": "m", "max_total_tokens": 1e300}).encode(),
     ["max_total_tokens"]),
    ("nested 100,000 deep", b'{"model_id": "m", "extra": ' + DEEP + b"}", ["nested"]),
    ("info nested 100,000 deep", DEEP, ["nested"]),
]


@pytest.mark.parametrize("name, body, words", HOSTILE_INFO, ids=[r[0] for r in HOSTILE_INFO])
def test_a_hostile_info_is_a_sentence_and_exit_1(name, body, words, tmp_path, capsys):
    with StandIn({"/info": body}) as server:
        code = main(["--tokenizer-name", "tok", "--url", server.url,
                     "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "server" in err
    for word in words:
        assert word in err
    assert len(err) < 2000
    assert not (tmp_path / "run").exists()


def test_oversized_info_fields_are_cut_where_they_enter_and_the_cut_is_said():
    info = {"model_id": "M" * 4_000_000, "version": "v" * 10_000,
            "extra": {"a": {"b": {"c": {"d": {"e": 1}}}}}, "many": list(range(10_000)),
            **{f"key{i}": i for i in range(1000)}}
    with StandIn({"/info": json.dumps(info).encode()}) as server:
        probe = probe_server(RunConfig(tokenizer_name="tok", url=server.url))
    kept = probe.info
    assert len(json.dumps(kept)) < 64_000
    assert kept["model_id"].startswith("M" * 100) and len(kept["model_id"]) <= MAX_INFO_TEXT + 40
    notes = " ".join(probe.notes)
    assert "model_id" in notes and "4,000,000 characters" in notes
    assert "version" in notes
    assert "keys" in notes and "nested" in notes and "items" in notes


def test_a_run_keeps_only_the_bounded_info_and_warns_about_the_cut(tiny_tokenizer, tmp_path):
    huge = "org/" + "m" * 2_000_000
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, model_id=huge, **FAST)) as s:
        result = run(RunConfig(tokenizer_name=tiny_tokenizer, url=s.url, batch_sizes=(1, 2),
                               sequence_length=8, decode_length=3, runs=1, warmups=0,
                               output_dir=str(tmp_path / "r")))
    assert result.status == "complete"
    size = (tmp_path / "r" / RUN_FILE).stat().st_size
    assert size < 200_000, size
    assert any("model_id" in w and "2,000,004 characters" in w for w in result.warnings)


@pytest.mark.parametrize("name, body, words", HOSTILE_INFO, ids=[r[0] for r in HOSTILE_INFO])
def test_the_app_names_the_servers_fault_too(name, body, words):
    """The app's endpoint check before queueing a run: the same sentence, not a bare "Error"."""
    from benchmark.app.form import DEFAULTS, TARGET_ENDPOINT, build_plan
    from benchmark.app.page import _error_markdown, check_endpoint
    from benchmark.errors import ServerError

    with StandIn({"/info": body}) as server:
        plan = build_plan(dict(DEFAULTS, target=TARGET_ENDPOINT, url=server.url,
                               tokenizer_name="tok"))
        with pytest.raises(ServerError) as info:
            check_endpoint(plan)
    shown = _error_markdown(info.value)
    assert words[0] in shown.replace("\\", "") and len(shown) < 1000
