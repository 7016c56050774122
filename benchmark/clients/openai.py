"""OpenAI-compatible streams: ``/v1/chat/completions`` and ``/v1/completions``.

The request sets ``stream_options.include_usage`` so the server's own token counts arrive in a
final chunk (``usage.prompt_tokens`` / ``usage.completion_tokens``). A chunk with text is a
token event (it may carry several tokens; counts come from ``usage``); ``data: [DONE]`` ends
the stream. Sampling flags the OpenAI API does not define (top-k, typical-p, repetition penalty,
watermark, top-n tokens) are not sent.
"""

from __future__ import annotations

from typing import Any

from ..config import SamplingParams
from ..records import RequestRecord
from .base import StreamClient, StreamDecoder

__all__ = ["OpenAIChatClient", "OpenAICompletionsClient", "OpenAIDecoder", "UNSENT_SAMPLING"]

UNSENT_SAMPLING = ("top_k", "typical_p", "repetition_penalty", "watermark", "top_n_tokens")


def openai_parameters(sampling: SamplingParams, *, decode_length: int,
                      seed: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "max_tokens": decode_length,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if sampling.temperature is not None:
        params["temperature"] = sampling.temperature
    elif not sampling.do_sample:
        params["temperature"] = 0.0
    if sampling.top_p is not None:
        params["top_p"] = sampling.top_p
    if sampling.frequency_penalty is not None:
        params["frequency_penalty"] = sampling.frequency_penalty
    if seed is not None:
        params["seed"] = seed
    return params


class OpenAIDecoder(StreamDecoder):
    def __init__(self, record: RequestRecord, *, chat: bool):
        super().__init__(record)
        self.chat = chat
        self.done = False

    def on_event(self, data: str, arrived_ns: int) -> bool:
        record = self.record
        if data.strip() == "[DONE]":
            self.done = True
            return True
        event = self.parse(data)
        if event is None:
            return True
        carried = False
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if self.chat:
                delta = choice.get("delta") or {}
                text = delta.get("content") or delta.get("reasoning_content")
            else:
                text = choice.get("text")
            if text:
                carried = True
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
        if carried:
            record.token_ns.append(arrived_ns)
        usage = event.get("usage")
        if isinstance(usage, dict):
            if usage.get("prompt_tokens") is not None:
                record.input_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                record.output_tokens = int(usage["completion_tokens"])
        return False

    def on_end(self) -> None:
        record = self.record
        if record.error is None and not self.done and record.finish_reason is None:
            self.fail("stream", f"the stream ended after {len(record.token_ns)} token events "
                                f"without [DONE]")


class _OpenAIClient(StreamClient):
    chat = False

    def __init__(self, base_url: str, *, model: str, sampling: SamplingParams,
                 decode_length: int, seed: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(base_url, headers=headers)
        self.model = model
        self.parameters = openai_parameters(sampling, decode_length=decode_length, seed=seed)

    def decoder(self, record: RequestRecord) -> StreamDecoder:
        return OpenAIDecoder(record, chat=self.chat)


class OpenAIChatClient(_OpenAIClient):
    api = "openai-chat"
    path = "/v1/chat/completions"
    chat = True

    def payload(self, prompt: str) -> dict[str, Any]:
        return {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                **self.parameters}


class OpenAICompletionsClient(_OpenAIClient):
    api = "openai-completions"
    path = "/v1/completions"

    def payload(self, prompt: str) -> dict[str, Any]:
        return {"model": self.model, "prompt": prompt, **self.parameters}
