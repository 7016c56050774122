"""What a benchmark user would notice about the simulated server: batching slows each token but
raises the total rate, limits answer TGI's errors, EOS can end a request early, every request
leaves a trace line, prompts are counted with the tokenizer, and SIGTERM ends streams cleanly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from benchmark.simulator import SimulatorConfig, TokenCounter, run_in_thread, trace_rows

FAST = dict(prefill_base_ms=1.0, prefill_per_token_ms=0.0, decode_base_ms=1.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


async def _stream(client: httpx.AsyncClient, path: str, body: dict,
                  headers: dict | None = None, first: asyncio.Event | None = None) -> dict:
    """Stream one request; return its status, event payloads and arrival stamps.
    ``first`` is set when the first event arrives."""
    out: dict = {"status": None, "events": [], "stamps": [], "raw": b""}
    async with client.stream("POST", path, json=body, headers=headers or {}) as response:
        out["status"] = response.status_code
        buffer = b""
        async for chunk in response.aiter_raw():
            now = time.perf_counter_ns()
            out["raw"] += chunk
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if block.startswith(b"data:"):
                    payload = block[5:].strip()
                    out["events"].append("[DONE]" if payload == b"[DONE]"
                                         else json.loads(payload))
                    out["stamps"].append(now)
                    if first is not None:
                        first.set()
    return out


def _concurrent(url: str, bodies: list[dict], path: str = "/generate_stream",
                headers: list[dict] | None = None) -> list[dict]:
    async def main() -> list[dict]:
        limits = httpx.Limits(max_connections=len(bodies) + 4)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(
                _stream(client, path, body, (headers or [None] * len(bodies))[i])
                for i, body in enumerate(bodies)))
    return asyncio.run(main())


def _gen(tokens: int, **params) -> dict:
    return {"inputs": "Tell me a story", "parameters": {"max_new_tokens": tokens, **params}}


# -- batching -------------------------------------------------------------------------------------


def test_batching_slows_each_token_but_raises_total_rate(simulator_process):
    url = simulator_process(prefill_base_ms=2, prefill_per_token_ms=0, decode_base_ms=20,
                            decode_per_seq_ms=3, decode_per_context_token_us=0)
    tokens = 15

    def measure(concurrency: int) -> tuple[float, float]:
        results = _concurrent(url, [_gen(tokens)] * concurrency)
        assert all(r["status"] == 200 and len(r["stamps"]) == tokens for r in results)
        per_token = [(r["stamps"][-1] - r["stamps"][0]) / (tokens - 1) / 1e6 for r in results]
        start = min(r["stamps"][0] for r in results)
        end = max(r["stamps"][-1] for r in results)
        return sum(per_token) / len(per_token), concurrency * (tokens - 1) / ((end - start) / 1e9)

    _concurrent(url, [_gen(2)])  # warm the connection path
    one_ms, one_rate = measure(1)
    eight_ms, eight_rate = measure(8)
    # Model: 23 ms/token alone, 44 ms/token in a batch of 8; total 43 vs 182 tokens/s.
    assert eight_ms > 1.3 * one_ms
    assert eight_rate > 2.0 * one_rate


def test_requests_beyond_max_batch_size_wait_in_the_queue(tmp_path):
    trace = tmp_path / "trace.jsonl"
    config = SimulatorConfig(max_batch_size=2, trace=str(trace), prefill_base_ms=1,
                             prefill_per_token_ms=0, decode_base_ms=10, decode_per_seq_ms=0,
                             decode_per_context_token_us=0)
    with run_in_thread(config) as sim:
        ids = [{"X-Request-Id": f"q-{i}"} for i in range(4)]
        results = _concurrent(sim.url, [_gen(8)] * 4, headers=ids)
    assert all(r["status"] == 200 for r in results)
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    admitted = sorted(rows.values(), key=lambda row: row["admitted_ns"])
    first_two_end = min(row["end_ns"] for row in admitted[:2])
    # The last two were admitted only when a batch slot was freed.
    assert all(row["admitted_ns"] >= first_two_end for row in admitted[2:])
    assert all(row["queued_ns"] <= row["admitted_ns"] for row in rows.values())


# -- limits ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    config = SimulatorConfig(max_input_tokens=50, max_total_tokens=100, **FAST)
    with run_in_thread(config) as sim:
        yield sim


def test_prompt_longer_than_max_input_tokens_is_422(small):
    r = httpx.post(small.url + "/generate", json={"inputs": "x" * 240,
                                                  "parameters": {"max_new_tokens": 10}})
    assert r.status_code == 422
    assert r.json() == {"error": "Input validation error: `inputs` must have less than 50 "
                                 "tokens. Given: 60", "error_type": "validation"}


def test_input_plus_new_tokens_over_total_is_422(small):
    r = httpx.post(small.url + "/generate_stream", json={"inputs": "x" * 160,
                                                         "parameters": {"max_new_tokens": 70}})
    assert r.status_code == 422
    assert r.json()["error"] == ("Input validation error: `inputs` tokens + `max_new_tokens` "
                                 "must be <= 100. Given: 40 `inputs` tokens and 70 "
                                 "`max_new_tokens`")
    chat = httpx.post(small.url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "x" * 160}], "max_tokens": 90})
    assert chat.status_code == 422 and chat.json()["error_type"] == "validation"


@pytest.mark.parametrize("body,status,needle", [
    (b"{not json", 400, "Failed to parse the request body as JSON"),
    (b'{"parameters": {}}', 422, "missing field `inputs`"),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": 0}}', 422,
     "Input validation error: `max_new_tokens` must be strictly positive"),
    (b'{"inputs": "hi", "parameters": {"max_new_tokens": -3}}', 422,
     "parameters.max_new_tokens: invalid value: integer `-3`, expected u32"),
    (b'{"inputs": "", "parameters": {"max_new_tokens": 3}}', 422, "`inputs` cannot be empty"),
    (b'{"inputs": "hi", "parameters": {"temperature": 0}}', 422,
     "`temperature` must be strictly positive"),
    (b'{"inputs": "hi", "parameters": {"truncate": 0}}', 422,
     "`truncate` must be strictly positive and less than 50. Given: 0"),
    # hostile bodies: a JSON parser's limits and Python-only literals are TGI's parse error
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "Failed to parse the request body as JSON"),
    (b'{"inputs": "hi", "parameters": {"temperature": NaN}}', 400,
     "Failed to parse the request body as JSON"),
    (b'{"inputs": "hi", "parameters": {"temperature": -Infinity}}', 400,
     "Failed to parse the request body as JSON"),
    (b'{"inputs": "hi", "parameters": {"temperature": 1e999}}', 400,
     "Failed to parse the request body as JSON"),
])
def test_bad_requests_get_tgi_status_and_json_error(small, body, status, needle):
    from support.openapi import check_schema

    for path in ("/generate", "/generate_stream"):
        r = httpx.post(small.url + path, content=body,
                       headers={"Content-Type": "application/json"})
        assert r.status_code == status
        check_schema(r.json(), "ErrorResponse")
        assert needle in r.json()["error"]
    assert httpx.get(small.url + "/health").status_code == 200


def test_unknown_route_is_404_and_server_keeps_serving(small):
    assert httpx.get(small.url + "/no/such/route").status_code == 404
    assert httpx.post(small.url + "/v2/generate", json={}).status_code == 404
    assert httpx.post(small.url + "/generate", json=_gen(2)).status_code == 200


def test_past_max_concurrent_requests_is_429(tmp_path):
    config = SimulatorConfig(max_concurrent_requests=2, decode_base_ms=30, decode_per_seq_ms=0,
                             prefill_base_ms=1, prefill_per_token_ms=0,
                             decode_per_context_token_us=0, trace=str(tmp_path / "t.jsonl"))
    with run_in_thread(config) as sim:
        async def main():
            async with httpx.AsyncClient(base_url=sim.url, timeout=30) as client:
                firsts = [asyncio.Event(), asyncio.Event()]
                long = [asyncio.create_task(_stream(client, "/generate_stream", _gen(20),
                                                    first=event)) for event in firsts]
                for event in firsts:  # both are in flight (streaming)
                    await event.wait()
                third = await client.post("/generate", json=_gen(2))
                done = await asyncio.gather(*long)
                after = await client.post("/generate", json=_gen(2))
                return third, done, after
        third, done, after = asyncio.run(main())
        metrics = httpx.get(sim.url + "/metrics").text
    assert third.status_code == 429
    assert third.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert all(len(d["stamps"]) == 20 for d in done)
    assert after.status_code == 200
    assert 'tgi_request_failure{err="overloaded"} 1' in metrics
    statuses = sorted(row["status"] for row in trace_rows(tmp_path / "t.jsonl"))
    assert statuses == [200, 200, 200, 429]


# -- early end of sequence ------------------------------------------------------------------------


def test_eos_probability_ends_requests_early_and_is_reported():
    with run_in_thread(SimulatorConfig(eos_probability=0.3, **FAST)) as sim:
        results = _concurrent(sim.url, [_gen(60, seed=s, details=True) for s in range(1, 9)])
        chat = _concurrent(sim.url, [{"messages": [{"role": "user", "content": "hi"}],
                                      "max_tokens": 60, "seed": 5, "stream": True,
                                      "stream_options": {"include_usage": True}}],
                           path="/v1/chat/completions")[0]
        again = _concurrent(sim.url, [_gen(60, seed=3, details=True)])[0]
    for r in results:
        last = r["events"][-1]
        assert last["details"]["finish_reason"] == "eos_token"
        assert last["details"]["generated_tokens"] == len(r["events"]) < 60
        assert last["token"]["special"] is True
        assert all(not e["token"]["special"] for e in r["events"][:-1])
    # Same seed, same early stop.
    assert again["events"][-1] == results[2]["events"][-1]
    chunks = [e for e in chat["events"] if isinstance(e, dict)]
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishing[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] < 60
    assert chat["events"][-1] == "[DONE]"


# -- trace ----------------------------------------------------------------------------------------


def test_trace_has_one_line_per_request_with_monotonic_stamps(tmp_path):
    trace = tmp_path / "trace.jsonl"
    with run_in_thread(SimulatorConfig(trace=str(trace), **FAST)) as sim:
        before = time.perf_counter_ns()
        ok = _concurrent(sim.url, [_gen(5)], headers=[{"X-Request-Id": "run-1-0-0"}])[0]
        httpx.post(sim.url + "/generate", json=_gen(3), headers={"X-Request-Id": "whole-1"})
        httpx.post(sim.url + "/generate", json={"inputs": ""},
                   headers={"X-Request-Id": "bad-1"})
        after = time.perf_counter_ns()
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    assert set(rows) == {"run-1-0-0", "whole-1", "bad-1"}
    row = rows["run-1-0-0"]
    keys = {"request_id", "route", "arrived_ns", "token_ns", "end_ns", "input_tokens",
            "output_tokens", "finish_reason", "status"}
    assert keys <= set(row)
    assert row["route"] == "/generate_stream" and row["status"] == 200
    assert row["output_tokens"] == 5 and len(row["token_ns"]) == 5
    assert row["finish_reason"] == "length" and row["input_tokens"] == 4
    stamps = [row["arrived_ns"], *row["token_ns"], row["end_ns"]]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    # The server stamps each token before writing it; the client receives it afterwards.
    assert all(s <= c for s, c in zip(row["token_ns"], ok["stamps"]))
    assert rows["whole-1"]["route"] == "/generate" and rows["whole-1"]["output_tokens"] == 3
    assert rows["bad-1"]["status"] == 422 and rows["bad-1"]["token_ns"] == []


def test_client_disconnect_is_traced_and_does_not_disturb_others(tmp_path):
    trace = tmp_path / "trace.jsonl"
    config = SimulatorConfig(trace=str(trace), decode_base_ms=5, decode_per_seq_ms=0,
                             prefill_base_ms=1, prefill_per_token_ms=0,
                             decode_per_context_token_us=0)
    with run_in_thread(config) as sim:
        with httpx.stream("POST", sim.url + "/generate_stream", json=_gen(500),
                          headers={"X-Request-Id": "leaver"}) as r:
            for _ in r.iter_raw():
                break
        time.sleep(0.3)
        other = _concurrent(sim.url, [_gen(5)])[0]
    assert len(other["events"]) == 5
    row = next(r for r in trace_rows(trace) if r["request_id"] == "leaver")
    assert row["status"] == 499 and row["finish_reason"] is None
    assert 0 < row["output_tokens"] < 500


# -- token counting -------------------------------------------------------------------------------


def test_prompt_tokens_are_counted_with_the_tokenizer(tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    prompt = "the quick brown fox measures latency of seven tired engineers"
    expected = len(tok(prompt, add_special_tokens=True)["input_ids"])
    messages = [{"role": "user", "content": prompt}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected_chat = len(tok(rendered, add_special_tokens=False)["input_ids"])
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        r = httpx.post(sim.url + "/generate", json={
            "inputs": prompt, "parameters": {"max_new_tokens": 2, "details": True}})
        truncated = _concurrent(sim.url, [{"inputs": prompt, "parameters": {
            "max_new_tokens": 2, "truncate": 3, "details": True}}])[0]
        chat = httpx.post(sim.url + "/v1/chat/completions", json={
            "messages": messages, "max_tokens": 2}).json()
        info = httpx.get(sim.url + "/info").json()
        tokens = httpx.post(sim.url + "/tokenize", json={"inputs": prompt}).json()
    assert r.headers["x-prompt-tokens"] == str(expected)
    assert len(tokens) == expected
    assert "".join(t["text"] for t in tokens) == prompt
    assert truncated["events"][-1]["details"]["input_length"] == 3
    assert chat["usage"]["prompt_tokens"] == expected_chat
    assert info["simulator"]["token_counting"] == "tokenizer"


def test_unloadable_tokenizer_warns_and_falls_back(tmp_path, capsys):
    counter = TokenCounter.load(str(tmp_path / "missing-tokenizer"))
    assert not counter.exact
    assert "could not load tokenizer" in capsys.readouterr().err
    assert counter.count("abcdefghi") == 3  # ceil(9 bytes / 4)
    assert counter.count("é") == 1


# -- start-up and shutdown ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_ends_an_open_stream_cleanly_and_exits_0(simulator_process, tmp_path, sig):
    trace = tmp_path / "trace.jsonl"
    url = simulator_process(decode_base_ms=20, trace=trace)
    proc = simulator_process.procs[0]
    received = []
    with httpx.stream("POST", url + "/generate_stream", json=_gen(1000), timeout=30) as r:
        for chunk in r.iter_raw():  # a protocol error here would raise
            received.append(chunk)
            if len(received) == 2:
                proc.send_signal(sig)
    body = b"".join(received)
    assert b'"error_type":"generation"' in body.split(b"\n\n")[-2]
    assert b"shutting down" in body.split(b"\n\n")[-2]
    assert proc.wait(15) == 0
    row = trace_rows(trace)[0]
    assert row["finish_reason"] is None and "shutting down" in row["error"]
    assert 0 < row["output_tokens"] < 1000


def test_startup_delay_keeps_the_port_closed_until_connected(simulator_process):
    started = time.perf_counter()
    url = simulator_process(startup_delay=1.0)
    assert time.perf_counter() - started >= 1.0
    assert httpx.get(url + "/health").status_code == 200
    assert any("Warming up model" in line for line in simulator_process.procs[0].log_lines)


def test_bad_flag_exits_2_with_a_message(capsys):
    from benchmark.simulator import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--max-input-tokens", "10", "--max-total-tokens", "5"])
    assert exit_info.value.code == 2
    assert "`max_input_tokens` must be < `max_total_tokens`" in capsys.readouterr().err
    config = parse_args(["--max-input-tokens", "100", "--quantize", "awq", "--num-shard", "2"])
    assert (config.max_input_tokens, config.max_total_tokens) == (100, 4096)
    assert config.quantize == "awq"  # accepted and ignored


def test_a_scheduler_bug_fails_requests_instead_of_hanging_them(monkeypatch, capsys):
    from benchmark.simulator import scheduler as model

    real_emit = model.Sequence.emit
    broken = {"on": True}

    def emit(self, decode):
        if broken["on"]:
            raise RuntimeError("injected fault")
        return real_emit(self, decode)

    monkeypatch.setattr(model.Sequence, "emit", emit)
    with run_in_thread(SimulatorConfig(**FAST)) as sim:
        failed = _concurrent(sim.url, [_gen(3)])[0]
        whole = httpx.post(sim.url + "/generate", json=_gen(3), timeout=30)
        broken["on"] = False
        healthy = _concurrent(sim.url, [_gen(3)])[0]
    assert failed["events"][-1]["error_type"] == "generation"
    assert "injected fault" in failed["events"][-1]["error"]
    assert whole.status_code == 424 and whole.json()["error_type"] == "generation"
    assert len(healthy["events"]) == 3
    assert "RuntimeError: injected fault" in capsys.readouterr().err


def test_port_in_use_exits_1_with_tgis_words():
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "benchmark.simulator", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
            cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 1
    assert "Address already in use" in proc.stdout and "Webserver Crashed" in proc.stdout
    assert "Simulated TGI listening" not in proc.stdout


def test_tokens_never_reach_the_log(monkeypatch, capsys):
    secret = "hf_" + "abcdefghijklmnopqrstuvwxyz012345"
    monkeypatch.setenv("HF_TOKEN", secret)
    TokenCounter.load(f"/nonexistent/{secret}")
    from benchmark.simulator.serving import log

    log("text_generation_launcher", f"Args {{ tokenizer: Some(\"{secret}\") }}")
    out = capsys.readouterr()
    assert secret not in out.err and secret not in out.out
    assert "could not load tokenizer" in out.err


def test_a_queued_request_whose_client_left_is_never_admitted(tmp_path):
    trace = tmp_path / "trace.jsonl"
    config = SimulatorConfig(trace=str(trace), max_batch_size=1, prefill_base_ms=1,
                             prefill_per_token_ms=0, decode_base_ms=10, decode_per_seq_ms=0,
                             decode_per_context_token_us=0)
    with run_in_thread(config) as sim:
        async def main():
            async with httpx.AsyncClient(base_url=sim.url, timeout=30) as client:
                started = asyncio.Event()
                first = asyncio.create_task(_stream(client, "/generate_stream", _gen(40),
                                                    {"X-Request-Id": "runner"}, first=started))
                await started.wait()
                async with httpx.AsyncClient(base_url=sim.url, timeout=30) as other:
                    async with other.stream("POST", "/generate_stream", json=_gen(5),
                                            headers={"X-Request-Id": "leaver"}) as response:
                        assert response.status_code == 200  # headers come at once
                await first
        asyncio.run(main())
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    assert rows["runner"]["output_tokens"] == 40
    leaver = rows["leaver"]
    assert leaver["status"] == 499 and leaver["admitted_ns"] is None
    assert leaver["output_tokens"] == 0 and leaver["token_ns"] == []


def test_server_seed_makes_unseeded_requests_repeat():
    def texts() -> list[str]:
        config = SimulatorConfig(seed=42, eos_probability=0.2, **FAST)
        with run_in_thread(config) as sim:
            with httpx.Client(base_url=sim.url, timeout=30) as client:
                return [client.post("/generate", json=_gen(30)).json()["generated_text"]
                        for _ in range(4)]
    first, second = texts(), texts()
    assert first == second
    assert len(set(first)) > 1  # each request draws its own seed from the server's


@pytest.mark.parametrize("flag", ["--decode-base-ms", "--prefill-per-token-ms",
                                  "--waiting-served-ratio", "--eos-probability",
                                  "--startup-delay", "--keep-alive-s"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_non_finite_numbers_in_flags_exit_2_not_a_traceback(capsys, flag, value):
    from benchmark.simulator import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args([flag, value])
    assert exit_info.value.code == 2
    assert "finite" in capsys.readouterr().err
