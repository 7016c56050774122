"""``python -m benchmark calibrate``: output complete and sane (never its timing), pure parts exact.

The quick calibration runs once for the module (a simulator subprocess, the real engine); the
numbers it measures depend on the machine, so only their presence and sanity are checked.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.calibration import (CALIBRATION_FILE, QUICK_LEVELS, Row, decide, is_accurate,
                                 load_latest, markdown_table, match_errors, summarize_level,
                                 verdict_for)
from benchmark.core.records import RequestRecord

ROOT = Path(__file__).resolve().parents[2]
MS = 1_000_000


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Run ``python -m benchmark calibrate --quick`` once; return (process, out dir, results)."""
    base = tmp_path_factory.mktemp("calibrate")
    results, out = base / "results", base / "out"
    env = {**os.environ, "RESULTS_DIR": str(results), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmark", "calibrate", "--quick",
                           "--output-dir", str(out)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=240)
    return proc, out, results


def _numbers(row: dict) -> list[float]:
    return [v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_quick_calibration_prints_a_complete_table_and_a_verdict(quick):
    proc, out, _ = quick
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| users |"))
    for title in ("TTFT client p50", "TTFT server p50", "TTFT err p50", "TTFT err p99",
                  "send→server p50", "1st token delivery p50",
                  "token err p50", "token err p99", "token events/s", "client CPU %"):
        assert title in header
    table = lines[lines.index(header):]
    table = table[:table.index("")] if "" in table else table  # the concurrency table only
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    assert rows, proc.stdout
    levels = [int(line.split("|")[1]) for line in rows]
    assert levels == list(QUICK_LEVELS[:len(levels)])  # climbs in order, may stop early
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(header.strip("|").split("|"))
        assert cells[1] != "-" and cells[3] != "-"   # TTFT measured on both sides
    sentence = next(line for line in lines if line.startswith("This machine "))
    assert "concurrent" in sentence or "concurrency" in sentence
    assert f"{out / CALIBRATION_FILE}" in proc.stdout


def test_quick_calibration_json_is_complete_and_finite(quick):
    proc, out, results = quick
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / CALIBRATION_FILE).read_text())
    assert data["kind"] == "calibration" and data["schema_version"] == 1
    assert data["tool"]["name"] == "tgi-benchmark" and data["tool"]["version"]
    assert data["environment"]["cpu_count"] >= 1
    assert data["settings"]["quick"] is True
    assert data["started_at"] and data["ended_at"]
    assert data["rows"], "no level measured"
    for row in data["rows"]:
        assert row["requests"] > 0 and row["matched"] == row["requests"] - row["failed"]
        for value in _numbers(row):
            assert math.isfinite(value)
        for key in ("ttft_client_p50_ms", "ttft_server_p50_ms", "ttft_error_p50_ms",
                    "token_error_p50_ms", "token_error_p99_ms", "token_events_per_s"):
            assert row[key] is not None, key
        assert row["ttft_client_p50_ms"] > 0 and row["ttft_server_p50_ms"] > 0
        assert row["token_events_per_s"] > 0
    verdict = data["verdict"]
    assert verdict["sentence"] in proc.stdout
    assert verdict["highest_measured"] == data["rows"][-1]["concurrency"]
    users = data["concurrency_rows"]          # the concurrency pattern, at the same levels
    assert users and [r["concurrency"] for r in users] == [
        r["concurrency"] for r in data["rows"]][:len(users)]
    for row in users:
        assert row["matched"] == row["requests"] - row["failed"] and row["requests"] > 0
        assert row["ttft_error_p50_ms"] is not None and row["token_events_per_s"] > 0
    assert "Concurrency pattern" in proc.stdout
    # The app's copy is the same document.
    assert load_latest(results) == data


def test_calibrate_help_and_bad_flags():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "benchmark", "calibrate", "--help"],
                        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--quick" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmark", "calibrate", "--concurrency", "0"],
                         cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "concurrency" in bad.stderr


# -- the pure parts ------------------------------------------------------------------------------


def _record(request_id: str, sent: int, tokens: list[int], *, error: str | None = None
            ) -> RequestRecord:
    return RequestRecord(step=2, run=1, request=1, scheduled_ns=sent - 2 * MS, sent_ns=sent,
                         token_ns=tokens, end_ns=tokens[-1] if tokens else sent,
                         output_tokens=len(tokens), request_id=request_id, error=error)


def test_errors_are_client_minus_server_matched_by_request_id():
    # Server: arrived 0.25 ms after the client sent, read by its event loop 3 ms later, tokens
    # at 10 ms steps; the client stamps each token 0.5 ms after the server wrote it, the last
    # one 2.5 ms after.
    server_tokens = [20 * MS, 30 * MS, 40 * MS]
    client_tokens = [20 * MS + MS // 2, 30 * MS + MS // 2, 40 * MS + 5 * MS // 2]
    record = _record("a", 0, client_tokens)
    other = _record("not-in-trace", 0, client_tokens)
    trace = {"a": {"request_id": "a", "arrived_ns": MS // 4, "read_ns": MS // 4 + 3 * MS,
                   "token_ns": server_tokens, "output_tokens": 3, "status": 200}}
    samples = match_errors([record, other], trace)
    assert samples.matched == 1
    assert samples.ttft_client == [20.5] and samples.ttft_server == [19.75]
    assert samples.ttft_error == [0.75]
    assert samples.send_to_server == [0.25] and samples.first_delivery == [0.5]
    # The server's own wait before reading is in both TTFTs: shown, never an error.
    assert samples.read_wait == [3.0]
    assert samples.token_client == [11.0] and samples.token_server == [10.0]
    assert samples.token_error == [1.0]
    assert samples.itl_error == [0.0, 2.0]
    assert samples.delivery == [0.5, 0.5, 2.5]
    assert samples.dispatch == [2.0, 2.0]

    row = summarize_level(2, [record], trace, window_s=0.5, client_cpu_s=0.25,
                          server_cpu_s=0.1, tolerance_ms=1.0, arrival_clock="kernel")
    assert row.ttft_error_p50_ms == 0.75 and row.token_error_p99_ms == 1.0
    assert row.server_read_wait_p50_ms == 3.0 and row.arrival_clock == "kernel"
    # 3 events over the round's span: scheduled at -2 ms, last byte at 42.5 ms.
    assert row.token_events_per_s == round(3 / 0.0445, 1) and row.client_cpu_pct == 50.0
    assert row.server_cpu_pct == 20.0
    # Judged end to end: TTFT error 0.75 ms and token latency error 1 ms are within 1 ms (the
    # 3 ms read wait is not an error) ...
    assert row.accurate is True
    # ... and a tolerance under the token latency error fails it.
    assert summarize_level(2, [record], trace, window_s=0.5, client_cpu_s=None,
                           server_cpu_s=None, tolerance_ms=0.9).accurate is False


def test_ttft_error_is_judged_end_to_end_not_only_the_first_token_delivery():
    # First-token delivery is 0.2 ms, but the request reached the server 1.3 ms after the
    # client's send stamp: the client's TTFT is 1.5 ms off, beyond a 1 ms tolerance.
    record = _record("a", 0, [11 * MS + MS // 2, 21 * MS + MS // 2])
    trace = {"a": {"request_id": "a", "arrived_ns": 1300 * MS // 1000,
                   "token_ns": [11 * MS + 3 * MS // 10, 21 * MS + 3 * MS // 10],
                   "output_tokens": 2, "status": 200}}
    row = summarize_level(1, [record], trace, window_s=1, client_cpu_s=None,
                          server_cpu_s=None)
    assert row.first_delivery_p50_ms == 0.2 and row.ttft_error_p50_ms == 1.5
    assert row.accurate is False


def test_failed_or_unmatched_requests_are_never_accurate():
    good = _record("a", 0, [10 * MS, 20 * MS])
    trace = {"a": {"request_id": "a", "arrived_ns": 0, "token_ns": [10 * MS, 20 * MS],
                   "output_tokens": 2, "status": 200}}
    assert summarize_level(1, [good], trace, window_s=1, client_cpu_s=None,
                           server_cpu_s=None).accurate
    failed = _record("b", 0, [10 * MS], error="HTTP 500: boom")
    row = summarize_level(1, [good, failed], trace, window_s=1, client_cpu_s=None,
                          server_cpu_s=None)
    assert row.failed == 1 and not row.accurate
    assert not summarize_level(1, [good], {}, window_s=1, client_cpu_s=None,
                               server_cpu_s=None).accurate


def _row(concurrency: int, error: float, rate: float = 1000.0) -> Row:
    row = Row(concurrency=concurrency, requests=10, matched=10, failed=0,
              ttft_client_p50_ms=20.0, ttft_server_p50_ms=20.0 - error,
              ttft_error_p50_ms=error, ttft_error_p99_ms=error * 2,
              send_to_server_p50_ms=error / 2, send_to_server_p99_ms=error,
              first_delivery_p50_ms=error / 2, first_delivery_p99_ms=error,
              token_client_p50_ms=10.0,
              token_server_p50_ms=10.0, token_error_p50_ms=0.01, token_error_p99_ms=0.1,
              itl_server_p50_ms=10.0, itl_error_p50_ms=0.0, itl_error_p99_ms=0.5,
              delivery_p50_ms=0.2, delivery_p99_ms=1.0, dispatch_p50_ms=1.0,
              dispatch_p99_ms=2.0, token_events_per_s=rate, client_cpu_pct=40.0,
              server_cpu_pct=30.0)
    return Row(**{**row.__dict__, "accurate": is_accurate(row)})


def test_verdict_is_the_highest_level_of_the_unbroken_accurate_run():
    rows = [_row(1, 0.2, 100), _row(16, 0.4, 1600), _row(64, 3.0, 6000), _row(128, 0.5, 9000)]
    verdict = decide(rows, stopped_because="the error reached 3 ms")
    assert verdict.accurate_concurrency == 16 and verdict.accurate_token_rate == 1600
    assert "up to 16 concurrent streams" in verdict.sentence
    assert "1,600 token events/s" in verdict.sentence
    assert "more client processes" in verdict.sentence
    none = decide([_row(1, 5.0)])
    assert none.accurate_concurrency is None and "did not measure within 1 ms" in none.sentence
    # Accurate up to the top level measured: it says how to measure further.
    top = decide([_row(1, 0.1), _row(64, 0.2)])
    assert "up to 64" in top.sentence and "with higher --concurrency levels" in top.sentence
    assert "without --quick" in decide([_row(1, 0.1), _row(64, 0.2)], quick=True).sentence


def test_verdict_for_warns_only_beyond_the_accurate_concurrency():
    calibration = {"kind": "calibration", "ended_at": "2026-11-28T17:00:00+00:00",
                   "settings": {"tolerance_ms": 1.0},
                   "verdict": decide([_row(1, 0.1), _row(16, 0.2), _row(64, 4.0)],
                                     stopped_because="x").to_dict()}
    assert verdict_for(1, calibration) is None
    assert verdict_for(16, calibration) is None
    warning = verdict_for(32, calibration)
    assert warning is not None and "32" in warning and "16" in warning
    assert "more client processes" in warning
    assert verdict_for(32, None) is None
    assert verdict_for(32, {"kind": "calibration"}) is None
    never = {"settings": {"tolerance_ms": 1.0}, "verdict": decide([_row(1, 9.0)]).to_dict()}
    assert "not confirmed" in (verdict_for(1, never) or "")
    # Everything measured was accurate: above the top, the warning says it was not measured.
    all_good = {"settings": {"tolerance_ms": 1.0},
                "verdict": decide([_row(1, 0.1), _row(64, 0.2)]).to_dict()}
    assert verdict_for(64, all_good) is None
    assert "calibrate" in (verdict_for(256, all_good) or "")


def test_markdown_table_marks_missing_numbers_and_accuracy():
    row = _row(4, 0.3)
    empty = Row(**{**row.__dict__, "concurrency": 8, "client_cpu_pct": None, "accurate": False})
    text = markdown_table([row, empty])
    lines = text.splitlines()
    assert lines[0].startswith("| users |") and len(lines) == 4
    assert "| 4 |" in lines[2] and "yes (≤1 ms)" in lines[2] and "+0.30" in lines[2]
    assert lines[3].rstrip().endswith("| no |") and " - |" in lines[3]


def test_token_stamps_come_from_socket_reads_with_bytes():
    """The stamps calibration checks are taken when bytes come off the socket; aiohttp's own
    data_received(b"") calls (each time a buffer is read) must not move them."""
    import asyncio
    import time

    from benchmark.core.clients.base import _StampingHandler

    loop = asyncio.new_event_loop()
    try:
        handler = _StampingHandler(loop=loop)
        handler.data_received(b"")
        assert handler.received_ns == 0
        before = time.perf_counter_ns()
        handler.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        stamp = handler.received_ns
        assert before <= stamp <= time.perf_counter_ns()
        handler.data_received(b"")
        assert handler.received_ns == stamp
    finally:
        loop.close()


def test_quick_calibration_measures_the_rate_schedule(quick):
    proc, out, _ = quick
    assert proc.returncode == 0, proc.stderr[-2000:]
    schedule = json.loads((out / CALIBRATION_FILE).read_text())["schedule"]
    rows = schedule["rows"]
    assert [(r["rate"], r["arrivals"]) for r in rows] == [(100, "poisson"), (100, "constant")]
    for row in rows:
        assert row["requests"] > 100 and row["matched"] == row["requests"]
        for key in ("sent_rate", "scheduled_rate", "lag_p50_ms", "lag_p99_ms", "server_cv"):
            assert row[key] is not None and math.isfinite(row[key]), key
        assert row["kept"] == (row["missed"] == [])
    assert schedule["sentence"] in proc.stdout
    assert "| rate | arrivals |" in proc.stdout


def _rate_record(number: int, scheduled: int, lag: int) -> RequestRecord:
    return RequestRecord(step=100, run=1, request=number, scheduled_ns=scheduled,
                         step_start_ns=0, queued_ns=scheduled, admitted_ns=scheduled,
                         sent_ns=scheduled + lag, token_ns=[scheduled + lag + MS],
                         end_ns=scheduled + lag + 2 * MS, output_tokens=1,
                         request_id=f"r-{number}")


def test_schedule_rows_compare_send_times_with_the_drawn_ones_and_the_server_arrivals():
    from benchmark.calibration.analysis import schedule_verdict, summarize_schedule

    records = [_rate_record(i, i * 10 * MS, 100_000) for i in range(1, 101)]
    trace = {r.request_id: {"arrived_ns": r.sent_ns + 50_000} for r in records}
    row = summarize_schedule(100, "constant", records, trace)
    assert row.requests == row.matched == 100 and row.failed == 0
    assert row.scheduled_rate == pytest.approx(100) and row.rate_ratio == pytest.approx(1)
    assert row.lag_p50_ms == pytest.approx(0.1) and row.server_cv == pytest.approx(0, abs=1e-9)
    assert row.kept
    # A client that sends one request in ten 3 ms late: even gaps at the server no more.
    late = [_rate_record(i, i * 10 * MS, (i % 10 == 0) * 3 * MS) for i in range(1, 101)]
    jittery = summarize_schedule(100, "constant", late,
                                 {r.request_id: {"arrived_ns": r.sent_ns} for r in late})
    assert "server CV" in jittery.missed() and "lag p50" not in jittery.missed()
    assert "lag p99" not in jittery.missed()
    slow = summarize_schedule(200, "constant", late[:50],
                              {r.request_id: {"arrived_ns": r.sent_ns} for r in late[:50]})
    assert schedule_verdict([row, slow]) [0] == 100
    assert schedule_verdict([jittery])[0] is None
    unmatched = summarize_schedule(100, "constant", records, {})
    assert "failed requests" in unmatched.missed()
