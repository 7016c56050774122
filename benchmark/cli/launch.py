"""``python -m benchmark --launch``: the server flags (TGI's names), and start -> run -> stop.

``benchmark.cli.build_parser`` calls ``add_server_arguments``; ``benchmark.cli.main`` calls ``launch_from_cli``,
which returns None without ``--launch``. ``launch_and_run`` is the reusable core: start (or
reuse) a server, call a function with its handle, stop it unless kept.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ..config import (DEFAULT_SERVER_HOST, DEFAULT_SERVER_PORT, DEFAULT_URL, DTYPE_CHOICES,
                     QUANTIZE_CHOICES, ServerSettings, parse_float, parse_int)
from ..core import results
from ..core.interrupts import cancel_on_signals
from ..core.results import add_failure_reason
from ..errors import ConfigError, ServerStartError
from ..server.manager import DEFAULT_TIMEOUT_S, ServerHandle, ServerManager, ServerStatus
from . import run as cli

__all__ = ["add_server_arguments", "settings_from_args", "launch_from_cli", "launch_and_run",
           "SERVER_FLAG_FOR_FIELD"]


# The flag each ServerSettings field is typed with (to word ConfigErrors like argparse does).
SERVER_FLAG_FOR_FIELD = {
    "model_id": "--model-id", "revision": "--revision", "quantize": "--quantize",
    "dtype": "--dtype", "num_shard": "--num-shard", "max_input_tokens": "--max-input-tokens",
    "max_total_tokens": "--max-total-tokens", "max_batch_size": "--max-batch-size",
    "max_batch_prefill_tokens": "--max-batch-prefill-tokens",
    "max_concurrent_requests": "--max-concurrent-requests",
    "trust_remote_code": "--trust-remote-code", "port": "--port", "hostname": "--hostname",
    "timeout_s": "--server-timeout",
}
# Flags that mean nothing without --launch: (dest, flag). Unset, each is None (or False for
# the switches).
_LAUNCH_ONLY = (
    ("model_id", "--model-id"), ("quantize", "--quantize"), ("dtype", "--dtype"),
    ("num_shard", "--num-shard"), ("max_input_tokens", "--max-input-tokens"),
    ("max_total_tokens", "--max-total-tokens"), ("max_batch_size", "--max-batch-size"),
    ("max_batch_prefill_tokens", "--max-batch-prefill-tokens"),
    ("max_concurrent_requests", "--max-concurrent-requests"),
    ("trust_remote_code", "--trust-remote-code"), ("port", "--port"), ("hostname", "--hostname"),
    ("server_timeout", "--server-timeout"), ("server_log_dir", "--server-log-dir"),
    ("keep_server", "--keep-server"),
)


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--launch`` and the launcher's flags (TGI's names) to the benchmark's parser.

    The benchmark's ``--revision`` (the tokenizer's) is also the model's revision when
    launching. ``--tokenizer-name`` becomes optional: with ``--launch`` it defaults to
    ``--model-id``; without it the run's own validation still asks for it.
    """
    for action in parser._actions:
        if "--tokenizer-name" in action.option_strings:
            action.required = False
            action.help = (action.help or "") + " (with --launch: defaults to --model-id)"
    group = parser.add_argument_group(
        "launch a TGI server (--launch)",
        "Start text-generation-launcher (or the simulated server when it is not installed), "
        "wait until it is ready, benchmark it, then stop it. HF_TOKEN is passed to it through "
        "the environment.")
    group.add_argument("--launch", action="store_true",
                       help="start a TGI server with the flags below and benchmark it")
    group.add_argument("--model-id", metavar="ID",
                       help="Hub id (org/name) or local folder of the model")
    if not any("--revision" in a.option_strings for a in parser._actions):
        group.add_argument("--revision", help="model revision (branch, tag or commit)")
    group.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="quantization method")
    group.add_argument("--dtype", choices=DTYPE_CHOICES,
                       help="weights' data type (not with --quantize)")
    group.add_argument("--num-shard", metavar="N", help="number of GPUs to shard the model over")
    group.add_argument("--max-input-tokens", metavar="N",
                       help="longest prompt the server accepts")
    group.add_argument("--max-total-tokens", metavar="N",
                       help="longest prompt + generated tokens of one request")
    group.add_argument("--max-batch-size", metavar="N", help="most requests in one batch")
    group.add_argument("--max-batch-prefill-tokens", metavar="N",
                       help="most prompt tokens processed in one prefill")
    group.add_argument("--max-concurrent-requests", metavar="N",
                       help="requests the router accepts at once (more get HTTP 429)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run code from the model repository (only for models you trust)")
    group.add_argument("--port", metavar="PORT",
                       help=f"server port (default {DEFAULT_SERVER_PORT})")
    group.add_argument("--hostname", metavar="HOST",
                       help=f"address the server listens on (default {DEFAULT_SERVER_HOST})")
    group.add_argument("--server-timeout", metavar="S",
                       help=f"seconds to wait until the server is ready (default "
                            f"{DEFAULT_TIMEOUT_S:g}: downloads are slow)")
    group.add_argument("--server-log-dir", metavar="DIR",
                       help="folder for the launcher's (masked) log (default: a temporary folder)")
    group.add_argument("--keep-server", action="store_true",
                       help="leave the server running after the benchmark")


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Validated ``ServerSettings`` from parsed flags (``--trust-remote-code`` is explicit)."""
    if not getattr(args, "model_id", None):
        raise ConfigError("model_id", "--launch needs --model-id: a Hub id such as "
                                      "org/model-name, or a local folder.")

    def number(name: str, minimum: int = 1) -> int | None:
        value = getattr(args, name, None)
        return None if value is None else parse_int(name, value, minimum=minimum)

    settings = ServerSettings(
        model_id=args.model_id, revision=getattr(args, "revision", None),
        quantize=args.quantize, dtype=args.dtype, num_shard=number("num_shard"),
        max_input_tokens=number("max_input_tokens"), max_total_tokens=number("max_total_tokens"),
        max_batch_size=number("max_batch_size"),
        max_batch_prefill_tokens=number("max_batch_prefill_tokens"),
        max_concurrent_requests=number("max_concurrent_requests"),
        trust_remote_code=bool(args.trust_remote_code),
        port=DEFAULT_SERVER_PORT if args.port is None else parse_int("port", args.port),
        hostname=args.hostname or DEFAULT_SERVER_HOST,
    )
    return settings.validate(allow_trust_remote_code=True)


def launch_from_cli(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int | None:
    """The CLI's hook: None without ``--launch``; else start, benchmark, stop; the exit code.

    Flag errors exit 2 through ``parser.error`` (before anything is started). The run's
    folder defaults to a fresh ``results/<run id>`` so that a crash can be recorded in it.
    """
    if not args.launch:
        for dest, flag in _LAUNCH_ONLY:
            if getattr(args, dest, None) not in (None, False):
                parser.error(f"argument {flag}: only used with --launch (add --launch to start "
                             "a TGI server and benchmark it, or drop this flag).")
        return None
    if args.url != DEFAULT_URL:
        parser.error("argument --url: --launch benchmarks the server it starts; drop --url "
                     "(or drop --launch to benchmark a server that is already running).")
    try:
        settings = settings_from_args(args)
        timeout_s = DEFAULT_TIMEOUT_S if args.server_timeout is None else parse_float(
            "timeout_s", args.server_timeout, minimum=0.0, exclusive_minimum=True)
    except ConfigError as err:
        cli.usage_error(parser, err, flags=SERVER_FLAG_FOR_FIELD)
    args.url = settings.url
    args.tokenizer_name = args.tokenizer_name or settings.model_id
    if not args.output_dir:
        args.output_dir = str(results.default_output_dir(settings.model_id))
    try:
        config = cli.config_from_args(args)
    except ConfigError as err:
        cli.usage_error(parser, err)

    def run(handle: ServerHandle, manager: ServerManager) -> int:
        return cli.run_cli(config, args, parser, server=settings.to_dict())

    def on_crash(err: ServerStartError) -> None:
        add_failure_reason(Path(args.output_dir), str(err))

    manager = ServerManager(log_dir=args.server_log_dir, allow_trust_remote_code=True,
                            simulator_args=["--tokenizer", args.tokenizer_name])
    return launch_and_run(settings, run, timeout_s=timeout_s, keep=args.keep_server,
                          manager=manager, on_crash=on_crash)


def _print_status(out: Any) -> Callable[[ServerStatus], None]:
    last: str | None = None

    def show(status: ServerStatus) -> None:
        nonlocal last
        text = status.message
        if status.phase == "failed" or text == last:
            return
        last = text
        label = " (simulated)" if status.simulated else ""
        if status.phase == "stopped":
            print(f"[server]{label} Stopped.", file=out, flush=True)
            return
        print(f"[server {status.elapsed_s:6.1f} s]{label} {text}", file=out, flush=True)

    return show


def launch_and_run(settings: ServerSettings, run: Callable[[ServerHandle, ServerManager], int],
                   *, manager: ServerManager, timeout_s: float = DEFAULT_TIMEOUT_S,
                   keep: bool = False, on_crash: Callable[[ServerStartError], None] | None = None,
                   out: Any = None) -> int:
    """Start (or reuse) the server with ``manager``, call ``run(handle, manager)``, then stop it
    unless ``keep``.

    Returns ``run``'s exit code; 1 when the server cannot start or died during the run (the
    explanation is printed and passed to ``on_crash``); 130 when start-up is interrupted by
    Ctrl-C, SIGTERM or SIGHUP (``interrupts.cancel_on_signals``; the server is stopped).
    """
    out = out if out is not None else sys.stderr
    cancel = threading.Event()

    def interrupted() -> int:
        manager.stop()
        print("Start-up interrupted: the server was stopped.", file=out, flush=True)
        return 130

    try:
        try:
            with cancel_on_signals(cancel):
                handle = manager.ensure(settings, timeout_s=timeout_s,
                                        on_status=_print_status(out), cancel=cancel)
        except KeyboardInterrupt:  # a second Ctrl-C, while the first one is being handled
            return interrupted()
        except ServerStartError as err:
            if cancel.is_set():
                return interrupted()
            print(f"error: {err}", file=out, flush=True)
            if err.log_tail and err.reason not in ("exited", "crashed"):
                print("Last lines of the server's log:", file=out)
                for line in err.log_tail[-15:]:
                    print(f"  {line}", file=out)
            if manager.log_path is not None:
                print(f"Full log: {manager.log_path}", file=out, flush=True)
            return 1
        if cancel.is_set():  # the signal came as the server became ready
            return interrupted()
        label = "simulated server" if handle.simulated else "TGI server"
        if handle.reused:
            print(f"Reusing the {label} already running with these settings.", file=out)
        print(f"Benchmarking the {label} at {handle.url} (model {handle.settings.model_id}, "
              f"pid {handle.pid}; log {handle.log_path}).", file=out, flush=True)
        code = run(handle, manager)
        try:
            manager.check_alive(wait_s=0.0 if code == 0 else 10.0)
        except ServerStartError as err:
            print(f"error: {err}", file=out, flush=True)
            if on_crash is not None:
                on_crash(err)
            code = code or 1
        return code
    finally:
        if keep and manager.handle is not None:
            kept = manager.keep()
            if kept is not None:
                print(f"The server keeps running at {kept.url} (pid {kept.pid}; log "
                      f"{kept.log_path}). Stop it with: kill -TERM -- -{kept.pid}",
                      file=out, flush=True)
        else:
            manager.stop()
