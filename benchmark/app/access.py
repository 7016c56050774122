"""Who may run what: the access rules of a public Hugging Face Space, as pure functions.

Use it from the UI with the process environment and the signed-in visitor's name::

    from benchmark import access
    rules = access.decide(os.environ, profile.username if profile else None)
    if not rules.can_run:
        show(rules.reason)                     # "Sign in with Hugging Face to run benchmarks, ..."
    config = RunConfig(..., max_total_requests=rules.request_cap(endpoint=True))
    settings.validate(allow_trust_remote_code=access.allow_trust_remote_code(os.environ))

The rules:

- Locally (not a Space) everyone may run, launch servers and benchmark any URL, no sign-in.
- On a Space (``SYSTEM=spaces`` or ``SPACE_ID`` set) only the Space owner
  (``SPACE_AUTHOR_NAME``) and the users listed in ``ALLOWED_USERS`` may launch servers, run
  benchmarks or benchmark an arbitrary endpoint URL. Everyone else can open shared results.
  ``ALLOWED_USERS="*"`` lets every signed-in visitor run (for a Space on the simulated server).
- A run against an arbitrary endpoint URL on a Space sends at most ``MAX_ENDPOINT_REQUESTS``
  requests in all (default 2000), so the Space cannot be used to flood someone else's server.
- ``trust_remote_code`` stays off unless ``ALLOW_TRUST_REMOTE_CODE`` is 1/true/yes/on.

Nothing here imports gradio or touches the network: it reads a mapping and returns data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import allow_trust_remote_code
from ..errors import AccessDenied, ConfigError

__all__ = [
    "Access",
    "DEFAULT_MAX_ENDPOINT_REQUESTS",
    "SIGN_IN_MESSAGE",
    "allow_trust_remote_code",
    "allowed_users",
    "decide",
    "is_space",
    "max_endpoint_requests",
    "oauth_enabled",
    "owner",
    "space_url",
]

DEFAULT_MAX_ENDPOINT_REQUESTS = 2000
SIGN_IN_MESSAGE = (
    "Sign in with Hugging Face to run benchmarks, or duplicate this Space to run your own."
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Access:
    """What one visitor may do here.

    ``reason`` is a sentence for the page: why the visitor may not run, or who they are
    signed in as. ``max_endpoint_requests`` caps the total requests of one run against an
    arbitrary endpoint URL; ``None`` means no cap (local use without ``MAX_ENDPOINT_REQUESTS``).
    """

    can_run: bool
    can_use_endpoint: bool
    reason: str
    max_endpoint_requests: int | None

    def request_cap(self, *, endpoint: bool) -> int | None:
        """The ``RunConfig.max_total_requests`` to use: the cap for endpoint runs, else None.

        ``endpoint=True`` when the visitor typed a URL; ``False`` when the run targets the
        server this app launched itself (the owner's own GPU, no cap).
        """
        return self.max_endpoint_requests if endpoint else None

    def require_run(self) -> None:
        """Raise ``AccessDenied(reason)`` unless the visitor may launch servers and run."""
        if not self.can_run:
            raise AccessDenied(self.reason)

    def require_endpoint(self) -> None:
        """Raise ``AccessDenied(reason)`` unless the visitor may benchmark an endpoint URL."""
        if not self.can_use_endpoint:
            raise AccessDenied(self.reason)


def is_space(env: Mapping[str, str]) -> bool:
    """True when running on Hugging Face Spaces (``SYSTEM=spaces`` or ``SPACE_ID`` set)."""
    system = env.get("SYSTEM", "").strip().lower()
    return system == "spaces" or bool(env.get("SPACE_ID", "").strip())


def oauth_enabled(env: Mapping[str, str]) -> bool:
    """True when the Space has Hugging Face sign-in (``hf_oauth: true`` in the README).

    Only then may the UI create a ``gr.LoginButton``: Gradio refuses to start on a Space
    whose OAuth variables are missing, and off a Space it mocks sign-in with the local token.
    """
    return is_space(env) and bool(env.get("OAUTH_CLIENT_ID", "").strip())


def owner(env: Mapping[str, str]) -> str | None:
    """The Space owner's user (or organization) name, from ``SPACE_AUTHOR_NAME``."""
    name = _clean_name(env.get("SPACE_AUTHOR_NAME", ""))
    return name or None


def allowed_users(env: Mapping[str, str]) -> frozenset[str]:
    """Lower-cased names from ``ALLOWED_USERS`` (separated by commas and/or spaces).

    A leading ``@`` is ignored; ``*`` stands for every signed-in visitor.
    """
    names = (_clean_name(part) for part in re.split(r"[,;\s]+", env.get("ALLOWED_USERS", "")))
    return frozenset(name.lower() for name in names if name)


def max_endpoint_requests(env: Mapping[str, str]) -> int | None:
    """The cap on requests per endpoint run: ``MAX_ENDPOINT_REQUESTS``, default 2000 on a Space.

    Locally there is no cap unless ``MAX_ENDPOINT_REQUESTS`` is set. A value that is not a
    positive whole number raises ``ConfigError`` (the owner mistyped the variable).
    """
    raw = env.get("MAX_ENDPOINT_REQUESTS", "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_ENDPOINT_REQUESTS if is_space(env) else None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(
            "max_endpoint_requests",
            f"MAX_ENDPOINT_REQUESTS must be a positive whole number, got {raw!r}. "
            "Fix the variable in the Space settings.",
        )
    return int(raw)


def space_url(env: Mapping[str, str]) -> str | None:
    """The Space's public address (``https://<SPACE_HOST>``), or None off a Space."""
    host = env.get("SPACE_HOST", "").strip().strip("/")
    if not is_space(env) or not host:
        return None
    return host if host.startswith(("http://", "https://")) else f"https://{host}"


def decide(env: Mapping[str, str], username: str | None,
           orgs: Iterable[str] = ()) -> Access:
    """What ``username`` (None = not signed in) may do, given the environment ``env``.

    ``orgs`` are the visitor's organization names when the UI knows them: members of the
    organization that owns the Space count as its owner.
    """
    user = _clean_name(username or "") or None
    try:
        cap = max_endpoint_requests(env)
    except ConfigError as err:
        # A mistyped cap must not silently lift the limit: endpoint runs stay off until fixed.
        base = decide({k: v for k, v in env.items() if k != "MAX_ENDPOINT_REQUESTS"}, user, orgs)
        return Access(base.can_run, False, f"{base.reason} {err}", DEFAULT_MAX_ENDPOINT_REQUESTS)
    if not is_space(env):
        return Access(True, True, "Running locally: no sign-in needed.", cap)

    the_owner = owner(env)
    if not oauth_enabled(env):
        return _denied(
            "This Space has no Hugging Face sign-in, so nobody can run benchmarks here. "
            "Its owner can add `hf_oauth: true` to the README front matter; or duplicate "
            "this Space to run your own.", cap)
    if user is None:
        return _denied(SIGN_IN_MESSAGE, cap)

    key = user.lower()
    member_of = {_clean_name(o).lower() for o in orgs}
    if the_owner and (key == the_owner.lower() or the_owner.lower() in member_of):
        return Access(True, True, f"Signed in as {user}, owner of this Space.", cap)
    allowed = allowed_users(env)
    if key in allowed:
        return Access(True, True, f"Signed in as {user}, allowed by ALLOWED_USERS.", cap)
    if "*" in allowed:
        # Everyone may run on the Space's own server, but only people named by the owner may
        # point it at another address (internal ones included).
        return Access(True, False, f"Signed in as {user}; this Space lets every signed-in "
                                   f"visitor run on its own server. Benchmarking another "
                                   f"endpoint is only for the owner and users named in "
                                   f"ALLOWED_USERS.", cap)
    who = f"its owner ({the_owner})" if the_owner else "its owner"
    return _denied(
        f"Signed in as {user}, who is not allowed to run benchmarks on this Space: ask "
        f"{who} to add you to ALLOWED_USERS, or duplicate this Space to run your own.",
        cap)


def _denied(reason: str, cap: int | None) -> Access:
    return Access(False, False, reason, cap)


def _clean_name(name: str) -> str:
    return name.strip().lstrip("@").strip()
