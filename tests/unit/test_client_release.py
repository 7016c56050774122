"""A request handed to the client ahead of its send time (``release_ns``, the rate mode): no
byte of it reaches the server before that instant, it is stamped sent at or after it, and the
time it was held does not count against its timeout."""

from __future__ import annotations

import asyncio
import json
import time

import uvloop

from benchmark.config import SamplingParams
from benchmark.core.clients import TGIClient, open_session
from benchmark.core.records import RequestRecord



def tgi_event(index: int, final: bool = False) -> bytes:
    details = {"finish_reason": "length", "generated_tokens": 3, "input_length": 7}
    event = {"index": index, "token": {"id": index, "text": "x", "special": False},
             "generated_text": "xxx" if final else None, "details": details if final else None}
    return b"data:" + json.dumps(event).encode() + b"\n\n"


ANSWER = tgi_event(1) + tgi_event(2) + tgi_event(3, final=True)


class StampingServer(asyncio.Protocol):
    """Stamps when the first bytes of each connection's request come in, then answers with
    three TGI events (the body is not waited for: the head is enough to answer)."""

    first_bytes: list[int] = []

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.head = b""

    def data_received(self, data: bytes) -> None:
        if not self.head:
            StampingServer.first_bytes.append(time.perf_counter_ns())
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                                 % len(ANSWER) + ANSWER)
            self.head = b"sent"


async def send_held(hold_ms: float, *, timeout_s: float = 30.0) -> tuple[RequestRecord, int]:
    StampingServer.first_bytes = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StampingServer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = TGIClient(f"http://127.0.0.1:{port}", sampling=SamplingParams(), decode_length=3,
                       sequence_length=7)
    record = RequestRecord(step=1, run=1, request=1, request_id="held-1")
    release = time.perf_counter_ns() + int(hold_ms * 1e6)
    try:
        async with open_session() as session:
            await client.send(session, client.body("hi"), record, timeout_s=timeout_s,
                              release_ns=release)
    finally:
        server.close()
        await server.wait_closed()
    return record, release


def test_no_byte_of_a_held_request_reaches_the_server_before_its_release():
    for hold_ms in (0.3, 4.0, 60.0):
        record, release = uvloop.run(send_held(hold_ms))
        assert record.ok, record.error
        assert len(StampingServer.first_bytes) == 1
        assert StampingServer.first_bytes[0] >= release
        assert record.sent_ns is not None and record.sent_ns >= release
        assert len(record.token_ns) == 3 and record.token_ns[0] >= record.sent_ns


def test_a_release_already_past_sends_at_once_and_stamps_the_real_send():
    record, release = uvloop.run(send_held(-50.0))
    assert record.ok, record.error
    assert record.sent_ns is not None and record.sent_ns > release + 40_000_000


def test_the_time_a_request_is_held_does_not_count_against_its_timeout():
    record, release = uvloop.run(send_held(400.0, timeout_s=0.3))
    assert record.ok, record.error
    assert record.sent_ns is not None and record.sent_ns >= release
