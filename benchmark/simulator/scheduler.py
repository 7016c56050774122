"""The timing model and the continuous-batching scheduler of the simulated server.

Nothing is computed; time is spent as a GPU would spend it, following TGI v3's batching task
(backends/v3/src/backend.rs) and queue (queue.rs):

* Requests wait in a FIFO queue. Admission takes queued requests in order while the batch stays
  within ``max_batch_size`` sequences, the admitted prompts within ``max_batch_prefill_tokens``
  and the KV-cache reservation (prompt + max_new_tokens of every sequence in the batch) within
  ``max_batch_total_tokens``; the first request that does not fit stops it (head of line).
* With nothing running, whatever the queue allows is admitted at once. While a batch runs,
  waiting requests join only when at least ``floor(running * waiting_served_ratio)`` of them can
  be admitted together, or when ``max_waiting_tokens`` decode steps passed since the last
  admission (TGI's defaults 1.2 and 20).
* Admitting is a **prefill** step costing ``prefill_base_ms + prefill_per_token_ms x (sum of the
  admitted prompt tokens)``; running sequences wait meanwhile (TGI pauses decoding to prefill).
  At its end every admitted sequence emits its first token.
* Then a **decode** step costing ``decode_base_ms + decode_per_seq_ms x running +
  decode_per_context_token_us / 1000 x (tokens held in the KV cache)``; every running sequence
  emits one token. With ``eos_probability`` p, each decode step ends a sequence early with the
  end-of-sequence token (finish_reason ``eos_token``); the prefill's token is never EOS.
* Steps are scheduled on absolute deadlines from ``time.perf_counter_ns()``: a step starts at the
  previous step's deadline, so sleep jitter (about 0.1-1 ms) never accumulates. When the process
  was held up (a busy CPU), the missed steps are caught up back to back, as a real server
  flushes the tokens its GPU produced meanwhile; only after an idle period or a stall longer
  than 50 ms does the clock restart from now. Every token is stamped with
  ``perf_counter_ns()`` just before its bytes are written to the socket.

Default coefficients, roughly an 8B model in bf16 on one 80 GB A100/H100-class GPU: prefill
12 ms + 0.12 ms per prompt token (about 8k prompt tokens/s), decode 10 ms + 0.25 ms per sequence
+ 0.06 µs per cached token (batch 1: about 97 tokens/s; batch 8 with 1k-token contexts: about
640 tokens/s in all; batch 32: about 1,600 tokens/s; a 1,000-token prefill: 132 ms).
"""

from __future__ import annotations

import asyncio
import random
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Callable

from ..errors import redact
from .config import SimulatorConfig
from .tokens import EOS, WORDS

LATE_SLACK_NS = 50_000_000
N_WORDS = len(WORDS)


@dataclass(frozen=True)
class TimingModel:
    prefill_base_ns: int
    prefill_per_token_ns: float
    decode_base_ns: int
    decode_per_seq_ns: float
    decode_per_context_token_ns: float

    @classmethod
    def from_config(cls, c: SimulatorConfig) -> "TimingModel":
        return cls(int(c.prefill_base_ms * 1e6), c.prefill_per_token_ms * 1e6,
                   int(c.decode_base_ms * 1e6), c.decode_per_seq_ms * 1e6,
                   c.decode_per_context_token_us * 1e3)

    def prefill_ns(self, prompt_tokens: int) -> int:
        return self.prefill_base_ns + int(self.prefill_per_token_ns * prompt_tokens)

    def decode_ns(self, running: int, context_tokens: int) -> int:
        return (self.decode_base_ns + int(self.decode_per_seq_ns * running)
                + int(self.decode_per_context_token_ns * context_tokens))


class Channel:
    """Writes SSE bytes straight to a response's transport (HTTP/1.1 chunked framing).

    ``send`` never blocks the scheduler: a slow client's bytes pile up in its own transport
    buffer, as they would in TGI's per-request channel. Returns False once the client is gone.
    """

    __slots__ = ("transport", "chunked")

    def __init__(self, transport: Any, chunked: bool):
        self.transport = transport
        self.chunked = chunked

    def send(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if self.chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)
        return True


class Sequence:
    """One request inside the simulated server, from arrival to its last token."""

    __slots__ = ("request_id", "route", "arrived_ns", "read_ns", "handled_ns", "input_length",
                 "max_new_tokens", "seed", "reported_seed", "rng", "eos_p", "stops", "stop_tail", "stop_keep",
                 "start_word", "words", "generated", "token_ns", "finish_reason", "status",
                 "error", "fmt", "channel", "head", "done", "queued_ns", "admitted_ns",
                 "end_ns", "model", "created", "include_usage", "reserved", "details",
                 "watch", "top_n")

    def __init__(self, *, request_id: str, route: str, arrived_ns: int, input_length: int,
                 max_new_tokens: int, seed: int | None, reported_seed: int | None,
                 eos_probability: float, stops: list[str] | None, model: str, created: int,
                 fmt: Any = None, include_usage: bool = False, details: bool = False,
                 top_n: int = 0, handled_ns: int | None = None, read_ns: int | None = None):
        self.request_id = request_id
        self.route = route
        self.arrived_ns = arrived_ns  # first bytes reached the server (see arrival.py)
        self.read_ns = arrived_ns if read_ns is None else read_ns  # the event loop read it
        self.handled_ns = self.read_ns if handled_ns is None else handled_ns  # handler started
        self.input_length = input_length
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.reported_seed = reported_seed
        self.rng = random.Random(seed)
        self.eos_p = eos_probability
        self.stops = [s for s in (stops or []) if s]
        self.stop_tail = ""
        self.stop_keep = max((len(s) for s in self.stops), default=0)
        self.start_word = (seed if seed is not None else self.rng.randrange(N_WORDS)) % N_WORDS
        self.words: list[int] = []
        self.generated = 0
        self.token_ns: list[int] = []
        self.finish_reason: str | None = None
        self.status = 200
        self.error: str | None = None
        self.fmt = fmt
        self.channel: Channel | None = None
        self.model = model
        self.created = created
        self.include_usage = include_usage
        self.details = details
        self.top_n = top_n
        self.watch: Any = None  # transport of a non-streamed request, to notice a disconnect
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queued_ns = arrived_ns
        self.admitted_ns = 0
        self.end_ns = 0
        self.reserved = input_length + max_new_tokens
        self.head = fmt.head(self) if fmt is not None else b""

    # -- what the "model" produces -----------------------------------------------------------
    def emit(self, decode: bool) -> bool:
        """Produce, stamp and send the next token. Return True when the sequence has finished."""
        n = self.generated + 1
        eos = decode and self.eos_p and self.rng.random() < self.eos_p
        k = EOS if eos else (self.start_word + n - 1) % N_WORDS
        # TGI's StoppingCriteria order: length first, then EOS, then a stop sequence that the
        # generated text now ends with.
        if n >= self.max_new_tokens:
            self.finish_reason = "length"
        elif eos:
            self.finish_reason = "eos_token"
        elif self.stops:
            tail = (self.stop_tail + WORDS[k])[-self.stop_keep:]
            self.stop_tail = tail
            if any(tail.endswith(stop) for stop in self.stops):
                self.finish_reason = "stop_sequence"
        self.generated = n
        self.words.append(k)
        channel = self.channel
        data = b""
        if channel is not None:
            fmt = self.fmt
            data = fmt.token(self, n, k) if self.finish_reason is None else fmt.final(self, n, k)
        self.token_ns.append(perf_counter_ns())  # immediately before the bytes are sent
        sent = channel.send(data) if channel is not None else not self.client_gone()
        if not sent:
            self.mark_disconnected()
            return True
        return self.finish_reason is not None

    def client_gone(self) -> bool:
        """True when the client's connection is closing (it will never read an answer)."""
        transport = self.channel.transport if self.channel is not None else self.watch
        return transport is not None and transport.is_closing()

    def mark_disconnected(self) -> None:
        """End the request as its client left: status 499, no finish reason."""
        self.finish_reason = None
        self.status = 499
        self.error = "client disconnected"

    def generated_text(self) -> str:
        return "".join(WORDS[k] for k in self.words if k != EOS)

    def spans_ns(self) -> tuple[int, int, int]:
        """(total, queue, inference) of a finished request: arrival -> end, queued -> admitted,
        admitted -> end; a request never admitted was queued until its end."""
        admitted = self.admitted_ns or self.end_ns
        return self.end_ns - self.arrived_ns, admitted - self.queued_ns, self.end_ns - admitted

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.input_length, "completion_tokens": self.generated,
                "total_tokens": self.input_length + self.generated}

    def trace(self) -> dict[str, Any]:
        return trace_row(self.request_id, self.route,
                         (self.arrived_ns, self.read_ns, self.handled_ns),
                         token_ns=self.token_ns, end_ns=self.end_ns,
                         input_tokens=self.input_length, output_tokens=self.generated,
                         finish_reason=self.finish_reason, status=self.status, error=self.error,
                         queue=(self.queued_ns, self.admitted_ns or None))


def trace_row(request_id: str, route: str, stamps: tuple[int, int, int], *, token_ns: list[int],
              end_ns: int, input_tokens: int | None, output_tokens: int,
              finish_reason: str | None, status: int, error: str | None,
              queue: tuple[int, int | None] | None = None) -> dict[str, Any]:
    """One line of the trace file. ``stamps``: (arrived_ns, read_ns, handled_ns); ``queue``:
    (queued_ns, admitted_ns) of a request that was queued, None for a refused one (the two keys
    are then absent)."""
    row: dict[str, Any] = {
        "request_id": request_id, "route": route,
        "arrived_ns": stamps[0], "read_ns": stamps[1], "handled_ns": stamps[2],
        "token_ns": token_ns, "end_ns": end_ns, "input_tokens": input_tokens,
        "output_tokens": output_tokens, "finish_reason": finish_reason, "status": status}
    if queue is not None:
        row["queued_ns"], row["admitted_ns"] = queue
    row["error"] = error
    return row


class Scheduler:
    """One asyncio task runs ``run()``: the continuous-batching loop over a request queue."""

    def __init__(self, config: SimulatorConfig, *,
                 on_step: Callable[[str, int, int], None] | None = None,
                 on_finish: Callable[[Sequence], None] | None = None):
        self.config = config
        self.model = TimingModel.from_config(config)
        self.max_batch = config.max_batch_size or 1_000_000
        self.prefill_budget = config.prefill_token_budget
        self.token_budget = config.max_batch_total_tokens
        self.queue: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.prefilling: list[Sequence] = []
        self._deadline = perf_counter_ns()
        self.reserved = 0
        self.context = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self.on_step = on_step
        self.on_finish = on_finish

    # -- called by request handlers ----------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        seq.queued_ns = perf_counter_ns()
        self.queue.append(seq)
        if self._stopping:  # validated while the server was stopping: fail it at once
            self.stop()
        else:
            self._wake.set()

    def cancel(self, seq: Sequence) -> None:
        """Drop a request whose client went away (queued or running)."""
        if seq.done.done():
            return
        try:
            self.queue.remove(seq)
        except ValueError:
            pass
        seq.mark_disconnected()
        if seq in self.running:
            self.running.remove(seq)
            self.reserved -= seq.reserved
            self.context -= seq.input_length + seq.generated
        self._finish(seq)

    def stop(self, message: str = "the server is shutting down") -> None:
        """End every queued and running request with an error event, then stop the loop."""
        self._stopping = True
        self.running.extend(self.queue)  # queued requests end the same way
        self.queue.clear()
        self.fail_all(message)
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------
    def _admit(self, min_size: int | None) -> list[Sequence]:
        """TGI's Queue::next_batch: FIFO while the limits hold; fewer than min_size -> none.
        Requests whose client already left are dropped from the queue on the way, as TGI does."""
        admitted: list[Sequence] = []
        dropped: list[Sequence] = []
        prefill_tokens = 0
        reserved = self.reserved
        room = self.max_batch - len(self.running)
        for seq in self.queue:
            if seq.client_gone():
                dropped.append(seq)
                continue
            if len(admitted) >= room:
                break
            if prefill_tokens + seq.input_length > self.prefill_budget:
                break
            if reserved + seq.reserved > self.token_budget:
                break
            admitted.append(seq)
            prefill_tokens += seq.input_length
            reserved += seq.reserved
        for seq in dropped:
            self.queue.remove(seq)
            seq.mark_disconnected()
            self._finish(seq)
        if not admitted or (min_size is not None and len(admitted) < min_size):
            return []
        now = perf_counter_ns()
        for seq in admitted:  # the admitted requests are now the head of the queue
            self.queue.popleft()
            seq.admitted_ns = now
        self.reserved = reserved
        return admitted

    async def _step(self, method: str, cost: int, size: int) -> bool:
        """Sleep until this step's absolute deadline; False when the server is stopping."""
        now = perf_counter_ns()
        start = self._deadline if now - self._deadline < LATE_SLACK_NS else now
        self._deadline = start + cost
        delay = self._deadline - perf_counter_ns()
        await asyncio.sleep(delay / 1e9 if delay > 0 else 0)
        if self._stopping:
            return False
        if self.on_step is not None:
            self.on_step(method, cost, size)
        return True

    async def _prefill(self, admitted: list[Sequence]) -> bool:
        self.prefilling = admitted
        cost = self.model.prefill_ns(sum(s.input_length for s in admitted))
        if not await self._step("prefill", cost, len(admitted)):
            return False
        self.prefilling = []
        for seq in admitted:
            if seq.done.done():  # its client left during the prefill
                self.reserved -= seq.reserved
                continue
            self.context += seq.input_length
            self.running.append(seq)
            self._emit(seq, False)
        return True

    async def run(self) -> None:
        """Run the batching loop; if it ever raises, fail the affected requests (like TGI's
        send_errors), report on stderr and start again, so that no request waits forever."""
        while not self._stopping:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not leave clients hanging
                print(redact(traceback.format_exc()), file=sys.stderr, flush=True)
                self.fail_all(redact(f"simulator error: {type(exc).__name__}: {exc}"))

    def fail_all(self, message: str) -> None:
        """End every admitted or running request with a generation error event."""
        for seq in self.prefilling + list(self.running):
            if seq.done.done():
                continue
            if seq.channel is None:  # TGI answers generation errors with 424
                seq.status = 424
            seq.error = message
            if seq.channel is not None:
                seq.channel.send(seq.fmt.error(f"Request failed during generation: {message}",
                                               "generation"))
            self._finish(seq)
        self.prefilling = []
        self.running.clear()
        self.reserved = 0
        self.context = 0

    async def _loop(self) -> None:
        """TGI v3's batching task: prefill what the queue allows, then decode step by step;
        while a batch runs, waiting requests join only when there are at least
        waiting_served_ratio x the running ones, or after max_waiting_tokens decode steps."""
        waiting_steps = 0
        ratio = self.config.waiting_served_ratio
        max_waiting = self.config.max_waiting_tokens
        while not self._stopping:
            if not self.running:
                if not self.queue:
                    self._wake.clear()
                    await self._wake.wait()
                    self._deadline = perf_counter_ns()
                    continue
                admitted = self._admit(None)
                if not admitted:  # cannot happen: validation keeps every request admissible
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if not await self._prefill(admitted):
                    break
                waiting_steps = 1
                if not self.running:
                    continue
            if self.queue:
                min_size = None if waiting_steps >= max_waiting else int(len(self.running) * ratio)
                admitted = self._admit(min_size)
                if admitted:
                    if not await self._prefill(admitted):
                        break
                    waiting_steps = 1
            if self.running:
                cost = self.model.decode_ns(len(self.running), self.context)
                if not await self._step("decode", cost, len(self.running)):
                    break
                for seq in list(self.running):
                    self._emit(seq, True)
                waiting_steps += 1

    def _emit(self, seq: Sequence, decode: bool) -> None:
        self.context += 1
        if seq.emit(decode):
            self.running.remove(seq)
            self.reserved -= seq.reserved
            self.context -= seq.input_length + seq.generated
            self._finish(seq)

    def _finish(self, seq: Sequence) -> None:
        seq.end_ns = perf_counter_ns()
        if not seq.done.done():
            seq.done.set_result(None)
        if self.on_finish is not None:
            self.on_finish(seq)
