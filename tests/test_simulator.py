"""The simulated TGI server speaks TGI's API well enough for TGI's and OpenAI's own clients.

Everything runs against a real server (in a thread or a subprocess) on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from benchmark.simulator import SimulatorConfig, run_in_thread

SPEC_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "tgi" / "openapi.json"
FAST = dict(prefill_base_ms=1.0, prefill_per_token_ms=0.0, decode_base_ms=1.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


def _spec() -> dict:
    for candidate in (SPEC_PATH, Path("/work/shared/reference/tgi/openapi.json")):
        if candidate.exists():
            return json.loads(candidate.read_text())
    raise FileNotFoundError("TGI's openapi.json was not found beside the project")


def _nullable(node: object) -> object:
    """OpenAPI 3.0's ``nullable: true`` in JSON Schema terms (null is also allowed)."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


SPEC = _spec()
COMPONENTS = _nullable(SPEC["components"])


def check_schema(instance: object, name: str) -> None:
    """Validate against components/schemas/<name>, resolving the spec's $refs."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    jsonschema.Draft202012Validator(schema).validate(instance)


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
    r = httpx.post(sim.url + "/generate", json={
        "inputs": "Hello", "parameters": {"max_new_tokens": 6, "details": True, "seed": 7}})
    assert r.status_code == 200
    body = r.json()
    check_schema(body, "GenerateResponse")
    assert body["details"]["generated_tokens"] == 6
    assert body["details"]["seed"] == 7
    assert r.headers["x-generated-tokens"] == "6"
    assert r.headers["x-prompt-tokens"] == "2"
    again = httpx.post(sim.url + "/generate", json={
        "inputs": "Hello", "parameters": {"max_new_tokens": 6, "seed": 7}}).json()
    assert again["generated_text"] == body["generated_text"]


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
