"""Every setting of a benchmark run and of the TGI server, with its default and its checks.

This is the one home of validation. The CLI and the UI both build a ``RunConfig`` (and, when they
launch TGI, a ``ServerSettings``), call ``.validate()`` and show the ``ConfigError`` it raises:
the error names the field (``err.field``) and says how to fix the value.

    config = RunConfig(tokenizer_name="gpt2", url="http://localhost:3000", batch_sizes=(1, 4))
    config.validate()                       # raises ConfigError on bad input
    config.check_against_server(info)       # raises ServerLimitError when /info forbids it

Names and defaults follow TGI's ``text-generation-benchmark`` (run) and
``text-generation-launcher`` (server).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlparse, urlsplit

from .errors import ConfigError, ServerLimitError

API_CHOICES = ("tgi", "openai-chat", "openai-completions")
MODE_CHOICES = ("rounds", "concurrency", "rate", "capacity")
ARRIVAL_CHOICES = ("poisson", "constant", "gamma")
QUANTIZE_CHOICES = (
    "awq", "compressed-tensors", "eetq", "exl2", "gptq", "marlin",
    "bitsandbytes", "bitsandbytes-nf4", "bitsandbytes-fp4", "fp8",
)
DTYPE_CHOICES = ("float16", "bfloat16")
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
DEFAULT_URL = "http://localhost:3000"
DEFAULT_SERVER_PORT = 1337
DEFAULT_SERVER_HOST = "127.0.0.1"

# Upper bounds on what a user may type: far above any sensible run, low enough that a typo
# (an extra zero or two) cannot tie up a GPU for a day.
MAX_BATCH_SIZE = 1024
MAX_SEQUENCE_LENGTH = 1_000_000
MAX_DECODE_LENGTH = 100_000
MAX_RUNS = 10_000
MAX_WARMUPS = 1_000
MAX_DURATION_S = 24 * 3600.0
# Capacity mode: the search's time bound by default, and the least that fits its first probes.
DEFAULT_CAPACITY_DURATION_S = 300.0
MIN_CAPACITY_DURATION_S = 30.0
MAX_REQUESTS = 10_000_000
# Rate mode: the highest rate one may type (far above what one client process keeps), and the
# most arrivals one step may plan (the schedule is computed up front and held in memory).
MAX_RATE = 100_000.0
MAX_STEP_ARRIVALS = MAX_REQUESTS
MAX_BURSTINESS = 1_000.0
MIN_BURSTINESS = 0.01
# Cost and deployment plan: bounds far above any real price or traffic, to catch typos.
MAX_GPU_PRICE_PER_HOUR = 10_000.0
MAX_API_PRICE_PER_MILLION = 10_000.0
MAX_PEAK_RPS = 10_000_000.0
MAX_DAILY_USERS = 10_000_000_000
MAX_REQUESTS_PER_USER = 100_000.0
MAX_PEAK_FACTOR = 1_000.0
DEFAULT_PEAK_FACTOR = 2.0       # busiest hour / average hour, when the user does not say
DEFAULT_HEADROOM_PCT = 20.0     # spare capacity kept above the peak, in percent
PRICE_TABLE_FILE = os.path.join(os.path.dirname(__file__), "data", "hf_hardware_prices.json")
# Upper bounds of ServerSettings' numbers (TGI flag names), checked in this order.
SERVER_LIMITS: dict[str, int] = {
    "num_shard": 64, "max_input_tokens": MAX_SEQUENCE_LENGTH,
    "max_total_tokens": MAX_SEQUENCE_LENGTH + MAX_DECODE_LENGTH,
    "max_batch_size": 100_000, "max_batch_prefill_tokens": 10_000_000,
    "max_concurrent_requests": 100_000,
}

# A git branch, tag or commit as the Hub takes it (refs/pr/1 too); never read as a flag.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


# ---------------------------------------------------------------------------------------------
# Parsing typed text (the UI's number fields and the CLI's flags share these)


def parse_int(field_name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum], or a ConfigError naming ``field_name``."""
    label = field_label(field_name)
    if isinstance(value, bool):
        raise ConfigError(field_name, f"{label} must be a whole number, not {value!r}.")
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(field_name, f"{label} must be a whole number, got {value!r}.")
        value = int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigError(field_name, f"{label} must be a whole number, got {value!r}.")
        value = int(text)
    if not isinstance(value, int):
        raise ConfigError(field_name, f"{label} must be a whole number, got {value!r}.")
    if value < minimum:
        raise ConfigError(field_name, f"{label} must be at least {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ConfigError(field_name, f"{label} must be at most {maximum}, got {value}.")
    return value


def parse_float(field_name: str, value: Any, *, minimum: float | None = None,
                maximum: float | None = None, exclusive_minimum: bool = False) -> float:
    """``value`` as a finite float within bounds, or a ConfigError naming ``field_name``."""
    label = field_label(field_name)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ConfigError(field_name, f"{label} must be a number, got {value!r}.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(field_name, f"{label} must be a finite number, got {value!r}.")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        word = "greater than" if exclusive_minimum else "at least"
        raise ConfigError(field_name, f"{label} must be {word} {minimum:g}, got {number:g}.")
    if maximum is not None and number > maximum:
        raise ConfigError(field_name, f"{label} must be at most {maximum:g}, got {number:g}.")
    return number


def parse_batch_sizes(value: Any, field_name: str = "batch_sizes") -> tuple[int, ...]:
    """Batch sizes from ``"1,2,4"``, ``"1 2 4"``, ``[1, "2,4"]`` or ``4``; sorted, no repeats."""
    items: list[Any] = []
    for part in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(part, str):
            items += [p for p in re.split(r"[,\s]+", part.strip()) if p]
        else:
            items.append(part)
    if not items:
        raise ConfigError(field_name, f"{field_label(field_name)} is empty: give at least one, "
                                      "for example 1,2,4,8.")
    sizes = {parse_int(field_name, item, minimum=1, maximum=MAX_BATCH_SIZE) for item in items}
    return tuple(sorted(sizes))


def parse_attainment(value: Any, field_name: str = "slo_attainment") -> float:
    """The share of requests that must meet the targets, as a fraction in (0, 1].

    Takes a fraction (``0.9``) or a percentage written with its sign (``"90%"``); a bare number
    above 1 is refused rather than guessed at (was 90 meant, or 0.90?)."""
    label = field_label(field_name)
    text = value.strip() if isinstance(value, str) else value
    percent = isinstance(text, str) and text.endswith("%")
    number = parse_float(field_name, text[:-1] if percent else text)
    fraction = number / 100.0 if percent else number
    if not 0.0 < fraction <= 1.0:
        shown = f"{number:g}%" if percent else f"{number:g}"
        raise ConfigError(field_name, f"{label} must be above 0 and at most 100%: give a "
                                      f"fraction such as 0.9 or a percentage such as 90%, got "
                                      f"{shown}.")
    return fraction


def parse_slo_ms(field_name: str, value: Any) -> float:
    """A latency target in milliseconds: a positive number, at most a day."""
    label = field_label(field_name)
    number = parse_float(field_name, value)
    if number <= 0:
        raise ConfigError(field_name, f"{label} must be a positive number of milliseconds, "
                                      f"for example 1000, got {number:g}.")
    if number > MAX_DURATION_S * 1000:
        raise ConfigError(field_name, f"{label} must be at most {MAX_DURATION_S * 1000:g} ms "
                                      f"(a day), got {number:g}.")
    return number


def check_slo(config: Any) -> None:
    """Refuse a latency target that is not a positive number of ms, or an attainment outside
    (0, 1]; ``config`` is any object with ``slo_*`` fields."""
    for name in ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms"):
        value = getattr(config, name, None)
        if value is not None:
            parse_slo_ms(name, value)
    parse_attainment(getattr(config, "slo_attainment", 0.9))


def parse_rates(value: Any, field_name: str = "rates") -> tuple[float, ...]:
    """Request rates (requests/s) from ``"10,20.5"``, ``"10 20"``, ``[10, "20,30"]`` or ``5``;
    sorted, no repeats. A whole rate is kept as an ``int`` (200, not 200.0) so that it reads
    the same in tables, files and the step column."""
    label = field_label(field_name)
    items: list[Any] = []
    for part in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(part, str):
            items += [p for p in re.split(r"[,\s]+", part.strip()) if p]
        elif part is not None:
            items.append(part)
    if not items:
        raise ConfigError(field_name, f"{label} is empty: give at least one rate in requests "
                                      "per second, for example 10,20,40.")
    rates: set[float] = set()
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(field_name, f"{label} must be numbers, not {item!r}.")
        number = parse_float(field_name, item, minimum=0.0, maximum=MAX_RATE,
                             exclusive_minimum=True)
        rates.add(number)
    return tuple(int(r) if float(r).is_integer() else float(r) for r in sorted(rates))


def parse_headroom(value: Any, field_name: str = "plan_headroom") -> float:
    """Spare capacity typed as a percentage (``20`` or ``"20%"``), in [0, 100]."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.endswith("%"):
        text = text[:-1]
    return check_headroom(text, field_name)


def check_headroom(percent: Any, field_name: str = "plan_headroom") -> float:
    """Spare capacity in percent: refused outside [0, 100]."""
    number = parse_float(field_name, percent)
    if not 0.0 <= number <= 100.0:
        raise ConfigError(field_name, f"{field_label(field_name)} must be between 0 and 100%: "
                                      f"type a percentage such as 20, got {number:g}%.")
    return number


def parse_positive(field_name: str, value: Any, maximum: float, example: str) -> float:
    """A number above 0 and at most ``maximum``; the message gives ``example``."""
    label = field_label(field_name)
    number = parse_float(field_name, value)
    if number <= 0:
        raise ConfigError(field_name, f"{label} must be more than 0, for example {example}, "
                                      f"got {number:g}.")
    if number > maximum:
        raise ConfigError(field_name, f"{label} must be at most {maximum:,g}, got {number:g}.")
    return number


@functools.lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    """Hugging Face's Space hardware prices (``data/hf_hardware_prices.json``): ``read_on``,
    ``sources`` and ``hardware`` (name -> label, gpu, gpus, usd_per_hour)."""
    with open(PRICE_TABLE_FILE, encoding="utf-8") as handle:
        return json.load(handle)


def check_hardware(value: Any, field_name: str = "hardware") -> str:
    """A hardware name of the price table (``l4x1``, ``a100-large``...)."""
    names = price_table()["hardware"]
    text = (value or "").strip().lower() if isinstance(value, str) else value
    if text not in names:
        raise ConfigError(field_name, f"{field_label(field_name)} {value!r} is not in the price "
                                      f"table; choose one of {', '.join(names)}, or type the "
                                      f"price per hour instead.")
    return text


def check_cost(config: Any) -> None:
    """Refuse a price, hardware name or deployment plan input that cannot be used; ``config``
    is any object with the RunConfig's cost and ``plan_*`` fields."""
    if getattr(config, "gpu_price_per_hour", None) is not None:
        parse_positive("gpu_price_per_hour", config.gpu_price_per_hour, MAX_GPU_PRICE_PER_HOUR,
                       "0.80")
    if getattr(config, "hardware", None) is not None:
        check_hardware(config.hardware)
    if getattr(config, "api_price_per_million", None) is not None:
        parse_positive("api_price_per_million", config.api_price_per_million,
                       MAX_API_PRICE_PER_MILLION, "0.60")
    check_traffic(getattr(config, "plan_peak_rps", None),
                  getattr(config, "plan_daily_users", None),
                  getattr(config, "plan_requests_per_user", None),
                  getattr(config, "plan_peak_factor", DEFAULT_PEAK_FACTOR),
                  getattr(config, "plan_headroom", DEFAULT_HEADROOM_PCT))
    typed = [n for n in ("plan_peak_rps", "plan_daily_users", "plan_requests_per_user")
             if getattr(config, n, None) is not None]
    mode = getattr(config, "mode", "capacity")
    if typed and mode != "capacity":
        raise ConfigError(typed[0], f"{field_label(typed[0])} is for the deployment plan, which "
                                    f"needs the capacity per server: choose Find capacity "
                                    f"(--mode capacity) or leave the field empty.")


def check_traffic(peak_rps: Any, daily_users: Any, requests_per_user: Any, peak_factor: Any,
                  headroom: Any) -> tuple[float | None, int | None, float | None, float, float]:
    """The deployment plan's inputs, checked and typed: either a peak rate, or daily users and
    requests per user together (not both ways); the peak factor at least 1; headroom in percent
    in [0, 100]. Returns them typed (None where not given)."""
    factor = parse_float("plan_peak_factor", peak_factor, minimum=1.0, maximum=MAX_PEAK_FACTOR)
    spare = check_headroom(headroom)
    empty = ("", None)
    peak = None if peak_rps in empty else parse_positive("plan_peak_rps", peak_rps,
                                                         MAX_PEAK_RPS, "40")
    users = None if daily_users in empty else parse_int("plan_daily_users", daily_users,
                                                        minimum=1, maximum=MAX_DAILY_USERS)
    each = None if requests_per_user in empty else parse_positive(
        "plan_requests_per_user", requests_per_user, MAX_REQUESTS_PER_USER, "20")
    if peak is not None and (users is not None or each is not None):
        raise ConfigError("plan_peak_rps", "Give the traffic one way: either Peak traffic "
                                           "(requests/s), or Daily users with Requests per user "
                                           "per day, not both.")
    if (users is None) != (each is None):
        missing = "plan_requests_per_user" if each is None else "plan_daily_users"
        raise ConfigError(missing, f"{field_label(missing)} is needed too: the traffic is daily "
                                   f"users x requests per user per day.")
    return peak, users, each, factor, spare


def field_label(field_name: str) -> str:
    """A field's plain-words name, as error messages and the UI's labels show it."""
    return FIELD_LABELS.get(field_name, field_name.replace("_", " ").capitalize())


# Plain-words names of fields, shared by error messages and the UI's labels.
FIELD_LABELS = {
    "tokenizer_name": "Tokenizer",
    "url": "Endpoint URL",
    "api": "API",
    "batch_sizes": "Batch sizes",
    "sequence_length": "Sequence length",
    "decode_length": "Decode length",
    "runs": "Runs",
    "warmups": "Warmups",
    "mode": "Load pattern",
    "duration_s": "Duration (s)",
    "slo_ttft_ms": "TTFT target (ms)",
    "slo_tpot_ms": "Time per token target (ms)",
    "slo_e2e_ms": "End-to-end target (ms)",
    "slo_attainment": "Requests within target (%)",
    "max_duration_s": "Max duration (s)",
    "requests": "Requests",
    "rates": "Rates (requests/s)",
    "arrivals": "Arrivals",
    "burstiness": "Burstiness",
    "ramp_up_s": "Ramp-up (s)",
    "max_concurrency": "Max concurrency",
    "schedule_seed": "Schedule seed",
    "gpu_price_per_hour": "GPU price ($/hour)",
    "hardware": "Hardware",
    "plan_peak_rps": "Peak traffic (requests/s)",
    "plan_daily_users": "Daily users",
    "plan_requests_per_user": "Requests per user per day",
    "plan_peak_factor": "Peak factor",
    "plan_headroom": "Headroom (%)",
    "api_price_per_million": "Hosted API price ($ per million tokens)",
    "timeout_s": "Timeout (s)",
    "temperature": "Temperature",
    "top_k": "Top-k",
    "top_p": "Top-p",
    "typical_p": "Typical-p",
    "repetition_penalty": "Repetition penalty",
    "frequency_penalty": "Frequency penalty",
    "top_n_tokens": "Top-n tokens",
    "model_id": "Model ID",
    "revision": "Revision",
    "quantize": "Quantization",
    "dtype": "Data type",
    "num_shard": "Number of GPUs (shards)",
    "max_input_tokens": "Max input tokens",
    "max_total_tokens": "Max total tokens",
    "max_batch_size": "Max batch size",
    "max_batch_prefill_tokens": "Max batch prefill tokens",
    "max_concurrent_requests": "Max concurrent requests",
    "port": "Port",
    "hostname": "Hostname",
}


def check_url(url: str, field_name: str = "url") -> str:
    """An http(s) URL with a host, without a trailing slash."""
    text = (url or "").strip()
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(field_name, f"Endpoint URL must look like http://host:port, got {url!r}.")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(field_name, f"Endpoint URL has an invalid port: {url!r}.") from None
    return text.rstrip("/")


def strip_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` part (for anything saved or shown)."""
    parts = urlsplit(url or "")
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def check_model_id(model_id: str, field_name: str = "model_id") -> str:
    """A Hub id shaped like ``org/name`` or an existing local folder."""
    text = (model_id or "").strip()
    if not text:
        raise ConfigError(field_name, "Model ID is empty: type a Hub id such as org/model-name.")
    if text.startswith("-"):
        raise ConfigError(field_name, f"Model ID {text!r} starts with '-': type a Hub id such "
                                      "as org/model-name or a folder path such as ./model.")
    if os.path.isdir(text):
        return text
    if not _HUB_ID.match(text) or ".." in text or "--" in text:
        raise ConfigError(
            field_name,
            f"Model ID {text!r} is not a Hub id shaped like org/model-name "
            "(letters, digits, '-', '_', '.') nor an existing local folder.",
        )
    return text


# ---------------------------------------------------------------------------------------------
# A benchmark run


@dataclass(frozen=True)
class SamplingParams:
    """TGI's sampling flags. ``None`` means: do not send the parameter."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    watermark: bool = False
    do_sample: bool = False
    top_n_tokens: int | None = None

    def validate(self) -> "SamplingParams":
        if self.temperature is not None:
            parse_float("temperature", self.temperature, minimum=0.0, exclusive_minimum=True)
        if self.top_k is not None:
            parse_int("top_k", self.top_k, minimum=1)
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if value is not None:
                number = parse_float(name, value, minimum=0.0, maximum=1.0,
                                     exclusive_minimum=True)
                if number >= 1.0:
                    raise ConfigError(name, f"{field_label(name)} must be below 1, "
                                            f"got {number:g}.")
        if self.repetition_penalty is not None:
            parse_float("repetition_penalty", self.repetition_penalty, minimum=0.0,
                        exclusive_minimum=True)
        if self.frequency_penalty is not None:
            parse_float("frequency_penalty", self.frequency_penalty, minimum=-2.0, maximum=2.0)
        if self.top_n_tokens is not None:
            parse_int("top_n_tokens", self.top_n_tokens, minimum=1, maximum=10)
        return self


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run: what to send, to whom, in which pattern.

    ``mode="rounds"`` mirrors TGI's tool: for each batch size, ``warmups`` then ``runs`` rounds,
    each round sending ``batch size`` requests at once and waiting for all of them.
    ``mode="concurrency"`` keeps ``batch size`` virtual users busy (each sends its next request
    as soon as the last finished) for ``duration_s`` seconds or ``requests`` requests.
    ``mode="rate"`` is open-loop: for each of ``rates`` (requests/s) requests go out on a schedule
    drawn up front (``arrivals``: poisson, constant or gamma with shape ``burstiness``; rising
    linearly from 0 over ``ramp_up_s``) for ``duration_s`` seconds and/or ``requests`` requests,
    whether or not earlier ones have ended; ``max_concurrency`` caps requests in flight (the
    wait behind it is measured). ``schedule_seed`` makes the schedule replayable; the engine
    draws one when it is None and saves it.
    """

    tokenizer_name: str
    url: str = DEFAULT_URL
    api: str = "tgi"
    model: str | None = None
    revision: str | None = None
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    sequence_length: int = 10
    decode_length: int = 8
    runs: int = 10
    warmups: int = 1
    mode: str = "rounds"
    duration_s: float | None = None
    requests: int | None = None
    timeout_s: float = 120.0
    seed: int | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    output_dir: str | None = None
    rates: tuple[float, ...] = ()
    arrivals: str = "poisson"
    burstiness: float | None = None
    ramp_up_s: float | None = None
    max_concurrency: int | None = None
    schedule_seed: int | None = None
    # Set by the Space for endpoint runs: refuse configs that would send more requests.
    max_total_requests: int | None = None
    # Latency targets (SLOs), in ms; None = no target. A request is good when it finished and
    # met every target given; ``slo_attainment`` is the share of good requests wanted (0-1].
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    slo_e2e_ms: float | None = None
    slo_attainment: float = 0.9
    # Capacity mode: the whole search's time bound (None: DEFAULT_CAPACITY_DURATION_S).
    max_duration_s: float | None = None
    # What the server's machine costs (core/cost.py): its hourly price in USD and/or its
    # Hugging Face hardware name (a key of the price table; gives the price when none is typed).
    gpu_price_per_hour: float | None = None
    hardware: str | None = None
    # Deployment plan (capacity mode): the user's traffic, as requests/s at peak or as daily
    # users x requests per user per day (x the peak factor); spare capacity kept (percent);
    # a hosted API's price per million tokens to compare with.
    plan_peak_rps: float | None = None
    plan_daily_users: int | None = None
    plan_requests_per_user: float | None = None
    plan_peak_factor: float = DEFAULT_PEAK_FACTOR
    plan_headroom: float = DEFAULT_HEADROOM_PCT
    api_price_per_million: float | None = None

    def validate(self) -> "RunConfig":
        """Raise ``ConfigError`` for the first invalid field; return self when all is well."""
        if not (self.tokenizer_name or "").strip():
            raise ConfigError("tokenizer_name", "Tokenizer is empty: give a Hub id or a folder.")
        check_url(self.url)
        if self.api not in API_CHOICES:
            raise ConfigError("api", f"API must be one of {', '.join(API_CHOICES)}; got {self.api!r}.")
        if self.mode not in MODE_CHOICES:
            raise ConfigError("mode", f"Load pattern must be one of {', '.join(MODE_CHOICES)}; "
                                      f"got {self.mode!r}.")
        parse_batch_sizes(list(self.batch_sizes))
        parse_int("sequence_length", self.sequence_length, maximum=MAX_SEQUENCE_LENGTH)
        parse_int("decode_length", self.decode_length, maximum=MAX_DECODE_LENGTH)
        parse_int("runs", self.runs, maximum=MAX_RUNS)
        parse_int("warmups", self.warmups, minimum=0, maximum=MAX_WARMUPS)
        parse_float("timeout_s", self.timeout_s, minimum=0.0, maximum=24 * 3600,
                    exclusive_minimum=True)
        if self.seed is not None:
            parse_int("seed", self.seed, minimum=0, maximum=2**64 - 1)
        if self.mode in ("concurrency", "rate"):
            if self.duration_s is None and self.requests is None:
                raise ConfigError("duration_s", f"The {self.mode} pattern needs a duration "
                                                "(--duration) or a number of requests (--requests).")
            if self.duration_s is not None:
                parse_float("duration_s", self.duration_s, minimum=0.0, maximum=MAX_DURATION_S,
                            exclusive_minimum=True)
            if self.requests is not None:
                parse_int("requests", self.requests, maximum=MAX_REQUESTS)
        self._validate_rate()
        self.sampling.validate()
        check_slo(self)
        self._validate_capacity()
        check_cost(self)
        if self.max_total_requests is not None:
            total = self.planned_requests()
            if total is None or total > self.max_total_requests:
                shown = "an unbounded number of" if total is None else f"{total}"
                raise ConfigError(
                    "runs",
                    f"This run would send {shown} requests; the limit here is "
                    f"{self.max_total_requests}. Lower the batch sizes, runs or warmups.",
                )
        return self

    def _validate_rate(self) -> None:
        """The rate pattern's own fields; refused in the other patterns, where they mean
        nothing (a user who typed them expects them to act)."""
        rate_fields = ("rates", "burstiness", "ramp_up_s", "max_concurrency", "schedule_seed")
        if self.mode == "capacity":   # its rate probes draw their schedules from the seed
            rate_fields = rate_fields[:-1]
        if self.mode != "rate":
            typed = [n for n in rate_fields if getattr(self, n) not in (None, ())]
            if self.arrivals != "poisson":
                typed.insert(1, "arrivals")
            if typed:
                raise ConfigError(typed[0], f"{field_label(typed[0])} applies to the request "
                                            f"rate pattern only: choose it (--mode rate) or "
                                            f"leave the field empty.")
            return
        parse_rates(list(self.rates))
        if self.arrivals not in ARRIVAL_CHOICES:
            raise ConfigError("arrivals", f"Arrivals must be one of {', '.join(ARRIVAL_CHOICES)};"
                                          f" got {self.arrivals!r}.")
        if self.burstiness is not None:
            if self.arrivals != "gamma":
                raise ConfigError("burstiness", "Burstiness is the shape of gamma arrivals: "
                                                "choose gamma arrivals (--arrivals gamma) or "
                                                "leave burstiness empty.")
            parse_float("burstiness", self.burstiness, minimum=MIN_BURSTINESS,
                        maximum=MAX_BURSTINESS)
        if self.ramp_up_s is not None:
            ramp = parse_float("ramp_up_s", self.ramp_up_s, minimum=0.0, maximum=MAX_DURATION_S)
            if self.duration_s is not None and ramp > float(self.duration_s):
                raise ConfigError("ramp_up_s", f"Ramp-up ({ramp:g} s) is longer than the duration "
                                               f"({float(self.duration_s):g} s): the rate would "
                                               f"never reach its target. Type a ramp-up of at "
                                               f"most {float(self.duration_s):g} s.")
        if self.max_concurrency is not None:
            parse_int("max_concurrency", self.max_concurrency, maximum=MAX_BATCH_SIZE * 100)
        if self.schedule_seed is not None:
            parse_int("schedule_seed", self.schedule_seed, minimum=0, maximum=2**63 - 1)
        if self.duration_s is not None and self.requests is None:
            most = max(self.rates) * float(self.duration_s)
            if most > MAX_STEP_ARRIVALS:
                raise ConfigError("duration_s", f"{max(self.rates):g} requests/s for "
                                                f"{float(self.duration_s):g} s would plan "
                                                f"{most:,.0f} requests in one step; the most is "
                                                f"{MAX_STEP_ARRIVALS:,}. Shorten the duration or "
                                                f"bound the step with --requests.")

    def _validate_capacity(self) -> None:
        """Capacity mode needs a latency target to search against; its time bound applies to
        it only."""
        if self.mode != "capacity":
            if self.max_duration_s is not None:
                raise ConfigError("max_duration_s", "Max duration bounds the capacity search "
                                                    "only: choose it (--mode capacity) or leave "
                                                    "the field empty.")
            return
        if all(getattr(self, n) is None for n in ("slo_ttft_ms", "slo_tpot_ms", "slo_e2e_ms")):
            raise ConfigError("slo_ttft_ms", "Finding the capacity needs at least one latency "
                                             "target: type a TTFT target (ms), a time per token "
                                             "target (ms) or an end-to-end target (ms) "
                                             "(--slo-ttft-ms, --slo-tpot-ms, --slo-e2e-ms), for "
                                             "example 1000 and 50.")
        if self.max_duration_s is not None:
            parse_float("max_duration_s", self.max_duration_s, minimum=MIN_CAPACITY_DURATION_S,
                        maximum=MAX_DURATION_S)

    @property
    def capacity_duration_s(self) -> float:
        """The capacity search's time bound, in seconds."""
        return float(self.max_duration_s or DEFAULT_CAPACITY_DURATION_S)

    @property
    def steps(self) -> tuple[float, ...]:
        """The run's steps: request rates in rate mode, else batch sizes (users); none known
        ahead in capacity mode (its probes are numbered as they run)."""
        if self.mode == "capacity":
            return ()
        return tuple(self.rates) if self.mode == "rate" else tuple(self.batch_sizes)

    def planned_requests(self) -> int | None:
        """How many requests the run sends in all, or None when only a duration bounds it."""
        if self.mode == "rounds":
            return sum(b * (self.runs + self.warmups) for b in self.batch_sizes)
        if self.requests is not None:
            return self.requests * len(self.steps)
        return None

    def check_against_server(self, info: dict[str, Any]) -> None:
        """Refuse lengths the server would reject (TGI answers 422 for each request)."""
        max_input = info.get("max_input_tokens") or info.get("max_input_length")
        max_total = info.get("max_total_tokens")
        if max_input and self.sequence_length > max_input:
            raise ServerLimitError(
                f"Sequence length {self.sequence_length} is longer than the server accepts "
                f"(max_input_tokens = {max_input}). Lower the sequence length or restart the "
                f"server with a larger --max-input-tokens."
            )
        if max_total and self.sequence_length + self.decode_length > max_total:
            raise ServerLimitError(
                f"Sequence length + decode length = {self.sequence_length + self.decode_length} "
                f"is more than the server allows (max_total_tokens = {max_total}). Lower one of "
                f"them or restart the server with a larger --max-total-tokens."
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        data["rates"] = list(self.rates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["sampling"] = SamplingParams(**{
            k: v for k, v in (data.get("sampling") or {}).items()
            if k in {f.name for f in dataclasses.fields(SamplingParams)}
        })
        values["batch_sizes"] = tuple(values.get("batch_sizes") or DEFAULT_BATCH_SIZES)
        values["rates"] = tuple(values.get("rates") or ())
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# The TGI server to launch


@dataclass(frozen=True)
class ServerSettings:
    """What ``text-generation-launcher`` is started with; field names are TGI's flag names."""

    model_id: str
    revision: str | None = None
    quantize: str | None = None
    dtype: str | None = None
    num_shard: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_batch_size: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_concurrent_requests: int | None = None
    trust_remote_code: bool = False
    port: int = DEFAULT_SERVER_PORT
    hostname: str = DEFAULT_SERVER_HOST

    def validate(self, *, allow_trust_remote_code: bool = False) -> "ServerSettings":
        check_model_id(self.model_id)
        if self.revision is not None and self.revision != "" and (
                not _REVISION.match(self.revision) or ".." in self.revision):
            raise ConfigError("revision", f"Revision {self.revision!r} is not a branch, tag or "
                                          "commit name (letters, digits, '.', '_', '-', '/'; "
                                          "not starting with '-').")
        if self.quantize is not None and self.quantize not in QUANTIZE_CHOICES:
            raise ConfigError("quantize", f"Quantization must be one of {', '.join(QUANTIZE_CHOICES)}"
                                          f" (or none); got {self.quantize!r}.")
        if self.dtype is not None and self.dtype not in DTYPE_CHOICES:
            raise ConfigError("dtype", f"Data type must be one of {', '.join(DTYPE_CHOICES)}; "
                                       f"got {self.dtype!r}.")
        if self.quantize and self.dtype:
            raise ConfigError("dtype", "Choose either a quantization or a data type, not both: "
                                       "TGI refuses --dtype together with --quantize.")
        for name, maximum in SERVER_LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                parse_int(name, value, minimum=1, maximum=maximum)
        if (self.max_input_tokens is not None and self.max_total_tokens is not None
                and self.max_input_tokens >= self.max_total_tokens):
            raise ConfigError("max_input_tokens",
                              f"Max input tokens ({self.max_input_tokens}) must be less than max "
                              f"total tokens ({self.max_total_tokens}), which also count the "
                              f"generated tokens.")
        if (self.max_batch_prefill_tokens is not None and self.max_input_tokens is not None
                and self.max_batch_prefill_tokens < self.max_input_tokens):
            raise ConfigError("max_batch_prefill_tokens",
                              f"Max batch prefill tokens ({self.max_batch_prefill_tokens}) must be "
                              f"at least max input tokens ({self.max_input_tokens}).")
        if self.trust_remote_code and not allow_trust_remote_code:
            raise ConfigError("trust_remote_code",
                              "Running code from the model repository is turned off here. The "
                              "owner can allow it with ALLOW_TRUST_REMOTE_CODE=1.")
        parse_int("port", self.port, minimum=1, maximum=65535)
        if not re.fullmatch(r"[A-Za-z0-9.:\[][A-Za-z0-9.:\-\[\]]*", self.hostname or ""):
            raise ConfigError("hostname", f"Hostname {self.hostname!r} is not a valid host name.")
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.hostname in ("0.0.0.0", "::") else self.hostname
        return f"http://{host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServerSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Policy set by the operator (a Space variable), read by both the app and the server manager.
_ON = {"1", "true", "yes", "on"}
_OFF = {"", "0", "false", "no", "off"}


def allow_trust_remote_code(env: Mapping[str, str]) -> bool:
    """True only when ``ALLOW_TRUST_REMOTE_CODE`` is 1/true/yes/on (case-insensitive)."""
    value = env.get("ALLOW_TRUST_REMOTE_CODE", "").strip().lower()
    if value in _ON:
        return True
    if value not in _OFF:
        raise ConfigError(
            "trust_remote_code",
            f"ALLOW_TRUST_REMOTE_CODE must be 1 or 0 (true/false), got {value!r}.",
        )
    return False
