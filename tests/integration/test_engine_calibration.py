"""run.json says how accurate the client was: the latest calibration of the machine, judged
for the run's largest step; null without a calibration; a broken file never stops a run."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

import pytest

from benchmark import __version__
from benchmark.calibration import (Calibration, CalibrationSettings, Row, latest_path,
                                 run_calibration, verdict_for)
from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.core.results import RunResult
from benchmark.simulator import SimulatorConfig, run_in_thread

FAST = dict(prefill_base_ms=1.0, prefill_per_token_ms=0.0, decode_base_ms=1.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def sim(tiny_tokenizer):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as s:
        yield s


def _row(concurrency: int, accurate: bool, rate: float) -> Row:
    values = {f.name: None for f in fields(Row)}
    values.update(concurrency=concurrency, requests=10, matched=10, failed=0,
                  token_events_per_s=rate, accurate=accurate)
    return Row(**values)


def calibration_document() -> dict:
    """What ``python -m benchmark calibrate`` writes: accurate up to 2 streams, not at 4."""
    cal = Calibration(CalibrationSettings(levels=(1, 2, 4)), "2026-11-28T17:00:00+00:00",
                      rows=[_row(1, True, 99.5), _row(2, True, 190.25), _row(4, False, 350.0)],
                      ended_at="2026-11-28T17:01:30+00:00")
    return cal.to_dict()


def _run(url: str, tokenizer: str, out: Path, sizes: tuple[int, ...]) -> RunResult:
    config = RunConfig(tokenizer_name=tokenizer, url=url, batch_sizes=sizes,
                       sequence_length=8, decode_length=3, runs=1, warmups=0,
                       output_dir=str(out), timeout_s=30.0)
    return run(config)


def _saved_block(out: Path) -> dict | None:
    return json.loads((out / "run.json").read_text())["calibration"]


def test_run_json_carries_the_calibration_and_its_verdict(sim, tiny_tokenizer, tmp_path,
                                                          monkeypatch):
    root = tmp_path / "results"
    monkeypatch.setenv("RESULTS_DIR", str(root))
    latest = latest_path()
    latest.parent.mkdir(parents=True)
    latest.write_text(json.dumps(calibration_document()))

    beyond = _run(sim.url, tiny_tokenizer, tmp_path / "beyond", (1, 3))
    assert beyond.status == "complete"
    block = _saved_block(tmp_path / "beyond")
    assert block["measured_at"] == "2026-11-28T17:01:30+00:00"
    assert block["cpu_count"] == os.cpu_count() and block["tool_version"] == __version__
    assert block["accurate_concurrency"] == 2 and block["accurate_token_rate"] == 190.25
    assert block["highest_measured"] == 4 and block["concurrency"] == 3
    assert block["verdict"].startswith("Concurrency 3 is beyond what the calibration")
    assert "2 streams within 1 ms" in block["verdict"]
    assert RunResult.load(tmp_path / "beyond").calibration == block
    # the block is enough to judge the run again (the app reads it from run.json)
    assert verdict_for(3, block) == block["verdict"]
    assert verdict_for(2, block) is None

    within = _run(sim.url, tiny_tokenizer, tmp_path / "within", (1, 2))
    block = _saved_block(tmp_path / "within")
    assert within.status == "complete"
    assert block["accurate_concurrency"] == 2 and block["concurrency"] == 2
    assert block["verdict"] is None and verdict_for(2, block) is None


def test_without_a_calibration_the_block_is_null(sim, tiny_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "empty"))
    result = _run(sim.url, tiny_tokenizer, tmp_path / "run", (2,))
    assert result.status == "complete" and result.calibration is None
    assert _saved_block(tmp_path / "run") is None


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"kind": "calibration", "verdict": "accurate"}),
    json.dumps({"kind": "calibration", "verdict": {"accurate_concurrency": "many"},
                "environment": [], "tool": None, "settings": {"tolerance_ms": "x"}}),
    '{"kind": "calibration", "verdict": {"accurate_concurrency": 1, '
    '"accurate_token_rate": NaN}, "settings": {"tolerance_ms": Infinity}}',
])
def test_a_broken_calibration_file_never_stops_a_run(sim, tiny_tokenizer, tmp_path,
                                                     monkeypatch, content):
    root = tmp_path / "results"
    root.mkdir()
    monkeypatch.setenv("RESULTS_DIR", str(root))
    latest_path().write_text(content)
    result = _run(sim.url, tiny_tokenizer, tmp_path / "run", (2,))
    assert result.status == "complete" and len(result.records) == 2
    text = (tmp_path / "run" / "run.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # run.json stays strict JSON
    block = json.loads(text)["calibration"]
    assert block is None or block["accurate_concurrency"] in (None, 1)


def test_run_calibration_is_pure_and_tolerates_missing_parts():
    document = calibration_document()
    assert run_calibration(1, None) is None
    assert run_calibration(1, {"kind": "calibration"}) is None
    block = run_calibration(8, document)
    assert block["accurate_concurrency"] == 2 and "Concurrency 8" in block["verdict"]
    assert verdict_for(8, block) == verdict_for(8, document) == block["verdict"]
    assert verdict_for(16, block) == verdict_for(16, document)
    assert document == calibration_document()  # not modified
    bare = run_calibration(8, {"verdict": {"accurate_concurrency": 4}})
    assert bare["measured_at"] is None and bare["cpu_count"] is None
    assert bare["accurate_concurrency"] == 4 and "Concurrency 8" in bare["verdict"]
    odd = run_calibration(8, {"verdict": {"accurate_concurrency": "4",
                                          "accurate_token_rate": float("nan")},
                              "environment": {"cpu_count": True}})
    assert odd["accurate_concurrency"] is None and odd["accurate_token_rate"] is None
    assert odd["cpu_count"] is None
    json.dumps(odd, allow_nan=False)  # run.json refuses NaN: the block never holds one
