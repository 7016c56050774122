"""``python -m benchmark``: the command line, one face of the engine.

    python -m benchmark [flags]              run a benchmark (``run``), or start TGI first
                                             with ``--launch`` (``launch``)
    python -m benchmark calibrate [flags]    measure the client's own error (``calibrate``)
    python -m benchmark import FILE...       other tools' result files -> runs (``imports``)
    python -m benchmark report RUN_DIR       one self-contained HTML report (``imports``)

``main`` is the one dispatch; ``build_parser`` is the run's parser with the server's flags;
the exit codes are ``exits``' (0 complete, 1 error, 2 bad input, 130 cancelled).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import calibrate, imports, launch, run
from ..errors import BenchmarkError, ConfigError, redact
from .exits import EXIT_ERROR
from .run import config_from_args

__all__ = ["main", "build_parser", "config_from_args"]


def build_parser() -> argparse.ArgumentParser:
    """Every flag of ``python -m benchmark``: a run's, then the server's (``--launch``)."""
    parser = run.base_parser()
    launch.add_server_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand and return its exit code (``exits``): each subcommand says
    what went wrong in one line; an error none of them expected still ends as one line and
    exit 1 here, never as a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except BenchmarkError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] == "calibrate":
        return int(calibrate.main(argv[1:]) or 0)
    if argv and argv[0] == "import":
        return imports.import_main(argv[1:])
    if argv and argv[0] == "report":
        return imports.report_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    launched = launch.launch_from_cli(args, parser)
    if launched is not None:
        return launched
    try:
        config = config_from_args(args)
    except ConfigError as err:
        run.usage_error(parser, err)
    return run.run_cli(config, args, parser)
