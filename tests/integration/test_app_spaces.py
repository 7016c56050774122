"""The app as a Hugging Face Space: who may run, sign-in, endpoint cap, shared results for all.

The app runs with the variables a Space sets (SYSTEM=spaces, SPACE_ID, SPACE_AUTHOR_NAME,
SPACE_HOST and dummy OAUTH_* values). Visitors are signed in the way Gradio records a Hugging
Face sign-in: a signed session cookie holding ``oauth_info``, forged here with the dummy
OAUTH_CLIENT_SECRET, so nothing reaches huggingface.co.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from gradio_client import Client

from support.app_harness import (FIELDS_SMALL_RUN, AppProcess, form_values, named,
                                 session_cookie, submit_and_wait, text)

pytestmark = pytest.mark.timeout(240)

SECRET = "dummy-oauth-secret"
SPACE_ENV = {
    "SYSTEM": "spaces",
    "SPACE_ID": "owner/tgi-benchmark",
    "SPACE_AUTHOR_NAME": "owner",
    "SPACE_HOST": "owner-tgi-benchmark.hf.space",
    "ALLOWED_USERS": "friend, @colleague",
    "OAUTH_CLIENT_ID": "dummy-client-id",
    "OAUTH_CLIENT_SECRET": SECRET,
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "http://127.0.0.1:9",
    "MAX_ENDPOINT_REQUESTS": "6",
}
ENDPOINT = "Benchmark an existing server (endpoint URL)"


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("space")
    with AppProcess(folder / "results", tokenizer=tiny_tokenizer,
                    extra_env=SPACE_ENV) as running:
        yield running


def visitor(space: AppProcess, username: str | None) -> Client:
    headers = {"Cookie": f"session={session_cookie(username, SECRET)}"} if username else None
    return Client(space.url, verbose=False, headers=headers)


def run(client: Client, **fields) -> dict:
    return named(client, "/run", submit_and_wait(client, **fields).result())


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_page_offers_hugging_face_sign_in(space):
    config = httpx.get(space.url + "config", timeout=10).json()
    buttons = [c.get("props", {}).get("value") for c in config["components"]
               if c.get("type") == "button"]
    assert "Sign in with Hugging Face" in buttons
    stranger = visitor(space, None)
    anonymous = named(stranger, "/load", stranger.predict(api_name="/load"))
    assert "Sign in with Hugging Face" in text(anonymous["Access"])
    # Run is greyed out for them, with the reason under it (run() still checks on the server).
    assert "Not allowed to run here" in text(anonymous["Form message"])
    owner = visitor(space, "owner")
    loaded = named(owner, "/load", owner.predict(api_name="/load"))
    assert "owner of this Space" in text(loaded["Access"])
    assert "Not allowed" not in text(loaded["Form message"])


def test_anonymous_and_strangers_cannot_run_and_nothing_launches(space, tiny_tokenizer):
    for username, words in ((None, "Sign in with Hugging Face"),
                            ("stranger", "not allowed to run benchmarks")):
        final = run(visitor(space, username), model_id=tiny_tokenizer, **FIELDS_SMALL_RUN)
        message = text(final["Form message"])
        assert "Not allowed to run here" in message and words in message, message
        endpoint = run(visitor(space, username), target=ENDPOINT, url="http://127.0.0.1:9",
                       tokenizer_name=tiny_tokenizer, **FIELDS_SMALL_RUN)
        assert words in text(endpoint["Form message"])
    assert list(space.results_dir.iterdir()) == []
    assert not port_open(space.tgi_port), "no TGI server may start for them"


def chat(client: Client, message: str, **fields) -> tuple:
    """The last outputs of /chat: (Conversation, Message, Chat message)."""
    values = form_values(**fields)
    return client.predict(message, [], "", "8", "", *values, api_name="/chat")


def test_visitors_without_rights_cannot_chat_nor_start_a_server(space, tiny_tokenizer):
    for username, words in ((None, "Sign in with Hugging Face"),
                            ("stranger", "not allowed to run benchmarks")):
        client = visitor(space, username)
        status = client.predict(*form_values(model_id=tiny_tokenizer), api_name="/chat_status")
        assert "Not allowed to chat here" in text(status) and words in text(status)
        for fields in ({"model_id": tiny_tokenizer},
                       {"target": ENDPOINT, "url": f"http://127.0.0.1:{space.tgi_port}"}):
            shown, _, message = chat(client, "Hello", **fields)
            assert "Not allowed to chat here" in text(message) and words in text(message)
            assert not text(shown)
        started = client.predict(*form_values(model_id=tiny_tokenizer), api_name="/chat_start")
        assert "Not allowed to start a server here" in text(started[0])
    assert not port_open(space.tgi_port), "no TGI server may start for them"


def test_owner_and_allowed_users_run_and_everyone_opens_shared_results(space, tiny_tokenizer):
    owner = visitor(space, "owner")
    final = run(owner, model_id=tiny_tokenizer, **FIELDS_SMALL_RUN)
    assert "Benchmark complete" in text(final["Run status"]), space.log()
    link = text(final["Share link: opens these results read-only"])
    assert link.startswith("https://owner-tgi-benchmark.hf.space/?run=")
    owner_run = link.split("?run=", 1)[1]

    # An allowed user benchmarks an existing endpoint (the server the owner's run started),
    # within the cap on requests per endpoint run (6 here).
    friend = visitor(space, "friend")
    url = f"http://127.0.0.1:{space.tgi_port}"
    too_many = run(friend, target=ENDPOINT, url=url, tokenizer_name=tiny_tokenizer,
                   **FIELDS_SMALL_RUN)                         # (1 + 2) x (2 runs + 1 warm-up)
    assert "would send 9 requests" in text(too_many["Form message"])
    assert "limit here is 6" in text(too_many["Form message"])
    fields = {**FIELDS_SMALL_RUN, "warmups": "0"}
    allowed = run(friend, target=ENDPOINT, url=url, tokenizer_name=tiny_tokenizer, **fields)
    assert "Benchmark complete" in text(allowed["Run status"]), space.log()
    friend_run = text(allowed["Share link: opens these results read-only"]).split("?run=", 1)[1]
    saved = json.loads((space.results_dir / friend_run / "run.json").read_text())
    assert len(saved["requests"]) == 6 and saved["server"] is None

    colleague = visitor(space, "colleague")                    # "@colleague" in ALLOWED_USERS
    assert "allowed by ALLOWED_USERS" in text(
        named(colleague, "/load", colleague.predict(api_name="/load"))["Access"])

    # Shared results open for everyone, signed in or not.
    anonymous = visitor(space, None)
    opened = named(anonymous, "/open", anonymous.predict([owner_run], api_name="/open"))
    assert owner_run in text(opened["Run title"])
    assert "Highest generation speed" in text(opened["Headline"])

    # The owner's server is up: an allowed user chats with it, a stranger still may not.
    shown, _, _ = chat(friend, "Hello", model_id=tiny_tokenizer)
    assert "tokens/s" in str(shown), shown
    _, _, message = chat(visitor(space, "stranger"), "Hello", model_id=tiny_tokenizer)
    assert "Not allowed to chat here" in text(message)

def test_only_visitors_who_may_run_can_import_files(space):
    """The import box writes into the results folder: the same rule as running."""
    from pathlib import Path

    from gradio_client import handle_file

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "imports" / "llmperf_summary.json"
    before = sorted(p.name for p in space.results_dir.iterdir())
    for username in (None, "stranger"):
        client = visitor(space, username)
        out = named(client, "/import", client.predict([handle_file(str(fixture))],
                                                      api_name="/import"))
        assert "Not allowed to import here" in text(out["Import message"])
    assert sorted(p.name for p in space.results_dir.iterdir()) == before
    friend = visitor(space, "friend")
    out = named(friend, "/import", friend.predict([handle_file(str(fixture))],
                                                  api_name="/import"))
    assert "Imported 1 run" in text(out["Import message"])
