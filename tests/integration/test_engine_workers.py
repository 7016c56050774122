"""--workers N against the simulated server: the merged files are those of one run (same
columns, same request count, unique ids), rate mode keeps the parent's one schedule, the
telemetry reads each worker's own CPU and loop, and a worker that dies ends the run "failed"
with what was measured and a sentence saying so."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.core.patterns import RateSchedule, arrival_offsets, step_seed
from benchmark.core.progress import RequestsDone
from benchmark.simulator import SimulatorConfig, run_in_thread

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def sim(tiny_tokenizer):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as s:
        yield s


def config(url: str, tokenizer: str, out: Path, **changes) -> RunConfig:
    values = dict(tokenizer_name=tokenizer, url=url, sequence_length=8, decode_length=4,
                  output_dir=str(out), timeout_s=30.0)
    values.update(changes)
    return RunConfig(**values)


def rows(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(folder / "requests.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def shape(folder: Path) -> dict:
    """What must not depend on the worker count: columns, rows per step, id form, run.json keys."""
    columns, lines = rows(folder)
    data = json.loads((folder / "run.json").read_text())
    ids = [line["request_id"] for line in lines]
    assert len(ids) == len(set(ids)), "request ids repeat"
    per_step: dict[str, int] = {}
    for line in lines:
        step = line[columns[0]]  # batch_size, users or rate
        per_step[step] = per_step.get(step, 0) + 1
    return {"columns": columns, "per_step": per_step, "status": data["status"],
            "keys": sorted(data), "errors": sum(1 for line in lines if line["error"])}


@pytest.mark.parametrize("mode,changes", [
    ("rounds", dict(batch_sizes=(1, 5), runs=2, warmups=1)),
    ("concurrency", dict(batch_sizes=(3,), requests=20)),
    ("rate", dict(rates=(60,), requests=30, arrivals="constant", schedule_seed=5)),
])
def test_two_workers_write_the_files_one_process_writes(sim, tiny_tokenizer, tmp_path, mode,
                                                         changes):
    one = run(config(sim.url, tiny_tokenizer, tmp_path / "one", mode=mode, **changes))
    two = run(config(sim.url, tiny_tokenizer, tmp_path / "two", mode=mode, workers=2, **changes))
    assert one.status == two.status == "complete", two.message
    assert shape(tmp_path / "one") == shape(tmp_path / "two")
    saved = json.loads((tmp_path / "two" / "run.json").read_text())
    assert saved["config"]["workers"] == 2
    if mode == "rounds":  # the same request ids as one process: step-run-request
        assert ([r["request_id"].split("-", 2)[-1] for r in rows(tmp_path / "one")[1]]
                == [r["request_id"].split("-", 2)[-1] for r in rows(tmp_path / "two")[1]])


def test_rate_workers_send_on_the_parents_one_schedule(sim, tiny_tokenizer, tmp_path):
    seed = 11
    result = run(config(sim.url, tiny_tokenizer, tmp_path, mode="rate", rates=(80,),
                        requests=60, arrivals="poisson", schedule_seed=seed, workers=2))
    assert result.status == "complete", result.message
    measured = sorted((r for r in result.records if not r.warmup), key=lambda r: r.request)
    assert [r.request for r in measured] == list(range(1, 61))
    planned = arrival_offsets(RateSchedule(rate=80.0, arrivals="poisson",
                                           seed=step_seed(seed, 1), requests=60))
    # Every record's intended send time is the parent's schedule from one common start.
    start = measured[0].step_start_ns
    assert all(r.step_start_ns == start for r in measured)
    assert [r.scheduled_ns - start for r in measured] == list(planned)
    # ...and each request went out at (not before) its time: the order at the server is the
    # schedule's, up to the lateness the file shows.
    assert all(r.sent_ns is not None and r.sent_ns >= r.scheduled_ns for r in measured)


def test_telemetry_reads_each_workers_own_cpu_and_loop(sim, tiny_tokenizer, tmp_path):
    # The parent only deals and merges: the sending happens in the workers, so each reports its
    # process's CPU, its event loop's and the loop's lag, one row per worker in telemetry.csv,
    # and the step's figures (and client-bound verdict) see the busiest worker.
    result = run(config(sim.url, tiny_tokenizer, tmp_path, mode="concurrency", batch_sizes=(4,),
                        requests=80, decode_length=20, workers=2, telemetry_interval_s=0.1))
    assert result.status == "complete", result.message
    with open(tmp_path / "telemetry.csv", newline="", encoding="utf-8") as handle:
        client = [r for r in csv.DictReader(handle) if r["source"] == "client"]
    found = {(r["metric"], r["labels"]) for r in client}
    for worker in ("worker=1", "worker=2"):
        assert {("worker_cpu_pct", worker), ("worker_loop_cpu_pct", worker),
                ("worker_loop_lag_p50_ms", worker), ("worker_loop_lag_max_ms", worker)} <= found
    loop = [float(r["value"]) for r in client if r["metric"] == "worker_loop_cpu_pct"]
    assert max(loop) > 0 and all(0 <= v < 200 for v in loop)
    [figure] = json.loads((tmp_path / "run.json").read_text())["telemetry"]["steps"]
    assert figure["worker_loop_cpu_pct"] is not None and figure["worker_loop_cpu_pct"] > 0
    assert figure["worker_loop_lag_p50_ms"] is not None
    assert ("loop_cpu_pct", "") in found  # the parent's own readings stay


def test_a_worker_that_dies_fails_the_run_with_its_partial_records(tiny_tokenizer, tmp_path):
    slow = dict(FAST, decode_base_ms=50.0)
    killed: list[int] = []

    def kill_one(event) -> None:
        if isinstance(event, RequestsDone) and event.done >= 4 and not killed:
            worker = next(p for p in multiprocessing.active_children()
                          if p.name == "benchmark-worker-2")
            killed.append(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)

    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **slow)) as s:
        result = run(config(s.url, tiny_tokenizer, tmp_path, mode="concurrency",
                            batch_sizes=(4,), duration_s=30.0, decode_length=8, workers=2),
                     on_progress=kill_one)
    assert killed
    assert result.status == "failed"
    assert "worker process 2 of 2 was killed by signal 9" in (result.message or "")
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved["status"] == "failed" and saved["message"] == result.message
    _, lines = rows(tmp_path)
    assert any(not line["error"] for line in lines)  # what was measured before is kept
    # The surviving worker's users (1 and 3 of 4: users are dealt round-robin) are all there.
    assert {line["run"] for line in lines} >= {"1", "3"}


def test_simulator_workers_share_one_port_and_one_trace(simulator_process, tiny_tokenizer,
                                                        tmp_path):
    """``python -m benchmark.simulator --workers 2``: one URL, each process with half the
    batch limits (/info says so), every request in the one trace file as a whole line."""
    import httpx

    from benchmark.simulator import trace_rows

    trace = tmp_path / "trace.jsonl"
    url = simulator_process(tokenizer=tiny_tokenizer, workers=2, max_concurrent_requests=64,
                            trace=str(trace), **FAST)
    assert httpx.get(url + "/info").json()["max_concurrent_requests"] == 32
    result = run(config(url, tiny_tokenizer, tmp_path / "out", mode="concurrency",
                        batch_sizes=(8,), requests=40, workers=2))
    assert result.status == "complete", result.message
    ids = {r.request_id for r in result.records}
    traced = [row for row in trace_rows(trace) if row.get("request_id") in ids]
    assert len(traced) == 40


def test_cancel_stops_every_worker_and_keeps_what_they_measured(tiny_tokenizer, tmp_path):
    import threading

    cancel = threading.Event()
    slow = dict(FAST, decode_base_ms=50.0)

    def stop_after_some(event) -> None:
        if isinstance(event, RequestsDone) and event.done >= 4:
            cancel.set()

    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **slow)) as s:
        result = run(config(s.url, tiny_tokenizer, tmp_path, mode="concurrency",
                            batch_sizes=(4,), duration_s=30.0, decode_length=8, workers=2),
                     on_progress=stop_after_some, cancel=cancel)
    assert result.status == "cancelled"
    _, lines = rows(tmp_path)
    assert sum(1 for line in lines if not line["error"]) >= 4
    assert not [p for p in multiprocessing.active_children()
                if p.name.startswith("benchmark-worker-")]  # none left running
