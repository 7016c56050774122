"""``python -m benchmark.simulator [flags]``: serve until SIGTERM or Ctrl-C, then exit 0.

Prints start-up lines shaped like TGI's launcher and router (Args, shard ready, Starting
Webserver, Warming up model, Setting max batch total tokens to N, Connected), then exactly
``Simulated TGI listening on http://HOST:PORT``. ``--startup-delay S`` spends S seconds between
those lines (pretend loading and warm-up) before the port opens, like TGI.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from datetime import datetime, timezone
from time import perf_counter_ns
from typing import Sequence

from ..errors import redact
from .arrival import new_event_loop
from .config import SimulatorConfig, parse_args
from .server import Simulator
from .tokens import TokenCounter


def log(target: str, message: str, level: str = "INFO") -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    print(f"{stamp}  {level} {target}: {redact(message)}", flush=True)


def _rust_value(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'Some("{value}")'
    return f"Some({value})"


def args_line(config: SimulatorConfig) -> str:
    fields = ", ".join(f"{k}: {_rust_value(v)}" for k, v in config.to_dict().items())
    return "Args { " + fields + " }"


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless asked to stop; True when asked to stop."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def serve(config: SimulatorConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    launcher = "text_generation_launcher"
    log(launcher, args_line(config))
    for name in ("revision", "quantize", "dtype", "num_shard", "trust_remote_code"):
        value = getattr(config, name)
        if value not in (None, False):
            log(launcher, f"--{name.replace('_', '-')} {value} accepted and ignored by the "
                          f"simulator", "WARN")
    log(launcher, "Simulated server: nothing is downloaded or loaded; the start-up phases "
                  "below only pass the --startup-delay time")
    delay = config.startup_delay_s
    download = f"download: {launcher}"
    log(download, f"Starting check and download process for {config.model_id}")
    if await _wait(stop, delay * 0.3):
        return 0
    log(download, f"Successfully downloaded weights for {config.model_id}")
    log(f"shard-manager: {launcher}", "Starting shard rank=0")
    started = perf_counter_ns()
    counter = TokenCounter.load(config.tokenizer)
    if counter.exact:
        log(launcher, f"Using the tokenizer {config.tokenizer} to count prompt tokens")
    else:
        log(launcher, "No tokenizer: counting prompt tokens as ceil(utf-8 bytes / 4)", "WARN")
    if await _wait(stop, delay * 0.3):
        return 0
    log(f"shard-manager: {launcher}",
        f"Shard ready in {(perf_counter_ns() - started) / 1e9:.2f}s rank=0")
    log(launcher, "Starting Webserver")
    router = "text_generation_router_v3"
    log(router, "backends/v3/src/lib.rs:125: Warming up model")
    if await _wait(stop, delay * 0.4):
        return 0
    log(router, f"backends/v3/src/lib.rs:137: Setting max batch total tokens to "
                f"{config.max_batch_total_tokens}")
    try:
        simulator = Simulator(config, counter)
    except OSError as exc:
        log(launcher, f"Cannot open the trace file {config.trace}: {exc.strerror or exc}",
            "ERROR")
        return 1
    try:
        await simulator.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:  # the words TGI's router prints
            detail = (f'Os {{ code: {exc.errno}, kind: AddrInUse, message: "Address already '
                      f'in use" }} ({config.hostname}:{config.port})')
        else:
            detail = str(exc)
        log("text_generation_router::server", f"Webserver Crashed: {detail}", "ERROR")
        log(launcher, "Webserver Crashed", "ERROR")
        return 1
    log("text_generation_router::server", "router/src/server.rs:2400: Connected")
    print(f"Simulated TGI listening on {simulator.url}", flush=True)
    await stop.wait()
    log(launcher, "Terminating webserver")
    await simulator.stop()
    log(launcher, "Shutting down shards")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    # Not uvloop: its transports cannot read the kernel's receive stamps, and the simulator
    # measured as fast on asyncio's loop (100,000-104,000 vs 100,000-111,000 token events per
    # second of server CPU, tests/perf/simulator_throughput.py).
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
