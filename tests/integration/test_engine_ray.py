"""--ray-address: the same workers as Ray actors on a local Ray cluster (skipped when Ray, an
optional extra from requirements-distributed.txt, is not installed)."""

from __future__ import annotations

import csv
import json

import pytest

from benchmark.config import RunConfig
from benchmark.core.engine import run
from benchmark.simulator import SimulatorConfig, run_in_thread

ray = pytest.importorskip("ray")

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


def test_ray_actors_send_the_rate_schedule_and_merge_into_one_run(tiny_tokenizer, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        result = run(RunConfig(tokenizer_name=tiny_tokenizer, url=sim.url, mode="rate",
                               rates=(40,), requests=20, arrivals="constant", schedule_seed=3,
                               sequence_length=8, decode_length=4, timeout_s=30.0,
                               workers=2, ray_address="local", output_dir=str(tmp_path)))
    assert result.status == "complete", result.message
    with open(tmp_path / "requests.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 20 and len({r["request_id"] for r in lines}) == 20
    assert all(not r["error"] for r in lines)
    assert all(r.sent_ns >= r.scheduled_ns and r.end_ns > r.token_ns[0] > r.sent_ns
               for r in result.records)
    measured = sorted(result.records, key=lambda r: r.request)
    # Each actor counts the parent's one schedule from the start instant it was given (as a
    # wall-clock instant, turned into its own monotonic clock), and its records come back on
    # the parent's clock: the two actors' starts agree to the wall clocks' agreement.
    assert [r.scheduled_ns - r.step_start_ns for r in measured] == \
        [int(round(k / 40 * 1e9)) for k in range(1, 21)]
    starts = {r.step_start_ns for r in measured}
    assert len(starts) <= 2 and max(starts) - min(starts) < 50_000_000
    assert json.loads((tmp_path / "run.json").read_text())["config"]["ray_address"] == "local"
    assert not ray.is_initialized()  # the cluster the run started is shut down
