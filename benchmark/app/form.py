"""The app's form as data: raw field values in, a validated run plan out (no gradio here).

    plan = build_plan({"model_id": "org/model", "batch_sizes": "1,2,4", ...})
    plan.run      # RunConfig, validated
    plan.server   # ServerSettings to launch, or None when benchmarking an existing endpoint

Every number field arrives as text (the app uses text boxes so that a typed word gets a message
naming the field instead of being silently dropped by the browser). Checks live in config.py;
this module only turns text into typed values and names the first wrong field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..config import (
    API_CHOICES,
    ARRIVAL_CHOICES,
    MAX_REQUESTS,
    DEFAULT_SERVER_PORT,
    DTYPE_CHOICES,
    MAX_DECODE_LENGTH,
    MAX_RUNS,
    MAX_SEQUENCE_LENGTH,
    MAX_WARMUPS,
    QUANTIZE_CHOICES,
    SERVER_LIMITS,
    RunConfig,
    SamplingParams,
    ServerSettings,
    check_hardware,
    check_model_id,
    check_url,
    parse_batch_sizes,
    parse_attainment,
    parse_float,
    parse_int,
    parse_slo_ms,
    parse_rates,
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
ARRIVAL_OPTIONS = ARRIVAL_CHOICES

# TGI's default for --max-concurrent-requests: past it the router answers 429.
TGI_DEFAULT_MAX_CONCURRENT = 128

# The form's fields with their defaults, in display order. Number fields are text.
DEFAULTS: dict[str, Any] = {
    "target": TARGET_LAUNCH,
    "model_id": "",
    "quantize": NONE_CHOICE,
    "max_input_tokens": "",
    "max_total_tokens": "",
    "max_batch_size": "",
    "url": "",
    "tokenizer_name": "",
    "batch_sizes": "1,2,4,8",
    "sequence_length": "10",
    "decode_length": "8",
    "runs": "10",
    "warmups": "1",
    "api": "tgi",
    "mode": "Rounds (like TGI's benchmark)",
    "rates": "",
    "arrivals": "poisson",
    "duration_s": "",
    "requests": "",
    "max_concurrency": "",
    "slo_ttft_ms": "1000",
    "slo_tpot_ms": "50",
    "slo_attainment": "90",
    "max_duration_s": "",
    "timeout_s": "120",
    "temperature": "",
    "top_k": "",
    "top_p": "",
    "typical_p": "",
    "repetition_penalty": "",
    "frequency_penalty": "",
    "top_n_tokens": "",
    "do_sample": False,
    "watermark": False,
    "dtype": NONE_CHOICE,
    "num_shard": "",
    "max_batch_prefill_tokens": "",
    "max_concurrent_requests": "",
    "hardware": "none",
    "gpu_price_per_hour": "",
}
FIELDS: tuple[str, ...] = tuple(DEFAULTS)

QUANTIZE_OPTIONS = (NONE_CHOICE, *QUANTIZE_CHOICES)
DTYPE_OPTIONS = (NONE_CHOICE, *DTYPE_CHOICES)
API_OPTIONS = API_CHOICES


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


def _opt_int(values: Mapping[str, Any], name: str, maximum: int, minimum: int = 1) -> int | None:
    text = _text(values.get(name))
    return None if text == "" else parse_int(name, text, minimum=minimum, maximum=maximum)


def _opt_float(values: Mapping[str, Any], name: str) -> float | None:
    text = _text(values.get(name))
    return None if text == "" else parse_float(name, text)


def _int(values: Mapping[str, Any], name: str, *, minimum: int, maximum: int) -> int:
    text = _text(values.get(name))
    if text == "":
        text = _text(DEFAULTS[name])
    return parse_int(name, text, minimum=minimum, maximum=maximum)


def _choice(values: Mapping[str, Any], name: str) -> str | None:
    text = _text(values.get(name))
    return None if text in ("", NONE_CHOICE) else text


def build_plan(
    values: Mapping[str, Any],
    *,
    endpoint_request_cap: int | None = None,
    allow_trust_remote_code: bool = False,
    server_port: int = DEFAULT_SERVER_PORT,
) -> Plan:
    """Validate the form; raise ConfigError (with ``.field``) or ServerLimitError on bad input.

    ``endpoint_request_cap`` limits the total requests of a run against an existing endpoint
    (set on a public Space so that it cannot be used to flood someone else's server).
    """
    launching = _text(values.get("target")) != TARGET_ENDPOINT
    # Typed numbers first, in the order the form shows them.
    server_numbers = {name: _opt_int(values, name, SERVER_LIMITS[name])
                      for name in FIELDS if name in SERVER_LIMITS} if launching else {}
    batch_sizes = parse_batch_sizes(_text(values.get("batch_sizes")) or DEFAULTS["batch_sizes"])
    sequence_length = _int(values, "sequence_length", minimum=1, maximum=MAX_SEQUENCE_LENGTH)
    decode_length = _int(values, "decode_length", minimum=1, maximum=MAX_DECODE_LENGTH)
    runs = _int(values, "runs", minimum=1, maximum=MAX_RUNS)
    warmups = _int(values, "warmups", minimum=0, maximum=MAX_WARMUPS)
    mode = MODE_LABELS.get(_text(values.get("mode")), _text(values.get("mode")) or "rounds")
    sustained = mode in ("concurrency", "rate")
    rate_fields: dict[str, Any] = {}
    if mode == "rate":
        rate_fields = dict(
            rates=parse_rates(_text(values.get("rates"))),
            arrivals=_text(values.get("arrivals")) or DEFAULTS["arrivals"],
            max_concurrency=_opt_int(values, "max_concurrency", 1_000_000),
        )
    sampling = SamplingParams(
        temperature=_opt_float(values, "temperature"),
        top_k=_opt_int(values, "top_k", 1_000_000),
        top_p=_opt_float(values, "top_p"),
        typical_p=_opt_float(values, "typical_p"),
        repetition_penalty=_opt_float(values, "repetition_penalty"),
        frequency_penalty=_opt_float(values, "frequency_penalty"),
        top_n_tokens=_opt_int(values, "top_n_tokens", 10),
        do_sample=bool(values.get("do_sample")),
        watermark=bool(values.get("watermark")),
    )
    run_fields: dict[str, Any] = dict(
        api=_text(values.get("api")) or DEFAULTS["api"],
        batch_sizes=batch_sizes,
        sequence_length=sequence_length,
        decode_length=decode_length,
        runs=runs,
        warmups=warmups,
        mode=mode,
        duration_s=_opt_float(values, "duration_s") if sustained else None,
        requests=_opt_int(values, "requests", MAX_REQUESTS) if sustained else None,
        timeout_s=parse_float("timeout_s", _text(values.get("timeout_s")) or DEFAULTS["timeout_s"]),
        sampling=sampling,
        **rate_fields,
        **_targets(values, mode),
        **_price(values),
    )

    if launching:
        model_id = check_model_id(_text(values.get("model_id")))
        server = ServerSettings(
            model_id=model_id,
            quantize=_choice(values, "quantize"),
            dtype=_choice(values, "dtype"),
            port=server_port,
            **server_numbers,
        ).validate(allow_trust_remote_code=allow_trust_remote_code)
        run = RunConfig(tokenizer_name=model_id, url=server.url, **run_fields).validate()
        _check_fits_server(run, server)
        return Plan(run=run, server=server)

    url = _public_url(check_url(_text(values.get("url"))))
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
    if endpoint_request_cap is not None and sustained and run_fields["requests"] is None:
        raise ConfigError(
            "requests",
            f"Requests is empty: here a run against an endpoint URL may send at most "
            f"{endpoint_request_cap} requests in all, so the {mode} pattern needs a number "
            f"of requests per step (Advanced settings), not only a duration.",
        )
    run = RunConfig(tokenizer_name=tokenizer, url=url, max_total_requests=endpoint_request_cap,
                    **run_fields).validate()
    return Plan(run=run, server=None)


def _targets(values: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """The latency targets (any load pattern; empty: no target on that measure) and, for Find
    capacity, the search's time bound. The share is typed in percent."""
    targets: dict[str, Any] = {}
    for name in ("slo_ttft_ms", "slo_tpot_ms"):
        text = _text(values.get(name))
        targets[name] = None if text == "" else parse_slo_ms(name, text)
    share = _text(values.get("slo_attainment")).rstrip("%").strip() or DEFAULTS["slo_attainment"]
    targets["slo_attainment"] = parse_attainment(share + "%")
    if mode == "capacity":
        targets["max_duration_s"] = _opt_float(values, "max_duration_s")
    return targets


def _price(values: Mapping[str, Any]) -> dict[str, Any]:
    """The machine's price per hour (empty: none) and its Hugging Face hardware name
    (``none``: not given); a typed price wins over the hardware's."""
    hardware = _choice(values, "hardware")
    return {"gpu_price_per_hour": _opt_float(values, "gpu_price_per_hour"),
            "hardware": None if hardware is None else check_hardware(hardware)}


def _public_url(url: str) -> str:
    """Refuse a URL carrying a secret: the URL is saved in run.json and shown on share links."""
    parts = urlsplit(url)
    if parts.username or parts.password or parts.query:
        raise ConfigError(
            "url",
            "Endpoint URL carries a user name, password or query (?key=...): it would be saved "
            "with the results and shown to everyone who opens the share link. Type only the "
            "server's address, e.g. http://10.0.0.5:8080.",
        )
    return url


def _check_fits_server(run: RunConfig, server: ServerSettings) -> None:
    """Refuse, before launching, a run the chosen server limits would reject request by request."""
    run.check_against_server({"max_input_tokens": server.max_input_tokens,
                              "max_total_tokens": server.max_total_tokens})
    cap = server.max_concurrent_requests or TGI_DEFAULT_MAX_CONCURRENT
    if run.mode == "rate":
        if run.max_concurrency is not None and run.max_concurrency > cap:
            raise ConfigError(
                "max_concurrency",
                f"Max concurrency {run.max_concurrency} is more than the server's max concurrent "
                f"requests ({cap}): the extra requests would be refused with HTTP 429. Lower it "
                f"or raise Max concurrent requests in the advanced server settings.")
        return
    largest = max(run.batch_sizes)
    if largest > cap:
        raise ConfigError(
            "batch_sizes",
            f"Batch size {largest} is more than the server's max concurrent requests ({cap}): "
            f"the extra requests would be refused with HTTP 429. Lower the batch sizes or raise "
            f"Max concurrent requests in the advanced server settings.",
        )


def example_values() -> dict[str, Any]:
    """The guide's example model, one click away."""
    return {"model_id": EXAMPLE_MODEL_ID, "quantize": EXAMPLE_QUANTIZE}


__all__ = ["Plan", "build_plan", "example_values", "DEFAULTS", "FIELDS", "EXAMPLE_MODEL_ID",
           "EXAMPLE_QUANTIZE", "TARGET_LAUNCH", "TARGET_ENDPOINT", "MODE_LABELS",
           "QUANTIZE_OPTIONS", "DTYPE_OPTIONS", "API_OPTIONS", "ARRIVAL_OPTIONS"]
