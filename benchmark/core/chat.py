"""One chat turn against a server, streamed, with its speed measured like the engine measures.

    for item in stream_chat(url, [{"role": "user", "content": "Hi"}], max_new_tokens=64):
        if isinstance(item, str):
            show(item)                           # a piece of the answer, as it arrives
        else:
            item.ttft_ms, item.tokens_per_s, item.tokens, item.route   # a ChatResult, last

The turn goes to ``/v1/chat/completions`` so that the server applies the model's chat template.
When the server has no chat route (HTTP 404/405) or the model has no template (TGI answers
``template_error``), it goes to ``/generate_stream`` instead, with the prompt built by the
tokenizer's chat template when one is given and has a template, else as plain text; the result
says which (``route``).

Measurement, as in the engine (``clients/base.py``, ``records.py``): ``time.perf_counter_ns()``
stamped when the request goes out and when each chunk of bytes arrives (before any JSON is
parsed); time to first token = first token event - send; tokens/s = the decode rate, (tokens - 1)
/ (last token - first token); the token count is what the server reported (``usage`` on the
chat route, ``details.generated_tokens`` on TGI's), else the number of token events. The
connection is opened first (``GET /health``) so that its set-up is not in the time to first
token; the send is stamped just before httpx writes the request (the engine stamps when the
bytes reach the socket: the same moment within the time to serialise one small body).

A refusal (prompt too long, bad parameter, error event mid-stream) raises ``ChatRefused`` with
the server's own sentence, bounded and with secrets masked. Nothing is stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import ServerError, ServerUnreachable, redact
from .clients.sse import SSEParser
from .prompts import load_tokenizer
from .records import RequestRecord

__all__ = ["ChatRefused", "ChatResult", "ROUTE_CHAT", "ROUTE_TEMPLATE", "ROUTE_PLAIN",
           "plain_prompt", "server_info", "server_model", "stream_chat"]

CHAT_PATH = "/v1/chat/completions"
GENERATE_PATH = "/generate_stream"
ROUTE_CHAT = "/v1/chat/completions (the server applied the model's chat template)"
ROUTE_TEMPLATE = "/generate_stream with the tokenizer's chat template (the server has no chat route)"
ROUTE_PLAIN = "/generate_stream with plain text (no chat template available)"
MAX_SERVER_TEXT = 500          # characters of a server's error sentence that are shown
MAX_ANSWER_CHARS = 200_000     # an answer longer than this is cut (a bounded page)
_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream",
            # a compressed stream would be buffered by the compressor and arrive late
            "Accept-Encoding": "identity"}


class ChatRefused(ServerError):
    """The server refused the turn; the message is its own sentence (masked, bounded)."""


@dataclass(frozen=True)
class ChatResult:
    """The speed of one answer and how it was asked."""

    route: str                    # ROUTE_CHAT, ROUTE_TEMPLATE or ROUTE_PLAIN
    ttft_ms: float | None         # time to first token
    tokens_per_s: float | None    # decode rate; None below two tokens
    tokens: int                   # as the server reported them, else token events
    finish_reason: str | None
    truncated: bool = False       # the shown answer was cut at MAX_ANSWER_CHARS


def _server_sentence(body: bytes | str, status: int | None = None) -> str:
    """The ``error`` of a JSON error body (TGI: ``{"error": ...}``; OpenAI: ``{"error":
    {"message": ...}}``), else the body's text; masked and bounded."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    message: Any = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error") is not None:
        error = data["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
    message = " ".join(str(message).split())
    if not message:
        message = f"HTTP {status}" if status else "an empty answer"
    message = redact(message)
    return message if len(message) <= MAX_SERVER_TEXT else message[:MAX_SERVER_TEXT] + "…"


def _error_type(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    kind = data.get("error_type") or (error.get("type") if isinstance(error, dict) else None)
    return str(kind or "")


def plain_prompt(messages: Sequence[Mapping[str, str]]) -> str:
    """A conversation as plain text for a model without a chat template: one line per turn,
    ending where the assistant's answer begins."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def _templated(tokenizer_name: str | None,
               messages: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """(prompt, route) for /generate_stream: the tokenizer's chat template, else plain text."""
    if tokenizer_name:
        tokenizer = load_tokenizer(tokenizer_name)
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                   add_generation_prompt=True)
            return str(prompt), ROUTE_TEMPLATE
    return plain_prompt(messages), ROUTE_PLAIN


def _chat_body(messages: Sequence[Mapping[str, str]], max_new_tokens: int,
               temperature: float | None, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages],
                            "max_tokens": max_new_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _generate_body(prompt: str, max_new_tokens: int, temperature: float | None) -> dict[str, Any]:
    parameters: dict[str, Any] = {"max_new_tokens": max_new_tokens, "details": True}
    if temperature is not None:
        # TGI refuses temperature 0: greedy decoding is "do_sample": false.
        parameters["do_sample"] = temperature > 0
        if temperature > 0:
            parameters["temperature"] = temperature
    return {"inputs": prompt, "parameters": parameters, "stream": True}


def _chat_event(event: dict[str, Any], record: RequestRecord) -> str:
    """Text of one /v1/chat/completions chunk; fills the record's counts and finish reason."""
    pieces: list[str] = []
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        if text:
            pieces.append(str(text))
        if choice.get("finish_reason"):
            record.finish_reason = str(choice["finish_reason"])
    usage = event.get("usage")
    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
        record.output_tokens = int(usage["completion_tokens"])
        if usage.get("prompt_tokens") is not None:
            record.input_tokens = int(usage["prompt_tokens"])
    return "".join(pieces)


def _generate_event(event: dict[str, Any], record: RequestRecord) -> tuple[str, bool]:
    """(text, is a token event) of one /generate_stream event; fills counts from ``details``."""
    token = event.get("token")
    text = ""
    if isinstance(token, dict) and not token.get("special"):
        text = str(token.get("text") or "")
    details = event.get("details")
    if isinstance(details, dict):
        if details.get("generated_tokens") is not None:
            record.output_tokens = int(details["generated_tokens"])
        if details.get("input_length") is not None:
            record.input_tokens = int(details["input_length"])
        record.finish_reason = details.get("finish_reason")
    return text, isinstance(token, dict)


def _decode(data: str) -> dict[str, Any]:
    """One event's JSON object; ``ChatRefused`` for an error event or garbage."""
    try:
        event = json.loads(data)
    except ValueError:
        raise ChatRefused(f"The server sent something that is not JSON: "
                          f"{_server_sentence(data[:80])}") from None
    if not isinstance(event, dict):
        raise ChatRefused(f"The server sent an unexpected event: {_server_sentence(data[:80])}")
    if event.get("error") is not None:
        raise ChatRefused(_server_sentence(data))
    return event


def _stream(http: httpx.Client, path: str, body: dict[str, Any], route: str,
            chat: bool) -> Iterator[str | ChatResult | int]:
    """POST and stream one request. Yields the HTTP status first when it is 404/405 or a
    template error (so the caller can fall back; nothing else is yielded then), else text
    pieces and a final ``ChatResult``."""
    record = RequestRecord(step=1, run=0, request=0)
    payload = json.dumps(body, separators=(",", ":")).encode()
    record.sent_ns = time.perf_counter_ns()
    with http.stream("POST", path, content=payload, headers=_HEADERS) as response:
        if response.status_code != 200:
            raw = response.read()
            if response.status_code in (404, 405) or (
                    chat and _error_type(raw) == "template_error"):
                yield response.status_code
                return
            raise ChatRefused(_server_sentence(raw, response.status_code))
        parser = SSEParser()
        shown = 0
        truncated = done = False
        for chunk in response.iter_raw():
            arrived_ns = time.perf_counter_ns()   # before anything is parsed
            for data in parser.feed(chunk):
                if data.strip() == "[DONE]":
                    done = True
                    continue
                event = _decode(data)
                if chat:
                    text = _chat_event(event, record)
                    is_token = bool(text)
                else:
                    text, is_token = _generate_event(event, record)
                if is_token:
                    record.token_ns.append(arrived_ns)
                if text and not truncated:
                    room = MAX_ANSWER_CHARS - shown
                    truncated = len(text) > room
                    text = text[:room]
                    shown += len(text)
                    if text:
                        yield text
        for data in parser.close():
            if data.strip() != "[DONE]":
                event = _decode(data)
                if chat:
                    _chat_event(event, record)
                else:
                    _generate_event(event, record)
    record.end_ns = time.perf_counter_ns()
    if not record.token_ns and record.finish_reason is None and not done:
        raise ChatRefused("The server closed the stream without sending an answer.")
    latency = record.token_latency_ms
    yield ChatResult(route=route, ttft_ms=record.ttft_ms,
                     tokens_per_s=1000.0 / latency if latency else None,
                     tokens=record.output_token_count, finish_reason=record.finish_reason,
                     truncated=truncated)


def stream_chat(base_url: str, messages: Sequence[Mapping[str, str]], *, max_new_tokens: int,
                temperature: float | None = None, tokenizer_name: str | None = None,
                model: str = "tgi", timeout_s: float = 120.0,
                headers: Mapping[str, str] | None = None) -> Iterator[str | ChatResult]:
    """Stream one answer to ``messages`` (``{"role", "content"}`` dicts, the new user turn
    last): text pieces as they arrive, then a ``ChatResult``.

    ``temperature`` None leaves it to the server. ``tokenizer_name`` is used only on the
    fallback route, for its chat template. Raises ``ChatRefused`` (the server's sentence),
    ``ServerUnreachable`` (nothing answers), ``TokenizerError`` (fallback tokenizer)."""
    url = base_url.rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=httpx.Timeout(timeout_s, connect=10.0),
                          headers=dict(headers or {})) as http:
            http.get("/health")     # opens the connection: its set-up is not the server's time
            status = None
            for item in _stream(http, CHAT_PATH, _chat_body(messages, max_new_tokens,
                                                            temperature, model),
                                ROUTE_CHAT, chat=True):
                if isinstance(item, int):
                    status = item
                    break
                yield item
            if status is None:
                return
            prompt, route = _templated(tokenizer_name, messages)
            for item in _stream(http, GENERATE_PATH,
                                _generate_body(prompt, max_new_tokens, temperature),
                                route, chat=False):
                if isinstance(item, int):
                    raise ChatRefused(f"{url} has neither {CHAT_PATH} nor {GENERATE_PATH} "
                                      f"(HTTP {item}): is it a TGI or OpenAI-compatible server?")
                yield item
    except httpx.TimeoutException:
        raise ServerUnreachable(url, f"No answer from {url} within {timeout_s:g} s.",
                                f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        reason = redact(" ".join(str(exc).split())) or type(exc).__name__
        raise ServerUnreachable(url, f"Nothing answers at {url} ({reason}).", reason) from None


def server_info(base_url: str, *, timeout_s: float = 5.0,
                headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The server's ``/info`` (an empty dict when it has none, e.g. an OpenAI-compatible
    server); ``ServerUnreachable`` when nothing answers."""
    url = base_url.rstrip("/")
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=dict(headers or {})) as http:
            response = http.get("/info")
    except httpx.TimeoutException:
        raise ServerUnreachable(url, f"No answer from {url} within {timeout_s:g} s.",
                                f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        reason = redact(" ".join(str(exc).split())) or type(exc).__name__
        raise ServerUnreachable(url, f"Nothing answers at {url} ({reason}).", reason) from None
    if response.status_code != 200:
        return {}
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def server_model(base_url: str, info: Mapping[str, Any], *, timeout_s: float = 5.0,
                 headers: Mapping[str, str] | None = None) -> str:
    """The ``model`` to name in a chat request: ``/info``'s ``model_id`` (TGI), else the first
    id ``/v1/models`` lists (OpenAI-compatible servers want a name they serve), else ``tgi``
    (TGI accepts any)."""
    if info.get("model_id"):
        return str(info["model_id"])
    try:
        with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                          headers=dict(headers or {})) as http:
            response = http.get("/v1/models")
        data = response.json().get("data") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("id"):
        return str(data[0]["id"])
    return "tgi"
