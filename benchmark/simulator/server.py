"""The simulated TGI server: aiohttp routes over the scheduler.

    sim = Simulator(SimulatorConfig(max_batch_size=8))
    await sim.start()          # binds, starts the scheduler task; sim.url is set
    ...
    await sim.stop()           # ends open streams with an error event, closes the port

    with run_in_thread(SimulatorConfig()) as sim:   # for tests: own loop in a thread
        httpx.get(sim.url + "/info")

Trace (``SimulatorConfig.trace``): one JSON line per finished or refused request, stamps from
``time.perf_counter_ns()`` (on Linux CLOCK_MONOTONIC, shared by every process on the machine):

    request_id     the X-Request-Id header (a random id when absent)
    route          the route that served it (``/`` resolves to /generate or /generate_stream)
    arrived_ns     when the request's first bytes reached the server: the kernel's receive
                   time on Linux, else when the event loop read them (see ``arrival``, and
                   ``arrival_clock`` in /info); on a keep-alive connection, the first bytes of
                   this request, not of the connection
    read_ns        when the server's event loop read those bytes; read_ns - arrived_ns is the
                   server's own wait before it looked at the request (milliseconds in a burst)
    handled_ns     when its aiohttp handler started; handled_ns - read_ns is the wait for the
                   handler (up to ~150 ms in a burst of 256 requests)
    queued_ns      when it joined the scheduler's queue, after validation (absent when refused)
    admitted_ns    when it joined the running batch (null if it never did; absent when refused)
    token_ns       when each token's bytes were handed to the socket
    end_ns         when it ended
    input_tokens, output_tokens, finish_reason, status, error
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Callable, Iterator

from aiohttp import web

from ..errors import redact
from .arrival import ARRIVED_NS, READ_NS, StampingAppRunner, arrival_clock, new_event_loop
from .config import ROUTER_NAME, TGI_VERSION, SimulatorConfig
from .formats import (ChatStreamFormat, CompletionStreamFormat, TgiStreamFormat, chat_body,
                      completion_body, error_body, generate_body)
from .metrics import Metrics
from .scheduler import Channel, Scheduler, Sequence, trace_row
from .tokens import TokenCounter
from .validation import (ApiError, ValidRequest, load_json, parse_chat, parse_completion,
                         parse_generate)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no", "x-compute-type": "gpu+simulated"}
JSON_TYPE = "application/json"
TGI_STREAM = TgiStreamFormat()
CHAT_STREAM = ChatStreamFormat()
COMPLETION_STREAM = CompletionStreamFormat()


async def read_body(request: web.Request) -> bytes:
    """The request body; a client that leaves before sending it all becomes a quiet 499."""
    try:
        return await request.read()
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise ApiError(499, f"client disconnected while sending the request ({exc})",
                       "client_closed") from None


def json_error(status: int, message: str, error_type: str) -> web.Response:
    return web.Response(status=status, body=error_body(message, error_type),
                        content_type=JSON_TYPE)


class Simulator:
    """One simulated server: configuration, token counter, scheduler, metrics, trace file."""

    def __init__(self, config: SimulatorConfig, counter: TokenCounter | None = None):
        self.config = config.check()
        self.counter = counter if counter is not None else TokenCounter.load(config.tokenizer)
        self.metrics = Metrics()
        self.metrics.set("tgi_batch_max_total_tokens", config.max_batch_total_tokens)
        self.inflight = 0
        self._rng = random.Random(config.seed)  # seeds of requests that bring none
        self.scheduler: Scheduler | None = None
        self._task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        # Unbuffered appends, one write per line: with --workers several processes append to
        # the one file, and O_APPEND keeps each whole line together.
        self._trace = open(config.trace, "ab", buffering=0) if config.trace else None
        # Like TGI's validation workers: real tokenization runs off the event loop so a long
        # prompt does not delay the batch's next step.
        self._pool = (ThreadPoolExecutor(max(1, config.validation_workers),
                                         thread_name_prefix="validation")
                      if self.counter.exact else None)
        self.url = ""
        self.port = 0
        self.ready = False

    # -- life cycle ----------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/info", self.info)
        r.add_get("/metrics", self.metrics_route)
        r.add_post("/generate", self.generate)
        r.add_post("/generate_stream", self.generate_stream)
        r.add_post("/", self.compat_generate)
        r.add_post("/invocations", self.compat_generate)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.models)
        r.add_post("/tokenize", self.tokenize)
        return app

    async def start(self) -> None:
        self.scheduler = Scheduler(self.config, on_step=self._on_step, on_finish=self._on_finish)
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run())
        self._runner = StampingAppRunner(self.build_app(), access_log=None,
                                         handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.hostname, self.config.port,
                           reuse_address=True, reuse_port=self.config.reuse_port or None)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else self.config.port
        host = self.config.hostname
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown}:{self.port}"
        self.ready = True

    async def stop(self) -> None:
        """End open streams with an error event (then a clean end of body) and close."""
        self.ready = False
        if self.scheduler is not None:
            self.scheduler.stop()
        await asyncio.sleep(0.05)  # let handlers finish their bodies
        if self._runner is not None:
            await self._runner.cleanup()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- bookkeeping -----------------------------------------------------------------------------
    def _on_step(self, method: str, cost_ns: int, size: int) -> None:
        m = self.metrics
        m.observe("tgi_batch_forward_duration", cost_ns / 1e9, method=method)
        m.inc("tgi_batch_inference_count", method=method)
        m.inc("tgi_batch_inference_success", method=method)
        if method == "prefill":
            m.observe("tgi_batch_next_size", size)
        self._set_gauges(reserved=True)

    def _on_finish(self, seq: Sequence) -> None:
        m = self.metrics
        if seq.status == 200 and seq.finish_reason is not None:
            total_ns, queue_ns, inference_ns = seq.spans_ns()
            m.inc("tgi_request_success")
            m.observe("tgi_request_duration", total_ns / 1e9)
            m.observe("tgi_request_queue_duration", queue_ns / 1e9)
            inference = inference_ns / 1e9
            m.observe("tgi_request_inference_duration", inference)
            m.observe("tgi_request_mean_time_per_token_duration",
                      inference / max(seq.generated, 1))
            m.observe("tgi_request_generated_tokens", seq.generated)
        else:
            m.inc("tgi_request_failure", err="generation" if seq.status != 499 else "cancelled")
        self._set_gauges(reserved=False)
        self.write_trace(seq.trace())

    def _set_gauges(self, *, reserved: bool) -> None:
        """The running batch's and the queue's sizes; with ``reserved``, the batch's reserved
        tokens too (after each step, not after each finished request)."""
        sched = self.scheduler
        if sched is None:
            return
        m = self.metrics
        m.set("tgi_batch_current_size", len(sched.running))
        m.set("tgi_queue_size", len(sched.queue))
        if reserved:
            m.set("tgi_batch_current_max_tokens", sched.reserved)

    def write_trace(self, row: dict[str, Any]) -> None:
        if self._trace is not None and not self._trace.closed:
            self._trace.write((json.dumps(row, separators=(",", ":")) + "\n").encode())

    def _trace_error(self, request: web.Request, route: str, stamps: tuple[int, int, int],
                     status: int, message: str) -> None:
        err = {429: "overloaded", 499: "cancelled"}.get(status, "validation")
        self.metrics.inc("tgi_request_failure", err=err)
        self.write_trace(trace_row(self._request_id(request), route, stamps, token_ns=[],
                                   end_ns=perf_counter_ns(), input_tokens=None, output_tokens=0,
                                   finish_reason=None, status=status, error=message))

    @staticmethod
    def _request_id(request: web.Request) -> str:
        return request.headers.get("X-Request-Id") or uuid.uuid4().hex

    # -- simple routes -------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        if not self.ready:
            return json_error(503, "unhealthy", "healthcheck")
        return web.Response(status=200)

    def info_dict(self) -> dict[str, Any]:
        """The body of /info (called on the server's event loop)."""
        c = self.config
        return {
            "model_id": c.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": c.max_concurrent_requests, "max_best_of": c.max_best_of,
            "max_stop_sequences": c.max_stop_sequences, "max_input_tokens": c.max_input_tokens,
            "max_total_tokens": c.max_total_tokens, "validation_workers": c.validation_workers,
            "max_client_batch_size": c.max_client_batch_size, "router": ROUTER_NAME,
            "version": TGI_VERSION, "sha": None, "docker_label": None, "simulated": True,
            "simulator": {
                "max_batch_size": c.max_batch_size,
                "max_batch_prefill_tokens": c.prefill_token_budget,
                "max_batch_total_tokens": c.max_batch_total_tokens,
                "waiting_served_ratio": c.waiting_served_ratio,
                "max_waiting_tokens": c.max_waiting_tokens,
                "prefill_base_ms": c.prefill_base_ms,
                "prefill_per_token_ms": c.prefill_per_token_ms,
                "decode_base_ms": c.decode_base_ms, "decode_per_seq_ms": c.decode_per_seq_ms,
                "decode_per_context_token_us": c.decode_per_context_token_us,
                "eos_probability": c.eos_probability,
                "tokenizer": self.counter.name,
                "arrival_clock": arrival_clock(asyncio.get_running_loop()),
                "token_counting": "tokenizer" if self.counter.exact else "ceil(utf8_bytes/4)",
            },
        }

    async def info(self, request: web.Request) -> web.Response:
        return web.json_response(self.info_dict())

    async def metrics_route(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            charset="utf-8")

    async def models(self, request: web.Request) -> web.Response:
        model = self.config.model_id
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": model}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            data = load_json(await read_body(request))
            if not isinstance(data, dict) or not isinstance(data.get("inputs"), str):
                raise ApiError(422, "Failed to deserialize the JSON body into the target type: "
                                    "missing field `inputs`", "validation")
        except ApiError as err:
            return json_error(err.status, err.message, err.error_type)
        tok = self.counter.tokenizer
        if tok is None:
            return json_error(404, "No fast tokenizer or tokenizer.json for this model",
                              "no_tokenizer")
        text = data["inputs"]
        encoding = tok(text, add_special_tokens=True, return_offsets_mapping=True)
        return web.json_response([
            {"id": i, "text": text[start:stop], "start": start, "stop": stop}
            for i, (start, stop) in zip(encoding["input_ids"], encoding["offset_mapping"])])

    # -- generation routes ---------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "/generate", self._parse_generate(False), None)

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "/generate_stream", self._parse_generate(True),
                                  TGI_STREAM)

    async def compat_generate(self, request: web.Request) -> web.StreamResponse:
        """TGI's ``POST /``: ``stream: true`` streams like /generate_stream, else a list."""
        return await self._handle(request, "/", None, None)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        parse = lambda data: parse_chat(data, self.counter, self.config)  # noqa: E731
        return await self._handle(request, "/v1/chat/completions", parse, CHAT_STREAM)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        parse = lambda data: parse_completion(data, self.counter, self.config)  # noqa: E731
        return await self._handle(request, "/v1/completions", parse, COMPLETION_STREAM)

    def _parse_generate(self, stream: bool) -> Callable[[Any], ValidRequest]:
        return lambda data: parse_generate(data, self.counter, self.config, stream=stream)

    async def _handle(self, request: web.Request, route: str,
                      parse: Callable[[Any], ValidRequest] | None,
                      stream_fmt: Any) -> web.StreamResponse:
        """Read the JSON body (400/499 when it cannot be), then serve the request."""
        handled = perf_counter_ns()
        read = request.get(READ_NS, handled)
        stamps = (request.get(ARRIVED_NS, read), read, handled)  # arrived, read, handled
        try:
            data = load_json(await read_body(request))
        except ApiError as err:
            return self._refuse(request, route, stamps, err)
        if parse is None:  # the compat route decides from the body
            stream = isinstance(data, dict) and data.get("stream") is True
            route, stream_fmt = ("/generate_stream", TGI_STREAM) if stream else ("/", None)
            parse = self._parse_generate(stream)
        return await self._serve(request, route, stamps, functools.partial(parse, data),
                                 stream_fmt)

    def _refuse(self, request: web.Request, route: str, stamps: tuple[int, int, int],
                err: ApiError) -> web.Response:
        self._trace_error(request, route, stamps, err.status, err.message)
        return json_error(err.status, err.message, err.error_type)

    async def _serve(self, request: web.Request, route: str, stamps: tuple[int, int, int],
                     parse: Callable[[], ValidRequest], stream_fmt: Any) -> web.StreamResponse:
        """Overload check, validation, queueing, then the streamed or whole response."""
        scheduler = self.scheduler
        if scheduler is None or not self.ready:
            return json_error(503, "unhealthy", "healthcheck")
        self.metrics.inc("tgi_request_count")
        if self.inflight >= self.config.max_concurrent_requests:
            return self._refuse(request, route, stamps,
                                ApiError(429, "Model is overloaded", "overloaded"))
        self.inflight += 1
        try:
            try:
                if self._pool is not None:
                    valid: ValidRequest = await asyncio.get_running_loop().run_in_executor(
                        self._pool, parse)
                else:
                    valid = parse()
            except ApiError as err:
                return self._refuse(request, route, stamps, err)
            except Exception as exc:  # the tokenizer failed on this input: TGI's wording
                return self._refuse(request, route, stamps, ApiError(
                    422, redact(f"Input validation error: tokenizer error {exc}"), "validation"))
            self.metrics.observe("tgi_request_input_length", valid.input_length)
            self.metrics.observe("tgi_request_max_new_tokens", valid.max_new_tokens)
            self.metrics.observe("tgi_request_validation_duration",
                                 (perf_counter_ns() - stamps[0]) / 1e9)
            fmt = stream_fmt if valid.stream else None
            # TGI draws a seed when none is given and reports it only when sampling.
            seed = valid.seed if valid.seed is not None else self._rng.getrandbits(63)
            seq = Sequence(request_id=self._request_id(request), route=route,
                           arrived_ns=stamps[0], read_ns=stamps[1], handled_ns=stamps[2],
                           input_length=valid.input_length,
                           max_new_tokens=valid.max_new_tokens, seed=seed,
                           reported_seed=seed if valid.do_sample else None,
                           eos_probability=self.config.eos_probability, stops=valid.stops,
                           model=self.config.model_id, created=_unix_seconds(),
                           fmt=fmt, include_usage=valid.include_usage, details=valid.details,
                           top_n=valid.top_n_tokens)
            if fmt is not None:
                return await self._stream(request, seq, scheduler)
            return await self._whole(request, seq, scheduler)
        finally:
            self.inflight -= 1

    async def _stream(self, request: web.Request, seq: Sequence,
                      scheduler: Scheduler) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await resp.prepare(request)
        # aiohttp's StreamWriter: flush the buffered headers now (TGI sends them at once) and
        # learn whether the body is chunked (HTTP/1.1) or delimited by closing (HTTP/1.0).
        writer = resp._payload_writer
        chunked = bool(getattr(writer, "chunked", False))
        if writer is not None:
            writer.send_headers()
        seq.channel = Channel(request.transport, chunked)
        scheduler.submit(seq)
        try:
            # Like axum's KeepAlive: a comment line when no event went out for 15 s.
            while True:
                sent = len(seq.token_ns)
                try:
                    await asyncio.wait_for(asyncio.shield(seq.done), self.config.keep_alive_s)
                    break
                except asyncio.TimeoutError:
                    if len(seq.token_ns) == sent and not seq.channel.send(b":\n\n"):
                        scheduler.cancel(seq)
        except asyncio.CancelledError:
            scheduler.cancel(seq)
            raise
        if seq.status == 499:
            scheduler.cancel(seq)
            return resp
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    async def _whole(self, request: web.Request, seq: Sequence,
                     scheduler: Scheduler) -> web.StreamResponse:
        seq.watch = request.transport
        scheduler.submit(seq)
        try:
            await asyncio.shield(seq.done)
        except asyncio.CancelledError:
            scheduler.cancel(seq)
            raise
        if seq.finish_reason is None:
            return json_error(424 if seq.status == 200 else seq.status,
                              f"Request failed during generation: {seq.error}", "generation")
        if seq.route == "/v1/chat/completions":
            body = chat_body(seq)
        elif seq.route == "/v1/completions":
            body = completion_body(seq)
        elif seq.route == "/":  # TGI's compat route answers a list of one response
            body = [generate_body(seq)]
        else:
            body = generate_body(seq)
        ms = 1_000_000
        total_ns, queue_ns, infer_ns = seq.spans_ns()
        headers = {  # TGI's names; times in whole milliseconds, x-compute-time in seconds
            "x-compute-type": "gpu+simulated",
            "x-compute-time": f"{total_ns / 1e9:.6f}",
            "x-total-time": str(total_ns // ms),
            "x-validation-time": str((seq.queued_ns - seq.arrived_ns) // ms),
            "x-queue-time": str(queue_ns // ms),
            "x-inference-time": str(infer_ns // ms),
            "x-time-per-token": str(infer_ns // max(seq.generated, 1) // ms),
            "x-prompt-tokens": str(seq.input_length),
            "x-generated-tokens": str(seq.generated),
        }
        return web.json_response(body, headers=headers)


# -- running outside asyncio (tests, tools) -------------------------------------------------------


class ThreadedSimulator:
    """A Simulator serving from its own event loop in a daemon thread."""

    def __init__(self, config: SimulatorConfig):
        self.config = config.replace(port=config.port or 0)
        self.simulator: Simulator | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return self.simulator.url if self.simulator else ""

    def start(self, timeout_s: float = 30.0) -> "ThreadedSimulator":
        self._thread = threading.Thread(target=self._main, name="tgi-simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise RuntimeError("the simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error
        return self

    def _main(self) -> None:
        loop = new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.simulator = Simulator(self.config)
            await self.simulator.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.simulator.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> "ThreadedSimulator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def run_in_thread(config: SimulatorConfig | None = None, **changes: Any
                  ) -> Iterator[ThreadedSimulator]:
    """``with run_in_thread(SimulatorConfig(...)) as sim: sim.url`` (free port, own loop)."""
    config = (config or SimulatorConfig()).replace(**changes) if changes else (
        config or SimulatorConfig())
    sim = ThreadedSimulator(config).start()
    try:
        yield sim
    finally:
        sim.stop()


def trace_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a trace file (one JSON object per line)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _unix_seconds() -> int:
    """Wall-clock seconds for OpenAI's ``created`` field (a label, never a measurement)."""
    return int(datetime.now(timezone.utc).timestamp())
