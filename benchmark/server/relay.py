"""The relay behind ``--keep-server``: ``python -m benchmark.server.relay --relay LOG`` copies
a kept server's output (its stdin) into LOG, masked line by line, after the run that started the
server has exited. Light on purpose: it imports only the masking helpers.
"""

from __future__ import annotations

import os
import signal
import sys

from .process import SECRET_ENV, mask_line, split_lines


def relay_main(argv: list[str]) -> int:
    """Copy stdin (a kept server's output) into LOG, masked line by line, until it ends."""
    if len(argv) != 2 or argv[0] != "--relay":
        print("usage: python -m benchmark.server.relay --relay LOGFILE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    secrets = [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]
    pending, dropping = b"", False
    with open(argv[1], "a", encoding="utf-8") as log:
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            lines, pending, dropping = split_lines(pending + chunk, dropping)
            for raw in lines:
                line = mask_line(raw, secrets)
                if line:
                    log.write(line + "\n")
                    log.flush()
        line = mask_line(pending, secrets) if pending else ""
        if line:
            log.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(relay_main(sys.argv[1:]))

