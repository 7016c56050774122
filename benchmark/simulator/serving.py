"""Serving the simulator: one process (``serve``) or ``--workers N`` processes sharing the
port (``serve_many``); ``__main__`` parses the flags and calls one of them."""


from __future__ import annotations

import asyncio
import errno
import multiprocessing
import multiprocessing.connection
import signal
import socket
from datetime import datetime, timezone
from time import perf_counter_ns
from typing import Any, Callable

from ..errors import redact
from .arrival import new_event_loop
from .config import SimulatorConfig, share
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


async def serve(config: SimulatorConfig, ready: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM / SIGINT. ``ready``: a worker process's (``--workers``) way of saying
    it listens (instead of printing the ready line, which the parent prints once)."""
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
    if ready is not None:
        ready(simulator.url)
    else:
        print(f"Simulated TGI listening on {simulator.url}", flush=True)
    await stop.wait()
    log(launcher, "Terminating webserver")
    await simulator.stop()
    log(launcher, "Shutting down shards")
    return 0


def _worker(config: SimulatorConfig, pipe: Any) -> int:
    """One of ``--workers N`` processes: serve the shared port, say when listening."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(serve(config, ready=pipe.send))


def serve_many(config: SimulatorConfig) -> int:
    """``--workers N``: hold the port (bound with SO_REUSEPORT, never listening, so that port 0
    becomes one port for all), start N processes listening on it, print the ready line once
    all listen, stop them on SIGTERM / Ctrl-C. A process that dies stops the others."""
    family = socket.AF_INET6 if ":" in config.hostname else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((config.hostname, config.port))
    except OSError as exc:
        log("text_generation_router::server", f"Webserver Crashed: {exc}", "ERROR")
        return 1
    port = holder.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    processes, pipes = [], []
    for index in range(config.workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_worker, args=(share(config, config.workers, port),
                                                        send),
                                  name=f"simulator-worker-{index + 1}", daemon=True)
        process.start()
        send.close()
        processes.append(process)
        pipes.append(receive)
    code = 0
    try:
        urls: list[str] = []
        while len(urls) < len(pipes) and not stop["now"]:
            for pipe, process in zip(pipes, processes):
                if pipe.poll(0.05):
                    try:
                        urls.append(pipe.recv())
                    except EOFError:
                        pass
                if not process.is_alive() and process.exitcode is not None:
                    log("text_generation_launcher", f"{process.name} exited with code "
                                                    f"{process.exitcode}", "ERROR")
                    return 1
        if stop["now"]:
            return 0
        log("text_generation_launcher", f"{config.workers} simulator processes share port "
                                        f"{port}, each with 1/{config.workers} of the batch "
                                        f"limits")
        print(f"Simulated TGI listening on {urls[0]}", flush=True)
        while not stop["now"]:
            dead = [p for p in processes if not p.is_alive()]
            if dead:
                log("text_generation_launcher", f"{dead[0].name} exited with code "
                                                f"{dead[0].exitcode}", "ERROR")
                code = 1
                break
            multiprocessing.connection.wait([p.sentinel for p in processes], 0.2)
        return code
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(1)
        holder.close()


