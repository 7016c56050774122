"""The app's form as data: raw field values in, a validated run plan out (no gradio here).

    plan = build_plan({"model_id": "org/model", "batch_sizes": "1,2,4", ...})
    plan.run      # RunConfig, validated
    plan.server   # ServerSettings to launch, or None when benchmarking an existing endpoint

Every number field arrives as text (the app uses text boxes so that a typed word gets a message
naming the field instead of being silently dropped by the browser). Defaults, labels, bounds and
checks come from ``config.SETTINGS`` (the same the CLI uses); this module only says which
settings the form shows, in which order, and turns their text into typed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import (
    API_CHOICES,
    ARRIVAL_CHOICES,
    DEFAULT_SERVER_PORT,
    DTYPE_CHOICES,
    QUANTIZE_CHOICES,
    TGI_DEFAULT_MAX_CONCURRENT,
    RunConfig,
    SamplingParams,
    ServerSettings,
    Setting,
    check_fits_server,
    check_model_id,
    endpoint_url,
    parse_setting,
    setting_argv,
    settings_of,
)
from ..errors import ConfigError

EXAMPLE_MODEL_ID = "astronomer/Llama-3-8B-Instruct-GPTQ-8-Bit"
EXAMPLE_QUANTIZE = "gptq"

TARGET_LAUNCH = "Launch a TGI server here"
TARGET_ENDPOINT = "Benchmark an existing server (endpoint URL)"
NONE_CHOICE = "none"
MODE_LABELS = {
    "Rounds (like TGI's benchmark)": "rounds",
    "Sustained concurrency": "concurrency",
    "Request rate": "rate",
    "Find capacity": "capacity",
}

# The form's fields in display order: "target" (launch or endpoint) then settings of the table.
FORM_ORDER: tuple[str, ...] = (
    "target", "model_id", "quantize", "max_input_tokens", "max_total_tokens", "max_batch_size",
    "url", "tokenizer_name", "batch_sizes", "sequence_length", "decode_length", "runs",
    "warmups", "slo_ttft_ms", "slo_tpot_ms", "slo_attainment", "api", "mode", "duration_s",
    "requests", "rates", "arrivals", "max_concurrency", "max_duration_s", "timeout_s", "workers",
    "temperature", "top_k",
    "top_p", "typical_p", "repetition_penalty", "frequency_penalty", "top_n_tokens",
    "do_sample", "watermark", "dtype", "num_shard", "max_batch_prefill_tokens",
    "max_concurrent_requests", "hardware", "gpu_price_per_hour",
)
# Fields that start empty whatever the table's default: the endpoint is the visitor's to type.
_START_EMPTY = ("url",)
# Fields the form fills differently from the command line: chat-sized latency targets (the
# CLI sets none unless asked), and the share of requests typed in percent.
_FORM_PREFILLED = {"slo_ttft_ms": "1000", "slo_tpot_ms": "50", "slo_attainment": "90"}
_PERCENT = ("slo_attainment",)
_FORM_OWNERS = ("server", "run", "sampling")


def _entries(name: str) -> list[Setting]:
    return [e for e in settings_of(*_FORM_OWNERS) if e.name == name]


def form_default(entry: Setting) -> Any:
    """A setting's default as its form widget shows it (numbers as text, "none" for no choice)."""
    if entry.name == "mode":
        return next(label for label, mode in MODE_LABELS.items() if mode == entry.default)
    if entry.name in _FORM_PREFILLED:
        return _FORM_PREFILLED[entry.name]
    if entry.kind == "switch":
        return bool(entry.default)
    if entry.default is None or entry.name in _START_EMPTY:
        return NONE_CHOICE if entry.kind == "choice" else ""
    if entry.kind in ("sizes", "rates"):
        return ",".join(map(str, entry.default))
    return setting_argv(entry, entry.default)[-1]


# The form's fields with their defaults, in display order. Number fields are text.
DEFAULTS: dict[str, Any] = {
    name: TARGET_LAUNCH if name == "target" else form_default(_entries(name)[0])
    for name in FORM_ORDER
}
FIELDS: tuple[str, ...] = tuple(DEFAULTS)

QUANTIZE_OPTIONS = (NONE_CHOICE, *QUANTIZE_CHOICES)
DTYPE_OPTIONS = (NONE_CHOICE, *DTYPE_CHOICES)
API_OPTIONS = API_CHOICES
ARRIVAL_OPTIONS = ARRIVAL_CHOICES


@dataclass(frozen=True)
class Plan:
    """What one click on Run asks for: the run, and the server to launch (None: endpoint)."""

    run: RunConfig
    server: ServerSettings | None

    @property
    def launches_server(self) -> bool:
        return self.server is not None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _value(entry: Setting, raw: Any) -> Any:
    """The typed value of one field: empty (or "none") means the table's default."""
    if entry.kind == "switch":
        return bool(raw)
    text = _text(raw)
    if entry.name == "mode":
        text = MODE_LABELS.get(text, text)
    if text == "" or (entry.kind == "choice" and text == NONE_CHOICE):
        return entry.default
    if entry.name in _PERCENT:          # typed in percent here, "90" or "90 %"
        text = text.rstrip("%").strip() + "%"
    return parse_setting(entry, text)


# Fields read on their own: what to benchmark, and who names the tokenizer.
_SPECIAL = ("target", "model_id", "url", "tokenizer_name")


def build_plan(
    values: Mapping[str, Any],
    *,
    endpoint_request_cap: int | None = None,
    allow_trust_remote_code: bool = False,
    server_port: int = DEFAULT_SERVER_PORT,
    max_workers: int | None = None,
) -> Plan:
    """Validate the form; raise ConfigError (with ``.field``) or ServerLimitError on bad input.

    ``endpoint_request_cap`` limits the total requests of a run against an existing endpoint
    (set on a public Space so that it cannot be used to flood someone else's server).
    ``max_workers`` caps the worker processes (set on a Space: its cores are shared with TGI).
    """
    plan = _build_plan(values, endpoint_request_cap=endpoint_request_cap,
                       allow_trust_remote_code=allow_trust_remote_code, server_port=server_port)
    if max_workers is not None and plan.run.workers > max_workers:
        raise ConfigError("workers", f"Worker processes: at most {max_workers} here (one per "
                                     f"core but one: the machine is shared with the server); "
                                     f"got {plan.run.workers}. Type {max_workers} or less.")
    return plan


def _build_plan(values: Mapping[str, Any], *, endpoint_request_cap: int | None,
                allow_trust_remote_code: bool, server_port: int) -> Plan:
    launching = _text(values.get("target")) != TARGET_ENDPOINT
    mode = _value(_entries("mode")[0], values.get("mode")) or "rounds"
    typed: dict[str, dict[str, Any]] = {owner: {} for owner in _FORM_OWNERS}
    # Typed values in the order the form shows them; a field of another load pattern, or of
    # the server when none is launched, is not read.
    for name in FIELDS:
        if name in _SPECIAL:
            continue
        for entry in _entries(name):
            if entry.owner == "server" and not launching:
                continue
            use = entry.applies_to(mode)
            typed[entry.owner][name] = (_value(entry, values.get(name)) if use
                                        else entry.default)
    run_fields = dict(typed["run"], sampling=SamplingParams(**typed["sampling"]))

    if launching:
        model_id = check_model_id(_text(values.get("model_id")))
        server = ServerSettings(model_id=model_id, port=server_port, **typed["server"]
                                ).validate(allow_trust_remote_code=allow_trust_remote_code)
        run = RunConfig(tokenizer_name=model_id, url=server.url, **run_fields).validate()
        check_fits_server(run, server)
        return Plan(run=run, server=server)

    url, _ = endpoint_url(_text(values.get("url")), credentials=False)
    tokenizer = _text(values.get("tokenizer_name")) or _text(values.get("model_id"))
    if not tokenizer:
        raise ConfigError("tokenizer_name",
                          "Tokenizer is empty: give the Hub id (or folder) of the model the "
                          "endpoint serves, so prompts have an exact number of tokens.")
    if endpoint_request_cap is not None and mode == "capacity":
        raise ConfigError(
            "mode",
            f"Find capacity sends as many requests as its search needs, and here a run against "
            f"an endpoint URL may send at most {endpoint_request_cap}. Launch the model here "
            f"instead, or choose another load pattern for this endpoint.",
        )
    if (endpoint_request_cap is not None and mode in ("concurrency", "rate")
            and run_fields["requests"] is None):
        raise ConfigError(
            "requests",
            f"Requests is empty: here a run against an endpoint URL may send at most "
            f"{endpoint_request_cap} requests in all, so the {mode} pattern needs a number "
            f"of requests per step (Advanced settings), not only a duration.",
        )
    run = RunConfig(tokenizer_name=tokenizer, url=url, max_total_requests=endpoint_request_cap,
                    **run_fields).validate()
    return Plan(run=run, server=None)


def example_values() -> dict[str, Any]:
    """The guide's example model, one click away."""
    return {"model_id": EXAMPLE_MODEL_ID, "quantize": EXAMPLE_QUANTIZE}


__all__ = ["Plan", "build_plan", "example_values", "DEFAULTS", "FIELDS", "FORM_ORDER",
           "TGI_DEFAULT_MAX_CONCURRENT", "form_default", "EXAMPLE_MODEL_ID",
           "EXAMPLE_QUANTIZE", "TARGET_LAUNCH", "TARGET_ENDPOINT", "MODE_LABELS",
           "QUANTIZE_OPTIONS", "DTYPE_OPTIONS", "API_OPTIONS", "ARRIVAL_OPTIONS"]
