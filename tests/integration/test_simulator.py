"""The simulated TGI server speaks TGI's API well enough for TGI's and OpenAI's own clients.

Everything runs against a real server (in a thread or a subprocess) on 127.0.0.1.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from benchmark.simulator import SimulatorConfig, run_in_thread
from support.openapi import check_schema

# TGI's published spec lives in ../shared beside the project root.
FAST = dict(prefill_base_ms=1.0, prefill_per_token_ms=0.0, decode_base_ms=1.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(SimulatorConfig(**FAST)) as server:
        yield server


def sse_events(raw: bytes) -> list[str]:
    """The data payloads of an SSE body, in order (accepts 'data:' with or without space)."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                out.append(line[5:].lstrip(" "))
    return out


def test_health_and_info_match_tgi_schema(sim):
    assert httpx.get(sim.url + "/health").status_code == 200
    info = httpx.get(sim.url + "/info").json()
    check_schema(info, "Info")
    assert info["simulated"] is True
    assert info["router"] == "tgi-benchmark-simulator"
    assert info["max_input_tokens"] == 4095 and info["max_total_tokens"] == 4096


def test_generate_stream_raw_bytes_are_tgi_sse(sim):
    body = {"inputs": "Hello there", "parameters": {"max_new_tokens": 4, "details": True}}
    with httpx.stream("POST", sim.url + "/generate_stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_raw())
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b""
    assert all(b.startswith(b"data:{") for b in blocks[:-1])
    events = [json.loads(e) for e in sse_events(raw)]
    assert [e["index"] for e in events] == [1, 2, 3, 4]
    for event in events:
        check_schema(event, "StreamResponse")
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["details"] == {"finish_reason": "length", "generated_tokens": 4, "seed": None,
                               "input_length": 3}
    assert last["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert b"[DONE]" not in raw


def test_generate_returns_details_and_tgi_headers(sim):
    r = httpx.post(sim.url + "/generate", json={"inputs": "Hello", "parameters": {
        "max_new_tokens": 6, "details": True, "seed": 7, "do_sample": True}})
    assert r.status_code == 200
    body = r.json()
    check_schema(body, "GenerateResponse")
    assert body["details"]["generated_tokens"] == 6
    assert body["details"]["seed"] == 7
    assert r.headers["x-generated-tokens"] == "6"
    assert r.headers["x-prompt-tokens"] == "2"
    again = httpx.post(sim.url + "/generate", json={"inputs": "Hello", "parameters": {
        "max_new_tokens": 6, "seed": 7, "details": True}}).json()
    assert again["generated_text"] == body["generated_text"]  # same seed, same text
    assert again["details"]["seed"] is None  # TGI reports the seed only when sampling


def test_text_generation_client_unmodified(sim):
    from text_generation import Client

    client = Client(sim.url, timeout=30)
    response = client.generate("Why is the sky blue?", max_new_tokens=5, seed=1)
    assert response.details.generated_tokens == 5
    assert response.details.finish_reason.value == "length"
    tokens = list(client.generate_stream("Why is the sky blue?", max_new_tokens=7))
    assert len(tokens) == 7
    assert tokens[-1].details.generated_tokens == 7
    assert tokens[-1].generated_text == "".join(t.token.text for t in tokens)


def test_openai_client_chat_stream_with_usage(sim):
    from openai import OpenAI

    client = OpenAI(base_url=sim.url + "/v1", api_key="-")
    stream = client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "Say hello"}], max_tokens=5,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    assert len(content) == 5
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.prompt_tokens > 0
    whole = client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "Say hello"}], max_tokens=3)
    assert whole.usage.completion_tokens == 3
    assert whole.choices[0].finish_reason == "length"


def test_openai_completions_stream(sim):
    from openai import OpenAI

    client = OpenAI(base_url=sim.url + "/v1", api_key="-")
    chunks = list(client.completions.create(model="tgi", prompt="Once upon", max_tokens=4,
                                            stream=True))
    assert len(chunks) == 4
    assert chunks[-1].choices[0].finish_reason == "length"


def test_subprocess_fixture_serves_and_logs_like_tgi(simulator_process):
    url = simulator_process(max_batch_size=4, model_id="org/some-model")
    info = httpx.get(url + "/info").json()
    assert info["model_id"] == "org/some-model"
    lines = simulator_process.procs[0].log_lines
    text = "\n".join(lines)
    for needle in ("Args {", "Starting Webserver", "Warming up model",
                   "Setting max batch total tokens to", "Connected"):
        assert needle in text
    assert lines[-1] == f"Simulated TGI listening on {url}"


def test_openai_shapes_match_tgi_schemas(sim):
    chat_body = {"messages": [{"role": "system", "content": "Be brief"},
                              {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                 "max_tokens": 3}
    whole = httpx.post(sim.url + "/v1/chat/completions", json=chat_body).json()
    check_schema(whole, "ChatCompletion")
    raw = httpx.post(sim.url + "/v1/chat/completions",
                     json={**chat_body, "stream": True,
                           "stream_options": {"include_usage": True}}).content
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        check_schema(chunk, "ChatCompletionChunk")
    assert [c["usage"] is not None for c in chunks] == [False, False, False, True]
    completion = httpx.post(sim.url + "/v1/completions",
                            json={"prompt": "Once", "max_tokens": 2}).json()
    check_schema(completion, "CompletionFinal")
    raw = httpx.post(sim.url + "/v1/completions",
                     json={"prompt": "Once", "max_tokens": 2, "stream": True}).content
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        check_schema(json.loads(event), "Chunk")
    models = httpx.get(sim.url + "/v1/models").json()
    assert models["data"][0]["id"] == "simulated/tgi-model"


def test_details_are_off_unless_asked_like_tgi(sim):
    raw = httpx.post(sim.url + "/generate_stream",
                     json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).content
    last = json.loads(sse_events(raw)[-1])
    assert last["details"] is None and last["generated_text"]
    body = httpx.post(sim.url + "/generate",
                      json={"inputs": "Hi", "parameters": {"max_new_tokens": 2}}).json()
    assert "details" not in body


def test_top_n_tokens_and_stop_sequences(sim):
    raw = httpx.post(sim.url + "/generate_stream", json={"inputs": "Hi", "parameters": {
        "max_new_tokens": 3, "top_n_tokens": 2, "details": True}}).content
    events = [json.loads(e) for e in sse_events(raw)]
    for event in events:
        check_schema(event, "StreamResponse")
        assert len(event["top_tokens"]) == 2
        assert event["top_tokens"][0] == event["token"]
    # seed 0 starts the synthetic text at " the quick brown fox"
    body = httpx.post(sim.url + "/generate", json={"inputs": "Hi", "parameters": {
        "max_new_tokens": 20, "seed": 0, "stop": [" brown"], "details": True}}).json()
    assert body["details"]["finish_reason"] == "stop_sequence"
    assert body["generated_text"] == " the quick brown"


def test_compat_route_answers_a_list_or_a_stream(sim):
    body = httpx.post(sim.url + "/", json={"inputs": "Hi",
                                           "parameters": {"max_new_tokens": 2}}).json()
    assert isinstance(body, list) and body[0]["generated_text"]
    raw = httpx.post(sim.url + "/", json={"inputs": "Hi", "stream": True,
                                          "parameters": {"max_new_tokens": 2}}).content
    assert len(sse_events(raw)) == 2


def test_metrics_use_tgi_names_and_follow_traffic(sim):
    def value(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = httpx.get(sim.url + "/metrics").text
    httpx.post(sim.url + "/generate", json={"inputs": "Hi", "parameters": {"max_new_tokens": 3}})
    after = httpx.get(sim.url + "/metrics").text
    assert value(after, "tgi_request_success") == value(before, "tgi_request_success") + 1
    assert (value(after, "tgi_request_generated_tokens_sum")
            == value(before, "tgi_request_generated_tokens_sum") + 3)
    for name in ("tgi_request_count", "tgi_request_duration_bucket", "tgi_queue_size",
                 "tgi_batch_current_size", "tgi_batch_max_total_tokens",
                 'tgi_batch_forward_duration_count{method="decode"}',
                 "tgi_request_input_length_count", "tgi_request_queue_duration_sum",
                 "tgi_request_mean_time_per_token_duration_count"):
        assert name in after


def test_keep_alive_comment_while_a_request_waits():
    config = SimulatorConfig(keep_alive_s=0.1, max_batch_size=1, prefill_base_ms=1,
                             prefill_per_token_ms=0, decode_base_ms=40, decode_per_seq_ms=0,
                             decode_per_context_token_us=0)
    with run_in_thread(config) as sim:
        with httpx.Client(base_url=sim.url, timeout=30) as client:
            import threading

            first = threading.Thread(target=lambda: client.post("/generate", json={
                "inputs": "Hi", "parameters": {"max_new_tokens": 12}}))
            first.start()
            for _ in range(500):  # until the first request holds the only batch slot
                if sim.simulator.scheduler.running:
                    break
                time.sleep(0.01)
            raw = client.post("/generate_stream", json={
                "inputs": "Hi", "parameters": {"max_new_tokens": 2}}).content
            first.join()
    assert raw.startswith(b":\n\n")  # queued behind the first request, kept alive
    assert len(sse_events(raw)) == 2


def test_a_simulator_that_cannot_start_says_why():
    from benchmark.errors import ServerStartError
    from benchmark.simulator.process import SimulatorProcess

    sim = SimulatorProcess(["--decode-base-ms", "nan"])
    with pytest.raises(ServerStartError) as err:
        sim.start(timeout_s=30)
    assert any("decode-base-ms" in line for line in err.value.log_tail)
    assert sim.proc is not None and sim.proc.poll() is not None
