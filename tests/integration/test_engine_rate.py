"""Rate mode (open loop) against the simulated server: the schedule is kept, saved, replayable;
the wait behind --max-concurrency is measured; requests outliving their step are counted."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.simulator import SimulatorConfig, run_in_thread, trace_rows

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def sim(tiny_tokenizer, tmp_path_factory):
    trace = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, trace=str(trace), **FAST)) as s:
        s.trace_path = trace
        yield s


def rate_config(url: str, tokenizer: str, out: Path, **changes) -> RunConfig:
    values = dict(tokenizer_name=tokenizer, url=url, mode="rate", rates=(40,), duration_s=1.0,
                  sequence_length=8, decode_length=4, output_dir=str(out), timeout_s=30.0)
    values.update(changes)
    return RunConfig(**values)


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "requests.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_constant_rate_sends_on_schedule_and_reports_each_rate(sim, tiny_tokenizer, tmp_path):
    out = tmp_path / "run"
    result = run(rate_config(sim.url, tiny_tokenizer, out, rates=(40, 20.0),
                             arrivals="constant"))
    assert result.status == "complete"
    rows = read_rows(out)
    by_step = {step: [r for r in rows if r["batch_size"] == step] for step in ("20", "40")}
    # 1 s at 40/s: sends at 25, 50, ... 975 ms (the next would be at 1 s); at 20/s every 50 ms.
    assert len(by_step["40"]) == 39 and len(by_step["20"]) == 19
    assert [float(r["scheduled_ms"]) for r in by_step["40"]][:3] == [25.0, 50.0, 75.0]
    for row in rows:
        assert row["mode"] == "rate" and row["error"] == ""
        assert float(row["sent_ms"]) >= float(row["scheduled_ms"])
        assert float(row["schedule_lag_ms"]) == pytest.approx(
            float(row["sent_ms"]) - float(row["scheduled_ms"]), abs=1e-3)
        assert float(row["client_queue_ms"]) == 0.0
        assert float(row["queued_e2e_ms"]) >= float(row["e2e_ms"])
    sent = {r["request_id"] for r in rows}
    assert sent <= {row["request_id"] for row in trace_rows(sim.trace_path)}
    steps = {s.step: s for s in result.steps()}
    assert list(steps) == [20, 40]  # the rates, in order, whole ones as ints
    assert steps[40].value("offered_rate_per_s") == 40
    assert steps[40].value("scheduled_rate_per_s") == pytest.approx(40)
    assert steps[40].value("sent_rate_per_s") > 0
    assert steps[40].value("completed_rate_per_s") > 0
    assert steps[40].metric("schedule_lag_ms").count == 39
    saved = json.loads((out / "run.json").read_text())
    assert saved["config"]["mode"] == "rate" and saved["config"]["rates"] == [20, 40]
    assert isinstance(saved["config"]["schedule_seed"], int)
    summary = (out / "summary.csv").read_text()
    assert "40,sent_rate_per_s,requests/s," in summary


def test_a_saved_schedule_seed_replays_the_same_send_times(sim, tiny_tokenizer, tmp_path):
    first = run(rate_config(sim.url, tiny_tokenizer, tmp_path / "a", rates=(50,)))
    seed = first.config.schedule_seed
    assert seed is not None
    again = run(rate_config(sim.url, tiny_tokenizer, tmp_path / "b", rates=(50,),
                            schedule_seed=seed))
    other = run(rate_config(sim.url, tiny_tokenizer, tmp_path / "c", rates=(50,),
                            schedule_seed=seed + 1))
    times = [[r["scheduled_ms"] for r in read_rows(tmp_path / name)] for name in "abc"]
    assert times[0] == times[1]
    assert times[0] != times[2]


def test_max_concurrency_makes_arrivals_wait_and_the_wait_is_measured(tiny_tokenizer, tmp_path):
    slow = dict(FAST, decode_base_ms=40.0)  # about 160 ms a request
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **slow)) as server:
        result = run(rate_config(server.url, tiny_tokenizer, tmp_path / "run", rates=(50,),
                                 arrivals="constant", duration_s=None, requests=6,
                                 max_concurrency=1))
    assert result.status == "complete"
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 6 and all(r["error"] == "" for r in rows)
    waits = [float(r["client_queue_ms"]) for r in rows]
    assert waits[0] < 20 and waits[-1] > 300  # one at a time: the last waits for five others
    for row in rows:
        assert float(row["schedule_lag_ms"]) >= float(row["client_queue_ms"])
    step = result.steps()[0]
    assert step.value("client_queue_ms", "max") == pytest.approx(max(waits), abs=1e-3)
    assert step.value("queued_e2e_latency_ms", "max") > step.value("e2e_latency_ms", "max")


def test_requests_outliving_their_step_are_counted_incomplete(tiny_tokenizer, tmp_path):
    stuck = dict(FAST, decode_base_ms=2_000.0)  # nothing finishes
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **stuck)) as server:
        # Sends at 0.5, 1.0 and 1.5 s; each times out 0.8 s later: the first two before the
        # step's 2 s are up (timeouts), the last after (incomplete).
        result = run(rate_config(server.url, tiny_tokenizer, tmp_path / "run", rates=(2,),
                                 arrivals="constant", duration_s=2.0, timeout_s=0.8))
    rows = read_rows(tmp_path / "run")
    assert [r["error_kind"] for r in rows] == ["timeout", "timeout", "incomplete"]
    step = result.steps()[0]
    assert (step.requests, step.ok, step.errors, step.timeouts, step.incomplete) == (3, 0, 3, 3, 1)


def test_stopping_a_rate_step_keeps_what_was_sent_and_marks_requests_in_flight(
        tiny_tokenizer, tmp_path):
    import threading

    slow = dict(FAST, decode_base_ms=600.0)  # about 2.4 s a request
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **slow)) as server:
        cancel = threading.Event()
        timer = threading.Timer(1.0, cancel.set)
        timer.start()
        result = run(rate_config(server.url, tiny_tokenizer, tmp_path / "run", rates=(20,),
                                 arrivals="constant", duration_s=30.0), cancel=cancel)
    assert result.status == "cancelled"
    rows = read_rows(tmp_path / "run")
    assert 5 <= len(rows) < 600  # sent until the stop, none after
    assert {r["error_kind"] for r in rows} == {"cancelled"}  # none could end within 1 s
