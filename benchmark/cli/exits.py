"""The command line's exit codes, in one place: every subcommand returns one of these, and a
run's status maps to its code here.

    0    complete                         130  cancelled (Ctrl-C, SIGTERM): files keep what
    1    error (one line, no traceback)        was measured
    2    bad input (argparse's style)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_CANCELLED", "for_status"]


def for_status(status: str) -> int:
    """The exit code of a finished run: complete 0, cancelled 130, anything else (failed) 1."""
    return {"complete": EXIT_OK, "cancelled": EXIT_CANCELLED}.get(status, EXIT_ERROR)
