"""Start the real app (``python app.py``) on a free port for the app and browser tests.

    with AppProcess(results_dir, tokenizer=tiny_tokenizer) as app:
        Client(app.url) ...
        app.restart()                    # same port, same results folder

The app runs with the fake ``text-generation-launcher`` first on PATH (it serves the simulator),
the tiny tokenizer as the simulator's tokenizer, and its own free port for the TGI server, so
nothing reaches the network and tests running side by side do not collide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from support.helpers import FAKE_LAUNCHER_DIR, ROOT, free_port

FIELDS_SMALL_RUN = {
    "batch_sizes": "1,2",
    "sequence_length": "16",
    "decode_length": "8",
    "runs": "2",
    "warmups": "1",
}


class AppProcess:
    """One ``python app.py`` child; ``stop()`` sends SIGTERM (the app stops its TGI server)."""

    def __init__(self, results_dir: Path, *, tokenizer: str,
                 extra_env: dict[str, str] | None = None, sim_args: str = ""):
        self.results_dir = Path(results_dir)
        self.port = free_port()
        self.tgi_port = free_port()
        self.log_path = self.results_dir.parent / f"app-{self.port}.log"
        self.env = {
            **os.environ,
            "PATH": f"{FAKE_LAUNCHER_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            "RESULTS_DIR": str(self.results_dir),
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "BENCHMARK_TGI_PORT": str(self.tgi_port),
            "FAKE_TGI_PYTHON": sys.executable,
            "FAKE_TGI_SIM_ARGS": f"--tokenizer {tokenizer} {sim_args}".strip(),
            "PYTHONPATH": str(ROOT),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("SYSTEM", "SPACE_ID", "SPACE_HOST", "SPACE_AUTHOR_NAME", "ALLOWED_USERS",
                     "OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "RESULTS_REPO", "HF_TOKEN"):
            self.env.pop(name, None)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout_s: float = 60.0) -> "AppProcess":
        self.results_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=str(ROOT), env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"app did not answer within {timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> "AppProcess":
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def __enter__(self) -> "AppProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def session_cookie(username: str, client_secret: str) -> str:
    """A signed Starlette session cookie holding a Hugging Face sign-in, as Gradio stores it.

    Gradio's OAuth callback puts ``oauth_info`` (with ``userinfo``) in the session; the session
    middleware signs it with sha256(OAUTH_CLIENT_SECRET + "-v4"). Forging it with the dummy
    secret is how the tests sign in without reaching huggingface.co.
    """
    import itsdangerous

    secret = hashlib.sha256((client_secret + "-v4").encode()).hexdigest()
    session = {"oauth_info": {
        "access_token": "dummy-access-token",
        "token_type": "bearer",
        "scope": "openid profile",
        "expires_at": int(datetime.now(timezone.utc).timestamp()) + 3600,
        "userinfo": {"sub": "1", "name": username.title(), "preferred_username": username,
                     "profile": f"https://huggingface.co/{username}", "picture": ""},
    }}
    data = base64.b64encode(json.dumps(session).encode())
    return itsdangerous.TimestampSigner(secret).sign(data).decode()


def form_values(**overrides: Any) -> list[Any]:
    """The /run endpoint's positional values, in the form's order."""
    from benchmark.app.form import DEFAULTS, FIELDS

    values = dict(DEFAULTS)
    values.update(overrides)
    return [values[name] for name in FIELDS]


# ---------------------------------------------------------------------------------------------
# Reading the app's answers through gradio_client


def labels(client: Any, endpoint: str) -> list[str]:
    """The labels of ``endpoint``'s outputs, in order."""
    api = client.view_api(return_format="dict", print_info=False)
    return [r["label"] for r in api["named_endpoints"][endpoint]["returns"]]


def named(client: Any, endpoint: str, outputs: Any) -> dict[str, Any]:
    """``endpoint``'s outputs by label."""
    return dict(zip(labels(client, endpoint), outputs))


def text(item: Any) -> str:
    """An output's text: the ``value`` of a component update, "" for None."""
    if isinstance(item, dict):
        item = item.get("value")
    return "" if item is None else str(item)


def submit_and_wait(client: Any, **fields: Any) -> Any:
    """Submit /run with the form's ``fields`` (the rest at their defaults) and wait, up to 200 s,
    until the job is done; returns the job."""
    job = client.submit(*form_values(**fields), api_name="/run")
    deadline = time.monotonic() + 200
    while not job.done():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.2)
    return job
