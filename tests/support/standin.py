"""A stand-in OpenAI-compatible server on a raw asyncio socket, for behaviours the simulator
does not have: the ones a real server (``transformers serve``) showed.

    with StandIn(models_status=500) as server:       # serves on 127.0.0.1:<free port>
        run(RunConfig(url=server.url, api="openai-chat", model="m", ...))
        server.request_ids                           # X-Request-Id of every POST received

Behaviours (keyword arguments):
- ``models_status``: status of ``GET /v1/models`` (200 lists ``models``; else a JSON error);
- ``models``: the ids ``GET /v1/models`` lists when it answers 200 (may be empty);
- ``drop_after_error``: after an answer >= 400, the connection is kept open without
  ``Connection: close``, and the next request on it is dropped unanswered (the socket closes):
  what a server does when it closes a kept-alive socket the client still thinks usable;
- ``drop_reused``: this many POSTs that come on a connection which already served a request are
  dropped unanswered (a server closing kept-alive sockets as the next request arrives);
- ``tokens``: text events per POST (an int, or a list used in turn, one per request);
- ``usage``: send the ``usage`` chunk (``completion_tokens`` = ``tokens``) before ``[DONE]``;
- ``per_write``: token events written to the socket at once (2 = every two events arrive in
  one read);
- ``gap_s``: pause between writes;
- ``fail_after``: POSTs past this many answer 503 with the error a crashed batching worker
  gave (``transformers serve`` after a CUDA error: "CB worker is dead").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from typing import Any


class StandIn:
    def __init__(self, *, models_status: int = 200, models: tuple[str, ...] = ("stand-in",),
                 drop_after_error: bool = False, drop_reused: int = 0, tokens: int | list[int] = 4,
                 usage: bool = True, per_write: int = 1, gap_s: float = 0.002,
                 fail_after: int | None = None):
        self.fail_after = fail_after
        self.models_status = models_status
        self.models = models
        self.drop_after_error = drop_after_error
        self.drop_reused = drop_reused
        self._tokens = itertools.cycle(tokens if isinstance(tokens, list) else [tokens])
        self.usage = usage
        self.per_write = per_write
        self.gap_s = gap_s
        self.request_ids: list[str] = []
        self.posts = 0
        self.dropped = 0
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "StandIn":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        # asyncio.run cancels and finishes every task before it returns: no coroutine is left
        # for the garbage collector to finish later, in another test's thread state.
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        async with server:
            await self._stop.wait()

    # -- HTTP ----------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        doomed = False
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if served and method == "POST" and self.drop_reused > 0:
                    self.drop_reused -= 1
                    doomed = True
                if doomed:
                    self.dropped += 1
                    return  # the request is never answered: the socket closes
                status = await self._answer(method, path, headers, body, writer)
                served += 1
                if status >= 400 and self.drop_after_error:
                    doomed = True
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes,
                      writer: asyncio.StreamWriter) -> int:
        if method == "GET" and path == "/health":
            return self._json(writer, 200, {})
        if method == "GET" and path == "/v1/models":
            if self.models_status != 200:
                return self._json(writer, self.models_status,
                                  {"error": {"message": "cache folder not found"}})
            return self._json(writer, 200, {"object": "list",
                                            "data": [{"id": m} for m in self.models]})
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            self.posts += 1
            self.request_ids.append(headers.get("x-request-id", ""))
            if self.fail_after is not None and self.posts > self.fail_after:
                return self._json(writer, 503, {"error": "CB worker is dead and cannot accept "
                                                         "request"})
            await self._stream(writer, chat=path.endswith("chat/completions"))
            return 200
        return self._json(writer, 404, {"error": "not found"})

    def _json(self, writer: asyncio.StreamWriter, status: int, data: Any) -> int:
        payload = json.dumps(data).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        return status

    async def _stream(self, writer: asyncio.StreamWriter, *, chat: bool) -> None:
        tokens = next(self._tokens)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")

        def event(data: Any) -> bytes:
            return b"data: " + (data if isinstance(data, bytes) else
                                json.dumps(data).encode()) + b"\n\n"

        def chunk(index: int, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = ({"delta": {"content": f"w{index} "}} if chat
                                      else {"text": f"w{index} "})
            choice.update(index=0, finish_reason=finish)
            return {"choices": [choice]}

        events = [event(chunk(i, "length" if i == tokens - 1 else None)) for i in range(tokens)]
        if self.usage:
            events.append(event({"choices": [], "usage": {"prompt_tokens": 16,
                                                         "completion_tokens": tokens}}))
        events.append(event(b"[DONE]"))
        # token events go out per_write at a time; the usage and [DONE] events on their own
        groups = [events[i:i + self.per_write] for i in range(0, tokens, self.per_write)]
        groups += [[e] for e in events[tokens:]]
        for group in groups:
            data = b"".join(group)
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
            await asyncio.sleep(self.gap_s)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
