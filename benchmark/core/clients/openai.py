"""OpenAI-compatible streams: ``/v1/chat/completions`` and ``/v1/completions``.

The request sets ``stream_options.include_usage`` so the server's own token counts arrive in a
final chunk (``usage.prompt_tokens`` / ``usage.completion_tokens``). A chunk with text is a
token event (it may carry several tokens; counts come from ``usage``); ``data: [DONE]`` ends
the stream. A chunk that ends the output with a finish reason but no text is the arrival of an
end-of-sequence token (which has no text) when ``usage`` counts one token more than the text
chunks: it is then the last token event, as on TGI's own stream. Sampling flags the OpenAI API
does not define (top-k, typical-p, repetition penalty, watermark, top-n tokens) are not sent.
"""

from __future__ import annotations

from typing import Any

from ...config import SamplingParams
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
        # Arrival of a chunk that ends the output without text (an end-of-sequence token):
        # the last token's arrival when the server counts one token more than the text chunks.
        self.finish_ns: int | None = None

    def on_event(self, data: str, arrived_ns: int) -> bool:
        record = self.record
        if data.strip() == "[DONE]":
            self.done = True
            self._end_of_sequence_token()
            return True
        event = self.parse(data)
        if event is None:
            return True
        carried = finished = False
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if self.chat:
                delta = choice.get("delta") or {}
                # reasoning models: "reasoning_content" (DeepSeek, older vLLM) or "reasoning"
                text = (delta.get("content") or delta.get("reasoning_content")
                        or delta.get("reasoning"))
            else:
                text = choice.get("text")
            if text:
                carried = True
            if choice.get("finish_reason"):
                record.finish_reason = choice["finish_reason"]
                finished = True
        if carried:
            record.token_ns.append(arrived_ns)
        elif finished and self.finish_ns is None:
            self.finish_ns = arrived_ns
        usage = event.get("usage")
        if isinstance(usage, dict):
            if usage.get("prompt_tokens") is not None:
                record.input_tokens = int(usage["prompt_tokens"])
            if usage.get("completion_tokens") is not None:
                record.output_tokens = int(usage["completion_tokens"])
        return False

    def _end_of_sequence_token(self) -> None:
        """Count the text-less finish chunk as the last token event when usage says it was one."""
        record = self.record
        if (record.error is None and self.finish_ns is not None
                and record.output_tokens == len(record.token_ns) + 1):
            record.token_ns.append(self.finish_ns)
        self.finish_ns = None

    def on_end(self) -> None:
        record = self.record
        self._end_of_sequence_token()
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
