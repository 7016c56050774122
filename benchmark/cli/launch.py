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

from ..config import (DEFAULT_URL, SETTINGS, ServerSettings, check_fits_server, flag_map,
                     parse_setting, setting, settings_of)
from ..core import results
from ..core.interrupts import cancel_on_signals
from ..core.results import add_failure_reason
from ..errors import ConfigError, ServerLimitError, ServerStartError
from ..server.manager import DEFAULT_TIMEOUT_S, ServerHandle, ServerManager, ServerStatus
from . import run as cli
from .exits import EXIT_CANCELLED, EXIT_ERROR

__all__ = ["add_server_arguments", "settings_from_args", "launch_from_cli", "launch_and_run",
           "SERVER_FLAG_FOR_FIELD"]


# The flag each ServerSettings field is typed with (to word ConfigErrors like argparse does).
SERVER_FLAG_FOR_FIELD = {**flag_map("server", "launch"), "timeout_s": "--server-timeout"}
# Flags that mean nothing without --launch: (dest, flag). Unset, each is None (or False for
# the switches). --revision is also the tokenizer's, so it is not one of them.
_LAUNCH_ONLY = tuple((e.dest, e.flag) for e in settings_of("server", "launch")
                     if e.flag and e.flag not in ("--launch", "--revision"))


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
    present = {option for action in parser._actions for option in action.option_strings}
    for entry in SETTINGS:
        if entry.group == "server" and entry.flag and entry.flag not in present:
            cli.add_setting_argument(group, entry)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Validated ``ServerSettings`` from parsed flags (``--trust-remote-code`` is explicit)."""
    if not getattr(args, "model_id", None):
        raise ConfigError("model_id", "--launch needs --model-id: a Hub id such as "
                                      "org/model-name, or a local folder.")
    values = {}
    for entry in settings_of("server"):
        raw = getattr(args, entry.dest, None)
        values[entry.name] = (entry.default if raw is None or raw == ""
                              else parse_setting(entry, raw))
    return ServerSettings(**values).validate(allow_trust_remote_code=True)


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
        timeout_s = DEFAULT_TIMEOUT_S if args.server_timeout is None else parse_setting(
            setting("server_timeout"), args.server_timeout)
    except ConfigError as err:
        cli.usage_error(parser, err, flags=SERVER_FLAG_FOR_FIELD)
    args.url = settings.url
    args.tokenizer_name = args.tokenizer_name or settings.model_id
    if not args.output_dir:
        args.output_dir = str(results.default_output_dir(settings.model_id))
    try:
        config = cli.config_from_args(args)
        check_fits_server(config, settings)   # what the app's form checks too
    except ConfigError as err:
        cli.usage_error(parser, err)
    except ServerLimitError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR

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
        return EXIT_CANCELLED

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
            return EXIT_ERROR
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
            code = code or EXIT_ERROR
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
