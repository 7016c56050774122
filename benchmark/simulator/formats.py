"""Wire formats: pre-encoded byte templates for SSE events, and JSON bodies of finished requests.

Each streamed token costs one bytes concatenation: the per-request head (encoded once), the
token's position and the pre-encoded token fragment. Formats follow TGI 3.3:

- ``/generate_stream``: ``data:{"index":N,"token":{...},"generated_text":null,"details":null}``
  events; the last one carries ``generated_text`` and, when the request asked
  ``details: true``, ``details`` (finish_reason, generated_tokens, seed, input_length); TGI's
  ``details`` defaults to false. No ``[DONE]``.
- ``/v1/chat/completions`` (stream): ``data:{chat.completion.chunk}`` events, the last token's
  chunk carries ``finish_reason``; with ``stream_options.include_usage`` one more chunk with
  ``choices: []`` and ``usage``; then ``data:[DONE]``.
- ``/v1/completions`` (stream): ``text_completion`` chunks, then ``data:[DONE]``.

Like TGI (axum's SSE writer) there is no space after ``data:``; an event is one line followed
by a blank line; during a long wait a comment line ``:`` keeps the connection alive.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .config import TGI_VERSION
from .tokens import EOS, EOS_TEXT, EOS_TOKEN_ID, FIRST_TOKEN_ID, WORDS, word_logprob

if TYPE_CHECKING:
    from .scheduler import Sequence

SYSTEM_FINGERPRINT = f"{TGI_VERSION}-native"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def error_body(message: str, error_type: str) -> bytes:
    return _dumps({"error": message, "error_type": error_type}).encode()


def error_event(message: str, error_type: str) -> bytes:
    """An SSE error event (the same on every stream): ``data:`` and ``error_body``."""
    return b"data:" + error_body(message, error_type) + b"\n\n"


def token_dict(k: int) -> dict[str, Any]:
    if k == EOS:
        return {"id": EOS_TOKEN_ID, "text": EOS_TEXT, "logprob": -0.0, "special": True}
    return {"id": FIRST_TOKEN_ID + k, "text": WORDS[k], "logprob": word_logprob(k),
            "special": False}


def top_tokens(k: int, n: int) -> list[dict[str, Any]]:
    """``top_n_tokens`` alternatives: the chosen token first, then other words, less likely."""
    if n <= 0:
        return []
    first = token_dict(k)
    base = first["logprob"] or 0.0
    others = [token_dict((max(k, 0) + i) % len(WORDS)) for i in range(1, n)]
    for i, other in enumerate(others, 1):
        other["logprob"] = round(base - 0.5 * i, 2)
    return [first, *others]


def token_text(k: int) -> str:
    return "" if k == EOS else WORDS[k]


OPENAI_FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}

# --- TGI native stream ---------------------------------------------------------------------------

_TGI_HEAD = b'data:{"index":'
_TGI_TAILS = tuple(
    (',"token":' + _dumps(token_dict(k)) + ',"generated_text":null,"details":null}\n\n').encode()
    for k in range(len(WORDS))
)


class TgiStreamFormat:
    """``/generate_stream`` events."""

    def head(self, seq: "Sequence") -> bytes:
        return _TGI_HEAD

    @staticmethod
    def token(seq: "Sequence", index: int, k: int) -> bytes:
        if seq.top_n:
            event = {"index": index, "token": token_dict(k),
                     "top_tokens": top_tokens(k, seq.top_n), "generated_text": None,
                     "details": None}
            return b"data:" + _dumps(event).encode() + b"\n\n"
        return b"%b%d%b" % (_TGI_HEAD, index, _TGI_TAILS[k])

    @staticmethod
    def final(seq: "Sequence", index: int, k: int) -> bytes:
        event: dict[str, Any] = {"index": index, "token": token_dict(k)}
        if seq.top_n:
            event["top_tokens"] = top_tokens(k, seq.top_n)
        event |= {
            "generated_text": seq.generated_text(),
            "details": {"finish_reason": seq.finish_reason, "generated_tokens": seq.generated,
                        "seed": seq.reported_seed, "input_length": seq.input_length}
            if seq.details else None,
        }
        return b"data:" + _dumps(event).encode() + b"\n\n"

    error = staticmethod(error_event)


# --- OpenAI chat stream --------------------------------------------------------------------------

_CHAT_CONTENT = tuple((_dumps(w)).encode() for w in WORDS)
_CHAT_TAIL = b',"tool_calls":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'


class ChatStreamFormat:
    """``/v1/chat/completions`` chunks (stream=true)."""

    @staticmethod
    def _base(seq: "Sequence") -> dict[str, Any]:
        return {"object": "chat.completion.chunk", "id": "", "created": seq.created,
                "model": seq.model, "system_fingerprint": SYSTEM_FINGERPRINT}

    def head(self, seq: "Sequence") -> bytes:
        base = _dumps(self._base(seq))[:-1]
        return ("data:" + base + ',"choices":[{"index":0,"delta":{"role":"assistant",'
                '"content":').encode()

    @staticmethod
    def token(seq: "Sequence", index: int, k: int) -> bytes:
        return b"%b%b%b" % (seq.head, _CHAT_CONTENT[k], _CHAT_TAIL)

    def final(self, seq: "Sequence", index: int, k: int) -> bytes:
        chunk = self._base(seq)
        chunk["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": token_text(k),
                                                   "tool_calls": None},
                             "logprobs": None,
                             "finish_reason": OPENAI_FINISH.get(seq.finish_reason or "", "stop")}]
        chunk["usage"] = None
        out = b"data:" + _dumps(chunk).encode() + b"\n\n"
        if seq.include_usage:
            usage = self._base(seq)
            usage["choices"] = []
            usage["usage"] = seq.usage()
            out += b"data:" + _dumps(usage).encode() + b"\n\n"
        return out + b"data:[DONE]\n\n"

    error = staticmethod(error_event)


# --- OpenAI completions stream -------------------------------------------------------------------

_COMPLETION_TAIL = b',"logprobs":null,"finish_reason":""}],"object":"text_completion"}\n\n'


class CompletionStreamFormat(ChatStreamFormat):
    """``/v1/completions`` chunks (stream=true)."""

    @staticmethod
    def _base(seq: "Sequence") -> dict[str, Any]:
        return {"id": "", "created": seq.created, "model": seq.model,
                "system_fingerprint": SYSTEM_FINGERPRINT}

    def head(self, seq: "Sequence") -> bytes:
        base = _dumps(self._base(seq))[:-1]
        return ("data:" + base + ',"choices":[{"index":0,"text":').encode()

    @staticmethod
    def token(seq: "Sequence", index: int, k: int) -> bytes:
        return b"%b%b%b" % (seq.head, _CHAT_CONTENT[k], _COMPLETION_TAIL)

    def final(self, seq: "Sequence", index: int, k: int) -> bytes:
        chunk = self._base(seq)
        chunk["choices"] = [{"index": 0, "text": token_text(k), "logprobs": None,
                             "finish_reason": OPENAI_FINISH.get(seq.finish_reason or "", "stop")}]
        chunk["object"] = "text_completion"
        return b"data:" + _dumps(chunk).encode() + b"\n\n" + b"data:[DONE]\n\n"


# --- Bodies of non-streamed responses ------------------------------------------------------------


def generate_body(seq: "Sequence") -> dict[str, Any]:
    body: dict[str, Any] = {"generated_text": seq.generated_text()}
    if seq.details:
        body["details"] = {
            "finish_reason": seq.finish_reason,
            "generated_tokens": seq.generated,
            "seed": seq.reported_seed,
            "prefill": [],
            "tokens": [token_dict(k) for k in seq.words],
            "top_tokens": [top_tokens(k, seq.top_n) for k in seq.words] if seq.top_n else [],
        }
    return body


def chat_body(seq: "Sequence") -> dict[str, Any]:
    return {
        "object": "chat.completion", "id": "", "created": seq.created, "model": seq.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": seq.generated_text()},
                     "logprobs": None,
                     "finish_reason": OPENAI_FINISH.get(seq.finish_reason or "", "stop")}],
        "usage": seq.usage(),
    }


def completion_body(seq: "Sequence") -> dict[str, Any]:
    return {
        "object": "text_completion", "id": "", "created": seq.created, "model": seq.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "text": seq.generated_text(), "logprobs": None,
                     "finish_reason": OPENAI_FINISH.get(seq.finish_reason or "", "stop")}],
        "usage": seq.usage(),
    }
