"""A stand-in HTTP server answering fixed bytes per path, for servers that misbehave on purpose
(a hostile /info, an endless SSE event): ``with RouteServer({"/info": body}) as s: s.url``.

Paths not listed answer ``{}`` with HTTP 200 (so ``/health`` is fine); ``POST`` answers the
``"POST"`` entry, which may be a callable writing to the socket itself.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any, Callable


class RouteServer:
    def __init__(self, routes: dict[str, Any], content_type: str = "application/json"):
        outer = self
        self.routes = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, body: Any) -> None:
                if callable(body):
                    body(self)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                self._answer(outer.routes.get(self.path.split("?")[0], b"{}"))

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self._answer(outer.routes.get("POST", b"{}"))

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


Writer = Callable[[http.server.BaseHTTPRequestHandler], None]
