"""A local stand-in for the Hugging Face Hub's HTTP API, just big enough for benchmark/hub.py.

It answers the routes huggingface_hub 2.4 calls for (read from its source: hf_api.py,
_commit_api.py, file_download.py):

    GET  /api/whoami-v2                                      HfApi.whoami
    POST /api/repos/create                                   HfApi.create_repo
    GET  /api/datasets/{ns}/{name}[/revision/{rev}]          HfApi.repo_info / dataset_info
    POST /api/datasets/{ns}/{name}/preupload/{rev}           create_commit: upload modes
    POST /api/datasets/{ns}/{name}/commit/{rev}              create_commit: the ndjson commit
    GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]       HfApi.list_repo_tree
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}      hf_hub_download

Every file is uploaded "regular" (base64 inside the commit), so no LFS or Xet transfer is
involved. Repos are private: every call needs ``Authorization: Bearer <token>``.

    with HubStub(token="hf_stubtoken1234") as hub:
        hub.create_dataset("alice/results")
        hub.fail("commit", times=1, status=500)      # the next commit answers 500
        HfApi(endpoint=hub.url, token=hub.token).upload_folder(...)
        hub.files("alice/results")                   # {"runs/x/run.json": b"..."}
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class _Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    commits: int = 0


class HubStub:
    """Start with ``with HubStub() as hub``; ``hub.url`` is the endpoint for HF_ENDPOINT."""

    def __init__(self, token: str = "hf_stubtoken1234", user: str = "alice") -> None:
        self.token = token
        self.user = user
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, authorization header)
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "HubStub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- test controls -----------------------------------------------------------------------

    def create_dataset(self, repo_id: str) -> None:
        with self._lock:
            self.repos.setdefault(repo_id, _Repo())

    def fail(self, route: str, *, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` calls of ``route`` (e.g. "commit") with HTTP ``status``.

        ``status=0`` drops the connection without an answer (a network failure).
        """
        with self._lock:
            self._failures.setdefault(route, []).extend([status] * times)

    def files(self, repo_id: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self.repos[repo_id].files) if repo_id in self.repos else {}

    def calls(self, route: str) -> int:
        """How many requests reached ``route`` (its name: "commit", "preupload", "resolve", ...)."""
        return sum(1 for _, path, _ in self.requests if _route_name(path) == route)

    # -- internals ---------------------------------------------------------------------------

    def _take_failure(self, route: str) -> int | None:
        with self._lock:
            queue = self._failures.get(route)
            return queue.pop(0) if queue else None

    def _commit(self, repo: _Repo, additions: dict[str, bytes]) -> str:
        with self._lock:
            repo.files.update(additions)
            repo.commits += 1
            repo.sha = hashlib.sha1(f"{repo.commits}:{sorted(repo.files)}".encode()).hexdigest()
            return repo.sha


def _route_name(path: str) -> str:
    parts = urlsplit(path).path.strip("/").split("/")
    if parts[:2] == ["api", "whoami-v2"]:
        return "whoami"
    if parts[:3] == ["api", "repos", "create"]:
        return "create"
    if parts[:2] == ["api", "datasets"]:
        return parts[4] if len(parts) > 4 else "info"
    if parts[:1] == ["datasets"] and len(parts) > 3:
        return parts[3]
    return "unknown"


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _handler_for(hub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            return

        # -- plumbing ------------------------------------------------------------------------

        def _send(self, status: int, body: object = None, headers: dict[str, str] | None = None,
                  raw: bytes | None = None, head: bool = False) -> None:
            data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None
                             else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _error(self, status: int, message: str, head: bool = False) -> None:
            code = {401: "RepoNotFound", 404: "RepoNotFound"}.get(status)
            self._send(status, {"error": message},
                       headers={"X-Error-Code": code, "X-Error-Message": message} if code else None,
                       head=head)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _authorized(self) -> bool:
            return self.headers.get("Authorization", "") == f"Bearer {hub.token}"

        def _dispatch(self, method: str) -> None:
            hub.requests.append((method, self.path, self.headers.get("Authorization", "")))
            route = _route_name(self.path)
            body = self._body() if method == "POST" else b""
            head = method == "HEAD"
            failure = hub._take_failure(route)
            if failure == 0:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if failure is not None:
                self._error(failure, f"Stub failure on {route}", head=head)
                return
            if not self._authorized():
                self._error(401, "Invalid credentials in Authorization header", head=head)
                return
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            query = parse_qs(urlsplit(self.path).query)
            if route == "whoami":
                self._send(200, {"type": "user", "name": hub.user, "fullname": hub.user,
                                 "orgs": [], "auth": {"type": "access_token",
                                                      "accessToken": {"role": "write"}}})
            elif route == "create":
                payload = json.loads(body or b"{}")
                repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
                hub.create_dataset(repo_id)
                self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})
            elif parts[:2] == ["api", "datasets"] and len(parts) >= 4:
                self._api(route, "/".join(parts[2:4]), parts[4:], body, query)
            elif parts[:1] == ["datasets"] and route == "resolve" and len(parts) >= 6:
                self._resolve("/".join(parts[1:3]), "/".join(parts[5:]), head)
            else:
                self._error(404, f"No stub route for {method} {self.path}", head=head)

        # -- routes --------------------------------------------------------------------------

        def _api(self, route: str, repo_id: str, rest: list[str], body: bytes,
                 query: dict[str, list[str]]) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, f"Repository not found: {repo_id}")
                return
            if route in ("info", "revision"):
                self._send(200, {"id": repo_id, "_id": "stub", "sha": repo.sha, "private": True,
                                 "siblings": [{"rfilename": p} for p in sorted(repo.files)],
                                 "tags": [], "downloads": 0, "likes": 0})
            elif route == "preupload":
                files = json.loads(body)["files"]
                self._send(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": _git_oid(repo.files[f["path"]]) if f["path"] in repo.files else None}
                    for f in files]})
            elif route == "commit":
                additions: dict[str, bytes] = {}
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        value = item["value"]
                        additions[value["path"]] = base64.b64decode(value["content"])
                    elif item["key"] != "header":
                        self._error(400, f"Stub only supports regular files, got {item['key']}")
                        return
                sha = hub._commit(repo, additions)
                self._send(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{sha}",
                                 "commitOid": sha, "success": True})
            elif route == "tree":
                prefix = "/".join(rest[2:]).strip("/")
                self._tree(repo, prefix, query.get("recursive", ["False"])[0].lower() == "true")
            else:
                self._error(404, f"No stub route for {route}")

        def _tree(self, repo: _Repo, prefix: str, recursive: bool) -> None:
            base = f"{prefix}/" if prefix else ""
            entries: dict[str, dict] = {}
            for path, content in sorted(repo.files.items()):
                if not path.startswith(base):
                    continue
                rest = path[len(base):]
                if "/" in rest and not recursive:
                    folder = base + rest.split("/", 1)[0]
                    entries[folder] = {"type": "directory", "path": folder, "oid": "0" * 40}
                else:
                    entries[path] = {"type": "file", "path": path, "size": len(content),
                                     "oid": _git_oid(content)}
            if prefix and not entries:
                self.send_response(404)
                data = json.dumps({"error": f"Entry not found: {prefix}"}).encode()
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self._send(200, list(entries.values()))

        def _resolve(self, repo_id: str, path: str, head: bool) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, f"Repository not found: {repo_id}", head=head)
                return
            if path not in repo.files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content = repo.files[path]
            self._send(200, raw=content, head=head, headers={
                "X-Repo-Commit": repo.sha, "ETag": f'"{_git_oid(content)}"'})

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler
