"""The console bar counts what the tables count: warm-up failures are named as warm-ups."""

from __future__ import annotations

import io

from benchmark.core.progress import ConsoleProgress


def feed(bar: ConsoleProgress, *events: dict) -> None:
    for event in events:
        bar(event)


def test_warm_up_errors_are_shown_apart_from_the_measured_errors():
    bar = ConsoleProgress(io.StringIO(), tty=False)
    feed(bar,
         {"event": "start", "run_id": "r", "steps": [4], "planned_requests": 12},
         {"event": "step_start", "step": 4, "index": 1, "of": 1},
         {"event": "round_done", "step": 4, "run": 1, "runs": 1, "warmup": True, "errors": 3},
         {"event": "round_done", "step": 4, "run": 1, "runs": 2, "warmup": False, "errors": 0})
    line = bar.render()
    assert "0 errors" in line                       # what the Requests table will say
    assert "3 warm-up errors (not measured)" in line
    feed(bar, {"event": "round_done", "step": 4, "run": 2, "runs": 2, "warmup": False,
               "errors": 1})
    line = bar.render()
    assert "1 error " in line + " " and "3 warm-up errors (not measured)" in line


def test_no_warm_up_words_without_warm_up_errors():
    bar = ConsoleProgress(io.StringIO(), tty=False)
    feed(bar,
         {"event": "start", "run_id": "r", "steps": [1], "planned_requests": 2},
         {"event": "step_start", "step": 1, "index": 1, "of": 1},
         {"event": "round_done", "step": 1, "run": 1, "runs": 1, "warmup": True, "errors": 0})
    assert "warm-up error" not in bar.render() and "0 errors" in bar.render()
