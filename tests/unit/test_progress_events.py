"""The progress stream's exact bytes: programs (the app, CI scripts) parse these lines."""

from __future__ import annotations

import io

import pytest

from benchmark.core.progress import (EVENT_TYPES, Done, JsonLinesProgress, ProbeDone,
                                     ProgressEvent, RequestsDone, RoundDone, RunWarning, Start,
                                     StepDone, StepStart)

# What the engine wrote before progress events were typed: one compact object a line, keys in
# this order, non-ASCII escaped, null for "nothing".
PINNED = [
    ({"event": "start", "run_id": "2026-r1", "output_dir": "/tmp/out", "steps": [1, 2, 4],
      "planned_requests": 33, "simulated": False},
     b'{"event":"start","run_id":"2026-r1","output_dir":"/tmp/out","steps":[1,2,4],'
     b'"planned_requests":33,"simulated":false}\n'),
    ({"event": "step_start", "step": 4, "index": 3, "of": 3},
     b'{"event":"step_start","step":4,"index":3,"of":3}\n'),
    ({"event": "round_done", "step": 4, "run": 2, "runs": 5, "warmup": True, "errors": 1},
     b'{"event":"round_done","step":4,"run":2,"runs":5,"warmup":true,"errors":1}\n'),
    ({"event": "requests_done", "step": 8, "done": 17, "total": None, "elapsed_s": 3.25,
      "errors": 0},
     b'{"event":"requests_done","step":8,"done":17,"total":null,"elapsed_s":3.25,"errors":0}\n'),
    ({"event": "step_done", "step": 4}, b'{"event":"step_done","step":4}\n'),
    ({"event": "probe_done", "step": 3, "probe_kind": "rate", "rate_rps": 12.5,
      "attainment": 0.93, "passed": True, "stopped_early": False, "requests": 140},
     b'{"event":"probe_done","step":3,"probe_kind":"rate","rate_rps":12.5,"attainment":0.93,'
     b'"passed":true,"stopped_early":false,"requests":140}\n'),
    ({"event": "warning", "message": "Prompts \u00e9t\u00e9 \"re-used\""},
     b'{"event":"warning","message":"Prompts \\u00e9t\\u00e9 \\"re-used\\""}\n'),
    ({"event": "done", "status": "cancelled", "message": None, "output_dir": "out"},
     b'{"event":"done","status":"cancelled","message":null,"output_dir":"out"}\n'),
]


def _written(events) -> bytes:
    out = io.StringIO()
    stream = JsonLinesProgress(out)
    for event in events:
        stream(event)
    return out.getvalue().encode("utf-8")


def test_json_lines_bytes_are_pinned():
    assert _written([event for event, _ in PINNED]) == b"".join(line for _, line in PINNED)


TYPED = [
    Start(run_id="2026-r1", output_dir="/tmp/out", steps=(1, 2, 4), planned_requests=33,
          simulated=False),
    StepStart(step=4, index=3, of=3),
    RoundDone(step=4, run=2, runs=5, warmup=True, errors=1),
    RequestsDone(step=8, done=17, total=None, elapsed_s=3.25, errors=0),
    StepDone(step=4),
    ProbeDone(step=3, probe_kind="rate", rate_rps=12.5, attainment=0.93, passed=True,
              stopped_early=False, requests=140),
    RunWarning(message="Prompts \u00e9t\u00e9 \"re-used\""),
    Done(status="cancelled", message=None, output_dir="out"),
]


def test_typed_events_write_the_pinned_bytes():
    # The start event gained its load pattern, as a last key (older readers ignore it).
    expected = [line.replace(b'"simulated":false}', b'"simulated":false,"mode":"rounds"}')
                for _, line in PINNED]
    assert _written(TYPED) == b"".join(expected)


def test_a_start_line_of_an_older_stream_reads_as_rounds():
    event = ProgressEvent.from_json(PINNED[0][1].decode())
    assert isinstance(event, Start) and event.mode == "rounds" and event.steps == (1, 2, 4)
    rate = Start(run_id="r", output_dir="o", steps=(2.5, 10), planned_requests=None,
                 simulated=True, mode="rate")
    assert ProgressEvent.from_json(rate.to_json()).mode == "rate"


def test_every_kind_reads_back_from_its_line():
    assert set(EVENT_TYPES) == {type(event).kind for event in TYPED}
    for event, (_, line) in zip(TYPED, PINNED):
        back = ProgressEvent.from_json(line.decode("utf-8"))
        assert type(back) is type(event) and back.to_dict() == event.to_dict()


def test_events_read_like_the_dicts_they_replace():
    done = Done(status="complete", message=None, output_dir="o")
    assert done["event"] == "done" and done.get("status") == "complete"
    assert done == {"event": "done", "status": "complete", "message": None, "output_dir": "o"}


@pytest.mark.parametrize("line", ["", "not json", "[1]", '{"event":"later_kind","x":1}',
                                  '{"event":"step_done"}'])
def test_unknown_or_broken_lines_are_skipped(line):
    assert ProgressEvent.from_json(line) is None
