"""The shared streaming core: send one request, stamp bytes as they arrive, fill a record.

Every API client (``tgi.py``, ``openai.py``) only says how to build a body and how the data of
one SSE event becomes tokens (a ``StreamDecoder``). Sending, stamping, timeouts and errors are
written once, here:

    client = TGIClient(base_url, sampling=..., decode_length=128, sequence_length=512)
    async with open_session() as session:
        body = client.body(prompt)                      # pre-serialised bytes
        await client.send(session, body, record, timeout_s=60)

Stamps are ``time.perf_counter_ns()``:
- ``sent_ns`` when aiohttp hands the request's bytes to the socket (a trace hook), so the time
  spent waiting for the event loop counts as dispatch lag, never as server latency;
- one stamp per token-carrying SSE event, taken when the chunk holding it arrived, before any
  JSON is parsed;
- ``end_ns`` when the stream ended, failed or timed out.

A failed request never raises: the record gets ``error`` (a sentence) and ``error_kind``
(``"http"``, ``"stream"``, ``"timeout"``, ``"connection"``, ``"cancelled"``). Token counts are
only what the server reported: ``input_tokens`` / ``output_tokens`` stay None when it said
nothing (the statistics then count token events, and the engine warns).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from abc import ABC, abstractmethod
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, AsyncIterator

import aiohttp
from aiohttp.client_proto import ResponseHandler

from ...errors import redact
from ..clock import wait_until
from ..records import RequestRecord
from .sse import EventTooLarge, SSEParser

__all__ = ["StreamDecoder", "StreamClient", "HeldBody", "open_session", "error_message"]

_MAX_ERROR_CHARS = 300
DRAIN_TIMEOUT_S = 1.0


class StreamDecoder(ABC):
    """Turns the data of SSE events into tokens on one record (one decoder per request)."""

    def __init__(self, record: RequestRecord):
        self.record = record

    @abstractmethod
    def on_event(self, data: str, arrived_ns: int) -> bool:
        """Handle one event's data that arrived at ``arrived_ns``; True when the stream is over."""

    def on_end(self) -> None:
        """The stream closed; fill what the server did not say (default: nothing)."""

    def parse(self, data: str) -> dict[str, Any] | None:
        """The event's JSON object; None (and the record failed) for an event that is not a
        JSON object or that reports an error (TGI: ``error``/``error_type``; OpenAI: ``error``
        with a ``message``)."""
        try:
            event = json.loads(data)
        except ValueError:
            self.fail("stream", f"the server sent an event that is not JSON: {data[:80]!r}")
            return None
        if not isinstance(event, dict):
            self.fail("stream", f"the server sent an unexpected event: {data[:80]!r}")
            return None
        error = event.get("error")
        if error is not None:
            message = error.get("message", error) if isinstance(error, dict) else error
            kind = event.get("error_type")
            self.fail("stream", f"stream error{f' ({kind})' if kind else ''}: {message}")
            return None
        return event

    def fail(self, kind: str, message: str) -> None:
        if self.record.error is None:
            self.record.error = redact(message)[:_MAX_ERROR_CHARS]
            self.record.error_kind = kind


class StreamClient(ABC):
    """One API: where to POST, what to send, how to read the stream."""

    api: str = ""
    path: str = ""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + self.path
        # identity: a compressed stream would be buffered by the compressor and arrive late.
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                        "Accept-Encoding": "identity"}
        self.headers.update(headers or {})

    @abstractmethod
    def payload(self, prompt: str) -> dict[str, Any]:
        """The JSON body for ``prompt`` (as a dict)."""

    @abstractmethod
    def decoder(self, record: RequestRecord) -> StreamDecoder:
        """A fresh decoder for one request."""

    def body(self, prompt: str) -> bytes:
        """The request body, serialised once before the load starts."""
        return json.dumps(self.payload(prompt), separators=(",", ":")).encode()

    async def send(self, session: aiohttp.ClientSession, body: bytes, record: RequestRecord,
                   *, timeout_s: float, release_ns: int | None = None) -> RequestRecord:
        """POST ``body`` and fill ``record``; never raises except ``asyncio.CancelledError``.

        ``release_ns``: the request is built and given a connection at once, but none of its
        bytes is written before ``perf_counter_ns()`` reaches this instant (``HeldBody``), so
        that the building is done ahead and the bytes go out on time. ``timeout_s`` counts from
        the release.

        A request lost on a kept-alive connection before any answer came (the server had closed
        the socket while it sat in the pool) was never measured: it is sent again, once, on a
        fresh connection, and ``record.retried`` says so."""
        context = SimpleNamespace(record=record, reused=False)
        held = 0.0 if release_ns is None else max(0, release_ns - time.perf_counter_ns()) / 1e9
        data: bytes | HeldBody = body if release_ns is None else HeldBody(body, release_ns)
        await self._attempt(session, data, record, context, timeout_s=timeout_s + held)
        if _lost_before_an_answer(record, context):
            _reset(record)
            record.retried = True
            async with open_session(fresh=True) as fresh:
                await self._attempt(fresh, body, record, SimpleNamespace(record=record),
                                    timeout_s=timeout_s)
        return record

    async def _attempt(self, session: aiohttp.ClientSession, body: bytes | HeldBody,
                       record: RequestRecord,
                       context: SimpleNamespace, *, timeout_s: float) -> None:
        decoder = self.decoder(record)
        headers = dict(self.headers)
        if record.request_id:
            headers["X-Request-Id"] = record.request_id
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                await self._stream(session, body, headers, record, decoder, context)
        except TimeoutError as exc:
            if record.end_ns is not None:
                pass  # the response had ended: only the drain after it was cut
            elif deadline.expired():
                decoder.fail("timeout", f"timeout after {timeout_s:g} s")
            else:  # aiohttp's own connect timeout, not ours
                decoder.fail("connection", f"connection error: {_describe(exc)}")
        except asyncio.CancelledError:
            if record.end_ns is None:  # else it had ended: only the drain after it was cut
                decoder.fail("cancelled", "cancelled before the response ended")
                record.end_ns = time.perf_counter_ns()
            raise
        except (aiohttp.ClientConnectionError, OSError) as exc:
            decoder.fail("connection", f"connection error: {_describe(exc)}")
        except aiohttp.ClientError as exc:
            decoder.fail("connection", f"client error: {_describe(exc)}")
        if record.end_ns is None:
            record.end_ns = time.perf_counter_ns()

    async def _stream(self, session: aiohttp.ClientSession, body: bytes | HeldBody,
                      headers: dict[str, str], record: RequestRecord, decoder: StreamDecoder,
                      context: SimpleNamespace) -> None:
        # Overwritten by the trace hook when the bytes are written (the stamp that counts).
        record.sent_ns = max(time.perf_counter_ns(), getattr(body, "release_ns", 0))
        async with session.post(self.url, data=body, headers=headers,
                                trace_request_ctx=context) as response:
            record.status = response.status
            if response.status >= 400:
                raw = await response.read()
                record.end_ns = time.perf_counter_ns()
                decoder.fail("http", f"HTTP {response.status}: {error_message(raw, response.reason)}")
                return
            parser = SSEParser()
            done = False
            events = 0
            first_bytes = b""
            connection = response.connection
            protocol = connection.protocol if connection is not None else None
            previous = 0
            while not done:
                chunk = await response.content.readany()
                arrived = time.perf_counter_ns()
                if not chunk:
                    for data in parser.close():
                        events += 1
                        if decoder.on_event(data, arrived):
                            break
                    record.end_ns = arrived
                    break
                # The socket read that brought these bytes (see _StampingHandler), when newer
                # than the last one used: earlier than now by the other streams' work.
                received = getattr(protocol, "received_ns", 0)
                if previous < received <= arrived:
                    arrived = previous = received
                if not events and len(first_bytes) < 200:
                    first_bytes += chunk[:200]
                try:
                    completed = parser.feed(chunk)
                except EventTooLarge as exc:
                    decoder.fail("stream", str(exc))
                    record.end_ns = arrived
                    return
                for data in completed:
                    events += 1
                    if decoder.on_event(data, arrived):
                        done = True
                        record.end_ns = arrived
                        break
            if not events and not done:
                kind = response.headers.get("Content-Type", "no content type")
                if "text/event-stream" not in kind:
                    decoder.fail("stream", f"the server answered HTTP {response.status} with "
                                           f"{kind}, not an event stream: "
                                           f"{error_message(first_bytes[:200], 'empty body')}")
            decoder.on_end()
            if done:
                await _drain(response)


class HeldBody(aiohttp.BytesPayload):
    """A request body whose bytes are written at ``release_ns`` at the earliest.

    aiohttp builds the request, takes a connection and keeps the headers back until the first
    bytes of the body are written (they go out together, aiohttp 3.12 and later), so holding
    the body holds every byte of the request; what is left after the release is the write
    itself. Written again (a request sent again on a fresh connection), it goes at once."""

    def __init__(self, body: bytes, release_ns: int):
        super().__init__(body, content_type="application/json")
        self.release_ns = release_ns

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await wait_until(self.release_ns)
        await super().write_with_length(writer, content_length)


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows the last event (the chunked end of body) so that the connection goes
    back to the pool: leaving a response unfinished makes aiohttp close it, and the next round
    would pay a new connection (measured: 196 connections instead of 64 for 4 rounds of 64)."""
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass  # the connection is simply not reused


def error_message(raw: bytes, fallback: str | None = None) -> str:
    """The server's own error sentence from a JSON error body, else the raw text (shortened)."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error", data.get("message", data.get("detail")))
        if isinstance(inner, dict):
            inner = inner.get("message") or json.dumps(inner)
        if inner:
            text = str(inner)
    if not text:
        text = fallback or "no message"
    return redact(" ".join(text.split()))[:_MAX_ERROR_CHARS]


def _lost_before_an_answer(record: RequestRecord, context: SimpleNamespace) -> bool:
    """A connection error on a connection taken from the pool, before any status line came:
    the server never answered this request (it had dropped the kept-alive socket)."""
    return (record.error_kind == "connection" and record.status is None
            and not record.token_ns and bool(getattr(context, "reused", False)))


def _reset(record: RequestRecord) -> None:
    """Forget what a lost attempt left on ``record`` (its schedule and identity stay)."""
    record.sent_ns = record.end_ns = None
    record.token_ns = []
    record.input_tokens = record.output_tokens = None
    record.finish_reason = record.error = record.error_kind = None
    record.status = None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


async def _on_chunk_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    record = getattr(context.trace_request_ctx, "record", None)
    if record is not None:
        record.sent_ns = time.perf_counter_ns()


async def _on_connection_reused(session: Any, context: SimpleNamespace, params: Any) -> None:
    request = context.trace_request_ctx
    if request is not None and hasattr(request, "reused"):
        request.reused = True


def trace_config() -> aiohttp.TraceConfig:
    """Stamps ``record.sent_ns`` when aiohttp writes the request bytes to the socket, and notes
    when a request went out on a connection taken from the pool (``context.reused``)."""
    config = aiohttp.TraceConfig()
    config.on_request_chunk_sent.append(_on_chunk_sent)
    config.on_connection_reuseconn.append(_on_connection_reused)
    return config


class _StampingHandler(ResponseHandler):
    """aiohttp's protocol, stamping each socket read before aiohttp parses it.

    With hundreds of streams, one turn of the event loop first reads every ready socket, then
    resumes every waiting stream; a stamp taken when a stream resumes also counts the work of
    the streams resumed before it. ``received_ns`` is taken when the bytes came off the socket.
    """

    received_ns = 0

    def data_received(self, data: bytes) -> None:
        if data:  # aiohttp also calls data_received(b"") itself when it resumes reading
            self.received_ns = time.perf_counter_ns()
        super().data_received(data)


class _StampingConnector(aiohttp.TCPConnector):
    """A ``TCPConnector`` whose connections use ``_StampingHandler``."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if getattr(self, "_factory", None) is not None:  # aiohttp's protocol factory
            self._factory = functools.partial(_StampingHandler, loop=self._loop)


@asynccontextmanager
async def open_session(*, fresh: bool = False) -> AsyncIterator[aiohttp.ClientSession]:
    """One session for a whole run: no connection limit, keep-alive, no total timeout.

    ``fresh``: a session whose connections are new and closed after use (to send a request
    again after its kept-alive connection was found dead)."""
    keep = {"force_close": True} if fresh else {"keepalive_timeout": 60}
    connector = _StampingConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, **keep)
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        trace_configs=[trace_config()],
        read_bufsize=2**16,
    )
    try:
        yield session
    finally:
        await session.close()
