"""Stamp each request when its first bytes reached the server's socket, not when Python saw them.

    loop = new_event_loop()                              # the simulator runs on this loop
    runner = StampingAppRunner(app, access_log=None)    # instead of web.AppRunner
    ...
    async def handler(request):
        arrived = request.get(ARRIVED_NS)   # perf_counter_ns() clock, or None when unknown
        read = request.get(READ_NS)         # when the event loop read those bytes

Why: under a burst of hundreds of simultaneous requests one Python event loop reads a socket only
when it gets round to it, milliseconds after the bytes came in, and starts the handler later
still (up to ~150 ms). A trace stamped there would charge the server's own backlog to the client
as "send -> server" time. So there are two stamps per request:

- ``arrived_ns``: when the kernel received the bytes (``SO_TIMESTAMPNS``). ``KernelStampLoop``
  (asyncio's selector loop) turns the option on for each accepted connection and reads with
  ``recvmsg``, so every read carries the receive time of its last segment. That time is on
  CLOCK_REALTIME; it is moved onto ``perf_counter_ns()`` (CLOCK_MONOTONIC) by the offset between
  the two clocks (``WallToMonotonic``: the two clocks move at the same rate, so the offset only
  changes when the wall clock is set; it is measured again every second). Where this is not
  available (not Linux, or the option is refused), ``arrived_ns`` is the read time below.
- ``read_ns``: when the connection's ``data_received`` ran. ``read_ns - arrived_ns`` is the
  server's own wait before it looked at the request: server latency, which the client is right
  to count in its time to first token.

Keep-alive: the stamps belong to each request, not to the connection. A read starts a new
request only when no request head is half-parsed and the previous request's body is complete,
so the body bytes of one request never stamp the next one. When a read finishes one request's
body and also starts the next request's head, the next request gets that read's stamps (its
last segment: later than the truth, never earlier than the client sent it). Requests parsed from
bytes buffered earlier (aiohttp re-parsing pipelined requests after a pause) get the stamps of
the last read that carried bytes.

``KernelStampLoop`` replaces one method of the standard library's socket transport
(``_SelectorSocketTransport._read_ready__data_received``: ``recv`` becomes ``recvmsg``; the rest
is unchanged). ``new_event_loop()`` uses it only when that method exists, so another Python gets
the plain loop and read-time stamps rather than an error.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from asyncio import selector_events
from itertools import islice
from time import perf_counter_ns
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

ARRIVED_NS = web.RequestKey("arrived_ns", int)
READ_NS = web.RequestKey("read_ns", int)

# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS), the same number on x86-64 and arm64; Python's
# socket module does not name it. The payload is a struct timespec (two 64-bit integers).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_MAX_AGE_NS = 60_000_000_000  # a kernel stamp older than this (or in the future) is not trusted
_OFFSET_REFRESH_NS = 1_000_000_000  # how often the wall-to-monotonic offset is measured again
_OFFSET_TRIES = 5  # clock read triples per measurement; the closest one is kept
_TRANSPORT = getattr(selector_events, "_SelectorSocketTransport", None)
KERNEL_STAMPS = (sys.platform.startswith("linux") and _ANCILLARY_BYTES > 0
                 and hasattr(_TRANSPORT, "_read_ready__data_received"))


class WallToMonotonic:
    """The offset from the wall clock (``time.time_ns()``) to ``perf_counter_ns()``.

    Measured from three reads (wall, monotonic, wall) and kept from the try whose two wall
    reads were closest: a thread switch between the reads (another thread holding the GIL)
    would otherwise shift every stamp by the length of the switch. The two clocks run at the
    same rate (NTP slews both), so the offset is measured again only every second
    (``_OFFSET_REFRESH_NS``), to follow a wall clock that was set."""

    def __init__(self) -> None:
        self._offset = 0
        self._measured_ns: int | None = None

    def offset_ns(self) -> int:
        now = perf_counter_ns()
        if self._measured_ns is None or now - self._measured_ns >= _OFFSET_REFRESH_NS:
            self._offset = self.measure()
            self._measured_ns = now
        return self._offset

    def measure(self) -> int:
        best_gap, best = None, 0
        for _ in range(_OFFSET_TRIES):
            before = time.time_ns()
            mono = perf_counter_ns()
            after = time.time_ns()
            gap = after - before
            if best_gap is None or gap < best_gap:
                best_gap, best = gap, (before + after) // 2 - mono
            if gap <= 1_000:
                break
        return best


_WALL = WallToMonotonic()


def kernel_receive_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel's receive time of a read (its ``SCM_TIMESTAMPNS`` ancillary item) on the
    ``perf_counter_ns()`` clock, or None when the read carries none or the value is implausible
    (in the future, or older than a minute: the wall clock was set while the bytes waited).
    A stamp returned is never later than the protocol's read stamp, taken after this call."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(raw)
            stamp = seconds * 1_000_000_000 + nanoseconds - _WALL.offset_ns()
            if 0 <= perf_counter_ns() - stamp < _MAX_AGE_NS:
                return stamp
    return None


class StampingRequestHandler(RequestHandler):
    """aiohttp's server protocol, remembering each request's arrival and read stamps."""

    __slots__ = ("_head_started", "_last_read", "_open_body", "_arrivals", "kernel_ns")

    def __init__(self, manager: web.Server, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._head_started: tuple[int, int] | None = None  # a head has begun, not yet parsed
        self._last_read = (0, 0)
        self._open_body: Any = None  # the last request's body while bytes of it are still due
        # id(message) -> (message, stamps); holding the message keeps its id from being reused
        self._arrivals: dict[int, tuple[Any, tuple[int, int]]] = {}
        self.kernel_ns: int | None = None  # set by KernelStampLoop's transport before each read

    def data_received(self, data: bytes) -> None:
        read = perf_counter_ns()
        kernel, self.kernel_ns = self.kernel_ns, None
        stamps = (read if kernel is None else kernel, read)
        if data:  # aiohttp calls data_received(b"") itself to re-parse buffered requests
            self._last_read = stamps
            body = self._open_body
            if body is not None and body.is_eof():
                body = self._open_body = None
            if self._head_started is None and body is None:
                self._head_started = stamps
        queued = len(self._messages)
        super().data_received(data)
        added = list(islice(self._messages, queued, None))
        if not added:
            return
        for i, (message, _payload) in enumerate(added):
            if not data:
                stamp = self._last_read
            elif i == 0 and self._head_started is not None:
                stamp = self._head_started
            else:  # began inside this read, after the end of the previous request
                stamp = stamps
            self._arrivals[id(message)] = (message, stamp)
        self._head_started = None
        payload = added[-1][1]
        self._open_body = None if payload.is_eof() else payload

    def pop_arrival(self, message: Any) -> tuple[int, int] | None:
        """(arrived_ns, read_ns) of a parsed request head (once), or None when unknown."""
        entry = self._arrivals.pop(id(message), None)
        return None if entry is None else entry[1]


def _stamped_factory(factory: Any) -> Any:
    def make_request(message: Any, payload: Any, protocol: StampingRequestHandler, writer: Any,
                     task: Any) -> Any:
        request = factory(message, payload, protocol, writer, task)
        stamps = protocol.pop_arrival(message)
        if stamps is not None:
            request[ARRIVED_NS], request[READ_NS] = stamps
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


# -- the kernel's receive time -------------------------------------------------------------------

if KERNEL_STAMPS:
    class _KernelStampTransport(_TRANSPORT):  # type: ignore[misc, valid-type]
        """The standard socket transport, reading with ``recvmsg`` to learn each read's kernel
        receive time and handing it to the protocol (``protocol.kernel_ns``) before the data."""

        def _read_ready__data_received(self) -> None:
            if self._conn_lost:
                return
            try:
                data, ancillary, _flags, _address = self._sock.recvmsg(self.max_size,
                                                                       _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
                return
            if not data:
                self._read_ready__on_eof()
                return
            self._protocol.kernel_ns = kernel_receive_ns(ancillary)
            try:
                self._protocol.data_received(data)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")


class KernelStampLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop whose server connections carry kernel receive stamps.

    The option is set on the listening socket too: a connection inherits it from the moment
    of its handshake, so a request that arrives before the busy loop accepts its connection is
    still stamped on arrival."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        server = await super().create_server(*args, **kwargs)
        if KERNEL_STAMPS:
            for sock in server.sockets:
                _timestamps_on(sock)
        return server

    def _make_socket_transport(self, sock: socket.socket, protocol: Any, waiter: Any = None,
                               *, extra: Any = None, server: Any = None) -> Any:
        if KERNEL_STAMPS and isinstance(protocol, StampingRequestHandler) and _timestamps_on(sock):
            return _KernelStampTransport(self, sock, protocol, waiter, extra, server)
        return super()._make_socket_transport(sock, protocol, waiter, extra=extra, server=server)


def _timestamps_on(sock: Any) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The simulator's event loop: ``KernelStampLoop`` where kernel stamps work, else asyncio's."""
    return KernelStampLoop() if KERNEL_STAMPS else asyncio.new_event_loop()


def arrival_clock(loop: asyncio.AbstractEventLoop) -> str:
    """What ``arrived_ns`` means on ``loop``: "kernel" (receive time) or "read" (event loop)."""
    return "kernel" if KERNEL_STAMPS and isinstance(loop, KernelStampLoop) else "read"
