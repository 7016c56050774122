"""Before the load: is there a server, what is it, what does it accept? (control calls, httpx)

``probe_server(config)`` reads ``/health``, ``/info`` (and ``/v1/models`` on OpenAI APIs) and
raises a plain-words error when the server is missing, loading, protected or of another kind;
``server_answers(url)`` tells, mid-run, whether the server still answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from ..config import RunConfig
from ..errors import ConfigError, ServerError, ServerUnreachable, redact
from .clients.base import error_message

__all__ = ["ServerProbe", "probe_server", "server_answers", "bound_info", "check_limits",
           "parse_json_object", "CONTROL_TIMEOUT_S", "MAX_INFO_TEXT"]

CONTROL_TIMEOUT_S = 10.0


# What is kept of a server's /info (it is saved in run.json and shown on every page refresh):
# an answer's bytes, a text's characters, a list's items or a mapping's keys, nesting depth.
MAX_INFO_BYTES = 16 * 1024 * 1024
MAX_INFO_TEXT = 256
MAX_INFO_ITEMS = 64
MAX_INFO_DEPTH = 3
# /info fields the run's lengths are checked against: whole numbers >= 0 (or null), else the
# server's description cannot be trusted.
LIMIT_FIELDS = ("max_input_tokens", "max_input_length", "max_total_tokens",
                "max_concurrent_requests", "max_client_batch_size", "max_batch_total_tokens",
                "max_batch_prefill_tokens", "max_best_of", "max_stop_sequences")


@dataclass(frozen=True)
class ServerProbe:
    """What ``/health``, ``/info`` (and ``/v1/models`` on OpenAI APIs) said; ``notes`` say what
    was cut from it (``bound_info``)."""

    info: dict[str, Any]
    simulated: bool
    model: str | None
    notes: tuple[str, ...] = ()


def bound_info(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``data`` (a server's /info) cut to what is worth keeping: texts to ``MAX_INFO_TEXT``
    characters, lists and mappings to ``MAX_INFO_ITEMS`` entries, nesting to
    ``MAX_INFO_DEPTH`` levels; returns the bounded copy and one sentence per cut."""
    notes: list[str] = []

    def cut(value: Any, where: str, depth: int) -> Any:
        if isinstance(value, str):
            if len(value) <= MAX_INFO_TEXT:
                return value
            notes.append(f"The server's /info field {where} was {len(value):,} characters "
                         f"long; only its first {MAX_INFO_TEXT} are kept.")
            return value[:MAX_INFO_TEXT] + f"… (cut: {len(value):,} characters)"
        if isinstance(value, (dict, list)):
            if depth >= MAX_INFO_DEPTH:
                notes.append(f"The server's /info field {where} is nested more than "
                             f"{MAX_INFO_DEPTH} levels deep; it is left out.")
                return "(left out: nested too deep)"
            items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
            if len(items) > MAX_INFO_ITEMS:
                kind = "keys" if isinstance(value, dict) else "items"
                notes.append(f"The server's /info{' field ' + where if where else ''} has "
                             f"{len(items):,} {kind}; only the first {MAX_INFO_ITEMS} are kept.")
                items = items[:MAX_INFO_ITEMS]
            if isinstance(value, dict):
                return {cut(str(k), f"{where}.{k}"[:60].lstrip("."), depth + 1)[:MAX_INFO_TEXT]:
                        cut(v, f"{where}.{k}".lstrip(".")[:60], depth + 1) for k, v in items}
            return [cut(v, f"{where}[{i}]", depth + 1) for i, v in items]
        return value

    return cut(data, "", 0), notes


def check_limits(url: str, info: dict[str, Any]) -> None:
    """Refuse an /info whose length limits are not whole numbers (say, ``"4095"`` as text): the
    run's lengths cannot be checked against them."""
    for name in LIMIT_FIELDS:
        value = info.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            shown = repr(value)[:40]
            raise ServerError(
                f"The server at {url} gives {name} as {shown} ({type(value).__name__}) in its "
                f"/info, not a whole number: its description is malformed, so the run cannot "
                f"be checked against its limits. Fix the server, or benchmark another one.")


def _unreachable(url: str, reason: str) -> ServerUnreachable:
    return ServerUnreachable(
        url,
        f"Nothing answers at {url} ({reason}). Start a server there (for a quick try, a "
        f"simulated one: python -m benchmark.simulator --port 3000) or pass the right --url.",
        reason,
    )


def probe_server(config: RunConfig, *, timeout_s: float = CONTROL_TIMEOUT_S,
                 headers: dict[str, str] | None = None) -> ServerProbe:
    """Check that the server at ``config.url`` is up and read its ``/info``; raise if not."""
    url = config.url
    tgi = config.api == "tgi"
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, follow_redirects=True,
                          headers=headers) as http:
            health = http.get("/health")
            if health.status_code == 503:
                raise ServerError(
                    f"The server at {url} is not ready yet (/health answered 503). Wait until "
                    f"it has loaded the model, then run the benchmark again.")
            if health.status_code in (401, 403):
                raise ServerError(
                    f"{url} refused the request (HTTP {health.status_code}): it needs a token. "
                    f"Put it in an environment variable and pass its name with --api-key-env.")
            if tgi and health.status_code != 200:
                raise ServerError(
                    f"{url}/health answered HTTP {health.status_code}: this does not look like "
                    f"a TGI server. For an OpenAI-compatible server pass --api openai-chat or "
                    f"--api openai-completions.")
            info_status, info = _get_json(http, "/info", url)
            if tgi and info is None:
                raise ServerError(
                    f"{url}/info did not answer with TGI's server description (HTTP "
                    f"{info_status}). Check the URL, or pass --api openai-chat "
                    f"for an OpenAI-compatible server.")
            info, notes = bound_info(info or {})
            check_limits(url, info)
            model = config.model
            if not tgi and not model:
                models = http.get("/v1/models")
                listed = _json_dict(models) if models.status_code == 200 else None
                data = (listed or {}).get("data") or []
                if data and isinstance(data[0], dict) and data[0].get("id"):
                    model = str(data[0]["id"])
                elif info.get("model_id"):
                    model = str(info["model_id"])
                else:
                    raise ConfigError("model", f"{url} did not say which model it serves "
                                               f"({_models_answer(models, listed)}): give it "
                                               f"with --model.")
    except httpx.TimeoutException:
        raise _unreachable(url, f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise _unreachable(url, redact(" ".join(str(exc).split())) or type(exc).__name__) \
            from None
    return ServerProbe(info=info, simulated=info.get("simulated") is True, model=model,
                       notes=tuple(notes))


def _get_json(http: httpx.Client, path: str, url: str) -> tuple[int, dict[str, Any] | None]:
    """GET ``path``: its status and its JSON object (None when the answer is not one), reading
    at most ``MAX_INFO_BYTES``; ``ServerError`` for an answer larger or nested deeper than any
    description needs."""
    with http.stream("GET", path) as response:
        if response.status_code != 200:
            return response.status_code, None
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_INFO_BYTES:
                raise ServerError(f"{url}{path} answered more than "
                                  f"{MAX_INFO_BYTES // (1024 * 1024)} MiB: that is not a server "
                                  f"description. Check the URL, or fix the server.")
    return 200, parse_json_object(bytes(body), f"{url}{path}")


def _models_answer(response: httpx.Response, listed: dict[str, Any] | None) -> str:
    """What ``GET /v1/models`` answered, in a few words, when it named no model."""
    if response.status_code != 200:
        message = error_message(response.content, response.reason_phrase or "no message")
        return f"/v1/models answered HTTP {response.status_code} ({message})"
    if listed is None:
        return "/v1/models did not answer with a JSON object"
    if not listed.get("data"):
        return "/v1/models listed no model (its \"data\" list is empty)"
    return "/v1/models listed no model id"


def _json_dict(response: httpx.Response) -> dict[str, Any] | None:
    return parse_json_object(response.content, str(response.url))


def parse_json_object(body: bytes, where: str) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None when it is not one; ``ServerError`` when it is nested
    too deeply for the parser (a server's fault, not a reason for a traceback)."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ServerError(f"{where} answered JSON nested thousands of levels deep: that is not a "
                          f"server description. Check the URL, or fix the server.") from None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def server_answers(url: str, timeout_s: float = 5.0,
                          headers: dict[str, str] | None = None) -> str | None:
    """None when ``url`` still answers ``/health``; else why not (a short phrase)."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s, headers=headers) as http:
            await http.get("/health")
    except httpx.TimeoutException:
        return f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        return redact(" ".join(str(exc).split())) or type(exc).__name__
    return None
