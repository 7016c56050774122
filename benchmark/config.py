"""Every setting of a benchmark run and of the TGI server: one table, its checks, its dataclasses.

``SETTINGS`` is the one place a setting is written: its field name, plain-words label, CLI flag
(and short flags), default, bounds, help text and kind. Everything else is built from it:
argparse (``cli/run.add_benchmark_arguments``, ``cli/launch.add_server_arguments``), the flag maps
(``FLAG_FOR_FIELD``, ``SERVER_FLAG_FOR_FIELD``), ``config_from_args``, the app's argv for the
engine child (``run_argv``), the form's defaults and labels (``app/form.DEFAULTS``,
``field_label``) and the generic checks of ``validate()``.

This is also the one home of validation. The CLI and the UI both build a ``RunConfig`` (and,
when they launch TGI, a ``ServerSettings``), call ``.validate()`` and show the ``ConfigError`` it
raises: the error names the field (``err.field``) and says how to fix the value. Checks that
need two values at once live here too (``check_fits_server``, ``endpoint_url``) so that both
faces apply them.

    config = RunConfig(tokenizer_name="gpt2", url="http://localhost:3000", batch_sizes=(1, 4))
    config.validate()                       # raises ConfigError on bad input
    config.check_against_server(info)       # raises ServerLimitError when /info forbids it

Names and defaults follow TGI's ``text-generation-benchmark`` (run) and
``text-generation-launcher`` (server).

HOW TO ADD A SETTING (for example a run's ``--gpu-price``):

1. Add one ``Setting(...)`` to ``SETTINGS`` below, where its flag should appear in ``--help``:
   ``owner`` ("run", "sampling" or "server"), ``kind`` ("int", "float", "text", "choice",
   "switch", "sizes", "rates", "url"), ``default``, bounds, ``flag``, ``help``, ``label``;
   ``mode`` when it only means something in some load patterns (``mode="concurrency"`` or
   ``mode=("concurrency", "rate")``).
2. Add the field to its dataclass with ``= default_of("name")`` as its default.

That is all: the CLI flag, its parsing and bounds, the error's flag name, the app's argv for the
engine child, the form's default and label follow. ``tests/unit/test_settings.py`` fails when the
table and the dataclasses disagree, and its round trip (``config -> argv -> config``) covers the
new setting on its own. To show it in the app, add its name to ``app/form.FORM_ORDER`` and a
widget in ``app/page.py`` (layout stays a page decision).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import unquote, urlparse, urlsplit

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
DEFAULT_SERVER_TIMEOUT_S = 1800.0   # seconds to wait until a launched server is ready

# Typed whole numbers longer than this are refused before int() (which refuses 4,300 digits
# with a traceback); every real bound here has fewer digits.
MAX_NUMBER_DIGITS = 30
# Longest endpoint URL accepted (browsers and servers stop far below a megabyte).
MAX_URL_LENGTH = 2048
# Upper bounds on what a user may type: far above any sensible run, low enough that a typo
# (an extra zero or two) cannot tie up a GPU for a day. Batch sizes reach 8,192 streams: a node
# of 8 GPUs behind one endpoint takes thousands, and --workers spreads them over cores.
MAX_BATCH_SIZE = 8192
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
MIN_BURSTINESS = 0.01
MAX_BURSTINESS = 1_000.0
MIN_TELEMETRY_INTERVAL_S = 0.1       # faster readings would take time from the load generator
MAX_TELEMETRY_INTERVAL_S = 3600.0
TGI_DEFAULT_MAX_CONCURRENT = 128     # TGI's --max-concurrent-requests: past it, HTTP 429
KINDS = ("int", "float", "text", "choice", "switch", "sizes", "rates", "url", "ms", "share")
OWNERS = ("run", "sampling", "server", "cli", "launch")
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


@functools.lru_cache(maxsize=1)
def price_table() -> dict[str, Any]:
    """Hugging Face's Space hardware prices (``data/hf_hardware_prices.json``): ``read_on``,
    ``sources`` and ``hardware`` (name -> label, gpu, gpus, usd_per_hour)."""
    with open(PRICE_TABLE_FILE, encoding="utf-8") as handle:
        return json.load(handle)


_PRICE_TABLE = price_table()


@dataclass(frozen=True)
class Setting:
    """One setting: how it is named, typed on the command line, shown in the form and checked.

    ``owner``: the dataclass holding it (``run`` = RunConfig, ``sampling`` = SamplingParams,
    ``server`` = ServerSettings), or ``cli`` / ``launch`` for options of the command line itself
    (where to write progress, ``--launch`` and its own flags) that no config records.
    ``group``: the ``--help`` section (``tgi``, ``http``, ``rate``, ``server``). ``mode``: the load
    pattern(s) the setting belongs to (None: all; see ``applies_to``). ``default`` is the typed default (None: not sent / TGI
    decides). Bounds are inclusive unless ``exclusive_minimum``.
    """

    name: str
    owner: str
    kind: str
    label: str
    flag: str | None = None
    short: tuple[str, ...] = ()
    default: Any = None
    help: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    group: str = "http"
    mode: str | tuple[str, ...] | None = None
    required: bool = False

    @property
    def modes(self) -> tuple[str, ...]:
        """The load patterns the setting belongs to (empty: all)."""
        if self.mode is None:
            return ()
        return (self.mode,) if isinstance(self.mode, str) else tuple(self.mode)

    def applies_to(self, mode: str | None) -> bool:
        """Whether the setting means something in load pattern ``mode``."""
        return not self.modes or mode in self.modes

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag (``--batch-size`` -> ``batch_size``)."""
        return self.flag[2:].replace("-", "_") if self.flag else self.name


def _bounds(minimum: float | None = None, maximum: float | None = None,
            exclusive: bool = False) -> dict[str, Any]:
    return {"minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive}


_S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- TGI's text-generation-benchmark flags (same names, same defaults) --------------------
    _S("tokenizer_name", "run", "text", "Tokenizer", "--tokenizer-name", metavar="NAME",
       required=True, group="tgi",
       help="Hub id or local folder of the model's tokenizer (builds prompts of exactly "
            "--sequence-length tokens)"),
    _S("revision", "run", "text", "Revision", "--revision", group="tgi",
       help="tokenizer revision on the Hub"),
    _S("batch_sizes", "run", "sizes", "Batch sizes", "--batch-size", short=("-b",),
       default=DEFAULT_BATCH_SIZES, metavar="N[,N...]", group="tgi",
       mode=("rounds", "concurrency"),
       help="batch size; repeat the flag or give a list (default "
            f"{','.join(map(str, DEFAULT_BATCH_SIZES))})", **_bounds(1, MAX_BATCH_SIZE)),
    _S("sequence_length", "run", "int", "Sequence length", "--sequence-length", default=10,
       metavar="TOKENS", group="tgi", help="prompt length in tokens (default 10)",
       **_bounds(1, MAX_SEQUENCE_LENGTH)),
    _S("decode_length", "run", "int", "Decode length", "--decode-length", default=8,
       metavar="TOKENS", group="tgi", help="tokens to generate per request (default 8)",
       **_bounds(1, MAX_DECODE_LENGTH)),
    _S("runs", "run", "int", "Runs", "--runs", default=10, group="tgi",
       help="measured rounds per batch size (default 10)", **_bounds(1, MAX_RUNS)),
    _S("warmups", "run", "int", "Warmups", "--warmups", default=1, group="tgi",
       help="warm-up rounds per batch size, not measured (default 1)", **_bounds(0, MAX_WARMUPS)),
    _S("temperature", "sampling", "float", "Temperature", "--temperature", group="tgi",
       **_bounds(0.0, None, True)),
    _S("top_k", "sampling", "int", "Top-k", "--top-k", group="tgi", **_bounds(1, 1_000_000)),
    _S("top_p", "sampling", "float", "Top-p", "--top-p", group="tgi", **_bounds(0.0, 1.0, True)),
    _S("typical_p", "sampling", "float", "Typical-p", "--typical-p", group="tgi",
       **_bounds(0.0, 1.0, True)),
    _S("repetition_penalty", "sampling", "float", "Repetition penalty", "--repetition-penalty",
       group="tgi", **_bounds(0.0, None, True)),
    _S("frequency_penalty", "sampling", "float", "Frequency penalty", "--frequency-penalty",
       group="tgi", **_bounds(-2.0, 2.0)),
    _S("watermark", "sampling", "switch", "Watermark", "--watermark", default=False, group="tgi"),
    _S("do_sample", "sampling", "switch", "Sample (do_sample)", "--do-sample", default=False,
       group="tgi"),
    _S("top_n_tokens", "sampling", "int", "Top-n tokens", "--top-n-tokens", group="tgi",
       **_bounds(1, 10)),
    # -- ours: HTTP, load pattern and files -----------------------------------------------------
    _S("url", "run", "url", "Endpoint URL", "--url", default=DEFAULT_URL,
       help=f"server to benchmark (default {DEFAULT_URL})"),
    _S("api", "run", "choice", "API", "--api", default="tgi", choices=API_CHOICES,
       help="tgi = /generate_stream; openai-chat = /v1/chat/completions; "
            "openai-completions = /v1/completions (default tgi)"),
    _S("model", "run", "text", "Model", "--model",
       help="model name sent on OpenAI APIs (default: what the server lists)"),
    _S("mode", "run", "choice", "Load pattern", "--mode", default="rounds", choices=MODE_CHOICES,
       help="rounds = TGI's pattern (each round sends a batch at once and waits for all); "
            "concurrency = N virtual users, each sending its next request as soon as the last "
            "ended; rate = open loop, requests sent on a schedule (--rate) whether or not "
            "earlier ones ended; capacity = find the highest request rate kept within the "
            "latency targets (--slo-*) automatically (default rounds)"),
    _S("duration_s", "run", "float", "Duration (s)", "--duration", metavar="S",
       mode=("concurrency", "rate"), help="concurrency and rate modes: seconds per step",
       **_bounds(0.0, MAX_DURATION_S, True)),
    _S("requests", "run", "int", "Requests", "--requests", metavar="N",
       mode=("concurrency", "rate"), help="concurrency and rate modes: requests per step",
       **_bounds(1, MAX_REQUESTS)),
    _S("api_key_env", "cli", "text", "API key variable", "--api-key-env", metavar="VAR",
       help="send 'Authorization: Bearer <value of the environment variable VAR>' with every "
            "request, for endpoints that need a token (for example --api-key-env HF_TOKEN); the "
            "value is never saved or shown"),
    _S("timeout_s", "run", "float", "Timeout (s)", "--timeout", default=120.0, metavar="S",
       help="seconds before a request counts as timed out (default 120)",
       **_bounds(0.0, MAX_DURATION_S, True)),
    _S("workers", "run", "int", "Worker processes", "--workers", default=1, metavar="N|auto",
       help="processes sending the load, each with its own event loop and connections (one "
            "process is one CPU core; the merged files are those of one run); auto = one per "
            "core but one (default 1)", **_bounds(1, 256)),
    _S("ray_address", "run", "text", "Ray cluster", "--ray-address", metavar="ADDR",
       help="run the --workers as Ray actors on the Ray cluster at ADDR ('HEAD:6379', "
            "'auto', 'ray://HEAD:10001', or 'local' for a new cluster on this machine); needs "
            "pip install -r requirements-distributed.txt"),
    _S("seed", "run", "int", "Seed", "--seed",
       help="sampling seed sent with every request; also varies the prompts",
       **_bounds(0, 2**64 - 1)),
    # -- ours: the request-rate pattern (open loop) ---------------------------------------------
    _S("rates", "run", "rates", "Rates (requests/s)", "--rate", default=(), metavar="R[,R...]",
       group="rate", mode="rate",
       help="requests per second; each rate is a step (repeat the flag or give a list, e.g. "
            "10,20,40)", **_bounds(0.0, MAX_RATE, True)),
    _S("arrivals", "run", "choice", "Arrivals", "--arrivals", default="poisson",
       choices=ARRIVAL_CHOICES, group="rate", mode="rate",
       help="gaps between sends: poisson (random, as independent users), constant (even) or "
            "gamma (shape --burstiness) (default poisson)"),
    _S("burstiness", "run", "float", "Burstiness", "--burstiness", metavar="B", group="rate",
       mode="rate", help="gamma arrivals' shape: 1 = Poisson, below 1 burstier, above 1 more "
                         "even", **_bounds(MIN_BURSTINESS, MAX_BURSTINESS)),
    _S("ramp_up_s", "run", "float", "Ramp-up (s)", "--ramp-up", metavar="S", group="rate",
       mode="rate", help="the rate grows linearly from 0 over S seconds at each step's start",
       **_bounds(0.0, MAX_DURATION_S)),
    _S("max_concurrency", "run", "int", "Max concurrency", "--max-concurrency", metavar="N",
       group="rate", mode="rate",
       help="at most N requests in flight; arrivals past it wait in the client (that wait is "
            "measured: client_queue_ms)", **_bounds(1, 100_000)),
    _S("schedule_seed", "run", "int", "Schedule seed", "--schedule-seed", metavar="N",
       group="rate", mode="rate",
       help="seed of the send schedule (random when not given; saved in run.json so that a run "
            "can be replayed exactly)", **_bounds(0, 2**63 - 1)),
    _S("output_dir", "run", "text", "Output dir", "--output-dir", metavar="DIR",
       help="folder for run.json, summary.csv, requests.csv (default results/<date>-<model>-<id>, "
            "under $RESULTS_DIR if set)"),
    # -- ours: latency targets (any pattern) and the capacity search ----------------------------
    _S("slo_ttft_ms", "run", "ms", "TTFT target (ms)", "--slo-ttft-ms", metavar="MS",
       group="slo", help="target time to first token, in ms (for example 1000)",
       **_bounds(0.0, MAX_DURATION_S * 1000, True)),
    _S("slo_tpot_ms", "run", "ms", "Time per token target (ms)", "--slo-tpot-ms", metavar="MS",
       group="slo", help="target time per output token after the first, in ms (for example "
                         "50, about reading speed)", **_bounds(0.0, MAX_DURATION_S * 1000, True)),
    _S("slo_e2e_ms", "run", "ms", "End-to-end target (ms)", "--slo-e2e-ms", metavar="MS",
       group="slo", help="target time for the whole answer, in ms",
       **_bounds(0.0, MAX_DURATION_S * 1000, True)),
    _S("slo_attainment", "run", "share", "Requests within target (%)", "--slo-attainment",
       default=0.9, metavar="F", group="slo", **_bounds(0.0, 1.0, True),
       help="share of requests that must be good, a fraction in (0, 1] or a percentage such "
            "as 90%% (default 0.9)"),
    _S("max_duration_s", "run", "float", "Max duration (s)", "--max-duration", metavar="S",
       group="slo", mode="capacity",
       help="--mode capacity: seconds the whole search may take (default "
            f"{DEFAULT_CAPACITY_DURATION_S:g})",
       **_bounds(MIN_CAPACITY_DURATION_S, MAX_DURATION_S)),
    # -- ours: what it costs (any pattern) and the deployment plan (capacity) -----------------
    _S("gpu_price_per_hour", "run", "float", "GPU price ($/hour)", "--gpu-price-per-hour",
       metavar="USD", group="cost",
       help="what the server's machine costs per hour, all its GPUs together (for example "
            "0.80); overrides --hardware's price", **_bounds(0.0, MAX_GPU_PRICE_PER_HOUR, True)),
    _S("hardware", "run", "choice", "Hardware", "--hardware", metavar="NAME", group="cost",
       choices=tuple(_PRICE_TABLE["hardware"]),
       help="the machine as Hugging Face names it, to take its price from the table read "
            f"{_PRICE_TABLE['read_on']} ({', '.join(_PRICE_TABLE['hardware'])})"),
    _S("plan_peak_rps", "run", "float", "Peak traffic (requests/s)", "--peak-rps", metavar="R",
       group="cost", mode="capacity",
       help="your traffic at its busiest, in requests per second (for the deployment plan)",
       **_bounds(0.0, MAX_PEAK_RPS, True)),
    _S("plan_daily_users", "run", "int", "Daily users", "--daily-users", metavar="N",
       group="cost", mode="capacity",
       help="or your traffic as users per day (with --requests-per-user)",
       **_bounds(1, MAX_DAILY_USERS)),
    _S("plan_requests_per_user", "run", "float", "Requests per user per day",
       "--requests-per-user", metavar="N", group="cost", mode="capacity",
       help="requests each user sends per day", **_bounds(0.0, MAX_REQUESTS_PER_USER, True)),
    _S("plan_peak_factor", "run", "float", "Peak factor", "--peak-factor",
       default=DEFAULT_PEAK_FACTOR, metavar="F", group="cost", mode="capacity",
       help=f"busiest hour / average hour (default {DEFAULT_PEAK_FACTOR:g})",
       **_bounds(1.0, MAX_PEAK_FACTOR)),
    _S("plan_headroom", "run", "float", "Headroom (%)", "--headroom",
       default=DEFAULT_HEADROOM_PCT, metavar="PCT", group="cost", mode="capacity",
       help=f"spare capacity kept above the peak, in percent (default "
            f"{DEFAULT_HEADROOM_PCT:g})", **_bounds(0.0, 100.0)),
    _S("api_price_per_million", "run", "float", "Hosted API price ($ per million tokens)",
       "--api-price-per-million", metavar="USD", group="cost", mode="capacity",
       help="a hosted API's price per million tokens (prompt + output), to compare with and "
            "find the monthly volume where both cost the same",
       **_bounds(0.0, MAX_API_PRICE_PER_MILLION, True)),
    _S("progress_jsonl", "cli", "text", "Progress file", "--progress-jsonl", metavar="PATH",
       help="write progress events as JSON lines to PATH ('-' = stdout)"),
    # -- telemetry (core/telemetry.py): the server's /metrics, the GPUs, the client itself ------
    _S("telemetry_interval_s", "run", "float", "Telemetry interval (s)", "--telemetry-interval",
       default=1.0, metavar="S",
       help="seconds between readings of the server's /metrics, every NVIDIA GPU of this "
            "machine (NVML) and the client's CPU and event-loop lag, saved to telemetry.csv "
            "(default 1; 0 turns it off)", **_bounds(0.0, MAX_TELEMETRY_INTERVAL_S)),
    _S("metrics_url", "run", "url", "Metrics URL", "--metrics-url", metavar="URL",
       help="where the server's Prometheus metrics are (default <url>/metrics)"),
    # -- the TGI server to launch (text-generation-launcher's names) ---------------------------
    _S("launch", "launch", "switch", "Launch", "--launch", default=False, group="server",
       help="start a TGI server with the flags below and benchmark it"),
    _S("model_id", "server", "text", "Model ID", "--model-id", metavar="ID", group="server",
       help="Hub id (org/name) or local folder of the model"),
    _S("revision", "server", "text", "Revision", "--revision", group="server",
       help="model revision (branch, tag or commit)"),
    _S("quantize", "server", "choice", "Quantization", "--quantize", choices=QUANTIZE_CHOICES,
       group="server", help="quantization method"),
    _S("dtype", "server", "choice", "Data type", "--dtype", choices=DTYPE_CHOICES, group="server",
       help="weights' data type (not with --quantize)"),
    _S("num_shard", "server", "int", "Number of GPUs (shards)", "--num-shard", metavar="N",
       group="server", help="number of GPUs to shard the model over", **_bounds(1, 64)),
    _S("max_input_tokens", "server", "int", "Max input tokens", "--max-input-tokens",
       metavar="N", group="server", help="longest prompt the server accepts",
       **_bounds(1, MAX_SEQUENCE_LENGTH)),
    _S("max_total_tokens", "server", "int", "Max total tokens", "--max-total-tokens",
       metavar="N", group="server", help="longest prompt + generated tokens of one request",
       **_bounds(1, MAX_SEQUENCE_LENGTH + MAX_DECODE_LENGTH)),
    _S("max_batch_size", "server", "int", "Max batch size", "--max-batch-size", metavar="N",
       group="server", help="most requests in one batch", **_bounds(1, 100_000)),
    _S("max_batch_prefill_tokens", "server", "int", "Max batch prefill tokens",
       "--max-batch-prefill-tokens", metavar="N", group="server",
       help="most prompt tokens processed in one prefill", **_bounds(1, 10_000_000)),
    _S("max_concurrent_requests", "server", "int", "Max concurrent requests",
       "--max-concurrent-requests", metavar="N", group="server",
       help="requests the router accepts at once (more get HTTP 429)", **_bounds(1, 100_000)),
    _S("trust_remote_code", "server", "switch", "Trust remote code", "--trust-remote-code",
       default=False, group="server",
       help="run code from the model repository (only for models you trust)"),
    _S("port", "server", "int", "Port", "--port", default=DEFAULT_SERVER_PORT, metavar="PORT",
       group="server", help=f"server port (default {DEFAULT_SERVER_PORT})", **_bounds(1, 65535)),
    _S("hostname", "server", "text", "Hostname", "--hostname", default=DEFAULT_SERVER_HOST,
       metavar="HOST", group="server",
       help=f"address the server listens on (default {DEFAULT_SERVER_HOST})"),
    _S("server_timeout", "launch", "float", "Server start-up timeout (s)", "--server-timeout",
       metavar="S", group="server",
       help=f"seconds to wait until the server is ready (default {DEFAULT_SERVER_TIMEOUT_S:g}: "
            "downloads are slow)", **_bounds(0.0, None, True)),
    _S("server_log_dir", "launch", "text", "Server log folder", "--server-log-dir",
       metavar="DIR", group="server",
       help="folder for the launcher's (masked) log (default: a temporary folder)"),
    _S("keep_server", "launch", "switch", "Keep the server", "--keep-server", default=False,
       group="server", help="leave the server running after the benchmark"),
)
del _S


def settings_of(*owners: str) -> tuple[Setting, ...]:
    """The table's settings held by ``owners`` (``"run"``, ``"sampling"``, ``"server"``, ...)."""
    return tuple(s for s in SETTINGS if s.owner in owners)


def setting(name: str, owner: str | None = None) -> Setting:
    """The table's entry for ``name`` (the first one, or ``owner``'s when given)."""
    for entry in SETTINGS:
        if entry.name == name and (owner is None or entry.owner == owner):
            return entry
    raise KeyError(name)


def default_of(name: str, owner: str | None = None) -> Any:
    """A setting's default, as its dataclass field uses it."""
    return setting(name, owner).default


def flag_map(*owners: str) -> dict[str, str]:
    """Field name -> long flag, for wording a ConfigError like argparse does."""
    return {s.name: s.flag for s in settings_of(*owners) if s.flag}


# Upper bounds of ServerSettings' numbers (TGI flag names), checked in this order.
SERVER_LIMITS: dict[str, int] = {
    s.name: int(s.maximum) for s in settings_of("server")
    if s.kind == "int" and s.maximum is not None and s.name != "port"}


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
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ConfigError(field_name, f"{label} must be a whole number{_ascii_hint(text)}, "
                                          f"got {_shown(value)}.")
        if len(text.lstrip("+-").lstrip("0")) > MAX_NUMBER_DIGITS:
            raise ConfigError(field_name, f"{label} is too large: {_shown(value)} has more than "
                                          f"{MAX_NUMBER_DIGITS} digits.")
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
    if isinstance(value, str) and not _ASCII_NUMBER.fullmatch(value.strip()):
        raise ConfigError(field_name, f"{label} must be a number{_ascii_hint(value)}, "
                                      f"got {_shown(value)}.")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(field_name, f"{label} must be a number, got {_shown(value)}.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ConfigError(field_name, f"{label} must be a finite number, got {_shown(value)}.")
    if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
        word = "greater than" if exclusive_minimum else "at least"
        raise ConfigError(field_name, f"{label} must be {word} {minimum:g}, got {number:g}.")
    if maximum is not None and number > maximum:
        raise ConfigError(field_name, f"{label} must be at most {maximum:g}, got {number:g}.")
    return number


# A typed number: ASCII digits only (Python's int() and float() also read full-width and
# Arabic-Indic digits, which a person reading the saved config would not recognise).
_ASCII_NUMBER = re.compile(r"[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?"
                           r"|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def _ascii_hint(text: str) -> str:
    """Words added when ``text`` holds digits other than 0-9 (full-width, Arabic-Indic...)."""
    if any(char.isdigit() and not char.isascii() for char in text):
        return " written with the digits 0-9"
    return ""


def _shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error sentence never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(str(value)):,} characters)"


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
        rates.add(parse_float(field_name, item, minimum=0.0, maximum=MAX_RATE,
                              exclusive_minimum=True))
    return tuple(int(r) if float(r).is_integer() else float(r) for r in sorted(rates))


def auto_workers(cpus: int | None = None) -> int:
    """``--workers auto``: one worker process per core this process may use, leaving one core
    for the machine's other work (the parent process, a server running here); at least one."""
    count = cpus if cpus is not None else (len(os.sched_getaffinity(0))
                                           if hasattr(os, "sched_getaffinity")
                                           else os.cpu_count() or 1)
    return max(1, count - 1)


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
        raise ConfigError(field_name, f"{label} must be greater than 0, for example {example}, "
                                      f"got {number:g}.")
    if number > maximum:
        raise ConfigError(field_name, f"{label} must be at most {maximum:,g}, got {number:g}.")
    return number


def check_cost(config: Any) -> None:
    """The deployment plan's checks that need several fields (each field's own bounds are the
    settings table's): the traffic given one way, and only where a capacity is measured."""
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


# Plain-words names of fields, shared by error messages and the UI's labels (from the table).
FIELD_LABELS: dict[str, str] = {}
for _entry in SETTINGS:
    FIELD_LABELS.setdefault(_entry.name, _entry.label)
del _entry


def check_url(url: str, field_name: str = "url") -> str:
    """An http(s) URL with a host, without a trailing slash."""
    text = (url or "").strip()
    label = field_label(field_name)
    if len(text) > MAX_URL_LENGTH:
        raise ConfigError(field_name, f"{label} is {len(text):,} characters long; at most "
                                      f"{MAX_URL_LENGTH} characters are accepted.")
    if any(ord(char) < 0x20 or ord(char) == 0x7f or char.isspace() for char in text):
        raise ConfigError(field_name, f"{label} contains a control character or a space: "
                                      f"{_shown(text, 80)}. Type only the address, like "
                                      f"http://host:port.")
    try:
        parsed = urlparse(text)
        host = parsed.hostname
    except ValueError as exc:
        raise ConfigError(field_name, f"{label} {_shown(text, 80)} has an invalid host "
                                      f"({exc}); an IPv6 address goes in brackets, like "
                                      f"http://[::1]:3000.") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigError(field_name, f"{label} must look like http://host:port, got "
                                      f"{_shown(url, 80)}.")
    try:
        parsed.port
    except ValueError:
        raise ConfigError(field_name, f"{label} has an invalid port: {_shown(url, 80)}.") \
            from None
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
# One setting's value: typed from text, checked, written back as flags (all from the table)


def parse_setting(entry: Setting, value: Any) -> Any:
    """``value`` (typed text or a number) as the setting's type within its bounds; ConfigError
    names the field. ``None`` stays ``None`` (not given)."""
    if value is None:
        return None
    name = entry.name
    if entry.kind == "int" and entry.name == "workers":
        if str(value).strip().lower() == "auto":
            return auto_workers()
        try:
            return parse_int(name, value, minimum=1, maximum=int(entry.maximum or 256))
        except ConfigError as err:
            raise ConfigError(name, err.message.rstrip(".") + " (or type auto: one per core "
                                                              "but one).") from None
    if entry.kind == "int":
        return parse_int(name, value, minimum=int(entry.minimum if entry.minimum is not None
                                                  else -(2**63)),
                         maximum=None if entry.maximum is None else int(entry.maximum))
    if entry.kind == "float":
        return parse_float(name, value, minimum=entry.minimum, maximum=entry.maximum,
                           exclusive_minimum=entry.exclusive_minimum)
    if entry.kind == "sizes":
        return parse_batch_sizes(list(value) if isinstance(value, tuple) else value, name)
    if entry.kind == "rates":
        return parse_rates(list(value) if isinstance(value, tuple) else value, name)
    if entry.kind == "choice":
        if value not in entry.choices:
            none = " (or none)" if entry.default is None else ""
            raise ConfigError(name, f"{entry.label} must be one of {', '.join(entry.choices)}"
                                    f"{none}; got {value!r}.")
        return value
    if entry.kind == "url":
        return check_url(value, name)
    if entry.kind == "ms":
        return parse_slo_ms(name, value)
    if entry.kind == "share":
        return parse_attainment(value, name)
    if entry.kind == "switch":
        return bool(value)
    return value


def check_settings(config: Any, owner: str, *, mode: str | None = None) -> None:
    """Check every field of ``config`` that the table holds for ``owner`` (in table order);
    settings of another load pattern than ``mode`` are skipped."""
    for entry in settings_of(owner):
        if not entry.applies_to(mode):
            continue
        parse_setting(entry, getattr(config, entry.name))


def _number_text(value: float) -> str:
    """A float as short text that reads back to the same float (120.0 -> "120")."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def setting_argv(entry: Setting, value: Any) -> list[str]:
    """The flags that give ``entry`` the value ``value`` (nothing for None / off)."""
    if value is None or value is False or entry.flag is None:
        return []
    if entry.kind == "switch":
        return [entry.flag]
    if entry.kind == "sizes":
        return [token for size in value for token in (entry.flag, str(size))]
    if entry.kind == "rates":
        return [entry.flag, ",".join(_number_text(float(r)) if isinstance(r, float) else str(r)
                                     for r in value)] if value else []
    if isinstance(value, float):
        return [entry.flag, _number_text(value)]
    return [entry.flag, str(value)]


def run_argv(config: "RunConfig") -> list[str]:
    """``python -m benchmark`` flags that rebuild ``config`` (``config_from_args`` reads them
    back to an equal config; ``max_total_requests`` has no flag: it is the app's policy)."""
    argv: list[str] = []
    for entry in settings_of("run", "sampling"):
        if not entry.applies_to(config.mode):
            continue
        holder = config.sampling if entry.owner == "sampling" else config
        argv += setting_argv(entry, getattr(holder, entry.name))
    return argv


def endpoint_url(url: str, field_name: str = "url", *,
                 credentials: bool) -> tuple[str, tuple[str, str] | None]:
    """The endpoint URL as it may be saved and shown, and the ``(user, password)`` it carried.

    One rule for both faces: what is saved with the results never holds a secret. A ?query or
    #fragment is refused (the request paths go after the URL). ``user:password@`` is taken out
    and returned where the caller can send it as a header without saving it (``credentials``:
    the CLI); elsewhere (the app, whose URL is shown on share links) it is refused.
    """
    text = check_url(url, field_name)
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise ConfigError(field_name, "The endpoint URL has a ?query or #fragment part: drop it "
                                      "(the request paths are added after the URL, and the URL "
                                      "is saved with the results and shown to everyone who "
                                      "opens a share link). Pass a token with --api-key-env "
                                      "instead.")
    if parts.username is None and parts.password is None:
        return text, None
    if not credentials:
        raise ConfigError(field_name, "Endpoint URL carries a user name or password: it would "
                                      "be saved with the results and shown to everyone who "
                                      "opens the share link. Type only the server's address, "
                                      "e.g. http://10.0.0.5:8080.")
    pair = (unquote(parts.username or ""), unquote(parts.password or ""))
    return strip_credentials(text), pair


def check_fits_server(run: "RunConfig", server: "ServerSettings") -> None:
    """Refuse, before launching, a run the chosen server limits would reject request by request:
    lengths past max_input/max_total tokens (ServerLimitError), batches past max concurrent
    requests (ConfigError on batch_sizes: the extra requests would get HTTP 429)."""
    run.check_against_server({"max_input_tokens": server.max_input_tokens,
                              "max_total_tokens": server.max_total_tokens})
    cap = server.max_concurrent_requests or TGI_DEFAULT_MAX_CONCURRENT
    if run.mode == "rate":
        if run.max_concurrency is not None and run.max_concurrency > cap:
            raise ConfigError(
                "max_concurrency",
                f"Max concurrency {run.max_concurrency} is more than the server's max concurrent "
                f"requests ({cap}): the extra requests would be refused with HTTP 429. Lower it "
                f"or raise Max concurrent requests (--max-concurrent-requests; in the app: "
                f"advanced server settings).")
        return
    largest = max(run.batch_sizes)
    if largest > cap:
        raise ConfigError(
            "batch_sizes",
            f"Batch size {largest} is more than the server's max concurrent requests ({cap}): "
            f"the extra requests would be refused with HTTP 429. Lower the batch sizes or raise "
            f"Max concurrent requests (--max-concurrent-requests; in the app: advanced server "
            f"settings).",
        )


# ---------------------------------------------------------------------------------------------
# A benchmark run


@dataclass(frozen=True)
class SamplingParams:
    """TGI's sampling flags. ``None`` means: do not send the parameter."""

    temperature: float | None = default_of("temperature")
    top_k: int | None = default_of("top_k")
    top_p: float | None = default_of("top_p")
    typical_p: float | None = default_of("typical_p")
    repetition_penalty: float | None = default_of("repetition_penalty")
    frequency_penalty: float | None = default_of("frequency_penalty")
    watermark: bool = default_of("watermark")
    do_sample: bool = default_of("do_sample")
    top_n_tokens: int | None = default_of("top_n_tokens")

    def validate(self) -> "SamplingParams":
        check_settings(self, "sampling")
        for name in ("top_p", "typical_p"):
            value = getattr(self, name)
            if value is not None and float(value) >= 1.0:
                raise ConfigError(name, f"{field_label(name)} must be below 1, "
                                        f"got {float(value):g}.")
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
    url: str = default_of("url")
    api: str = default_of("api")
    model: str | None = default_of("model")
    revision: str | None = default_of("revision", "run")
    batch_sizes: tuple[int, ...] = default_of("batch_sizes")
    sequence_length: int = default_of("sequence_length")
    decode_length: int = default_of("decode_length")
    runs: int = default_of("runs")
    warmups: int = default_of("warmups")
    mode: str = default_of("mode")
    duration_s: float | None = default_of("duration_s")
    requests: int | None = default_of("requests")
    timeout_s: float = default_of("timeout_s")
    workers: int = default_of("workers")
    ray_address: str | None = default_of("ray_address")
    seed: int | None = default_of("seed")
    sampling: SamplingParams = field(default_factory=SamplingParams)
    rates: tuple[float, ...] = default_of("rates")
    arrivals: str = default_of("arrivals")
    burstiness: float | None = default_of("burstiness")
    ramp_up_s: float | None = default_of("ramp_up_s")
    max_concurrency: int | None = default_of("max_concurrency")
    schedule_seed: int | None = default_of("schedule_seed")
    output_dir: str | None = default_of("output_dir")
    # The sampler: seconds between readings (0 = off); /metrics at metrics_url, else <url>/metrics.
    telemetry_interval_s: float = default_of("telemetry_interval_s")
    metrics_url: str | None = default_of("metrics_url")
    # Set by the Space for endpoint runs: refuse configs that would send more requests.
    max_total_requests: int | None = None
    # Latency targets (SLOs), in ms; None = no target. A request is good when it finished and
    # met every target given; ``slo_attainment`` is the share of good requests wanted (0-1].
    slo_ttft_ms: float | None = default_of("slo_ttft_ms")
    slo_tpot_ms: float | None = default_of("slo_tpot_ms")
    slo_e2e_ms: float | None = default_of("slo_e2e_ms")
    slo_attainment: float = default_of("slo_attainment")
    # Capacity mode: the whole search's time bound (None: DEFAULT_CAPACITY_DURATION_S).
    max_duration_s: float | None = default_of("max_duration_s")
    # What the server's machine costs (core/cost.py): its hourly price in USD and/or its
    # Hugging Face hardware name (a key of the price table; gives the price when none is typed).
    gpu_price_per_hour: float | None = default_of("gpu_price_per_hour")
    hardware: str | None = default_of("hardware")
    # Deployment plan (capacity mode): the user's traffic, as requests/s at peak or as daily
    # users x requests per user per day (x the peak factor); spare capacity kept (percent);
    # a hosted API's price per million tokens to compare with.
    plan_peak_rps: float | None = default_of("plan_peak_rps")
    plan_daily_users: int | None = default_of("plan_daily_users")
    plan_requests_per_user: float | None = default_of("plan_requests_per_user")
    plan_peak_factor: float = default_of("plan_peak_factor")
    plan_headroom: float = default_of("plan_headroom")
    api_price_per_million: float | None = default_of("api_price_per_million")

    def validate(self) -> "RunConfig":
        """Raise ``ConfigError`` for the first invalid field; return self when all is well."""
        if not (self.tokenizer_name or "").strip():
            raise ConfigError("tokenizer_name", "Tokenizer is empty: give a Hub id or a folder.")
        check_url(self.url)
        if self.mode not in MODE_CHOICES:
            raise ConfigError("mode", f"Load pattern must be one of {', '.join(MODE_CHOICES)}; "
                                      f"got {self.mode!r}.")
        check_settings(self, "run", mode=self.mode)
        if 0 < self.telemetry_interval_s < MIN_TELEMETRY_INTERVAL_S:
            raise ConfigError("telemetry_interval_s",
                              f"Telemetry interval (s) must be 0 (off) or at least "
                              f"{MIN_TELEMETRY_INTERVAL_S:g}, got {self.telemetry_interval_s:g}: "
                              f"faster readings would take time from the load generator.")
        if (self.mode in ("concurrency", "rate") and self.duration_s is None
                and self.requests is None):
            raise ConfigError("duration_s", f"The {self.mode} pattern needs a duration "
                                            "(--duration) or a number of requests (--requests).")
        if self.mode == "rate":
            self._check_rate()
        if self.mode == "capacity" and (self.workers != 1 or self.ray_address):
            which = "ray_address" if self.ray_address else "workers"
            raise ConfigError(which, "The capacity search runs in one process: set Worker "
                                     "processes to 1 (--workers 1, no --ray-address) or choose "
                                     "the rounds, concurrency or rate pattern.")
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

    def _check_rate(self) -> None:
        """The rate pattern's checks that need two values at once."""
        if self.burstiness is not None and self.arrivals != "gamma":
            raise ConfigError("burstiness", "Burstiness is the shape of gamma arrivals: choose "
                                            "gamma arrivals (--arrivals gamma) or leave "
                                            "burstiness empty.")
        if (self.ramp_up_s is not None and self.duration_s is not None
                and float(self.ramp_up_s) > float(self.duration_s)):
            raise ConfigError("ramp_up_s", f"Ramp-up ({float(self.ramp_up_s):g} s) is longer "
                                           f"than the duration ({float(self.duration_s):g} s): "
                                           f"the rate would never reach its target. Type a "
                                           f"ramp-up of at most {float(self.duration_s):g} s.")
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
    revision: str | None = default_of("revision", "server")
    quantize: str | None = default_of("quantize")
    dtype: str | None = default_of("dtype")
    num_shard: int | None = default_of("num_shard")
    max_input_tokens: int | None = default_of("max_input_tokens")
    max_total_tokens: int | None = default_of("max_total_tokens")
    max_batch_size: int | None = default_of("max_batch_size")
    max_batch_prefill_tokens: int | None = default_of("max_batch_prefill_tokens")
    max_concurrent_requests: int | None = default_of("max_concurrent_requests")
    trust_remote_code: bool = default_of("trust_remote_code")
    port: int = default_of("port")
    hostname: str = default_of("hostname")

    def validate(self, *, allow_trust_remote_code: bool = False) -> "ServerSettings":
        check_model_id(self.model_id)
        if self.revision is not None and self.revision != "" and (
                not _REVISION.match(self.revision) or ".." in self.revision):
            raise ConfigError("revision", f"Revision {self.revision!r} is not a branch, tag or "
                                          "commit name (letters, digits, '.', '_', '-', '/'; "
                                          "not starting with '-').")
        check_settings(self, "server")
        if self.quantize and self.dtype:
            raise ConfigError("dtype", "Choose either a quantization or a data type, not both: "
                                       "TGI refuses --dtype together with --quantize.")
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
