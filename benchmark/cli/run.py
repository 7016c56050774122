"""``python -m benchmark``: TGI's ``text-generation-benchmark`` over HTTP.

    python -m benchmark --tokenizer-name gpt2 --url http://localhost:3000 \\
        --batch-size 1,2,4 --sequence-length 512 --decode-length 128 --runs 5

Flags of TGI's tool keep their names and defaults; ``--url``, ``--api``, ``--mode`` and the file
and progress flags are ours. The console shows a progress bar on stderr, then TGI's three
tables (markdown) on stdout, then the folder holding run.json, summary.csv and requests.csv.

Exit codes: 0 complete, 1 error (one line, no traceback), 2 bad flags (argparse style),
130 cancelled by Ctrl-C / SIGTERM (the files hold what was measured, ``complete: false``).

``python -m benchmark calibrate ...`` runs ``benchmark.cli.calibrate.main``.

Extending: the flags, their defaults, help and parsing come from ``config.SETTINGS`` (add a
setting there, not here). ``base_parser()`` builds the parser from ``add_benchmark_arguments``;
``config_from_args`` maps flags to a ``RunConfig``; ``run_cli`` runs it; ``benchmark.cli.main``
dispatches.
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
from ..config import (SETTINGS, RunConfig, SamplingParams, Setting, endpoint_url, flag_map,
                     parse_setting, setting_argv, settings_of)
from ..core.engine import run
from ..core.progress import ConsoleProgress, JsonLinesProgress, fan_out
from ..core.results import check_output_dir_free, results_root
from ..errors import BenchmarkError, ConfigError, redact
from ..report.tables import markdown_tables

__all__ = ["base_parser", "add_benchmark_arguments", "add_setting_argument", "config_from_args",
           "run_cli", "usage_error", "flag_error", "auth_headers", "FLAG_FOR_FIELD"]

from .exits import EXIT_CANCELLED, EXIT_ERROR, EXIT_USAGE, for_status

# The flag a RunConfig field is typed with (to word ConfigErrors like argparse does).
FLAG_FOR_FIELD = flag_map("run", "sampling", "cli")

GROUP_TITLES = {
    "tgi": "TGI benchmark flags (same names and defaults as text-generation-benchmark)",
    "http": "HTTP, load pattern and files",
    "rate": "Request rate (--mode rate)",
    "slo": "Latency targets (SLOs): a request is good when it finished and met every target "
           "given; each step then reports the share of good requests (attainment) and goodput. "
           "--mode capacity finds the highest request rate that keeps it",
    "cost": "Cost and deployment plan: $ per million tokens per step (any mode) and, with "
            "--mode capacity, how many servers a traffic needs",
}


def flag_default(entry: Setting) -> Any:
    """The flag's argparse default: the run's defaults as the text a user would type (as TGI's
    tool shows them); None for the server's and the command line's own flags (so that a flag
    given without ``--launch`` can be told from one left alone) and for the flags of some load
    patterns only (so that one given in another pattern can be refused)."""
    if entry.owner not in ("run", "sampling") or entry.default is None or entry.modes:
        return None
    if entry.kind in ("switch", "sizes", "rates"):
        return None
    return setting_argv(entry, entry.default)[-1]


def add_setting_argument(group: Any, entry: Setting) -> None:
    """One flag, as the table describes it."""
    options: dict[str, Any] = {}
    if entry.kind == "switch":
        options["action"] = "store_true"
    elif entry.kind in ("sizes", "rates"):
        options["action"] = "append"
    else:
        options["default"] = flag_default(entry)
    if entry.required:
        options["required"] = True
    if entry.metavar:
        options["metavar"] = entry.metavar
    if entry.choices:
        options["choices"] = entry.choices
    if entry.help is not None:
        options["help"] = entry.help
    group.add_argument(*entry.short, entry.flag, **options)


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's flags: TGI's tool first (same names, same defaults), then ours."""
    for key, title in GROUP_TITLES.items():
        group = parser.add_argument_group(title)
        for entry in SETTINGS:
            if entry.group == key and entry.flag:
                add_setting_argument(group, entry)


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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The validated ``RunConfig`` the flags describe; ``ConfigError`` names the bad field."""
    values: dict[str, dict[str, Any]] = {"run": {}, "sampling": {}}
    misplaced: list[Setting] = []
    for entry in settings_of("run", "sampling"):
        raw = getattr(args, entry.dest, None)
        if entry.kind == "url" and raw is not None:
            value: Any = endpoint_url(raw, entry.name, credentials=True)[0]
        else:
            value = entry.default if raw is None else parse_setting(entry, raw)
        values[entry.owner][entry.name] = value
        if not entry.applies_to(args.mode) and raw is not None:
            misplaced.append(entry)
    if misplaced:
        modes = misplaced[0].modes
        flags = [e.flag for e in misplaced if e.modes == modes and e.flag]
        either = " or ".join(f"--mode {m}" for m in modes)
        raise ConfigError("mode", f"{' and '.join(flags)} appl{'ies' if len(flags) == 1 else 'y'}"
                                  f" to {either}; add {'it' if len(modes) == 1 else 'one'} or "
                                  f"drop {'it' if len(flags) == 1 else 'them'}.")
    config = RunConfig(**values["run"], sampling=SamplingParams(**values["sampling"]))
    config = config.validate()
    if config.output_dir:  # before anything is launched; the engine checks again
        check_output_dir_free(config.output_dir)
    return config


def usage_error(parser: argparse.ArgumentParser, err: ConfigError,
                flags: Mapping[str, str] | None = None) -> None:
    """Exit 2 with argparse's ``error: argument --flag: message`` line; ``flags`` maps the
    error's field to its flag (default ``FLAG_FOR_FIELD``)."""
    flag = (FLAG_FOR_FIELD if flags is None else flags).get(err.field)
    parser.error(f"argument {flag}: {err.message}" if flag else err.message)


def flag_error(parser: argparse.ArgumentParser, err: ConfigError) -> int:
    """A flag found wrong once the run started (the server named no model, the output folder
    cannot be written): argparse's ``error: argument --flag: message`` line without the usage
    text (the flags parsed; what matters is what the server or the disk said). Returns 2."""
    flag = FLAG_FOR_FIELD.get(err.field)
    message = redact(err.message)
    print(f"{parser.prog}: error: " + (f"argument {flag}: {message}" if flag else message),
          file=sys.stderr)
    return EXIT_USAGE


def run_cli(config: RunConfig, args: argparse.Namespace, parser: argparse.ArgumentParser,
            *, server: dict[str, Any] | None = None) -> int:
    """Run ``config`` with console progress and print the tables; return the exit code."""
    try:
        stream = JsonLinesProgress.open(args.progress_jsonl) if args.progress_jsonl else None
    except OSError as exc:
        usage_error(parser, ConfigError("progress_jsonl", f"Cannot write {args.progress_jsonl} "
                                                          f"({exc.strerror or exc})."))
    try:
        headers = auth_headers(args)
    except ConfigError as err:
        if stream is not None:
            stream.close()
        usage_error(parser, err)
    cancel = threading.Event()
    try:
        result = run(config, on_progress=fan_out(ConsoleProgress(sys.stderr), stream),
                     cancel=cancel, server=server, headers=headers)
    except ConfigError as err:
        return flag_error(parser, err)
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
    if result.status not in ("complete", "cancelled"):
        print(f"error: {result.message}", file=sys.stderr)
    return for_status(result.status)


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
    return endpoint_url(url, credentials=True)[0]


def _basic_auth(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.username is None and parts.password is None:
        return None
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
