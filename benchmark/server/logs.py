"""Reading ``text-generation-launcher``'s log: start-up phases and plain-words failure reasons.

Pure functions over log lines (already masked), used by ``launcher.ServerManager``:

    clean_line(raw)                    -> text without colour codes (JSON log lines unwrapped)
    phase_of(line)                     -> "downloading" / "loading" / "warming up" / None
    download_progress(line)            -> (file, files) when the line reports a finished file
    explain_exit(lines, code, ...)     -> Failure(reason, message) for a launcher that stopped
    explain_crash(lines, code)         -> Failure("crashed", ...) for a server lost mid-run

Reason codes (``ServerStartError.reason``): "oom", "gated", "not_found", "bad_flags", "crashed",
"exited", "timeout", "port_in_use", "no_space", "wrong_model", "cancelled". The markers come
from TGI's own messages (see the project's TGI reference, "Typical failures").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

# Order of the start-up phases; a phase never goes back to an earlier one.
PHASES = ("starting", "downloading", "loading", "warming up", "ready")

PHASE_DESCRIPTIONS = {
    "starting": "Starting text-generation-launcher",
    "downloading": "Downloading the model weights from the Hugging Face Hub",
    "loading": "Loading the model onto the GPU",
    "warming up": "Warming up (TGI measures how much memory is left for requests)",
    "ready": "Ready",
    "failed": "Failed",
    "stopped": "Stopped",
}

MAX_LINE_CHARS = 2000
TAIL_IN_MESSAGE = 12

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DOWNLOAD_COUNT = re.compile(r"Download: \[(\d+)/(\d+)\]")
_SHARD_FILE = re.compile(r"-(\d{5})-of-(\d{5})\.safetensors")

# (phase, markers): the first phase whose marker is in the line wins.
_PHASE_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("warming up", ("Warming up model", "Setting max batch total tokens", "Connected")),
    ("loading", ("Starting shard", "Waiting for shard", "Shard ready in", "Server started at",
                 "Starting Webserver", "Loading model")),
    ("downloading", ("Starting check and download process", "Download file:", "Downloaded ",
                     "Download: [", "Successfully downloaded weights", "Downloading")),
)

_OOM = ("Not enough memory to handle", "CUDA out of memory", "OutOfMemoryError",
        "CUDA error: out of memory", "HIP out of memory", "XPU out of memory")
_GATED = ("GatedRepoError", "Cannot access gated repo", "is restricted. You must have access",
          "gated repo")
_NOT_FOUND = ("RepositoryNotFoundError", "Repository Not Found", "404 Client Error",
              "does not appear to have a file named", "RevisionNotFoundError", "Invalid rev id")
_UNAUTHORIZED = ("401 Client Error", "403 Client Error", "Invalid user token",
                 "Invalid credentials", "not in the authorized list")
_NO_SPACE = ("No space left on device", "Not enough free disk space")
_PORT_IN_USE = ("Address already in use", "AddrInUse")
_LIBPYTHON = "libpython3"


@dataclass(frozen=True)
class Failure:
    """Why the launcher stopped: a reason code and the sentence to show."""

    reason: str
    message: str


def clean_line(raw: str) -> str:
    """Strip colour codes and trailing blanks; unwrap TGI's ``--json-output`` lines."""
    text = _ANSI.sub("", raw).rstrip()
    if text.startswith("{") and text.endswith("}"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("fields"), dict):
            message = data["fields"].get("message")
            if isinstance(message, str):
                level = str(data.get("level", "")).upper()
                target = data.get("target", "")
                text = " ".join(p for p in (level, f"{target}:" if target else "", message) if p)
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + " [...]"
    return text


def phase_of(line: str) -> str | None:
    """The start-up phase a log line announces, or None when it says nothing about it."""
    if "Waiting for shard to be ready" in line and "download" in line.lower():
        return "loading"
    for phase, markers in _PHASE_MARKERS:
        if any(marker in line for marker in markers):
            return phase
    return None


def later_phase(current: str, new: str | None) -> str:
    """``new`` if it comes after ``current`` in PHASES, else ``current`` (no going back)."""
    if new is None or current not in PHASES or new not in PHASES:
        return current
    return new if PHASES.index(new) > PHASES.index(current) else current


def download_progress(line: str) -> tuple[int, int] | None:
    """(files done, files in all) from ``Download: [2/4] -- ETA: ...`` style lines."""
    match = _DOWNLOAD_COUNT.search(line) or _SHARD_FILE.search(line)
    if not match:
        return None
    done, total = int(match.group(1)), int(match.group(2))
    return (done, total) if 0 < done <= total else None


def describe_phase(phase: str, progress: tuple[int, int] | None = None) -> str:
    text = PHASE_DESCRIPTIONS.get(phase, phase)
    if phase == "downloading" and progress:
        text += f" (file {progress[0]} of {progress[1]})"
    return text


def _first(lines: Sequence[str], markers: Iterable[str]) -> str | None:
    markers = tuple(markers)
    for line in lines:
        if any(marker in line for marker in markers):
            return line
    return None


def clap_error(lines: Sequence[str]) -> str | None:
    """The launcher's own ``error: ...`` message (clap) or its argument-validation error."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("error:"):
            extra = [nxt.strip() for nxt in lines[index + 1:index + 4]
                     if nxt.strip().startswith(("tip:", "[possible values"))]
            return stripped + (f" ({'; '.join(extra)})" if extra else "")
        if "ArgumentValidation" in stripped:
            match = re.search(r'ArgumentValidation\("(.*)"\)', stripped)
            return match.group(1).replace('\\"', '"') if match else stripped
    return None


def format_tail(lines: Sequence[str], n: int = TAIL_IN_MESSAGE) -> str:
    tail = [line for line in lines if line.strip()][-n:]
    if not tail:
        return "(the launcher printed nothing)"
    return "\n".join(f"  {line}" for line in tail)


def _oom_message(line: str) -> str:
    return (
        "The model did not fit in the GPU's memory while TGI was preparing it "
        f"(TGI said: {line.strip()[:300]}). To fix it, lower Max batch prefill tokens "
        "(--max-batch-prefill-tokens) or Max total tokens (--max-total-tokens), choose a "
        "quantized version of the model (for example --quantize gptq or awq), or use a GPU "
        "with more memory."
    )


def explain_exit(lines: Sequence[str], exit_code: int | None, *, model_id: str,
                 has_token: bool) -> Failure:
    """Why the launcher stopped during start-up, from its exit code and its last log lines."""
    hub_page = f"https://huggingface.co/{model_id}"
    clap = clap_error(lines)
    if clap is not None:
        return Failure(
            "bad_flags",
            f"text-generation-launcher refused its settings and said: {clap.rstrip('.')}. "
            "Fix that setting (or use a TGI version that knows it) and start again.",
        )
    oom = _first(lines, _OOM)
    if oom is not None:
        return Failure("oom", _oom_message(oom))
    if _first(lines, _GATED) is not None or (
            _first(lines, _UNAUTHORIZED) is not None and _first(lines, _NOT_FOUND) is None):
        if has_token:
            return Failure(
                "gated",
                f"The model {model_id} is gated or private, and the HF_TOKEN given does not "
                f"give access to it. Open {hub_page} while logged in with the account that "
                "owns the token, accept the model's licence (or ask for access), check that "
                "the token can read that repository, then start again.",
            )
        return Failure(
            "gated",
            f"The model {model_id} is gated or private: downloading it needs a Hugging Face "
            f"token. Open {hub_page}, accept the model's licence with your account, create a "
            "read token at https://huggingface.co/settings/tokens, and add it as a secret named "
            "HF_TOKEN in the Space settings (on the command line: export HF_TOKEN=...), then "
            "start again.",
        )
    if _first(lines, _NOT_FOUND) is not None:
        private = ("" if has_token else " If the model is private, add a token that can read "
                   "it as a secret named HF_TOKEN in the Space settings.")
        return Failure(
            "not_found",
            f"No model named {model_id!r} was found on the Hugging Face Hub (or that revision "
            "does not exist). Check the spelling, including capitals, on "
            f"https://huggingface.co/models; it looks like org/model-name.{private}",
        )
    if _first(lines, _NO_SPACE) is not None:
        return Failure(
            "no_space",
            "The disk is full: the model's weights did not fit while TGI downloaded them. Free "
            "some space, choose a smaller or quantized model, or use a machine (or Space "
            "hardware) with a bigger disk, then start again.",
        )
    if _first(lines, _PORT_IN_USE) is not None:
        return Failure(
            "port_in_use",
            "TGI could not open its port because another program already uses it. Stop that "
            "program or choose another port, then start again.",
        )
    code = "unknown" if exit_code is None else str(exit_code)
    hint = ""
    if _first(lines, (_LIBPYTHON,)) is not None:
        hint = (" This is a known problem of the official TGI image when it runs as a normal "
                "user (as on Spaces): make /root readable with 'chmod 755 /root' in the "
                "Dockerfile.")
    return Failure(
        "exited",
        f"text-generation-launcher stopped during start-up (exit code {code}).{hint} "
        f"Last lines of its log:\n{format_tail(lines)}",
    )


def explain_crash(lines: Sequence[str], exit_code: int | None) -> Failure:
    """The server stopped after it was ready (for example during a benchmark)."""
    code = "unknown" if exit_code is None else str(exit_code)
    oom = _first(lines, _OOM)
    cause = ""
    if oom is not None:
        cause = (" It ran out of GPU memory: lower Max batch prefill tokens or Max total tokens, "
                 "use a quantized model or a bigger GPU.")
    return Failure(
        "crashed",
        f"The TGI server stopped while it was in use (exit code {code}).{cause} Results "
        f"measured until then are kept. Last lines of its log:\n{format_tail(lines)}",
    )
