"""``python -m benchmark.simulator [flags]``: serve until SIGTERM or Ctrl-C, then exit 0.

Prints start-up lines shaped like TGI's launcher and router (Args, shard ready, Starting
Webserver, Warming up model, Setting max batch total tokens to N, Connected), then exactly
``Simulated TGI listening on http://HOST:PORT``. ``--startup-delay S`` spends S seconds between
those lines (pretend loading and warm-up) before the port opens, like TGI.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Sequence

from .arrival import new_event_loop
from .config import parse_args
from .serving import serve, serve_many

__all__ = ["main", "serve"]


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    if config.workers > 1:
        return serve_many(config)
    # Not uvloop: its transports cannot read the kernel's receive stamps, and the simulator
    # measured as fast on asyncio's loop (100,000-104,000 vs 100,000-111,000 token events per
    # second of server CPU, tests/perf/simulator_throughput.py).
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
