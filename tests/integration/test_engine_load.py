"""Load patterns (timing only) and the progress stream / console bar."""

from __future__ import annotations

import io
import json

import pytest

from benchmark.core.patterns import Concurrency, Rounds, Slot, pattern_for
from benchmark.core.progress import ConsoleProgress, JsonLinesProgress, fan_out


def test_rounds_send_warmups_first_then_measured_rounds():
    rounds = list(Rounds(batch_size=3, runs=2, warmups=1).rounds())
    assert [(r.run, r.warmup) for r in rounds] == [(1, True), (1, False), (2, False)]
    assert rounds[1].slots == (Slot(3, 1, 1), Slot(3, 1, 2), Slot(3, 1, 3))
    assert all(s.warmup for s in rounds[0].slots)
    assert Rounds(3, 2, 1).total == 9


def test_concurrency_stops_after_the_request_count():
    pattern = Concurrency(2, requests=5)
    pattern.start(0)
    slots = []
    for _ in range(10):
        for user in (0, 1):
            slot = pattern.next_slot(user, 0)
            if slot is not None:
                slots.append(slot)
    assert len(slots) == 5
    assert [s.request for s in slots if s.run == 1] == [1, 2, 3]
    assert [s.request for s in slots if s.run == 2] == [1, 2]
    assert all(s.step == 2 and not s.warmup for s in slots)


def test_concurrency_stops_at_the_deadline():
    pattern = Concurrency(4, duration_s=2.0)
    pattern.start(1_000)
    assert pattern.next_slot(0, 1_000 + int(1.9e9)) is not None
    assert pattern.next_slot(1, 1_000 + int(2e9)) is None
    assert pattern.elapsed_s(1_000 + int(0.5e9)) == pytest.approx(0.5)


def test_pattern_for_mode():
    assert isinstance(pattern_for("rounds", 4, runs=2, warmups=1), Rounds)
    assert isinstance(pattern_for("concurrency", 4, runs=2, warmups=1, requests=3), Concurrency)
    with pytest.raises(ValueError):
        Concurrency(2)


EVENTS = [
    {"event": "start", "run_id": "r1", "output_dir": "out", "steps": [1, 2],
     "planned_requests": 6, "simulated": True},
    {"event": "step_start", "step": 1, "index": 1, "of": 2},
    {"event": "round_done", "step": 1, "run": 1, "runs": 2, "warmup": False, "errors": 0},
    {"event": "round_done", "step": 1, "run": 2, "runs": 2, "warmup": False, "errors": 1},
    {"event": "step_done", "step": 1},
    {"event": "warning", "message": "Outputs were shorter than asked"},
    {"event": "step_start", "step": 2, "index": 2, "of": 2},
    {"event": "round_done", "step": 2, "run": 1, "runs": 2, "warmup": False, "errors": 0},
    {"event": "round_done", "step": 2, "run": 2, "runs": 2, "warmup": False, "errors": 0},
    {"event": "step_done", "step": 2},
    {"event": "done", "status": "complete", "message": None, "output_dir": "out"},
]


def test_json_lines_one_flushed_object_per_line(tmp_path):
    path = tmp_path / "deep" / "progress.jsonl"
    with JsonLinesProgress.open(path) as stream:
        stream(EVENTS[0])
        assert json.loads(path.read_text()) == EVENTS[0]  # visible before close
        for event in EVENTS[1:]:
            stream(event)
    assert [json.loads(line) for line in path.read_text().splitlines()] == EVENTS


def test_console_bar_without_a_terminal_prints_plain_lines():
    out = io.StringIO()
    bar = ConsoleProgress(out, tty=False)
    for event in EVENTS:
        bar(event)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Benchmark r1: batch sizes 1, 2") and "SIMULATED" in lines[0]
    assert "\r" not in out.getvalue() and "\033" not in out.getvalue()
    assert any("33%" in line and "batch size 1 (1/2)" in line and "1 error" in line
               for line in lines)
    assert any("100%" in line for line in lines)
    assert "warning: Outputs were shorter than asked" in lines
    assert lines[-1] == "Run complete"


def test_console_bar_on_a_terminal_redraws_in_place():
    out = io.StringIO()
    bar = ConsoleProgress(out, tty=True)
    for event in EVENTS[:4]:
        bar(event)
    assert out.getvalue().count("\r") == 3


def test_fan_out_calls_each():
    seen: list[tuple[str, str]] = []
    call = fan_out(lambda e: seen.append(("a", e["event"])), None,
                   lambda e: seen.append(("b", e["event"])))
    call({"event": "x"})
    assert seen == [("a", "x"), ("b", "x")]


def test_console_bar_in_concurrency_mode_counts_requests_and_errors():
    out = io.StringIO()
    bar = ConsoleProgress(out, tty=False)
    bar({"event": "start", "run_id": "r", "output_dir": "o", "steps": [2],
         "planned_requests": None, "simulated": False})
    bar({"event": "step_start", "step": 2, "index": 1, "of": 1})
    bar({"event": "requests_done", "step": 2, "done": 7, "total": None, "elapsed_s": 3.2,
         "errors": 2})
    bar({"event": "step_done", "step": 2})
    assert "7 requests  batch size 2 (1/1)  3 s  2 errors" in out.getvalue()


def test_console_bar_without_a_terminal_also_prints_every_few_seconds():
    out = io.StringIO()
    bar = ConsoleProgress(out, tty=False, line_every_s=0.0)
    for event in EVENTS[:4]:
        bar(event)
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if "batch size 1 (1/2)" in line]) == 3


def test_console_names_rate_steps_as_rates():
    from benchmark.core.progress import RequestsDone, Start, StepDone, StepStart

    out = io.StringIO()
    bar = ConsoleProgress(out, tty=False)
    bar(Start(run_id="r", output_dir="o", steps=(2.5, 10), planned_requests=None,
              simulated=False, mode="rate"))
    bar(StepStart(step=2.5, index=1, of=2))
    bar(RequestsDone(step=2.5, done=5, total=5, elapsed_s=2.0, errors=0))
    bar(StepDone(step=2.5))
    text = out.getvalue()
    assert "rates (requests/s) 2.5, 10" in text and "2.5 requests/s (1/2)" in text
    assert "batch size" not in text
