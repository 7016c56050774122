"""``python -m benchmark``: TGI's ``text-generation-benchmark`` over HTTP.

    python -m benchmark --tokenizer-name gpt2 --url http://localhost:3000 \\
        --batch-size 1,2,4 --sequence-length 512 --decode-length 128 --runs 5

Flags of TGI's tool keep their names and defaults; ``--url``, ``--api``, ``--mode`` and the file
and progress flags are ours. The console shows a progress bar on stderr, then TGI's three
tables (markdown) on stdout, then the folder holding run.json, summary.csv and requests.csv.

Exit codes: 0 complete, 1 error (one line, no traceback), 2 bad flags (argparse style),
130 cancelled by Ctrl-C / SIGTERM (the files hold what was measured, ``complete: false``).

``python -m benchmark calibrate ...`` runs ``benchmark.cli.calibrate.main``.

Extending: ``base_parser()`` builds the parser from ``add_benchmark_arguments`` (and other
``add_*_arguments`` functions can be added beside it); ``config_from_args`` maps flags to a
``RunConfig``; ``run_cli`` runs it; ``benchmark.cli.main`` dispatches.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from .._version import __version__
from ..config import (API_CHOICES, ARRIVAL_CHOICES, DEFAULT_BATCH_SIZES, DEFAULT_HEADROOM_PCT,
                      DEFAULT_PEAK_FACTOR, DEFAULT_URL, MODE_CHOICES, RunConfig, SamplingParams,
                      check_hardware, check_url, parse_attainment, parse_batch_sizes,
                      parse_float, parse_headroom, parse_int, parse_rates, parse_slo_ms,
                      price_table, strip_credentials)
from ..core.engine import run
from ..core.progress import ConsoleProgress, JsonLinesProgress, fan_out
from ..core.results import check_output_dir_free, results_root
from ..errors import BenchmarkError, ConfigError, redact
from ..report.tables import markdown_tables

__all__ = ["base_parser", "add_benchmark_arguments", "config_from_args", "run_cli", "usage_error",
           "auth_headers", "FLAG_FOR_FIELD"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130

# The flag a RunConfig field is typed with (to word ConfigErrors like argparse does).
FLAG_FOR_FIELD = {
    "tokenizer_name": "--tokenizer-name", "revision": "--revision", "batch_sizes": "--batch-size",
    "sequence_length": "--sequence-length", "decode_length": "--decode-length",
    "runs": "--runs", "warmups": "--warmups", "temperature": "--temperature",
    "top_k": "--top-k", "top_p": "--top-p", "typical_p": "--typical-p",
    "repetition_penalty": "--repetition-penalty", "frequency_penalty": "--frequency-penalty",
    "top_n_tokens": "--top-n-tokens", "url": "--url", "api": "--api", "model": "--model",
    "timeout_s": "--timeout", "output_dir": "--output-dir", "seed": "--seed", "mode": "--mode",
    "duration_s": "--duration", "requests": "--requests", "progress_jsonl": "--progress-jsonl",
    "api_key_env": "--api-key-env", "slo_ttft_ms": "--slo-ttft-ms",
    "slo_tpot_ms": "--slo-tpot-ms", "slo_e2e_ms": "--slo-e2e-ms",
    "slo_attainment": "--slo-attainment", "max_duration_s": "--max-duration",
    "api_key_env": "--api-key-env", "rates": "--rate", "arrivals": "--arrivals",
    "burstiness": "--burstiness", "ramp_up_s": "--ramp-up",
    "max_concurrency": "--max-concurrency", "schedule_seed": "--schedule-seed",
    "gpu_price_per_hour": "--gpu-price-per-hour", "hardware": "--hardware",
    "plan_peak_rps": "--peak-rps", "plan_daily_users": "--daily-users",
    "plan_requests_per_user": "--requests-per-user", "plan_peak_factor": "--peak-factor",
    "plan_headroom": "--headroom", "api_price_per_million": "--api-price-per-million",
}


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's flags: TGI's tool first (same names, same defaults), then ours."""
    tgi = parser.add_argument_group("TGI benchmark flags (same names and defaults as "
                                    "text-generation-benchmark)")
    tgi.add_argument("--tokenizer-name", required=True, metavar="NAME",
                     help="Hub id or local folder of the model's tokenizer (builds prompts of "
                          "exactly --sequence-length tokens)")
    tgi.add_argument("--revision", default=None, help="tokenizer revision on the Hub")
    tgi.add_argument("-b", "--batch-size", action="append", metavar="N[,N...]",
                     help="batch size; repeat the flag or give a list (default "
                          f"{','.join(map(str, DEFAULT_BATCH_SIZES))})")
    tgi.add_argument("--sequence-length", default="10", metavar="TOKENS",
                     help="prompt length in tokens (default 10)")
    tgi.add_argument("--decode-length", default="8", metavar="TOKENS",
                     help="tokens to generate per request (default 8)")
    tgi.add_argument("--runs", default="10", help="measured rounds per batch size (default 10)")
    tgi.add_argument("--warmups", default="1",
                     help="warm-up rounds per batch size, not measured (default 1)")
    tgi.add_argument("--temperature", default=None)
    tgi.add_argument("--top-k", default=None)
    tgi.add_argument("--top-p", default=None)
    tgi.add_argument("--typical-p", default=None)
    tgi.add_argument("--repetition-penalty", default=None)
    tgi.add_argument("--frequency-penalty", default=None)
    tgi.add_argument("--watermark", action="store_true")
    tgi.add_argument("--do-sample", action="store_true")
    tgi.add_argument("--top-n-tokens", default=None)

    http = parser.add_argument_group("HTTP, load pattern and files")
    http.add_argument("--url", default=DEFAULT_URL,
                      help=f"server to benchmark (default {DEFAULT_URL})")
    http.add_argument("--api", default="tgi", choices=API_CHOICES,
                      help="tgi = /generate_stream; openai-chat = /v1/chat/completions; "
                           "openai-completions = /v1/completions (default tgi)")
    http.add_argument("--model", default=None,
                      help="model name sent on OpenAI APIs (default: what the server lists)")
    http.add_argument("--mode", default="rounds", choices=MODE_CHOICES,
                      help="rounds = TGI's pattern (each round sends a batch at once and waits "
                           "for all); concurrency = N virtual users, each sending its next "
                           "request as soon as the last ended; rate = open loop, requests sent "
                           "on a schedule (--rate) whether or not earlier ones ended; "
                           "capacity = find the highest request rate kept within the latency "
                           "targets (--slo-*) automatically (default rounds)")
    http.add_argument("--duration", default=None, metavar="S",
                      help="concurrency and rate modes: seconds per step")
    http.add_argument("--requests", default=None, metavar="N",
                      help="concurrency and rate modes: requests per step")

    rate = parser.add_argument_group("Request rate (--mode rate)")
    rate.add_argument("--rate", action="append", metavar="R[,R...]",
                      help="requests per second; each rate is a step (repeat the flag or give "
                           "a list, e.g. 10,20,40)")
    rate.add_argument("--arrivals", default=None, choices=ARRIVAL_CHOICES,
                      help="gaps between sends: poisson (random, as real users), constant "
                           "(even) or gamma (shape --burstiness) (default poisson)")
    rate.add_argument("--burstiness", default=None, metavar="B",
                      help="gamma arrivals' shape: 1 = Poisson, below 1 burstier, above 1 "
                           "more even")
    rate.add_argument("--ramp-up", default=None, metavar="S",
                      help="the rate grows linearly from 0 over S seconds at each step's start")
    rate.add_argument("--max-concurrency", default=None, metavar="N",
                      help="at most N requests in flight; arrivals past it wait in the client "
                           "(that wait is measured: client_queue_ms)")
    rate.add_argument("--schedule-seed", default=None, metavar="N",
                      help="seed of the send schedule (random when not given; saved in "
                           "run.json so that a run can be replayed exactly)")
    http.add_argument("--api-key-env", default=None, metavar="VAR",
                      help="send 'Authorization: Bearer <value of the environment variable "
                           "VAR>' with every request, for endpoints that need a token (for "
                           "example --api-key-env HF_TOKEN); the value is never saved or shown")
    http.add_argument("--timeout", default="120", metavar="S",
                      help="seconds before a request counts as timed out (default 120)")
    http.add_argument("--seed", default=None, help="sampling seed sent with every request; "
                                                   "also varies the prompts")
    http.add_argument("--output-dir", default=None, metavar="DIR",
                      help="folder for run.json, summary.csv, requests.csv (default "
                           "results/<date>-<model>-<id>, under $RESULTS_DIR if set)")
    http.add_argument("--progress-jsonl", default=None, metavar="PATH",
                      help="write progress events as JSON lines to PATH ('-' = stdout)")

    slo = parser.add_argument_group(
        "Latency targets (SLOs): a request is good when it finished and met every target given; "
        "each step then reports the share of good requests (attainment) and goodput")
    slo.add_argument("--slo-ttft-ms", default=None, metavar="MS",
                     help="target time to first token, in ms (for example 1000)")
    slo.add_argument("--slo-tpot-ms", default=None, metavar="MS",
                     help="target time per output token after the first, in ms (for example "
                          "50, about reading speed)")
    slo.add_argument("--slo-e2e-ms", default=None, metavar="MS",
                     help="target time for the whole answer, in ms")
    slo.add_argument("--max-duration", default=None, metavar="S",
                     help="--mode capacity: seconds the whole search may take (default 300)")
    slo.add_argument("--slo-attainment", default="0.9", metavar="F",
                     help="share of requests that must be good, a fraction in (0, 1] or a "
                          "percentage such as 90%% (default 0.9)")

    add_cost_arguments(parser)


def add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    """The price of the server's machine and the deployment plan's traffic (core/cost.py)."""
    table = price_table()
    cost = parser.add_argument_group(
        "Cost and deployment plan: $ per million tokens per step (any mode) and, with "
        "--mode capacity, how many servers a traffic needs")
    cost.add_argument("--gpu-price-per-hour", default=None, metavar="USD",
                      help="what the server's machine costs per hour, all its GPUs together "
                           "(for example 0.80); overrides --hardware's price")
    cost.add_argument("--hardware", default=None, metavar="NAME",
                      help="the machine as Hugging Face names it, to take its price from the "
                           f"table read {table['read_on']} (" + ", ".join(table["hardware"])
                           + ")")
    cost.add_argument("--peak-rps", default=None, metavar="R",
                      help="your traffic at its busiest, in requests per second")
    cost.add_argument("--daily-users", default=None, metavar="N",
                      help="or your traffic as users per day (with --requests-per-user)")
    cost.add_argument("--requests-per-user", default=None, metavar="N",
                      help="requests each user sends per day")
    cost.add_argument("--peak-factor", default=None, metavar="F",
                      help="busiest hour / average hour (default "
                           f"{DEFAULT_PEAK_FACTOR:g})")
    cost.add_argument("--headroom", default=None, metavar="PCT",
                      help="spare capacity kept above the peak, in percent (default "
                           f"{DEFAULT_HEADROOM_PCT:g})")
    cost.add_argument("--api-price-per-million", default=None, metavar="USD",
                      help="a hosted API's price per million tokens (prompt + output), to "
                           "compare with and find the monthly volume where both cost the same")


def base_parser() -> argparse.ArgumentParser:
    """The parser of a run's flags (``benchmark.cli.build_parser`` adds the server's)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="TGI's benchmark over HTTP: latency and throughput per batch size, with "
                    "files you can open. `python -m benchmark calibrate --help` measures the "
                    "client's own error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_benchmark_arguments(parser)
    return parser


def _optional(value: Any, parse: Any, name: str, **bounds: Any) -> Any:
    return None if value is None else parse(name, value, **bounds)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The validated ``RunConfig`` the flags describe; ``ConfigError`` names the bad field."""
    sampling = SamplingParams(
        temperature=_optional(args.temperature, parse_float, "temperature"),
        top_k=_optional(args.top_k, parse_int, "top_k"),
        top_p=_optional(args.top_p, parse_float, "top_p"),
        typical_p=_optional(args.typical_p, parse_float, "typical_p"),
        repetition_penalty=_optional(args.repetition_penalty, parse_float, "repetition_penalty"),
        frequency_penalty=_optional(args.frequency_penalty, parse_float, "frequency_penalty"),
        watermark=bool(args.watermark),
        do_sample=bool(args.do_sample),
        top_n_tokens=_optional(args.top_n_tokens, parse_int, "top_n_tokens"),
    )
    config = RunConfig(
        tokenizer_name=args.tokenizer_name,
        url=url_without_credentials(check_url(args.url)),
        api=args.api,
        model=args.model,
        revision=args.revision,
        batch_sizes=(parse_batch_sizes(args.batch_size) if args.batch_size
                     else DEFAULT_BATCH_SIZES),
        sequence_length=parse_int("sequence_length", args.sequence_length),
        decode_length=parse_int("decode_length", args.decode_length),
        runs=parse_int("runs", args.runs),
        warmups=parse_int("warmups", args.warmups, minimum=0),
        mode=args.mode,
        rates=parse_rates(args.rate) if args.rate else (),
        arrivals=args.arrivals or "poisson",
        burstiness=_optional(args.burstiness, parse_float, "burstiness"),
        ramp_up_s=_optional(args.ramp_up, parse_float, "ramp_up_s"),
        max_concurrency=_optional(args.max_concurrency, parse_int, "max_concurrency"),
        schedule_seed=_optional(args.schedule_seed, parse_int, "schedule_seed", minimum=0),
        duration_s=_optional(args.duration, parse_float, "duration_s"),
        requests=_optional(args.requests, parse_int, "requests"),
        timeout_s=parse_float("timeout_s", args.timeout),
        seed=_optional(args.seed, parse_int, "seed", minimum=0),
        sampling=sampling,
        output_dir=args.output_dir,
        slo_ttft_ms=_optional(args.slo_ttft_ms, parse_slo_ms, "slo_ttft_ms"),
        slo_tpot_ms=_optional(args.slo_tpot_ms, parse_slo_ms, "slo_tpot_ms"),
        slo_e2e_ms=_optional(args.slo_e2e_ms, parse_slo_ms, "slo_e2e_ms"),
        slo_attainment=parse_attainment(args.slo_attainment),
        max_duration_s=_optional(args.max_duration, parse_float, "max_duration_s"),
        **cost_fields(args),
    )
    if args.mode == "capacity":
        extra = [flag for flag, value in (("--batch-size", args.batch_size),
                                          ("--duration", args.duration),
                                          ("--requests", args.requests)) if value]
        if extra:
            raise ConfigError("mode", f"{extra[0]} does not apply to --mode capacity: the "
                                      f"search chooses its own load and probe lengths; bound "
                                      f"the whole search with --max-duration S instead.")
    if args.mode == "rounds" and (args.duration is not None or args.requests is not None):
        raise ConfigError("mode", "--duration and --requests apply to --mode concurrency or "
                                  "--mode rate; add one of them or drop the flags.")
    rate_flags = [flag for flag, value in (
        ("--rate", args.rate), ("--arrivals", args.arrivals), ("--burstiness", args.burstiness),
        ("--ramp-up", args.ramp_up), ("--max-concurrency", args.max_concurrency),
        ("--schedule-seed", args.schedule_seed)) if value is not None]
    if args.mode != "rate" and rate_flags:
        raise ConfigError("mode", f"{rate_flags[0]} applies to --mode rate; add --mode rate or "
                                  f"drop it.")
    if args.mode == "rate" and not args.rate:
        raise ConfigError("rates", "--mode rate needs the request rates: add --rate R[,R...] "
                                   "(requests per second, for example --rate 10,20,40).")
    if args.mode == "rate" and args.batch_size:
        raise ConfigError("batch_sizes", "--batch-size does not apply to --mode rate: give the "
                                         "steps as --rate R[,R...] instead.")
    config = config.validate()
    if config.output_dir:  # before anything is launched; the engine checks again
        check_output_dir_free(config.output_dir)
    return config


def cost_fields(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig's price, hardware and plan fields from the flags (checked by validate)."""
    return {
        "gpu_price_per_hour": _optional(args.gpu_price_per_hour, parse_float,
                                        "gpu_price_per_hour"),
        "hardware": None if args.hardware is None else check_hardware(args.hardware),
        "plan_peak_rps": _optional(args.peak_rps, parse_float, "plan_peak_rps"),
        "plan_daily_users": _optional(args.daily_users, parse_int, "plan_daily_users"),
        "plan_requests_per_user": _optional(args.requests_per_user, parse_float,
                                            "plan_requests_per_user"),
        "plan_peak_factor": (DEFAULT_PEAK_FACTOR if args.peak_factor is None
                             else parse_float("plan_peak_factor", args.peak_factor)),
        "plan_headroom": (DEFAULT_HEADROOM_PCT if args.headroom is None
                          else parse_headroom(args.headroom)),
        "api_price_per_million": _optional(args.api_price_per_million, parse_float,
                                           "api_price_per_million"),
    }


def usage_error(parser: argparse.ArgumentParser, err: ConfigError,
                flags: Mapping[str, str] | None = None) -> None:
    """Exit 2 with argparse's ``error: argument --flag: message`` line; ``flags`` maps the
    error's field to its flag (default ``FLAG_FOR_FIELD``)."""
    flag = (FLAG_FOR_FIELD if flags is None else flags).get(err.field)
    parser.error(f"argument {flag}: {err.message}" if flag else err.message)


def run_cli(config: RunConfig, args: argparse.Namespace, parser: argparse.ArgumentParser,
            *, server: dict[str, Any] | None = None) -> int:
    """Run ``config`` with console progress and print the tables; return the exit code."""
    try:
        stream = JsonLinesProgress.open(args.progress_jsonl) if args.progress_jsonl else None
    except OSError as exc:
        usage_error(parser, ConfigError("progress_jsonl", f"Cannot write {args.progress_jsonl} "
                                                          f"({exc.strerror or exc})."))
    cancel = threading.Event()
    try:
        result = run(config, on_progress=fan_out(ConsoleProgress(sys.stderr), stream),
                     cancel=cancel, server=server, headers=auth_headers(args))
    except ConfigError as err:
        usage_error(parser, err)
    except BenchmarkError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Interrupted before the run started; nothing was measured.", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        if stream is not None:
            stream.close()

    if result.records:
        print(markdown_tables(result))
    print(f"Results: {result_folder(result, config)}")
    if result.status == "complete":
        return EXIT_OK
    if result.status == "cancelled":
        return EXIT_CANCELLED
    print(f"error: {result.message}", file=sys.stderr)
    return EXIT_ERROR


def auth_headers(args: argparse.Namespace) -> dict[str, str]:
    """``Authorization`` from the variable named by ``--api-key-env`` (ConfigError if unset)."""
    name = getattr(args, "api_key_env", None)
    basic = _basic_auth(getattr(args, "url", None) or "")
    if basic and name:
        raise ConfigError("api_key_env", "Give the endpoint's credentials either in the URL "
                                         "(user:password@host) or with --api-key-env, not both.")
    if basic:
        return {"Authorization": basic}
    if not name:
        return {}
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError("api_key_env", f"The environment variable {name} is not set or "
                                         f"empty: export the token in it first.")
    return {"Authorization": f"Bearer {value}"}


def result_folder(result: Any, config: RunConfig) -> str:
    return config.output_dir or str(results_root() / result.run_id)


def url_without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part: credentials travel as a header only
    (``auth_headers``), so they never reach run.json, tables, progress or error messages."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError("url", "The endpoint URL has a ?query or #fragment part: drop it (the "
                                 "request paths are added after the URL, and the URL is saved "
                                 "with the results). Pass a token with --api-key-env instead.")
    return strip_credentials(url)


def _basic_auth(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
