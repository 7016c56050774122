"""The one error tree of TGI Benchmark.

Every error a user can cause or meet is a ``BenchmarkError`` whose message is one or two plain
sentences saying what went wrong and what to do next. Each face catches them in exactly one
place: the CLI prints the message and exits non-zero; the UI shows it beside the field (for a
``ConfigError``) or in a banner.

    BenchmarkError
    ├── ConfigError            a value typed by the user is wrong (names the field)
    ├── TokenizerError         the tokenizer could not be loaded (names it; mentions HF_TOKEN)
    ├── ServerError
    │   ├── ServerUnreachable  nothing answers at the URL (names it; says how to start one)
    │   ├── ServerLimitError   the run asks more than the server's /info limits allow
    │   └── ServerStartError   text-generation-launcher failed; carries a reason and log tail
    ├── AccessDenied           the visitor may not launch or run (Spaces access control)
    └── ResultFileError        a saved run cannot be found or read

Messages never contain secrets: use ``redact`` on anything that came from a subprocess or an
environment before putting it in a message.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "BenchmarkError",
    "ConfigError",
    "TokenizerError",
    "ServerError",
    "ServerUnreachable",
    "ServerLimitError",
    "ServerStartError",
    "AccessDenied",
    "ResultFileError",
    "redact",
]


class BenchmarkError(Exception):
    """Base class: ``str(err)`` is the sentence to show the user."""


class ConfigError(BenchmarkError):
    """A user-typed value is invalid. ``field`` is the configuration field's name."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class TokenizerError(BenchmarkError):
    """The tokenizer named by the user could not be loaded."""


class ServerError(BenchmarkError):
    """Something about the inference server stops the run."""


class ServerUnreachable(ServerError):
    """Nothing answers at the URL. ``reason``: why, in a few words (refused, timed out, ...)."""

    def __init__(self, url: str, message: str, reason: str = ""):
        super().__init__(message)
        self.url = url
        self.reason = reason


class ServerLimitError(ServerError):
    """The requested lengths exceed what the server's ``/info`` says it accepts."""


class ServerStartError(ServerError):
    """The launcher failed. ``reason`` is a short code, ``log_tail`` the last (masked) lines."""

    def __init__(self, reason: str, message: str, log_tail: list[str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.log_tail = list(log_tail or [])


class AccessDenied(BenchmarkError):
    """The visitor is not allowed to launch servers or run benchmarks here."""


class ResultFileError(BenchmarkError):
    """A saved run is missing, unreadable or of an unknown schema."""


class ImportFileError(ResultFileError):
    """Another tool's result file cannot be imported; the message starts with the file's name
    and says what was wrong with it."""

    def __init__(self, file_name: str, problem: str):
        file_name = str(file_name)
        if len(file_name) > 120:          # a visitor's upload names itself
            file_name = file_name[:117] + "..."
        super().__init__(f"{file_name}: {problem}")
        self.file_name = file_name
        self.problem = problem


# User access tokens (hf_...), OAuth access tokens (hf_oauth_...) and legacy organization
# tokens (api_org_...): masked even when they are not in this environment.
_TOKEN_PATTERN = re.compile(r"(hf_(?:oauth_)?|api_org_)[A-Za-z0-9]{6,}")
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OAUTH_CLIENT_SECRET")


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Mask Hugging Face tokens and the values of secret environment variables in ``text``."""
    values = [v for v in (secrets or []) if v]
    values += [os.environ[name] for name in _SECRET_ENV if os.environ.get(name)]
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return _TOKEN_PATTERN.sub(lambda m: m.group(1) + "***", text)
