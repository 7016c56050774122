"""``python -m benchmark import`` and ``python -m benchmark report`` as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.core.results import RunResult, list_runs

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "imports"

pytestmark = pytest.mark.timeout(120)


def cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmark", *argv], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=100)


def test_import_every_fixture_then_write_a_report(tmp_path):
    out = tmp_path / "runs"
    files = sorted(str(p) for p in FIXTURES.iterdir() if p.suffix in (".json", ".jsonl"))
    done = cli("import", *files, "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    rows = list_runs(out)
    assert sorted(r.source.split(" ")[0] for r in rows) == [
        "aiperf", "guidellm", "guidellm", "inference-benchmarker", "llmperf", "vllm"]
    assert "Imported 6 runs" in done.stdout
    guidellm = next(r for r in rows if r.source.startswith("guidellm"))
    assert RunResult.load(guidellm.path).source["tool_version"] == "0.8.1"

    report = cli("report", str(guidellm.path))
    assert report.returncode == 0, report.stderr
    page = (guidellm.path / "report.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert "Plotly.newPlot" in page and "simulated/tgi-model" in page

    elsewhere = tmp_path / "shared" / "guidellm.html"
    elsewhere.parent.mkdir()
    assert cli("report", str(guidellm.path), "--output", str(elsewhere)).returncode == 0
    assert elsewhere.read_text().startswith("<!DOCTYPE html>")


def test_bad_files_are_refused_by_name_and_nothing_is_written(tmp_path):
    out = tmp_path / "runs"
    truncated = tmp_path / "half.json"
    truncated.write_bytes((FIXTURES / "vllm_bench_serve.json").read_bytes()[:200])
    done = cli("import", str(FIXTURES / "guidellm_benchmarks.json"), str(truncated),
               "--output-dir", str(out))
    assert done.returncode == 2
    assert "half.json: not valid JSON" in done.stderr and "truncated" in done.stderr
    assert "Nothing was imported" in done.stderr
    assert not out.exists() or list(out.iterdir()) == []

    unknown = tmp_path / "notes.json"
    unknown.write_text('{"hello": "world"}')
    done = cli("import", str(unknown), "--output-dir", str(out))
    assert done.returncode == 2 and "notes.json: not a result file" in done.stderr

    missing = cli("import", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json" in missing.stderr

    no_run = cli("report", str(tmp_path))
    assert no_run.returncode == 2 and "run.json is missing" in no_run.stderr
