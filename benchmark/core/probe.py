"""Before the load: is there a server, what is it, what does it accept? (control calls, httpx)

``probe_server(config)`` reads ``/health``, ``/info`` (and ``/v1/models`` on OpenAI APIs) and
raises a plain-words error when the server is missing, loading, protected or of another kind;
``server_answers(url)`` tells, mid-run, whether the server still answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from ..config import RunConfig
from ..errors import ConfigError, ServerError, ServerUnreachable, redact
from .clients.base import error_message

__all__ = ["ServerProbe", "probe_server", "server_answers", "CONTROL_TIMEOUT_S"]

CONTROL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServerProbe:
    """What ``/health``, ``/info`` (and ``/v1/models`` on OpenAI APIs) said."""

    info: dict[str, Any]
    simulated: bool
    model: str | None


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
            info_response = http.get("/info")
            info = _json_dict(info_response) if info_response.status_code == 200 else None
            if tgi and info is None:
                raise ServerError(
                    f"{url}/info did not answer with TGI's server description (HTTP "
                    f"{info_response.status_code}). Check the URL, or pass --api openai-chat "
                    f"for an OpenAI-compatible server.")
            info = info or {}
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
    return ServerProbe(info=info, simulated=info.get("simulated") is True, model=model)


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
    try:
        data = response.json()
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
