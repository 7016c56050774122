"""What one measured request looks like: raw monotonic stamps, and what the server reported.

Every client (TGI native, OpenAI chat, OpenAI completions) fills the same ``RequestRecord``.
Stamps are ``time.perf_counter_ns()`` values (CLOCK_MONOTONIC on Linux, shared by all processes
of the machine), taken when bytes arrive and before any JSON is parsed. Derived numbers are
properties with their unit in the name. A failed request is a record with ``error`` set, never a
dropped row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

NS_PER_MS = 1_000_000


@dataclass
class RequestRecord:
    """One request of a run.

    step:      the batch size (rounds), number of virtual users (concurrency) or request rate
               in requests/s (rate) it belonged to
    run:       round index (rounds; warm-up rounds are numbered separately) or user index
    request:   index within the round (rounds) or sequence number of that user (concurrency)
    warmup:    True for warm-up requests (kept in memory, excluded from files and statistics)
    scheduled_ns: when the load pattern wanted it to go
    sent_ns:   when its bytes were handed to the socket
    token_ns:  arrival stamp of every token-carrying event (one per SSE event; an event may
               carry several tokens on OpenAI streams)
    end_ns:    when the response ended (last byte, error or timeout)
    input_tokens / output_tokens: as the server reported them (None when it did not say)
    requested_output_tokens: the max_new_tokens / max_tokens that was asked
    finish_reason: "length", "eos_token", "stop_sequence", "stop", ... as reported
    status:    HTTP status (None when no response came)
    error:     None for a success, else a short sentence ("timeout after 60 s", "HTTP 422: ...")
    error_kind: None, "http", "stream", "timeout", "connection", "cancelled"
    request_id: the X-Request-Id header sent (lets a server trace be matched to this record)
    step_start_ns: rate mode: the step's start, from which its schedule is counted
    queued_ns: rate mode: when it was due to go out: ``scheduled_ns``, or later when the
               scheduler itself was late to hand it to the client
    admitted_ns: rate mode: when it got a place under --max-concurrency, counted from
               ``scheduled_ns`` at the earliest (= ``queued_ns`` without a cap); it is sent
               right after
    retried:   True when the request was lost on a kept-alive connection the server had closed
               (no answer at all) and was sent again, once, on a fresh connection; its stamps
               are those of the second attempt (``scheduled_ns`` is unchanged, so the first
               attempt counts as dispatch lag)
    """

    step: int
    run: int
    request: int
    warmup: bool = False
    scheduled_ns: int = 0
    sent_ns: int | None = None
    token_ns: list[int] = field(default_factory=list)
    end_ns: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    requested_output_tokens: int | None = None
    finish_reason: str | None = None
    status: int | None = None
    error: str | None = None
    error_kind: str | None = None
    request_id: str | None = None
    step_start_ns: int | None = None
    queued_ns: int | None = None
    admitted_ns: int | None = None
    retried: bool = False

    # -- derived ---------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def dispatch_lag_ms(self) -> float | None:
        """Time between when the request should have gone and when it went (client-side)."""
        if self.sent_ns is None:
            return None
        return (self.sent_ns - self.scheduled_ns) / NS_PER_MS

    @property
    def scheduled_ms(self) -> float | None:
        """Rate mode: the intended send time, from the step's start."""
        if self.step_start_ns is None:
            return None
        return (self.scheduled_ns - self.step_start_ns) / NS_PER_MS

    @property
    def sent_ms(self) -> float | None:
        """Rate mode: the real send time, from the step's start."""
        if self.step_start_ns is None or self.sent_ns is None:
            return None
        return (self.sent_ns - self.step_start_ns) / NS_PER_MS

    @property
    def client_queue_ms(self) -> float | None:
        """Rate mode: the wait behind --max-concurrency (0 without a cap)."""
        if self.queued_ns is None or self.admitted_ns is None:
            return None
        return (self.admitted_ns - self.queued_ns) / NS_PER_MS

    @property
    def queued_e2e_ms(self) -> float | None:
        """From the intended send time to the end of the response: what a user arriving on
        schedule waited, the client's queue included."""
        if self.step_start_ns is None or self.end_ns is None or self.sent_ns is None:
            return None
        return (self.end_ns - self.scheduled_ns) / NS_PER_MS

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token, from the send (prefill latency over HTTP)."""
        if self.sent_ns is None or not self.token_ns:
            return None
        return (self.token_ns[0] - self.sent_ns) / NS_PER_MS

    @property
    def e2e_ms(self) -> float | None:
        """From the send to the end of the response."""
        if self.sent_ns is None or self.end_ns is None:
            return None
        return (self.end_ns - self.sent_ns) / NS_PER_MS

    @property
    def output_token_count(self) -> int:
        """Tokens the server reported, else the number of token events received."""
        if self.output_tokens is not None:
            return int(self.output_tokens)
        return len(self.token_ns)

    @property
    def decode_ms(self) -> float | None:
        """From the first to the last token (decode total latency); None below two tokens."""
        if len(self.token_ns) < 2:
            return None
        return (self.token_ns[-1] - self.token_ns[0]) / NS_PER_MS

    @property
    def token_latency_ms(self) -> float | None:
        """Decode time per token: (last - first token) / (output tokens - 1)."""
        tokens = self.output_token_count
        if tokens < 2 or len(self.token_ns) < 2:
            return None
        return (self.token_ns[-1] - self.token_ns[0]) / NS_PER_MS / (tokens - 1)

    @property
    def itl_ms(self) -> list[float]:
        """Gaps between consecutive token events that arrived in different reads (inter-token
        latency). Events that came in one read share a stamp; the zero gap between them is not
        a measurement and is left out (``coalesced_events`` counts them)."""
        stamps = self.token_ns
        return [(b - a) / NS_PER_MS for a, b in zip(stamps, stamps[1:]) if b != a]

    @property
    def coalesced_events(self) -> int:
        """Token events that arrived in the same read as the event before them (same stamp):
        the client cannot tell when each was sent, so they give no inter-token gap."""
        stamps = self.token_ns
        return sum(1 for a, b in zip(stamps, stamps[1:]) if b == a)

    @property
    def tokens_from_events(self) -> bool:
        """A success whose output tokens were counted from stream events (the server did not
        report its count, e.g. an OpenAI server that ignores ``stream_options``)."""
        return self.error is None and self.output_tokens is None

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RequestRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
