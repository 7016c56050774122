"""One chat turn (core/chat.py): streamed pieces, the speed line's numbers, the fallbacks, refusals.

Against the simulated server in a thread, and, for streams the simulator never sends (an error
event mid-answer, a usage count larger than the text chunks), a canned stream from a stdlib
HTTP server.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmark.core import chat
from benchmark.errors import ServerUnreachable
from benchmark.simulator import run_in_thread
from benchmark.simulator.config import SimulatorConfig

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def sim():
    with run_in_thread(SimulatorConfig(max_input_tokens=200, max_total_tokens=256)) as server:
        yield server


def turn(url: str, messages=HELLO, **kwargs) -> tuple[str, chat.ChatResult]:
    items = list(chat.stream_chat(url, messages, **{"max_new_tokens": 12, **kwargs}))
    *pieces, result = items
    assert all(isinstance(p, str) for p in pieces)
    assert isinstance(result, chat.ChatResult)
    return "".join(pieces), result


def test_answer_streams_in_pieces_with_the_servers_token_count(sim):
    items = list(chat.stream_chat(sim.url, HELLO, max_new_tokens=12))
    pieces, result = items[:-1], items[-1]
    assert len(pieces) > 1, "the answer arrives piece by piece, not at once"
    assert "".join(pieces).strip()
    assert result.route == chat.ROUTE_CHAT
    assert result.tokens == 12                  # the server's usage.completion_tokens
    assert result.ttft_ms is not None and result.ttft_ms > 0
    assert result.tokens_per_s is not None and result.tokens_per_s > 0
    assert result.finish_reason == "length"


def test_system_prompt_and_history_go_along(sim):
    messages = [{"role": "system", "content": "Answer briefly."}, *HELLO,
                {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "More?"}]
    text, result = turn(sim.url, messages, temperature=0.7)
    assert text and result.route == chat.ROUTE_CHAT


def test_no_chat_route_falls_back_to_plain_text(sim, monkeypatch):
    monkeypatch.setattr(chat, "CHAT_PATH", "/v1/no-such-route")   # a server without the route
    text, result = turn(sim.url, max_new_tokens=5, temperature=0.0)
    assert text
    assert result.route == chat.ROUTE_PLAIN
    assert result.tokens == 5                   # details.generated_tokens


def test_no_chat_route_uses_the_tokenizers_chat_template(sim, monkeypatch, tiny_tokenizer,
                                                         tmp_path):
    monkeypatch.setattr(chat, "CHAT_PATH", "/v1/no-such-route")
    text, result = turn(sim.url, max_new_tokens=4, tokenizer_name=tiny_tokenizer)
    assert text and result.route == chat.ROUTE_TEMPLATE
    # The same tokenizer without its template: plain text, and the route says so.
    folder = Path(shutil.copytree(tiny_tokenizer, tmp_path / "no-template"))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    _, plain = turn(sim.url, max_new_tokens=4, tokenizer_name=str(folder))
    assert plain.route == chat.ROUTE_PLAIN


def test_plain_prompt_names_each_turn_and_ends_at_the_answer():
    prompt = chat.plain_prompt([{"role": "system", "content": "Be kind."},
                                {"role": "user", "content": "Hi"}])
    assert prompt == "System: Be kind.\nUser: Hi\nAssistant:"


def test_temperature_zero_on_tgi_is_greedy_not_an_invalid_temperature():
    assert chat._generate_body("p", 5, 0.0)["parameters"] == {
        "max_new_tokens": 5, "details": True, "do_sample": False}
    assert chat._generate_body("p", 5, None)["parameters"] == {"max_new_tokens": 5,
                                                               "details": True}
    assert "temperature" not in chat._chat_body(HELLO, 5, None, "tgi")


def test_too_long_prompt_gets_the_servers_sentence_and_the_next_turn_works(sim):
    with pytest.raises(chat.ChatRefused) as refused:
        turn(sim.url, [{"role": "user", "content": "word " * 400}])
    assert "Input validation error" in str(refused.value)
    assert "must be" in str(refused.value)
    text, result = turn(sim.url)
    assert text and result.tokens == 12


def test_nothing_listening_is_unreachable():
    with run_in_thread() as server:
        url = server.url
    with pytest.raises(ServerUnreachable):
        turn(url)


class Canned(BaseHTTPRequestHandler):
    """Answers every POST with the class's ``body`` as an event stream."""

    body = b""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
                    for e in events)


def delta(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def test_token_count_is_what_the_server_reported_not_the_chunks(canned):
    Canned.body = sse(delta("two tokens"), delta(" more"),
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                      {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
                      b"[DONE]")
    text, result = turn(f"http://127.0.0.1:{canned.server_port}")
    assert text == "two tokens more"
    assert result.tokens == 5 and result.finish_reason == "stop"


def test_error_event_mid_answer_is_the_servers_sentence_escaped_later(canned):
    Canned.body = sse(delta("a"), {"error": "<b>CUDA</b> out of memory", "error_type": "generation"})
    with pytest.raises(chat.ChatRefused) as refused:
        turn(f"http://127.0.0.1:{canned.server_port}")
    assert str(refused.value) == "<b>CUDA</b> out of memory"   # raw here; the page escapes it


def test_a_huge_error_sentence_is_bounded(canned):
    Canned.body = sse({"error": "x" * 10_000})
    with pytest.raises(chat.ChatRefused) as refused:
        turn(f"http://127.0.0.1:{canned.server_port}")
    assert len(str(refused.value)) <= chat.MAX_SERVER_TEXT + 1


def test_the_model_named_is_the_one_the_server_serves(sim, canned):
    assert chat.server_model(sim.url, {"model_id": "org/model"}) == "org/model"
    assert chat.server_model(sim.url, {}) == chat.server_info(sim.url)["model_id"]  # /v1/models
    assert chat.server_model(f"http://127.0.0.1:{canned.server_port}", {}) == "tgi"
