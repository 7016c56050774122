"""The progress stream's exact bytes: programs (the app, CI scripts) parse these lines."""

from __future__ import annotations

import io

from benchmark.core.progress import JsonLinesProgress

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
