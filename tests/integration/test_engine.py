"""The engine against the simulated TGI server: every API, both load patterns, early EOS, a 422,
a server that dies mid-run, cancellation, the files, and a loose accuracy check."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest

from benchmark.config import RunConfig, SamplingParams
from benchmark.core.engine import run
from benchmark.errors import ServerLimitError, ServerUnreachable
from benchmark.core.results import RunResult
from benchmark.simulator import SimulatorConfig, run_in_thread, trace_rows

# Fast timing: a round of 5 tokens takes a few tens of milliseconds.
FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def sim(tiny_tokenizer, tmp_path_factory):
    trace = tmp_path_factory.mktemp("trace") / "trace.jsonl"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, trace=str(trace), **FAST)) as s:
        s.trace_path = trace
        yield s


def config_for(url: str, tokenizer: str, out: Path, **changes) -> RunConfig:
    values = dict(tokenizer_name=tokenizer, url=url, batch_sizes=(1, 3), sequence_length=16,
                  decode_length=5, runs=2, warmups=1, output_dir=str(out), timeout_s=30.0)
    values.update(changes)
    return RunConfig(**values)


class Events(list):
    def __call__(self, event):
        self.append(event)

    def kinds(self):
        return [e["event"] for e in self]


@pytest.mark.parametrize("api", ["tgi", "openai-chat", "openai-completions"])
def test_each_api_measures_every_request(sim, tiny_tokenizer, tmp_path, api):
    events = Events()
    result = run(config_for(sim.url, tiny_tokenizer, tmp_path / "run", api=api),
                 on_progress=events)
    assert result.status == "complete" and result.complete and result.simulated
    records = result.records
    assert len(records) == 2 * (1 + 3) and not any(r.warmup for r in records)
    for r in records:
        assert r.ok, r.error
        assert r.status == 200
        assert r.sent_ns >= r.scheduled_ns
        assert r.token_ns and r.token_ns[0] > r.sent_ns and r.end_ns >= r.token_ns[-1]
        assert r.ttft_ms > 0 and r.e2e_ms >= r.ttft_ms
        assert (r.output_tokens or len(r.token_ns)) == 5
        assert r.requested_output_tokens == 5
    if api != "openai-completions":  # TGI's completions stream carries no usage
        assert {r.input_tokens for r in records} == {16}
    # every request went out with its id, warm-ups included, and the server saw it
    ids = {r.request_id for r in records}
    assert len(ids) == len(records)
    assert all(i.startswith(result.run_id + "-") for i in ids)
    seen = {row["request_id"] for row in trace_rows(sim.trace_path)}
    assert ids <= seen
    prefix = records[0].request_id.rsplit("-", 3)[0]   # <run id>-<random>
    assert all(i.startswith(prefix + "-") for i in ids)
    assert f"{prefix}-3-w1-2" in seen
    # progress stream: start ... done, one round_done per round
    kinds = events.kinds()
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("step_start") == kinds.count("step_done") == 2
    assert kinds.count("round_done") == 2 * (2 + 1)
    assert events[-1]["status"] == "complete" and events[0]["planned_requests"] == 12
    assert events[0]["simulated"] is True


def test_server_and_client_stamps_agree(sim, tiny_tokenizer, tmp_path):
    """Same monotonic clock: the server's token stamps come just before ours."""
    result = run(config_for(sim.url, tiny_tokenizer, tmp_path / "run", batch_sizes=(2,)))
    rows = {row["request_id"]: row for row in trace_rows(sim.trace_path)}
    for r in result.records:
        row = rows[r.request_id]
        assert row["arrived_ns"] >= r.sent_ns
        assert row["output_tokens"] == r.output_tokens
        lag_ms = [(c - s) / 1e6 for c, s in zip(r.token_ns, row["token_ns"])]
        assert all(-1.0 < lag < 200 for lag in lag_ms)


def test_files_hold_every_column(sim, tiny_tokenizer, tmp_path):
    out = tmp_path / "files"
    result = run(config_for(sim.url, tiny_tokenizer, out))
    document = json.loads((out / "run.json").read_text())
    assert document["complete"] is True and document["simulated"] is True
    assert document["config"]["batch_sizes"] == [1, 3]
    assert document["server_info"]["model_id"]
    with (out / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for column in ("batch_size", "run", "request", "ttft_ms", "e2e_ms", "decode_ms",
                   "token_latency_ms", "input_tokens", "output_tokens", "finish_reason",
                   "error"):
        assert column in rows[0]
    assert {row["batch_size"] for row in rows} == {"1", "3"}
    with (out / "summary.csv").open() as fh:
        summary = list(csv.DictReader(fh))
    for column in ("avg", "min", "max", "p50", "p90", "p99"):
        assert column in summary[0]
    again = RunResult.load(out)
    assert len(again.records) == len(result.records) and again.status == "complete"


def test_concurrency_mode_with_a_request_count(sim, tiny_tokenizer, tmp_path):
    events = Events()
    config = config_for(sim.url, tiny_tokenizer, tmp_path / "c", mode="concurrency",
                        batch_sizes=(2, 3), requests=7)
    result = run(config, on_progress=events)
    assert result.status == "complete"
    for users in (2, 3):
        records = [r for r in result.records if r.step == users]
        assert len(records) == 7 and all(r.ok for r in records)
        assert {r.run for r in records} <= set(range(1, users + 1))
        pairs = {(r.run, r.request) for r in records}
        assert len(pairs) == 7
    done = [e for e in events if e["event"] == "requests_done"]
    assert done and done[-1]["done"] == 7 and done[-1]["total"] == 7
    assert "round_done" not in events.kinds()


def test_concurrency_mode_with_a_duration(sim, tiny_tokenizer, tmp_path):
    config = config_for(sim.url, tiny_tokenizer, tmp_path / "d", mode="concurrency",
                        batch_sizes=(2,), duration_s=0.4)
    started = time.perf_counter()
    result = run(config)
    assert time.perf_counter() - started < 10
    assert result.status == "complete"
    assert len(result.records) >= 2 and all(r.ok for r in result.records)
    first_sent = min(r.sent_ns for r in result.records)
    assert all(r.scheduled_ns - first_sent < 0.4e9 + 50e6 for r in result.records)


def test_early_eos_counts_what_came_and_warns(tiny_tokenizer, tmp_path):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, eos_probability=0.3,
                                       **FAST)) as s:
        events = Events()
        result = run(config_for(s.url, tiny_tokenizer, tmp_path / "eos", batch_sizes=(4,),
                                decode_length=12, runs=3), on_progress=events)
    short = [r for r in result.records if r.output_tokens < 12]
    assert short and all(r.finish_reason == "eos_token" for r in short)
    assert all(r.ok for r in result.records)
    assert any("shorter than asked" in w for w in result.warnings)
    assert any(e["event"] == "warning" and "shorter" in e["message"] for e in events)
    step = result.steps()[0]
    assert step.short_outputs == len(short)
    assert step.output_tokens == sum(r.output_tokens for r in result.records)


def test_a_422_is_recorded_and_stops_a_run_that_cannot_succeed(sim, tiny_tokenizer, tmp_path):
    out = tmp_path / "refused"
    events = Events()
    config = config_for(sim.url, tiny_tokenizer, out, sampling=SamplingParams(top_n_tokens=8),
                        batch_sizes=(2, 3), warmups=0)
    result = run(config, on_progress=events)
    assert result.status == "failed"
    assert "422" in result.message and "top_n_tokens" in result.message
    # the first round was refused: recorded, and not repeated (nor batch size 3 tried)
    assert len(result.records) == 2
    assert all(r.status == 422 and r.error_kind == "http" for r in result.records)
    assert "Input validation error" in result.records[0].error
    with (out / "requests.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all("422" in row["error"] for row in rows)
    assert json.loads((out / "run.json").read_text())["complete"] is False
    assert events.kinds().count("round_done") == 1
    assert events[-1]["status"] == "failed" and "422" in events[-1]["message"]


def test_a_refused_warm_up_stops_before_the_measured_rounds(sim, tiny_tokenizer, tmp_path):
    config = config_for(sim.url, tiny_tokenizer, tmp_path / "w422",
                        sampling=SamplingParams(top_n_tokens=8))
    result = run(config)
    assert result.status == "failed" and "422" in result.message
    assert result.records == []  # warm-ups are never in the files
    assert any("warm-up" in w and "422" in w for w in result.warnings)


def test_cancel_between_rounds_keeps_what_was_measured(sim, tiny_tokenizer, tmp_path):
    cancel = threading.Event()
    events = Events()

    def on_progress(event):
        events(event)
        if event["event"] == "round_done" and event["step"] == 3 and not event["warmup"]:
            cancel.set()

    out = tmp_path / "cancelled"
    result = run(config_for(sim.url, tiny_tokenizer, out, runs=4), on_progress=on_progress,
                 cancel=cancel)
    assert result.status == "cancelled" and not result.complete
    assert len([r for r in result.records if r.step == 1]) == 4
    assert 3 <= len([r for r in result.records if r.step == 3]) < 12
    saved = json.loads((out / "run.json").read_text())
    assert saved["status"] == "cancelled" and saved["complete"] is False
    assert events[-1] == {"event": "done", "status": "cancelled", "message": result.message,
                          "output_dir": str(out)}


def test_cancel_mid_round_marks_requests_in_flight(tiny_tokenizer, tmp_path):
    slow = dict(FAST, decode_base_ms=20.0)
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **slow)) as s:
        cancel = threading.Event()
        config = config_for(s.url, tiny_tokenizer, tmp_path / "mid", batch_sizes=(2,),
                            decode_length=200, runs=3, warmups=0)
        timer = threading.Timer(0.5, cancel.set)
        timer.start()
        started = time.perf_counter()
        result = run(config, cancel=cancel)
        elapsed = time.perf_counter() - started
    assert result.status == "cancelled"
    assert elapsed < 3.5  # a round takes ~4 s: the load stopped, it did not run to the end
    cancelled = [r for r in result.records if r.error_kind == "cancelled"]
    assert len(cancelled) == 2 and all(len(r.token_ns) > 0 for r in cancelled)
    assert result.steps()[0].cancelled == 2 and result.steps()[0].errors == 0


def test_server_that_dies_mid_run_fails_the_run_and_keeps_records(
        simulator_process, tiny_tokenizer, tmp_path):
    url = simulator_process(tokenizer=tiny_tokenizer, **FAST)
    proc = simulator_process.procs[-1]
    events = Events()

    def on_progress(event):
        events(event)
        if event["event"] == "round_done" and event["step"] == 3 and event["warmup"]:
            proc.kill()
            proc.wait(10)

    out = tmp_path / "died"
    result = run(config_for(url, tiny_tokenizer, out, batch_sizes=(1, 3, 4)),
                 on_progress=on_progress)
    assert result.status == "failed"
    assert url in result.message and "stopped answering" in result.message
    kept = [r for r in result.records if r.step == 1]
    assert len(kept) == 2 and all(r.ok for r in kept)
    broken = [r for r in result.records if r.step == 3]
    assert broken and all(r.error_kind == "connection" for r in broken)
    assert not any(r.step == 4 for r in result.records)
    saved = json.loads((out / "run.json").read_text())
    assert saved["status"] == "failed" and saved["complete"] is False
    assert events[-1]["event"] == "done" and events[-1]["status"] == "failed"


def test_nothing_listening_is_a_clear_error(tiny_tokenizer, tmp_path):
    from support.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable) as info:
        run(config_for(url, tiny_tokenizer, tmp_path / "x"))
    assert url in str(info.value) and "benchmark.simulator" in str(info.value)
    assert not (tmp_path / "x").exists()


def test_lengths_above_the_servers_limits_are_refused(sim, tiny_tokenizer, tmp_path):
    with pytest.raises(ServerLimitError) as info:
        run(config_for(sim.url, tiny_tokenizer, tmp_path / "x", sequence_length=5000))
    assert "max_input_tokens" in str(info.value)


def test_reported_latencies_match_a_server_of_known_timing(simulator_process, tiny_tokenizer,
                                                          tmp_path):
    """Prefill 50 ms, 20 ms per decoded token, one request at a time.

    The client can never report less than the server takes (lower bounds), and what it reports
    matches the server's own stamps (same monotonic clock, from its trace) to a few ms. Upper
    bounds against the nominal timing are loose: on a busy 2-core CI machine the simulator's
    own sleeps overshoot, which is the server being slow, not the client measuring wrong.
    """
    trace = tmp_path / "trace.jsonl"
    url = simulator_process(tokenizer=tiny_tokenizer, prefill_base_ms=50, prefill_per_token_ms=0,
                            decode_base_ms=20, decode_per_seq_ms=0,
                            decode_per_context_token_us=0, trace=str(trace))
    result = run(config_for(url, tiny_tokenizer, tmp_path / "acc", batch_sizes=(1,),
                            decode_length=10, runs=4))
    assert result.status == "complete"
    step = result.steps()[0]
    ttft = step.metric("prefill_latency_ms")
    token = step.metric("decode_token_latency_ms")
    assert 48 <= ttft.min and ttft.p50 <= 50 + 40, ttft
    assert 19 <= token.min and token.p50 <= 20 + 15, token
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    client_minus_server = []
    for r in result.records:
        row = rows[r.request_id]
        server_ttft_ms = (row["token_ns"][0] - row["arrived_ns"]) / 1e6
        client_minus_server.append(r.ttft_ms - server_ttft_ms)
        server_token_ms = (row["token_ns"][-1] - row["token_ns"][0]) / 1e6 / (len(row["token_ns"]) - 1)
        assert r.token_latency_ms == pytest.approx(server_token_ms, abs=15)
    client_minus_server.sort()
    assert -1 < client_minus_server[len(client_minus_server) // 2] < 15, client_minus_server


def test_timeouts_are_records_not_dropped(tiny_tokenizer, tmp_path):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer,
                                       **dict(FAST, decode_base_ms=50.0))) as s:
        result = run(config_for(s.url, tiny_tokenizer, tmp_path / "t", batch_sizes=(2,),
                                decode_length=40, runs=1, warmups=0, timeout_s=0.4))
    # Every request timed out: nothing was measured to the end, so the run failed and says so.
    assert result.status == "failed"
    assert "Every measured request failed" in result.message
    assert "2 timed out" in result.message
    assert RunResult.load(tmp_path / "t").status == "failed"
    assert len(result.records) == 2
    for r in result.records:
        assert r.error_kind == "timeout" and r.error == "timeout after 0.4 s"
        assert r.token_ns  # the tokens that came before the timeout are kept
    assert result.steps()[0].timeouts == 2
    assert any("timeout after 0.4 s" in w for w in result.warnings)


def test_a_server_counting_other_prompt_lengths_is_warned_about(tiny_tokenizer, tmp_path):
    """Without the model's tokenizer the simulator counts bytes / 4: not what was asked."""
    with run_in_thread(SimulatorConfig(**FAST)) as s:
        result = run(config_for(s.url, tiny_tokenizer, tmp_path / "w", batch_sizes=(1,),
                                sequence_length=40))
    counted = {r.input_tokens for r in result.records}
    assert 40 not in counted
    assert any("prompt tokens instead of the 40 asked" in w for w in result.warnings)
    step = result.steps()[0]
    assert step.input_tokens == sum(counted_r.input_tokens for counted_r in result.records)


def test_server_that_dies_under_sustained_load_fails_the_run(simulator_process, tiny_tokenizer,
                                                             tmp_path):
    url = simulator_process(tokenizer=tiny_tokenizer, **FAST)
    proc = simulator_process.procs[-1]

    def on_progress(event):
        if event["event"] == "requests_done" and event["done"] >= 3 and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    started = time.perf_counter()
    result = run(config_for(url, tiny_tokenizer, tmp_path / "died", mode="concurrency",
                            batch_sizes=(3,), duration_s=30.0), on_progress=on_progress)
    assert time.perf_counter() - started < 20  # it did not keep hammering a dead URL
    assert result.status == "failed" and "stopped answering" in result.message
    assert any(r.ok for r in result.records)
    assert any(r.error_kind == "connection" for r in result.records)


def test_batch_above_the_servers_concurrency_limit_is_warned_and_429s_recorded(
        tiny_tokenizer, tmp_path):
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, max_concurrent_requests=2,
                                       **dict(FAST, decode_base_ms=10.0))) as s:
        result = run(config_for(s.url, tiny_tokenizer, tmp_path / "429", batch_sizes=(4,),
                                runs=1, warmups=0, decode_length=10))
    assert any("max_concurrent_requests (2)" in w for w in result.warnings)
    refused = [r for r in result.records if r.status == 429]
    assert len(refused) == 2 and all(r.error.startswith("HTTP 429") for r in refused)
    assert len([r for r in result.records if r.ok]) == 2
    assert result.status == "complete"


class _Fixed:
    """A tiny HTTP server answering every GET with one status and body (a thread)."""

    def __init__(self, status: int, body: bytes = b"{}"):
        import http.server

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.seen.append(self.headers.get("Authorization"))
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.status, self.body = status, body
        self.seen: list[str | None] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, body, api, words", [
    (503, b'{"error":"unhealthy","error_type":"healthcheck"}', "tgi", "not ready yet"),
    (404, b"{}", "tgi", "does not look like a TGI server"),
    (404, b"{}", "openai-chat", "give it with --model"),
])
def test_servers_that_cannot_be_benchmarked_are_refused_with_a_sentence(
        tiny_tokenizer, tmp_path, status, body, api, words):
    from benchmark.errors import BenchmarkError

    with _Fixed(status, body) as server:
        with pytest.raises(BenchmarkError) as info:
            run(config_for(server.url, tiny_tokenizer, tmp_path / "x", api=api))
    assert words in str(info.value)
    assert not (tmp_path / "x").exists()


def test_reused_prompts_are_warned_about(sim, tiny_tokenizer, tmp_path, monkeypatch):
    import benchmark.core.engine as engine

    monkeypatch.setattr(engine, "PROMPT_POOL_MAX", 4)
    config = config_for(sim.url, tiny_tokenizer, tmp_path / "reuse", mode="concurrency",
                        batch_sizes=(1,), duration_s=0.5)
    result = run(config)
    assert len(result.records) > 4  # a 2 ms/token server answers dozens in 0.5 s
    assert any("re-used after the first 4 requests" in w for w in result.warnings)


def test_a_token_is_sent_from_the_named_variable_and_never_shown(tmp_path, tiny_tokenizer,
                                                                  monkeypatch, capsys):
    from benchmark.cli import main

    monkeypatch.setenv("MY_ENDPOINT_TOKEN", "sekret-value-123")
    with _Fixed(503) as server:
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", server.url, "-b", "1",
                     "--api-key-env", "MY_ENDPOINT_TOKEN"])
    assert code == 1
    assert server.seen == ["Bearer sekret-value-123"]
    captured = capsys.readouterr()
    assert "sekret" not in captured.err + captured.out
    with _Fixed(401) as server:
        assert main(["--tokenizer-name", tiny_tokenizer, "--url", server.url, "-b", "1"]) == 1
    assert "--api-key-env" in capsys.readouterr().err
    monkeypatch.delenv("MY_ENDPOINT_TOKEN")
    with pytest.raises(SystemExit) as info:
        main(["--tokenizer-name", tiny_tokenizer, "--url", "http://127.0.0.1:9", "-b", "1",
              "--api-key-env", "MY_ENDPOINT_TOKEN"])
    assert info.value.code == 2
    assert "argument --api-key-env: The environment variable MY_ENDPOINT_TOKEN is not set" \
        in capsys.readouterr().err


def test_run_from_another_thread_can_be_cancelled(sim, tiny_tokenizer, tmp_path):
    """The app or a notebook may call run() off the main thread: no signal handlers there."""
    cancel = threading.Event()
    measuring = threading.Event()
    outcome = {}

    def seen(event):
        if event["event"] == "round_done":
            measuring.set()

    def target():
        outcome["result"] = run(config_for(sim.url, tiny_tokenizer, tmp_path / "thread",
                                           batch_sizes=(1,), runs=10_000, warmups=0),
                                cancel=cancel, on_progress=seen)

    worker = threading.Thread(target=target)
    worker.start()
    # Cancel once rounds are being measured (a fixed sleep raced prompt building on a busy CI).
    assert measuring.wait(30)
    time.sleep(0.2)
    cancel.set()
    worker.join(20)
    assert not worker.is_alive()
    result = outcome["result"]
    assert result.status == "cancelled" and 0 < len(result.records) < 10_000
