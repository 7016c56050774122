"""Stamp each request when its first bytes come off the socket, not when its handler starts.

    runner = StampingAppRunner(app, access_log=None)    # instead of web.AppRunner
    ...
    async def handler(request):
        arrived = request.get(ARRIVED_NS)   # perf_counter_ns(), or None when unknown

aiohttp starts a request's handler only when its event loop gets round to it. Under a burst of
hundreds of simultaneous requests that is up to ~150 ms after the bytes arrived, and a trace
stamped in the handler would charge that delay to the client ("send -> server"). Here the
connection's protocol (``StampingRequestHandler.data_received``) stamps ``perf_counter_ns()``
when a read carries the first bytes of a new request, and the request factory hands that stamp
to the ``Request`` it builds.

Keep-alive: the stamp belongs to each request, not to the connection. A read starts a new
request only when no request head is half-parsed and the previous request's body is complete,
so the body bytes of one request never stamp the next one. When a read finishes one request's
body and also starts the next request's head, the next request is stamped by the read that
completes its head (later than the truth, never earlier than the client sent it). Requests
parsed from bytes buffered earlier (aiohttp re-parsing pipelined requests after a pause) get
the stamp of the last read that carried bytes.
"""

from __future__ import annotations

from itertools import islice
from time import perf_counter_ns
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

ARRIVED_NS = web.RequestKey("arrived_ns", int)


class StampingRequestHandler(RequestHandler):
    """aiohttp's server protocol, remembering when each request's first bytes were read."""

    __slots__ = ("_head_started_ns", "_last_read_ns", "_open_body", "_arrivals")

    def __init__(self, manager: web.Server, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._head_started_ns: int | None = None  # a request head has begun, not yet parsed
        self._last_read_ns = 0
        self._open_body: Any = None  # the last request's body while bytes of it are still due
        self._arrivals: dict[int, tuple[Any, int]] = {}  # id(message) -> (message, stamp)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        if data:  # aiohttp calls data_received(b"") itself to re-parse buffered requests
            self._last_read_ns = now
            body = self._open_body
            if body is not None and body.is_eof():
                body = self._open_body = None
            if self._head_started_ns is None and body is None:
                self._head_started_ns = now
        queued = len(self._messages)
        super().data_received(data)
        added = list(islice(self._messages, queued, None))
        if not added:
            return
        for i, (message, _payload) in enumerate(added):
            if not data:
                stamp = self._last_read_ns
            elif i == 0 and self._head_started_ns is not None:
                stamp = self._head_started_ns
            else:  # began inside this read, after the end of the previous request
                stamp = now
            self._arrivals[id(message)] = (message, stamp)
        self._head_started_ns = None
        payload = added[-1][1]
        self._open_body = None if payload.is_eof() else payload

    def pop_arrival(self, message: Any) -> int | None:
        """The first-bytes stamp of a parsed request head (once), or None when unknown."""
        entry = self._arrivals.pop(id(message), None)
        if entry is None or entry[0] is not message:
            return None
        return entry[1]


def _stamped_factory(factory: Any) -> Any:
    def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> Any:
        request = factory(message, payload, protocol, writer, task)
        if isinstance(protocol, StampingRequestHandler):
            arrived = protocol.pop_arrival(message)
            if arrived is not None:
                request[ARRIVED_NS] = arrived
        return request
    return make_request


class StampingServer(web.Server):
    """aiohttp's low-level server whose connections use ``StampingRequestHandler``."""

    def __init__(self, handler: Any, *, request_factory: Any = None, **kwargs: Any):
        super().__init__(handler, request_factory=request_factory, **kwargs)
        self.request_factory = _stamped_factory(self.request_factory)

    def __call__(self) -> StampingRequestHandler:
        return StampingRequestHandler(self, loop=self._loop, **self._kwargs)


class StampingAppRunner(web.AppRunner):
    """``web.AppRunner`` serving the application through a ``StampingServer``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return StampingServer(server.request_handler, request_factory=server.request_factory,
                              handler_cancellation=server.handler_cancellation,
                              loop=server._loop, **server._kwargs)
