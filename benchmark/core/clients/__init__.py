"""One streaming client per API, all filling the same ``RequestRecord``.

    client = make_client(config, model="my-model")
    async with open_session() as session:
        await client.send(session, client.body(prompt), record, timeout_s=config.timeout_s)
"""

from __future__ import annotations

from ...config import RunConfig
from .base import StreamClient, StreamDecoder, error_message, open_session
from .openai import OpenAIChatClient, OpenAICompletionsClient
from .sse import SSEParser
from .tgi import TGIClient

__all__ = ["StreamClient", "StreamDecoder", "SSEParser", "TGIClient", "OpenAIChatClient",
           "OpenAICompletionsClient", "make_client", "open_session", "error_message"]


def make_client(config: RunConfig, *, model: str | None = None,
                headers: dict[str, str] | None = None) -> StreamClient:
    """The client for ``config.api`` (``model`` is the name sent on OpenAI APIs)."""
    if config.api == "tgi":
        return TGIClient(config.url, sampling=config.sampling, decode_length=config.decode_length,
                         sequence_length=config.sequence_length, seed=config.seed,
                         headers=headers)
    cls = OpenAIChatClient if config.api == "openai-chat" else OpenAICompletionsClient
    return cls(config.url, model=model or config.model or "tgi", sampling=config.sampling,
               decode_length=config.decode_length, seed=config.seed, headers=headers)
