"""Telemetry without a server: parsing /metrics (TGI's names from the simulator's own renderer,
vLLM's and SGLang's), the per-step figures (energy per token, peaks, the client-bound verdict),
the sampler with a fake GPU and missing sources, the tables, the timeline chart and the flags."""

from __future__ import annotations

import statistics
import sys

import pytest

from benchmark.cli.run import base_parser, config_from_args
from benchmark.config import RunConfig
from benchmark.core.records import RequestRecord
from benchmark.core.results import RunResult
from benchmark.core.telemetry import NvmlReader, Sampler, SourceMissing
from benchmark.core.telemetry_data import (
    Sample, Telemetry, WorkerUsage, parse_server_metrics, read_telemetry_csv, role_series,
    step_figures, telemetry_csv, worker_samples)
from benchmark.errors import ConfigError
from benchmark.report import charts, tables
from benchmark.simulator.metrics import Metrics

S = 1_000_000_000
ORIGIN = 50 * S

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 12.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.42
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1234.0
"""
SGLANG = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m"} 7.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m"} 2.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="m"} 0.25
"""


def test_tgi_names_from_the_simulators_metrics_page_are_kept():
    metrics = Metrics()
    metrics.set("tgi_queue_size", 5)
    metrics.set("tgi_batch_current_size", 9)
    metrics.observe("tgi_batch_forward_duration", 0.02, method="decode")
    metrics.observe("tgi_request_queue_duration", 0.5)
    metrics.inc("tgi_request_count")
    samples = parse_server_metrics(metrics.render(), t_s=2.0)
    got = {(s.metric, s.labels): s.value for s in samples}
    assert got[("tgi_queue_size", "")] == 5 and got[("tgi_batch_current_size", "")] == 9
    assert got[("tgi_batch_forward_duration_sum", "method=decode")] == pytest.approx(0.02)
    assert got[("tgi_batch_forward_duration_count", "method=decode")] == 1
    assert got[("tgi_request_queue_duration_count", "")] == 1
    assert not any(s.metric.endswith("_bucket") or s.metric == "tgi_request_count"
                   for s in samples)
    assert {s.t_s for s in samples} == {2.0} and {s.source for s in samples} == {"server"}


@pytest.mark.parametrize("text, queue, batch, kv", [(VLLM, 3, 12, 0.42), (SGLANG, 2, 7, 0.25)])
def test_vllm_and_sglang_names_map_to_queue_batch_and_kv_cache(text, queue, batch, kv):
    samples = parse_server_metrics(text, t_s=1.0)
    assert role_series(samples, "queue") == [(1.0, queue)]
    assert role_series(samples, "batch") == [(1.0, batch)]
    assert role_series(samples, "kv_cache") == [(1.0, kv)]
    assert all("prompt_tokens" not in s.metric for s in samples)


def test_a_page_that_is_not_prometheus_text_is_refused():
    with pytest.raises(ValueError):
        parse_server_metrics("tgi_queue_size{oops 3\n", t_s=0.0)
    assert parse_server_metrics("<html><body>Not found</body></html>", t_s=0.0) == []


def test_csv_round_trip():
    samples = [Sample(0.5, "gpu", "power_w", "gpu=0", 301.25),
               Sample(1.0, "server", "tgi_queue_size", "", 3.0)]
    text = telemetry_csv(samples)
    assert text.splitlines()[0] == "t_s,source,metric,labels,value"
    assert read_telemetry_csv(text) == samples


def records_for(step: int, *, start_s: float, tokens: int, gap_s: float, users: int = 1):
    out = []
    for user in range(users):
        sent = ORIGIN + int(start_s * S)
        stamps = [sent + int((k + 1) * gap_s * S) for k in range(tokens)]
        out.append(RequestRecord(step=step, run=0, request=user, scheduled_ns=sent, sent_ns=sent,
                                 token_ns=stamps, end_ns=stamps[-1], output_tokens=tokens,
                                 input_tokens=8, status=200, requested_output_tokens=tokens))
    return out


def telemetry(power_w: float = 200.0, lag_ms: float = 0.1, cpu_pct: float = 20.0,
              energy: bool = True) -> Telemetry:
    data = Telemetry(interval_s=1.0, origin_ns=ORIGIN, gpus=[
        {"index": 0, "name": "Fake GPU", "memory_total_mib": 1000, "energy_counter": energy}])
    for t in range(0, 21):
        data.samples += [Sample(float(t), "gpu", "power_w", "gpu=0", power_w),
                         Sample(float(t), "server", "tgi_queue_size", "", float(t % 4)),
                         Sample(float(t), "server", "tgi_batch_current_size", "", 4.0),
                         Sample(float(t), "client", "loop_cpu_pct", "", cpu_pct),
                         Sample(float(t), "client", "loop_lag_p50_ms", "", lag_ms)]
        if energy:
            data.samples.append(Sample(float(t), "gpu", "energy_j", "gpu=0", power_w * t))
    data.steps = [{"step": 4, "start_s": 0.0, "end_s": 20.0}]
    return data


def test_energy_per_output_token_comes_from_the_counter_and_our_tokens():
    # 4 users, 100 tokens each, one every 0.1 s from t=2 s: 400 tokens in 10 s at 200 W.
    records = records_for(4, start_s=2.0, tokens=100, gap_s=0.1, users=4)
    [figure] = step_figures(telemetry(), records)
    assert figure["energy_j"] == pytest.approx(2000.0, rel=0.02)
    assert figure["energy_output_tokens"] == pytest.approx(400)
    assert figure["j_per_output_token"] == pytest.approx(5.0, rel=0.02)
    assert figure["output_tokens_per_kwh"] == pytest.approx(3.6e6 / 5.0, rel=0.02)
    assert figure["power_w_mean"] == 200.0 and figure["power_w_peak"] == 200.0
    assert figure["peak_queue"] == 3 and figure["peak_batch"] == 4
    assert figure["client_bound"] is False


def test_without_an_energy_counter_there_is_power_but_no_energy_per_token():
    records = records_for(4, start_s=2.0, tokens=100, gap_s=0.1)
    [figure] = step_figures(telemetry(energy=False), records)
    assert figure["power_w_mean"] == 200.0
    assert figure["j_per_output_token"] is None and figure["output_tokens_per_kwh"] is None


@pytest.mark.parametrize("lag_ms, cpu_pct, calibration, bound", [
    (0.1, 20.0, None, False),
    (2.5, 20.0, None, True),                              # above the default 1 ms
    (2.5, 20.0, {"tolerance_ms": 5.0}, False),            # within the calibrated accuracy
    (0.1, 97.0, None, True),                              # the loop's core is saturated
])
def test_client_bound_verdict(lag_ms, cpu_pct, calibration, bound):
    records = records_for(4, start_s=2.0, tokens=100, gap_s=0.1)
    [figure] = step_figures(telemetry(lag_ms=lag_ms, cpu_pct=cpu_pct), records, calibration)
    assert figure["client_bound"] is bound
    if bound:
        assert "the client, not the server, may have limited this step" in \
            figure["client_bound_reason"].lower()


def test_worker_reports_become_one_row_per_worker_and_metric():
    # Worker 1 sent two reports since the last reading (the sampler was late): their seconds
    # add up (0.7 s of CPU in 1 s = 70 %), their lags are pooled. Worker 2's probe never turned.
    reports = [(0, WorkerUsage(wall_s=0.5, cpu_s=0.25, loop_cpu_s=0.2, lags_ms=(0.1, 0.3))),
               (1, WorkerUsage(wall_s=1.0, cpu_s=0.1, loop_cpu_s=0.05)),
               (0, WorkerUsage(wall_s=0.5, cpu_s=0.45, loop_cpu_s=0.4, lags_ms=(0.2, 9.0)))]
    rows = {(s.metric, s.labels): s.value for s in worker_samples(3.0, reports)}
    assert rows == {("worker_cpu_pct", "worker=1"): 70.0,
                    ("worker_loop_cpu_pct", "worker=1"): 60.0,
                    ("worker_loop_lag_p50_ms", "worker=1"): 0.25,
                    ("worker_loop_lag_max_ms", "worker=1"): 9.0,
                    ("worker_cpu_pct", "worker=2"): 10.0,
                    ("worker_loop_cpu_pct", "worker=2"): 5.0}
    assert worker_samples(3.0, []) == []


@pytest.mark.parametrize("busiest, bound", [(40.0, False), (96.0, True)])
def test_a_saturated_worker_makes_the_step_client_bound(busiest, bound):
    # The parent only waits for its workers (20 % of a core, no lag); one worker of two is
    # at ``busiest`` % of its core: the limit is that worker's core, whatever the other does.
    data = telemetry(cpu_pct=20.0)
    for t in range(0, 21):
        data.samples += [Sample(float(t), "client", "worker_loop_cpu_pct", "worker=1", busiest),
                         Sample(float(t), "client", "worker_loop_cpu_pct", "worker=2", 30.0),
                         Sample(float(t), "client", "worker_loop_lag_p50_ms", "worker=1", 0.2),
                         Sample(float(t), "client", "worker_loop_lag_p50_ms", "worker=2", 0.4)]
    [figure] = step_figures(data, records_for(4, start_s=2.0, tokens=100, gap_s=0.1))
    assert figure["client_cpu_pct"] == 20.0 and figure["worker_loop_cpu_pct"] == busiest
    assert figure["worker_loop_lag_p50_ms"] == 0.4  # the latest loop, not a sum
    assert figure["client_bound"] is bound
    if bound:
        assert f"its busiest worker's event loop used {busiest:.0f}% of a CPU core" in \
            figure["client_bound_reason"]
        assert "its event loop used" not in figure["client_bound_reason"]


def test_without_workers_the_worker_figures_are_empty():
    [figure] = step_figures(telemetry(), records_for(4, start_s=2.0, tokens=100, gap_s=0.1))
    assert figure["worker_loop_cpu_pct"] is None and figure["worker_loop_lag_p50_ms"] is None


def run_with(data: Telemetry | None, records) -> RunResult:
    config = RunConfig(tokenizer_name="tiny", batch_sizes=(4,), sequence_length=8,
                       decode_length=100, runs=1)
    return RunResult(run_id="20261203-120000-tiny-abcd", config=config, status="complete",
                     records=records, telemetry=data)


def test_tables_flag_a_client_bound_step_and_say_what_was_not_measured():
    data = telemetry(lag_ms=3.0)
    data.missing.append("No server metrics: http://x/metrics could not be read (HTTP 404).")
    result = run_with(data, records_for(4, start_s=2.0, tokens=100, gap_s=0.1))
    text = tables.markdown_tables(result)
    assert "### Telemetry" in text and "Fake GPU" in text
    assert "| Decode (token) | 4 ⚠" in text and "may have limited this step" in text
    assert "Not measured: No server metrics" in text and "HTTP 404" in text
    assert any("may have limited this step" in s for s in tables.headline(result))
    assert any("J " in s and "per output token" in s for s in tables.headline(result))


def test_tables_without_telemetry_are_unchanged():
    result = run_with(None, records_for(4, start_s=2.0, tokens=100, gap_s=0.1))
    text = tables.markdown_tables(result)
    assert "### Telemetry" not in text and "⚠" not in text


def test_timeline_rows_follow_the_sources_present():
    records = records_for(4, start_s=2.0, tokens=100, gap_s=0.1, users=4)
    full = charts.timeline([run_with(telemetry(), records)])
    names = [t.name for t in full.data]
    assert "requests in flight (measured)" in names and "server queue" in names
    assert "GPU power W (all GPUs)" in names and "output tokens/s (measured)" in names
    in_flight = next(t for t in full.data if t.name == "requests in flight (measured)")
    assert max(in_flight.y) == 4
    bare = charts.timeline([run_with(None, records)])
    assert [t.name for t in bare.data] == ["requests in flight (measured)",
                                          "output tokens/s (measured)"]
    assert "timeline" in [name for name in charts.CHART_FUNCTIONS]


class FakeGpu:
    def __init__(self, fail_open: str | None = None):
        self.fail_open = fail_open
        self.closed = False

    def open(self):
        if self.fail_open:
            raise SourceMissing(self.fail_open)
        return [{"index": 0, "name": "Fake GPU", "memory_total_mib": 80000,
                 "energy_counter": True}]

    def read(self):
        return [(0, "power_w", 250.0), (0, "energy_j", 1000.0)]

    def close(self):
        self.closed = True


def test_sampler_reads_the_gpu_and_says_when_metrics_are_missing():
    sampler = Sampler(interval_s=1.0, origin_ns=ORIGIN, metrics_url="http://127.0.0.1:9/metrics",
                      gpu_reader=FakeGpu())
    sampler._open()
    sampler.sample_once()
    sampler.sample_once()
    sampler._close()
    data = sampler.data
    assert data.gpus[0]["name"] == "Fake GPU"
    gpu = [s for s in data.samples if s.source == "gpu"]
    assert {(s.metric, s.labels, s.value) for s in gpu} == {("power_w", "gpu=0", 250.0),
                                                          ("energy_j", "gpu=0", 1000.0)}
    assert any(s.metric == "process_cpu_pct" for s in data.samples)
    assert len(data.missing) == 1 and "No server metrics" in data.missing[0]
    assert "127.0.0.1:9/metrics" in data.missing[0]


def test_a_missing_gpu_is_a_sentence_not_an_error():
    sampler = Sampler(interval_s=1.0, origin_ns=ORIGIN, metrics_url=None,
                      gpu_reader=FakeGpu(fail_open="No GPU readings: NVML found no GPU."))
    sampler.start()
    sampler.stop()
    assert sampler.data.missing == ["No GPU readings: NVML found no GPU."]
    assert not any(s.source == "gpu" for s in sampler.data.samples)


def test_nvml_reader_without_the_library_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)   # import pynvml raises ImportError
    with pytest.raises(SourceMissing, match="nvidia-ml-py"):
        NvmlReader().open()


def test_telemetry_flags():
    args = base_parser().parse_args(["--tokenizer-name", "t", "--telemetry-interval", "0",
                                     "--metrics-url", "http://h:9400/metrics"])
    config = config_from_args(args)
    assert config.telemetry_interval_s == 0 and config.metrics_url == "http://h:9400/metrics"
    assert config_from_args(base_parser().parse_args(["--tokenizer-name", "t"])
                            ).telemetry_interval_s == 1.0
    for bad, words in (("-1", "at least 0"), ("0.01", "0 (off) or at least 0.1"),
                       ("soon", "must be a number")):
        with pytest.raises(ConfigError, match="Telemetry interval") as err:
            config_from_args(base_parser().parse_args(["--tokenizer-name", "t",
                                                       "--telemetry-interval", bad]))
        assert words in err.value.message and err.value.field == "telemetry_interval_s"
    with pytest.raises(ConfigError, match="Metrics URL must look like"):
        config_from_args(base_parser().parse_args(["--tokenizer-name", "t",
                                                   "--metrics-url", "localhost:9400"]))


def probe_while(busy_ms: float) -> tuple[list[float], float | None]:
    """Run a LoopProbe for 0.4 s beside a task that keeps the loop busy ``busy_ms`` per turn."""
    import asyncio
    import time

    from benchmark.core.telemetry import LoopProbe

    probe = LoopProbe(period_s=0.01)

    async def busy():
        while True:
            await asyncio.sleep(0)
            end = time.perf_counter() + busy_ms / 1000
            while time.perf_counter() < end:
                pass

    async def main():
        tasks = [asyncio.create_task(probe.run())]
        if busy_ms:
            tasks.append(asyncio.create_task(busy()))
        await asyncio.sleep(0.05)
        probe.take()
        await asyncio.sleep(0.4)
        for task in tasks:
            task.cancel()
        return probe.take()

    return asyncio.run(main())


def test_the_loop_probe_sees_a_busy_loop():
    quiet_lags, _ = probe_while(0)
    busy_lags, busy_cpu = probe_while(20)
    assert quiet_lags and busy_lags
    # every turn of the busy loop holds it 20 ms: the probe waits at least that long
    assert min(busy_lags) >= 15 and statistics.median(busy_lags) > statistics.median(quiet_lags)
    assert busy_cpu is not None and busy_cpu > 20
