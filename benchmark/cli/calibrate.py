"""``python -m benchmark calibrate``: how accurately this machine measures, and up to where.

    python -m benchmark calibrate            # 1, 16, 64, 128, 256, ... concurrent streams
    python -m benchmark calibrate --quick    # a few seconds (CI)

It starts the simulated TGI server (``python -m benchmark.simulator --trace FILE``) on a free
port with a fixed timing model (10 ms per prefill, exactly 10 ms per decode step whatever the
batch), then runs the real engine (``engine.run``, TGI's round pattern) against it at increasing
concurrency. The server stamps, on the same monotonic clock (``perf_counter_ns``, shared by every
process of the machine), when each request arrived and when each token's bytes were written to
the socket. Arrival is the kernel's receive time of the request's first bytes (Linux), so the
reference does not depend on how busy the simulator's own event loop is. Every request the
engine measured is matched to the server's trace row by its ``X-Request-Id``, and the error is
**client-measured minus server-traced**:

- TTFT error: (first token arrived - request sent, as the engine reports it) minus (first token
  written - request arrived, in the server); it is send->server (client send stamp to kernel
  arrival) plus first-token delivery (server write to client stamp);
- token latency error: the engine's decode token latency ((last - first token) / (tokens - 1))
  minus the same from the server's stamps;
- dispatch lag (shown, not an error of the reported numbers): how long requests of a round
  waited in the client before their bytes went out; the engine reports it separately.

The table has one row per concurrency; the run stops at the first level where an error passes
``--max-error-ms``, the client process uses more than ``--max-cpu`` % of a core, requests fail, or
the simulated server itself falls behind its 10 ms step. It ends with one sentence: the highest
concurrency (and token rate) measured within ``--tolerance-ms`` (1 ms), and a warning to use more
client processes or a bigger machine above it.

Then it runs the concurrency pattern (N virtual users, ``--runs`` requests each) at the same
levels, up to the highest the rounds reached, and prints the same columns for it: there,
requests end and restart together, which rounds never do (the verdict stays the rounds').

Then it measures the rate mode's schedule (``--rates``, default 100, 500, 1000 requests/s,
Poisson and constant arrivals, ``--rate-duration`` seconds each, 16-token requests against a
``--zero-cost`` simulator): achieved send rate against the drawn schedule, schedule lag p50 and
p99, and the spread of the gaps between the server's kernel arrival stamps; it says the
highest rate this machine keeps within the bounds (``--rates none`` skips it).

``--workers 1,2,4`` climbs once per engine worker-process count and prints, for each, the highest
level within the tolerance and which count a load needs (``workers`` in calibration.json);
``--simulator-workers N`` runs the simulated server as N processes sharing its port.

Files: ``calibration.json`` in ``--output-dir`` (default ``$RESULTS_DIR/calibration-<date>``),
and a copy of the latest one at ``$RESULTS_DIR/calibration.json`` for the app, which calls
``verdict_for(concurrency, load_latest())`` to show a warning beside runs beyond the verdict.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from ..calibration.analysis import (DEFAULT_LEVELS, DEFAULT_RATES, NOTE, QUICK_LEVELS,
                                    QUICK_RATES, CalibrationSettings, Row, ScheduleRow,
                                    markdown_table, schedule_table, schedule_verdict)
from ..calibration.measure import (CALIBRATION_FILE, calibrate, latest_path, measure_schedules,
                                   write_json)
from ..config import parse_batch_sizes, parse_float, parse_int, parse_rates
from ..core.results import results_root
from ..errors import BenchmarkError, ConfigError, redact
from .exits import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK

__all__ = ["build_parser", "settings_from_args", "main"]


def _checked(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``parse(*args, **kwargs)`` (a parser of config.py), its ConfigError as argparse's error."""
    try:
        return parse(*args, **kwargs)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message) from None


def _levels(text: str) -> tuple[int, ...]:
    return _checked(parse_batch_sizes, text, "concurrency")  # 1..MAX_BATCH_SIZE (8192)


def _workers(text: str) -> tuple[int, ...]:
    return _checked(parse_batch_sizes, text, "workers")


def _rates(text: str) -> tuple[float, ...]:
    if text.strip().lower() == "none":
        return ()
    return _checked(parse_rates, text, "rates")


def _positive(text: str) -> float:
    return _checked(parse_float, "value", text, minimum=0.0, exclusive_minimum=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmark calibrate",
        description="Measure this machine's own measurement error: a simulated TGI server "
                    "with a known timing and a trace, the engine at increasing concurrency, "
                    "client minus server per request.")
    p.add_argument("--quick", action="store_true",
                   help=f"short version for CI: concurrency {','.join(map(str, QUICK_LEVELS))},"
                        f" 16 tokens, 2 rounds (a few seconds)")
    p.add_argument("--concurrency", type=_levels, default=None, metavar="N[,N...]",
                   help=f"levels to climb (default {','.join(map(str, DEFAULT_LEVELS))})")
    p.add_argument("--decode-length", type=int, default=None, help="tokens per request "
                   "(default 64; --quick 16)")
    p.add_argument("--runs", type=int, default=None, help="measured rounds per level "
                   "(default 5; --quick 2)")
    p.add_argument("--token-ms", type=_positive, default=10.0,
                   help="the simulated server's decode step in ms (default 10)")
    p.add_argument("--tolerance-ms", type=_positive, default=1.0,
                   help="what counts as accurate (default 1 ms)")
    p.add_argument("--max-error-ms", type=_positive, default=10.0,
                   help="stop climbing once an error passes this (default 10 ms)")
    p.add_argument("--max-cpu", type=_positive, default=90.0, metavar="PCT",
                   help="stop climbing once the client uses this %% of a core (default 90)")
    p.add_argument("--rates", type=_rates, default=None, metavar="R[,R...]",
                   help=f"request rates at which the rate mode's schedule is measured (default "
                        f"{','.join(map(str, DEFAULT_RATES))}; --quick "
                        f"{','.join(map(str, QUICK_RATES))}; 'none' skips it)")
    p.add_argument("--rate-duration", type=_positive, default=None, metavar="S",
                   help="seconds per rate and arrival kind (default 10; --quick 2)")
    p.add_argument("--workers", type=_workers, default=(1,), metavar="N[,N...]",
                   help="climb once per engine worker-process count (e.g. 1,2,4) and say which "
                        "count a load needs (default 1)")
    p.add_argument("--simulator-workers", type=int, default=1, metavar="N",
                   help="processes of the simulated server sharing its port, so that the "
                        "server is not the limit (default 1)")
    p.add_argument("--tokenizer-name", default=None,
                   help="tokenizer for the prompts (default: a tiny one built offline)")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="folder for calibration.json (default $RESULTS_DIR/calibration-<date>)")
    p.add_argument("--no-latest", action="store_true",
                   help="do not update $RESULTS_DIR/calibration.json (the app's copy)")
    return p


def settings_from_args(args: argparse.Namespace) -> CalibrationSettings:
    quick = bool(args.quick)
    levels = args.concurrency or (QUICK_LEVELS if quick else DEFAULT_LEVELS)
    decode = _checked(parse_int, "decode_length", args.decode_length or (16 if quick else 64),
                      minimum=2, maximum=4096)
    runs = _checked(parse_int, "runs", args.runs or (2 if quick else 5), minimum=1, maximum=100)
    return CalibrationSettings(levels=tuple(levels), token_ms=args.token_ms,
                               prefill_ms=args.token_ms, decode_length=decode, runs=runs,
                               tolerance_ms=args.tolerance_ms, max_error_ms=args.max_error_ms,
                               max_cpu_pct=args.max_cpu, quick=quick,
                               workers=tuple(args.workers),
                               simulator_workers=_checked(parse_int, "simulator_workers",
                                                          args.simulator_workers, minimum=1,
                                                          maximum=256))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = settings_from_args(args)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(args.output_dir) if args.output_dir else results_root() / f"calibration-{stamp}"
    print(f"Calibrating: simulated TGI server ({settings.token_ms:g} ms per token) on this "
          f"machine, concurrency {', '.join(map(str, settings.levels))} ...", file=sys.stderr,
          flush=True)

    def on_row(row: Row, unit: str = "streams") -> None:
        if len(settings.workers) > 1 and unit == "streams":
            unit = f"streams, {row.workers} worker{'s' if row.workers > 1 else ''}"
        print(f"  {row.concurrency:>5} {unit}: TTFT error p50 {_fmt(row.ttft_error_p50_ms)} ms "
              f"(send→server {_fmt(row.send_to_server_p50_ms)}, first token delivery "
              f"{_fmt(row.first_delivery_p50_ms)}), "
              f"token latency error p99 {_fmt(row.token_error_p99_ms)} ms, "
              f"{_fmt(row.token_events_per_s, '{:,.0f}')} token events/s, client CPU "
              f"{_fmt(row.client_cpu_pct, '{:.0f}')}%", file=sys.stderr, flush=True)

    def on_schedule(row: ScheduleRow) -> None:
        print(f"  {row.rate:>6g} req/s {row.arrivals:8}: sent/scheduled "
              f"{_fmt(row.rate_ratio, '{:.4f}')}, lag p50 {_fmt(row.lag_p50_ms, '{:.3f}')} ms "
              f"p99 {_fmt(row.lag_p99_ms, '{:.3f}')} ms, server CV "
              f"{_fmt(row.server_cv, '{:.4f}')}", file=sys.stderr, flush=True)

    rates = args.rates if args.rates is not None else (
        QUICK_RATES if settings.quick else DEFAULT_RATES)
    try:
        result = calibrate(settings, tokenizer=args.tokenizer_name, on_row=on_row,
                           on_concurrency_row=lambda row: on_row(row, "users (concurrency)"))
        if rates:
            print(f"Measuring the request-rate schedule at {', '.join(f'{r:g}' for r in rates)}"
                  f" requests/s ...", file=sys.stderr, flush=True)
            result.schedule = measure_schedules(
                rates, ("poisson", "constant"), tokenizer=args.tokenizer_name,
                duration_s=args.rate_duration or (2.0 if settings.quick else 10.0),
                on_row=on_schedule)
    except BenchmarkError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Calibration interrupted; nothing was saved.", file=sys.stderr)
        return EXIT_CANCELLED
    document = result.to_dict()
    try:
        write_json(folder / CALIBRATION_FILE, document)
        if not args.no_latest:
            write_json(latest_path(), document)
    except OSError as err:
        print(markdown_table(result.rows, settings.tolerance_ms))
        print(f"error: could not save the calibration ({err.strerror or err}: "
              f"{err.filename or folder}); choose a writable --output-dir or RESULTS_DIR.",
              file=sys.stderr)
        return EXIT_ERROR
    print(markdown_table(result.rows, settings.tolerance_ms))
    print()
    print(NOTE)
    if result.stopped_because:
        print(f"Stopped climbing: {result.stopped_because}.")
    print(result.verdict.sentence)
    workers = result.workers_dict()
    if workers is not None:
        for count in sorted(set(settings.workers))[1:]:
            print()
            print(f"With --workers {count}:")
            print()
            print(markdown_table([r for r in result.worker_rows if r.workers == count],
                                 settings.tolerance_ms))
        print()
        print(workers["sentence"])
    if result.concurrency_rows:
        print()
        print("Concurrency pattern (N virtual users, each sending its next request as soon as "
              "its last one ended; requests end and restart together):")
        print()
        print(markdown_table(result.concurrency_rows, settings.tolerance_ms))
    if result.schedule:
        print()
        print(schedule_table(result.schedule))
        print(schedule_verdict(result.schedule)[1])
    print(f"Saved: {folder / CALIBRATION_FILE}")
    return EXIT_OK


def _fmt(value: float | None, fmt: str = "{:+.3f}") -> str:
    return "-" if value is None else fmt.format(value)

