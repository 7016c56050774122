"""The "Try the model" tab of the real app (``python app.py``), driven through gradio_client.

The fake text-generation-launcher serves the simulator with the tiny tokenizer; the form's
server has small limits (256 prompt tokens, 512 in all) so that a long message is refused by the
server itself.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from gradio_client import Client

from support.app_harness import AppProcess, form_values

pytestmark = pytest.mark.timeout(240)

SMALL_SERVER = {"quantize": "none", "max_input_tokens": "256", "max_total_tokens": "512"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("chat-app")
    # A slower simulated decode so that a benchmark lasts long enough to chat into it.
    with AppProcess(folder / "results", tokenizer=tiny_tokenizer,
                    sim_args="--decode-base-ms 15") as running:
        yield running


@pytest.fixture(scope="module")
def form(tiny_tokenizer) -> list[Any]:
    return form_values(model_id=tiny_tokenizer, **SMALL_SERVER)


def contents(chatbot: Any) -> list[tuple[str, str]]:
    """(role, text) of each message the Conversation shows ([] for a no-change update)."""
    if isinstance(chatbot, dict):
        chatbot = chatbot.get("value")
    out = []
    for message in chatbot or []:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        out.append((message["role"], str(content)))
    return out


def send(client: Client, form: list[Any], message: str, shown: Any = None,
         max_new: str = "16") -> list[tuple[Any, Any, Any]]:
    """Every output of one /chat call (chatbot, message box, chat message), in order."""
    job = client.submit(message, shown or [], "", max_new, "", *form, api_name="/chat")
    deadline = time.monotonic() + 60
    while not job.done():
        assert time.monotonic() < deadline, "the chat did not answer"
        time.sleep(0.1)
    outputs, final = list(job.outputs()), tuple(job.result())
    if not outputs or tuple(outputs[-1]) != final:
        outputs.append(final)        # the list of outputs can lag behind the final result
    return outputs


def value(item: Any) -> str:
    if isinstance(item, dict):
        item = item.get("value")
    return "" if item is None else str(item)


def start_server(client: Client, form: list[Any]) -> list[Any]:
    job = client.submit(*form, api_name="/chat_start")
    deadline = time.monotonic() + 120
    while not job.done():
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    return list(job.outputs())


def test_no_server_then_start_then_a_streamed_answer_with_its_speed(app, form):
    client = Client(app.url, verbose=False)
    before = client.predict(*form, api_name="/chat_status")
    assert "No server is running yet" in value(before)
    # Sending now says why nothing can answer; nothing is shown in the conversation.
    refused = send(client, form, "Hello")[-1]
    assert "No server is running yet" in value(refused[2])
    assert not contents(refused[0])

    steps = start_server(client, form)
    assert any("Starting the server" in value(s[0]) for s in steps), "start-up progress shown"
    assert "The server is ready" in value(steps[-1][0])
    assert "SIMULATED" in value(steps[-1][1])

    outputs = send(client, form, "Hello, who are you?")
    final = contents(outputs[-1][0])
    assert final[0] == ("user", "Hello, who are you?")
    role, answer = final[1]
    assert role == "assistant" and answer.strip()
    # The answer arrived in pieces: an earlier output showed a shorter, non-empty part of it.
    partial = [contents(o[0])[1][1] for o in outputs[:-1]
               if len(contents(o[0])) >= 2 and contents(o[0])[1][1]]
    assert partial and len(partial[0]) < len(answer) and answer.startswith(partial[0])
    speed = final[2][1]
    assert speed.startswith("SIMULATED · time to first token ")
    assert " ms · " in speed and " tokens/s · 16 tokens" in speed
    assert value(outputs[-1][1]) == ""           # the Message box is cleared

    # The next turn carries on the same conversation.
    second = send(client, form, "And then?", shown=outputs[-1][0])[-1]
    again = contents(second[0])
    assert not value(second[2]), value(second[2])
    assert [r for r, _ in again] == ["user", "assistant", "assistant", "user", "assistant",
                                     "assistant"]
    assert again[3] == ("user", "And then?")


def test_empty_message_does_nothing(app, form):
    client = Client(app.url, verbose=False)
    out = send(client, form, "   ")[-1]
    assert all(isinstance(o, dict) and set(o) == {"__type__"} for o in out)


def test_too_long_prompt_gets_the_servers_sentence_and_the_chat_goes_on(app, form):
    client = Client(app.url, verbose=False)
    start_server(client, form)              # reuses the running one when it is there
    out = send(client, form, "word " * 600)[-1]
    message = value(out[2])
    assert "The server refused this message" in message
    assert "Input validation error" in message and "must be" in message
    shown = contents(out[0])
    assert "The server refused this message" in shown[-1][1]
    assert value(out[1]).startswith("word")   # the message stays in the box, to shorten it
    ok = contents(send(client, form, "Short one")[-1][0])
    assert ok[-1][1].startswith("SIMULATED · time to first token")


def test_bad_settings_are_named(app, form):
    client = Client(app.url, verbose=False)
    out = send(client, form, "Hi", max_new="lots")[-1]
    assert "Max new tokens" in value(out[2]) and "whole number" in value(out[2])


def test_sending_pauses_while_a_benchmark_runs_on_the_same_server(app, form, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    start_server(client, form)
    bench = form_values(model_id=tiny_tokenizer, **SMALL_SERVER, batch_sizes="1,2",
                        sequence_length="16", decode_length="48", runs="6", warmups="1")
    run = client.submit(*bench, api_name="/run")
    deadline = time.monotonic() + 60
    while "benchmark is running on this server" not in value(
            client.predict(*form, api_name="/chat_status")):
        assert time.monotonic() < deadline and not run.done(), "the run never showed as busy"
        time.sleep(0.2)
    out = send(client, form, "Hello during the run")[-1]
    assert "sending is paused" in value(out[2])
    assert not contents(out[0])
    deadline = time.monotonic() + 200
    while not run.done():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.3)
    assert "benchmark is running" not in value(client.predict(*form, api_name="/chat_status"))
    after = contents(send(client, form, "Hello after the run")[-1][0])
    assert after[-1][1].startswith("SIMULATED · time to first token")
