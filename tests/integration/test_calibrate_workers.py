"""``calibrate --workers 1,2``: one climb per worker count, each count's highest accurate level,
and the sentence saying which count a load needs (never the machine's timing)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmark.calibration.analysis import Row, workers_verdict

ROOT = Path(__file__).resolve().parents[2]


def _row(level: int, workers: int, accurate: bool) -> Row:
    empty = {f.name: None for f in dataclasses.fields(Row)
             if f.name not in ("concurrency", "requests", "matched", "failed", "accurate",
                               "workers")}
    return Row(concurrency=level, requests=8, matched=8, failed=0, accurate=accurate,
               workers=workers, **empty)


def test_the_fewest_workers_that_measured_a_load_are_named():
    rows = [_row(16, 1, True), _row(64, 1, False),
            _row(16, 2, True), _row(64, 2, True), _row(256, 2, False),
            _row(16, 4, True), _row(64, 4, True), _row(256, 4, False)]
    best, sentence = workers_verdict(rows)
    assert best == {1: 16, 2: 64, 4: 64}
    assert "up to 16 streams: 1 worker; up to 64 streams: 2 workers" in sentence
    assert "above 64 streams none of 1, 2, 4 workers was within 1 ms" in sentence
    _, none = workers_verdict([_row(16, 1, False), _row(16, 2, False)])
    assert "No worker count measured within 1 ms" in none


def test_calibrate_climbs_once_per_worker_count(tmp_path):
    env = {**os.environ, "RESULTS_DIR": str(tmp_path / "results"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "calibrate", "--quick",
                           "--concurrency", "1,4", "--workers", "1,2", "--simulator-workers",
                           "2", "--rates", "none", "--output-dir", str(tmp_path / "out")],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "With --workers 2:" in proc.stdout
    assert "This machine needs" in proc.stdout or "No worker count" in proc.stdout
    saved = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert saved["settings"]["workers"] == [1, 2]
    assert [r["workers"] for r in saved["rows"]] == [1, 1]
    assert [(r["workers"], r["concurrency"]) for r in saved["workers"]["rows"]] == [(2, 1), (2, 4)]
    assert all(r["requests"] > 0 and r["matched"] == r["requests"]
               for r in saved["workers"]["rows"])
    assert set(saved["workers"]["accurate_concurrency"]) == {"1", "2"}
    bad = subprocess.run([sys.executable, "-m", "benchmark", "calibrate", "--workers", "0"],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--workers" in bad.stderr
