"""Telemetry during real runs against the simulated TGI server: its /metrics read through the
sampler, a fake GPU, telemetry.csv beside the other files, a missing /metrics said in a
sentence, the sampler off, and the page showing the timeline."""

from __future__ import annotations

import csv
import json
import time

import pytest

from benchmark.app.render import results_view
from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.core.results import RunResult
from benchmark.simulator import SimulatorConfig, run_in_thread

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=8.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)
POWER_W = 150.0


@pytest.fixture(scope="module")
def sim(tiny_tokenizer):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as s:
        yield s


class ClockGpu:
    """A GPU drawing POWER_W: its energy counter grows with the wall clock."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.closed = False

    def open(self):
        return [{"index": 0, "name": "Fake GPU", "memory_total_mib": 81920,
                 "energy_counter": True}]

    def read(self):
        return [(0, "power_w", POWER_W), (0, "utilization_pct", 90.0),
                (0, "memory_used_pct", 40.0),
                (0, "energy_j", POWER_W * (time.perf_counter() - self.t0))]

    def close(self):
        self.closed = True


def config(url, tokenizer, out, **changes):
    values = dict(tokenizer_name=tokenizer, url=url, batch_sizes=(1, 4), sequence_length=16,
                  decode_length=40, runs=2, warmups=1, output_dir=str(out), timeout_s=30.0,
                  telemetry_interval_s=0.1)
    values.update(changes)
    return RunConfig(**values)


def test_a_run_records_server_gpu_and_client_telemetry(sim, tiny_tokenizer, tmp_path):
    gpu = ClockGpu()
    result = run(config(sim.url, tiny_tokenizer, tmp_path / "run"), gpu_reader=gpu)
    assert result.status == "complete" and gpu.closed
    document = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "telemetry.csv" in document["files"]
    block = document["telemetry"]
    assert block["missing"] == [] and block["gpus"][0]["name"] == "Fake GPU"
    assert block["metrics_url"] == sim.url + "/metrics"
    steps = {s["step"]: s for s in block["steps"]}
    assert set(steps) == {1, 4}
    # the simulator's own gauges: four requests ran together at batch size 4
    assert steps[4]["peak_batch"] == 4 and steps[1]["peak_batch"] == 1
    # energy per token from the fake counter: power x time in flight / tokens that came
    for figure in steps.values():
        assert figure["power_w_mean"] == POWER_W
        assert figure["j_per_output_token"] is not None
        assert figure["output_tokens_per_kwh"] == pytest.approx(
            3.6e6 / figure["j_per_output_token"], rel=1e-3)
        assert figure["client_bound"] is False
    # batch 4 gets about 4x the tokens per second for the same power
    assert steps[4]["j_per_output_token"] < steps[1]["j_per_output_token"] / 2
    with open(tmp_path / "run" / "telemetry.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources = {r["source"] for r in rows}
    assert sources == {"server", "gpu", "client"}
    metrics = {r["metric"] for r in rows}
    assert {"tgi_queue_size", "tgi_batch_current_size", "power_w", "energy_j",
            "loop_lag_p50_ms", "process_cpu_pct"} <= metrics
    times = [float(r["t_s"]) for r in rows]
    assert times == sorted(times)
    # loading it back gives the page its timeline and its telemetry table
    again = RunResult.load(tmp_path / "run")
    assert len(again.telemetry.samples) == len(rows)
    view = results_view([again], folder=tmp_path / "run")
    titles = [title for title, _ in view.figures]
    assert any(t.startswith("Timeline of the run") for t in titles)
    assert titles.index(next(t for t in titles if t.startswith("Timeline"))) == 4  # under steps
    assert "### Telemetry" in view.tables and "Fake GPU" in view.tables
    assert any(p.endswith("telemetry.csv") for p in view.downloads)
    compare = results_view([again, again])
    assert any(t.startswith("Timeline of the run") for t, _ in compare.figures)


def test_a_server_without_metrics_is_said_and_the_run_goes_on(sim, tiny_tokenizer, tmp_path):
    result = run(config(sim.url, tiny_tokenizer, tmp_path / "run", batch_sizes=(2,),
                        metrics_url=sim.url + "/no-metrics-here"), gpu_reader=ClockGpu())
    assert result.status == "complete" and len(result.records) == 4
    block = json.loads((tmp_path / "run" / "run.json").read_text())["telemetry"]
    assert len(block["missing"]) == 1
    assert "No server metrics" in block["missing"][0] and "HTTP 404" in block["missing"][0]
    assert block["steps"][0]["peak_batch"] is None
    assert "Not measured: No server metrics" in results_view([result]).tables


def test_telemetry_off_writes_no_telemetry(sim, tiny_tokenizer, tmp_path):
    result = run(config(sim.url, tiny_tokenizer, tmp_path / "run", batch_sizes=(2,),
                        telemetry_interval_s=0), gpu_reader=ClockGpu())
    assert result.status == "complete"
    document = json.loads((tmp_path / "run" / "run.json").read_text())
    assert document["telemetry"] is None and "telemetry.csv" not in document["files"]
    assert not (tmp_path / "run" / "telemetry.csv").exists()


def test_a_loop_slower_than_the_calibrated_accuracy_flags_the_step(sim, tiny_tokenizer, tmp_path,
                                                                   monkeypatch):
    """The latest calibration of this machine says the client is accurate within 1 ns: any
    real loop lag is above that, so every step is marked as possibly limited by the client."""
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path))
    (tmp_path / "calibration.json").write_text(json.dumps({
        "kind": "calibration", "ended_at": "2026-12-03T12:00:00+00:00",
        "settings": {"tolerance_ms": 0.000001},
        "verdict": {"accurate_concurrency": 1024, "highest_measured": 1024,
                    "stopped_because": None}}))
    result = run(config(sim.url, tiny_tokenizer, tmp_path / "run", batch_sizes=(2,)),
                 gpu_reader=ClockGpu())
    assert result.status == "complete" and result.calibration["tolerance_ms"] == 0.000001
    [figure] = json.loads((tmp_path / "run" / "run.json").read_text())["telemetry"]["steps"]
    assert figure["client_bound"] is True and figure["lag_limit_ms"] == 0.000001
    assert "ms late" in figure["client_bound_reason"]
    view = results_view([result])
    assert "| Decode (token) | 2 ⚠" in view.tables
    assert "the client, not the server, may have limited this step" in view.headline


def test_a_priced_run_with_energy_gets_kwh_beside_the_dollars(sim, tiny_tokenizer, tmp_path):
    result = run(config(sim.url, tiny_tokenizer, tmp_path / "run", gpu_price_per_hour=3.6),
                 gpu_reader=ClockGpu())
    assert result.status == "complete"
    document = json.loads((tmp_path / "run" / "run.json").read_text())
    energy = {s["step"]: s["j_per_output_token"] for s in document["telemetry"]["steps"]}
    for cost in document["cost"]["steps"]:
        # kWh per million output tokens = J per token x 1e6 / 3.6e6
        assert cost["kwh_per_million_output_tokens"] == pytest.approx(
            energy[cost["step"]] / 3.6, rel=1e-6)
        # $3.60/h = $0.001/s: $ per million output tokens = 1000 / output tokens per second
        assert cost["usd_per_million_output_tokens"] == pytest.approx(
            1000.0 / cost["output_tokens_per_s"])
    with open(tmp_path / "run" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["kwh_per_million_output_tokens"] and r["usd_per_million_tokens"] for r in rows)
    view = results_view([RunResult.load(tmp_path / "run")], folder=tmp_path / "run")
    assert "kWh / M output tokens" in view.tables
