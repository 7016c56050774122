"""Server-Sent Events, from raw bytes to the ``data`` payload of each event.

    parser = SSEParser()
    for chunk in chunks:                    # bytes as they arrive, cut anywhere
        for data in parser.feed(chunk):     # the events this chunk completed
            handle(data)
    for data in parser.close():             # an event the stream ended without a blank line
        handle(data)

Rules (the parts of the SSE format that servers really use):
- events end with a blank line: ``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``; a chunk may hold
  several events, and an event may be cut across chunks (even inside a ``\\r\\n``);
- ``data:`` is accepted with or without one space after the colon; several ``data`` lines of
  one event are joined with ``\\n``;
- lines starting with ``:`` are comments (keep-alives) and are ignored, as are ``event:``,
  ``id:`` and ``retry:`` lines; an event without data yields nothing.

- one event may hold at most ``max_event_bytes`` (default ``MAX_EVENT_BYTES``, 1 MiB; a token
  event is a few hundred bytes): past that, ``feed`` raises ``EventTooLarge`` instead of holding
  whatever a broken or hostile server keeps sending without a blank line.

The parser never parses JSON: the caller stamps the arrival time of the chunk first.
"""

from __future__ import annotations

import re

__all__ = ["SSEParser", "EventTooLarge", "MAX_EVENT_BYTES"]

MAX_EVENT_BYTES = 1024 * 1024


class EventTooLarge(ValueError):
    """An event grew past the parser's cap without ending; ``str()`` says so in words."""

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """Incremental SSE parser: ``feed(bytes) -> list[str]`` of completed events' data."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def _check(self, events: list[str]) -> list[str]:
        """``events``, once the unfinished rest is known to be within the cap."""
        if len(self._buffer) > self._max:
            size = len(self._buffer)
            self._buffer = b""
            raise EventTooLarge(f"the server sent an event of more than {self._max} bytes "
                                f"without ending it ({size:,} bytes so far)")
        return events

    def feed(self, chunk: bytes) -> list[str]:
        """Add ``chunk`` and return the data of every event it completed (oldest first)."""
        if not chunk:
            return []
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer:
            return self._feed_lf(buffer)
        # A trailing "\r" may be the first half of "\r\n": wait for the next chunk.
        keep_cr = buffer.endswith(b"\r")
        text = buffer[:-1] if keep_cr else buffer
        lines = _LINE_BREAK.split(text)
        # The last element is an unterminated line (possibly empty): keep it for later.
        pending = lines.pop()
        events: list[str] = []
        current: list[bytes] = []
        consumed_upto = 0  # index in ``lines`` after the last complete event
        for index, line in enumerate(lines):
            if line == b"":
                data = _event_data(current)
                if data is not None:
                    events.append(data)
                current = []
                consumed_upto = index + 1
            else:
                current.append(line)
        # Keep the lines of the unfinished event (and the unterminated tail) for next time.
        rest = lines[consumed_upto:]
        self._buffer = b"".join(line + b"\n" for line in rest) + pending + (b"\r" if keep_cr else b"")
        return self._check(events)

    def _feed_lf(self, buffer: bytes) -> list[str]:
        """The common case (no ``\\r``): split on blank lines; one ``data:`` line per event
        needs no line splitting (the per-event cost is a slice and a decode)."""
        parts = buffer.split(b"\n\n")
        self._buffer = parts.pop()
        events: list[str] = []
        for part in parts:
            if part.startswith(b"data:") and b"\n" not in part:
                value = part[6:] if part[5:6] == b" " else part[5:]
                events.append(value.decode("utf-8", errors="replace"))
            else:
                data = _event_data(part.split(b"\n"))
                if data is not None:
                    events.append(data)
        return self._check(events)

    def close(self) -> list[str]:
        """The data of an event the stream ended without terminating (servers sometimes do)."""
        buffer, self._buffer = self._buffer, b""
        lines = [line for line in _LINE_BREAK.split(buffer) if line != b""]
        data = _event_data(lines)
        return [] if data is None else [data]


def _event_data(lines: list[bytes]) -> str | None:
    parts: list[bytes] = []
    for line in lines:
        if line.startswith(b":"):
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            parts.append(value)
        elif line == b"data":
            parts.append(b"")
    if not parts:
        return None
    return b"\n".join(parts).decode("utf-8", errors="replace")
