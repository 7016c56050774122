"""The simulator's settings: TGI launcher flag names, timing coefficients, and the argv parser.

    config = SimulatorConfig(max_batch_size=8, decode_per_seq_ms=5.0)
    config = parse_args(["--max-batch-size", "8", "--port", "0"])

Timing defaults describe roughly an 8B model in bf16 on one modern 80 GB GPU (A100/H100 class):
prefill about 8,000 prompt tokens/s, a decode step of about 10 ms at batch 1 that grows slowly
with the batch. They are documented in ``model.py`` and the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

DEFAULT_MODEL_ID = "simulated/tgi-model"
ROUTER_NAME = "tgi-benchmark-simulator"
TGI_VERSION = "3.3.6"


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything a simulated server needs. Field names follow ``text-generation-launcher``."""

    model_id: str = DEFAULT_MODEL_ID
    hostname: str = "127.0.0.1"
    port: int = 0
    max_input_tokens: int = 4095
    max_total_tokens: int = 4096
    max_batch_size: int | None = None
    max_batch_prefill_tokens: int | None = None
    max_batch_total_tokens: int = 200_000
    max_concurrent_requests: int = 128
    waiting_served_ratio: float = 1.2
    max_waiting_tokens: int = 20
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_client_batch_size: int = 4
    validation_workers: int = 2
    # Timing model (see model.py): a prefill step costs prefill_base_ms + prefill_per_token_ms
    # per admitted prompt token; a decode step costs decode_base_ms + decode_per_seq_ms per
    # running sequence + decode_per_context_token_us per token held in the KV cache.
    prefill_base_ms: float = 12.0
    prefill_per_token_ms: float = 0.12
    decode_base_ms: float = 10.0
    decode_per_seq_ms: float = 0.25
    decode_per_context_token_us: float = 0.06
    eos_probability: float = 0.0
    seed: int | None = None  # makes requests without a seed reproducible, in arrival order
    tokenizer: str | None = None
    trace: str | None = None
    startup_delay_s: float = 0.0
    keep_alive_s: float = 15.0  # an SSE comment line ":" after this long without an event
    # --workers N: N processes share the port (SO_REUSEPORT), each its own router and batch
    # with 1/N of the batch limits (see ``share``); reuse_port is set in those processes.
    workers: int = 1
    reuse_port: bool = False
    # Accepted for launcher compatibility, logged, otherwise ignored.
    revision: str | None = None
    quantize: str | None = None
    dtype: str | None = None
    num_shard: int | None = None
    trust_remote_code: bool = False

    @property
    def prefill_token_budget(self) -> int:
        """TGI's default --max-batch-prefill-tokens is max_input_tokens + 50."""
        if self.max_batch_prefill_tokens is not None:
            return self.max_batch_prefill_tokens
        return self.max_input_tokens + 50

    def check(self) -> "SimulatorConfig":
        """Raise ValueError (shown by argparse) for settings TGI's launcher would refuse."""
        if self.max_input_tokens < 1 or self.max_total_tokens < 2:
            raise ValueError("--max-input-tokens and --max-total-tokens must be positive")
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError(
                f"`max_input_tokens` must be < `max_total_tokens`, got "
                f"{self.max_input_tokens} and {self.max_total_tokens}")
        if self.prefill_token_budget < self.max_input_tokens:
            raise ValueError(
                f"`max_batch_prefill_tokens` must be >= `max_input_tokens`. Given: "
                f"{self.prefill_token_budget} and {self.max_input_tokens}")
        if self.max_batch_total_tokens < self.max_total_tokens:
            raise ValueError(
                f"`max_batch_total_tokens` must be >= `max_total_tokens`. Given: "
                f"{self.max_batch_total_tokens} and {self.max_total_tokens}")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ValueError("--max-batch-size must be at least 1")
        for name in ("waiting_served_ratio", "prefill_base_ms", "prefill_per_token_ms",
                     "decode_base_ms", "decode_per_seq_ms", "decode_per_context_token_us",
                     "eos_probability", "startup_delay_s", "keep_alive_s"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number")
        if self.waiting_served_ratio < 0 or self.max_waiting_tokens < 0:
            raise ValueError("--waiting-served-ratio and --max-waiting-tokens must not be negative")
        if self.max_concurrent_requests < 1:
            raise ValueError("--max-concurrent-requests must be at least 1")
        if not 0.0 <= self.eos_probability <= 1.0:
            raise ValueError("--eos-probability must be between 0 and 1")
        for name in ("prefill_base_ms", "prefill_per_token_ms", "decode_base_ms",
                     "decode_per_seq_ms", "decode_per_context_token_us", "startup_delay_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative")
        if self.keep_alive_s <= 0:
            raise ValueError("--keep-alive-s must be positive")
        if not 1 <= self.workers <= 256:
            raise ValueError("--workers must be between 1 and 256")
        if not 0 <= self.port <= 65535:
            raise ValueError("--port must be between 0 and 65535")
        return self

    def replace(self, **changes: Any) -> "SimulatorConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ZERO_COST = dict(prefill_base_ms=0.0, prefill_per_token_ms=0.0, decode_base_ms=0.0,
                 decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only when there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.simulator",
        formatter_class=_HelpFormatter,
        description="A simulated TGI server: TGI's HTTP API, continuous batching and a timing "
                    "model, no GPU. Flags named like text-generation-launcher's are accepted. "
                    "Results measured against it say how the benchmark tool behaves, not how a "
                    "model or a GPU performs.")
    d = SimulatorConfig()
    add = parser.add_argument
    add("--model-id", default=d.model_id, help="the name /info reports (nothing is loaded)")
    add("--hostname", default=d.hostname, help="address to listen on")
    add("-p", "--port", type=int, default=d.port,
        help="port to listen on (default 0: a free port, shown in the ready line)")
    add("--max-input-tokens", "--max-input-length", dest="max_input_tokens", type=int,
        default=None, help="longest prompt accepted (default: max total tokens - 1, or 4095)")
    add("--max-total-tokens", type=int, default=None,
        help="prompt + max_new_tokens limit per request (default: max(4096, max input + 1))")
    add("--max-batch-size", type=int, default=None,
        help="most sequences in a batch (default: no limit but the token budgets)")
    add("--max-batch-prefill-tokens", type=int, default=None,
        help="most prompt tokens admitted in one prefill (default: max input tokens + 50)")
    add("--max-batch-total-tokens", type=int, default=d.max_batch_total_tokens,
        help="KV-cache budget: sum of prompt + max_new_tokens over the batch")
    add("--max-concurrent-requests", type=int, default=d.max_concurrent_requests,
        help="requests in flight (queued or running) before answering 429")
    add("--waiting-served-ratio", type=float, default=d.waiting_served_ratio,
        help="while a batch runs, waiting requests join when at least this many times the "
             "running ones can be admitted together")
    add("--max-waiting-tokens", type=int, default=d.max_waiting_tokens,
        help="...or after this many decode steps without an admission")
    add("--max-best-of", type=int, default=d.max_best_of, help="largest best_of accepted")
    add("--max-stop-sequences", type=int, default=d.max_stop_sequences,
        help="most stop sequences per request")
    add("--max-top-n-tokens", type=int, default=d.max_top_n_tokens,
        help="largest top_n_tokens accepted")
    add("--max-client-batch-size", type=int, default=d.max_client_batch_size,
        help="reported in /info")
    add("--validation-workers", type=int, default=d.validation_workers,
        help="threads counting prompt tokens when a tokenizer is loaded")
    timing = parser.add_argument_group("timing model (see the module docstring of model.py)")
    timing.add_argument("--prefill-base-ms", type=float, default=d.prefill_base_ms,
                        help="fixed cost of a prefill step")
    timing.add_argument("--prefill-per-token-ms", type=float, default=d.prefill_per_token_ms,
                        help="prefill cost per admitted prompt token")
    timing.add_argument("--decode-base-ms", type=float, default=d.decode_base_ms,
                        help="fixed cost of a decode step")
    timing.add_argument("--decode-per-seq-ms", type=float, default=d.decode_per_seq_ms,
                        help="decode cost per running sequence")
    timing.add_argument("--decode-per-context-token-us", type=float,
                        default=d.decode_per_context_token_us,
                        help="decode cost per token held in the KV cache (microseconds)")
    timing.add_argument("--zero-cost", action="store_true",
                        help="all timing coefficients 0 (measures the HTTP path only)")
    add("--eos-probability", type=float, default=d.eos_probability,
        help="chance per decode step that a sequence ends early with eos_token")
    add("--seed", type=int, default=None,
        help="seed for requests that bring none (text and early stops then repeat from run "
             "to run; default: random)")
    add("--tokenizer", default=None,
        help="tokenizer folder or Hub id for AutoTokenizer (default: ceil(utf-8 bytes / 4))")
    add("--trace", default=None, help="append one JSON line per finished request to this file")
    add("--startup-delay", dest="startup_delay_s", type=float, default=d.startup_delay_s,
        help="seconds of pretend download, loading and warm-up before the port opens")
    add("--keep-alive-s", type=float, default=d.keep_alive_s,
        help="send an SSE comment line after this many seconds without an event")
    add("--workers", type=int, default=d.workers,
        help="processes serving the port (SO_REUSEPORT), each an independent server with "
             "1/N of --max-batch-size, --max-batch-total-tokens and --max-concurrent-requests "
             "(N replicas behind one port; the kernel spreads connections, not requests); "
             "their traces append whole lines to the one --trace file (default 1)")
    ignored = parser.add_argument_group("accepted for launcher compatibility (logged, ignored)")
    ignored.add_argument("--revision")
    ignored.add_argument("--quantize")
    ignored.add_argument("--dtype")
    ignored.add_argument("--num-shard", type=int)
    ignored.add_argument("--trust-remote-code", action="store_true")
    return parser


def share(config: SimulatorConfig, workers: int, port: int) -> SimulatorConfig:
    """One worker process's config: 1/``workers`` of the batch limits (rounded up, never
    below what one request needs), the shared ``port``, SO_REUSEPORT on."""
    def part(value: int) -> int:
        return max(1, -(-value // workers))
    return dataclasses.replace(
        config, workers=1, reuse_port=True, port=port,
        max_batch_size=None if config.max_batch_size is None else part(config.max_batch_size),
        max_batch_total_tokens=max(config.max_total_tokens, part(config.max_batch_total_tokens)),
        max_concurrent_requests=part(config.max_concurrent_requests))


def parse_args(argv: Sequence[str] | None = None) -> SimulatorConfig:
    """Parse argv into a checked SimulatorConfig (argparse exits with code 2 on bad input)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    values = vars(ns)
    zero = values.pop("zero_cost")
    max_input = values.pop("max_input_tokens")
    max_total = values.pop("max_total_tokens")
    # TGI's defaults: max_total = max(4096, max_input + 1); max_input = max_total - 1.
    if max_input is None and max_total is None:
        max_input, max_total = 4095, 4096
    elif max_input is None:
        max_input = max_total - 1
    elif max_total is None:
        max_total = max(4096, max_input + 1)
    values.update(max_input_tokens=max_input, max_total_tokens=max_total)
    if zero:
        values.update(ZERO_COST)
    try:
        return SimulatorConfig(**values).check()
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
