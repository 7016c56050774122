"""The trace's arrived_ns is when a request's first bytes reached the server (the kernel's receive
time), per request on keep-alive; read_ns is when the server's event loop read them.

Raw sockets, so that the client's send stamp is taken right before the bytes go out, and so that
one request's head and body can be sent apart on a connection that is then reused.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import httpx

from benchmark.simulator import SimulatorConfig, run_in_thread, trace_rows
from benchmark.simulator.arrival import KERNEL_STAMPS, SO_TIMESTAMPNS, kernel_receive_ns

FAST = dict(prefill_base_ms=1.0, prefill_per_token_ms=0.0, decode_base_ms=1.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)
BODY = json.dumps({"inputs": "one two three", "parameters": {"max_new_tokens": 3}}).encode()


def _head(port: int, request_id: str, extra: str = "") -> bytes:
    return (f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
            f"X-Request-Id: {request_id}\r\n{extra}\r\n").encode()


def _port(sim) -> int:
    return int(sim.url.rsplit(":", 1)[1])


class Conn:
    """One keep-alive HTTP/1.1 connection read by hand."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> int:
        sent_ns = time.perf_counter_ns()
        self.sock.sendall(data)
        return sent_ns

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buf += chunk
        head, self.buf = self.buf.split(marker, 1)
        return head

    def response(self) -> tuple[int, bytes]:
        head = self._until(b"\r\n\r\n").decode()
        status = int(head.split()[1])
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def interim(self) -> str:
        return self._until(b"\r\n\r\n").decode()

    def close(self) -> None:
        self.sock.close()


def test_arrival_is_stamped_per_request_on_a_reused_connection(tmp_path):
    trace = tmp_path / "trace.jsonl"
    with run_in_thread(SimulatorConfig(trace=str(trace), **FAST)) as sim:
        conn = Conn(_port(sim))
        # Request a: head first, body only once the server has parsed the head (100 Continue).
        head_ns = conn.send(_head(_port(sim), "a", "Expect: 100-continue\r\n"))
        assert conn.interim().startswith("HTTP/1.1 100")
        body_ns = conn.send(BODY)
        assert conn.response()[0] == 200
        time.sleep(0.05)
        # Request b on the same connection, later: its own bytes stamp it, not a's body.
        b_ns = conn.send(_head(_port(sim), "b") + BODY)
        assert conn.response()[0] == 200
        # Requests c and d pipelined in one write.
        cd_ns = conn.send(_head(_port(sim), "c") + BODY + _head(_port(sim), "d") + BODY)
        assert conn.response()[0] == 200 and conn.response()[0] == 200
        conn.close()
        sent = {"a": head_ns, "b": b_ns, "c": cd_ns, "d": cd_ns}
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    assert set(rows) == set(sent)
    for request_id, sent_ns in sent.items():
        row = rows[request_id]
        assert sent_ns <= row["arrived_ns"] < row["handled_ns"], request_id
        assert row["handled_ns"] <= row["token_ns"][0] <= row["end_ns"]
    # a's stamp is its first bytes (the head), not the body that came after the 100 Continue
    assert rows["a"]["arrived_ns"] < body_ns


def test_burst_arrivals_lie_between_client_send_and_handler_start(tmp_path):
    trace = tmp_path / "trace.jsonl"
    n = 48
    with run_in_thread(SimulatorConfig(trace=str(trace), **FAST)) as sim:
        conns = [Conn(_port(sim)) for _ in range(n)]
        sent = {f"burst-{i}": c.send(_head(_port(sim), f"burst-{i}") + BODY)
                for i, c in enumerate(conns)}
        for c in conns:
            assert c.response()[0] == 200
            c.close()
    rows = {row["request_id"]: row for row in trace_rows(trace)}
    assert set(rows) == set(sent)
    for request_id, sent_ns in sent.items():
        row = rows[request_id]
        assert sent_ns <= row["arrived_ns"] < row["handled_ns"] <= row["end_ns"], request_id


def test_refused_requests_carry_both_stamps(tmp_path):
    trace = tmp_path / "trace.jsonl"
    with run_in_thread(SimulatorConfig(trace=str(trace), **FAST)) as sim:
        conn = Conn(_port(sim))
        bad = b"{not json"
        head = (f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(bad)}\r\n"
                f"X-Request-Id: bad\r\n\r\n").encode()
        sent_ns = conn.send(head + bad)
        status, body = conn.response()
        conn.close()
    assert status == 400 and b"error" in body
    row = trace_rows(trace)[0]
    assert row["request_id"] == "bad" and row["status"] == 400
    assert sent_ns <= row["arrived_ns"] < row["handled_ns"] <= row["end_ns"]


def test_a_request_is_stamped_when_it_reached_the_socket_even_if_the_server_is_busy(tmp_path):
    """The server's event loop is stuck for 0.4 s when the request comes in: its arrival stamp
    is still the moment the bytes reached the socket, and the wait shows as read_ns."""
    assert KERNEL_STAMPS  # Linux: the simulator reads the kernel's receive time
    trace = tmp_path / "trace.jsonl"
    with run_in_thread(SimulatorConfig(trace=str(trace), **FAST)) as sim:
        assert httpx.get(sim.url + "/info").json()["simulator"]["arrival_clock"] == "kernel"
        conn = Conn(_port(sim))
        blocked = threading.Event()

        def block() -> None:
            blocked.set()
            time.sleep(0.4)

        sim.loop.call_soon_threadsafe(block)
        assert blocked.wait(5)
        sent_ns = conn.send(_head(_port(sim), "busy") + BODY)
        assert conn.response()[0] == 200
        conn.close()
    row = trace_rows(trace)[0]
    assert sent_ns <= row["arrived_ns"] < sent_ns + 100_000_000  # on arrival, not 0.4 s later
    assert row["read_ns"] - row["arrived_ns"] > 200_000_000      # the server's own wait
    assert row["read_ns"] <= row["handled_ns"] <= row["token_ns"][0]


def test_kernel_stamps_are_moved_onto_the_monotonic_clock_and_implausible_ones_dropped():
    def item(wall_ns: int) -> list[tuple[int, int, bytes]]:
        return [(socket.SOL_SOCKET, SO_TIMESTAMPNS,
                 struct.pack("qq", wall_ns // 1_000_000_000, wall_ns % 1_000_000_000))]

    before = time.perf_counter_ns()
    stamp = kernel_receive_ns(item(time.time_ns() - 5_000_000))  # received 5 ms ago
    after = time.perf_counter_ns()
    assert stamp is not None
    assert before - 5_000_000 - 50_000_000 < stamp <= after - 5_000_000
    assert kernel_receive_ns(item(time.time_ns() + 10_000_000_000)) is None  # in the future
    assert kernel_receive_ns(item(time.time_ns() - 3_600 * 10**9)) is None   # an hour ago
    assert kernel_receive_ns([]) is None


def test_the_clock_offset_ignores_a_read_pair_split_by_a_thread_switch(monkeypatch):
    """Wall, monotonic, wall: the try whose wall reads are 5 ms apart (another thread ran in
    between) is not used, else every stamp would move by up to 5 ms."""
    from benchmark.simulator import arrival

    walls = iter([1_000_000, 6_000_000,     # try 1: split by a 5 ms switch
                  9_000_000, 9_000_400])    # try 2: 0.4 us apart
    monos = iter([100, 5_000_100])
    monkeypatch.setattr(arrival.time, "time_ns", lambda: next(walls))
    monkeypatch.setattr(arrival, "perf_counter_ns", lambda: next(monos))
    assert arrival.WallToMonotonic().measure() == 9_000_200 - 5_000_100
