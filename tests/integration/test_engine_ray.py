"""--ray-address: the --workers as Ray actors, on a Ray cluster of three nodes started on this
machine (a head that runs no actor and two nodes of one CPU each, so that the two actors must
run on two different nodes, as on two machines) and on a throw-away ``local`` cluster. Ray is
installed with the tests (tests/requirements.txt includes requirements-distributed.txt): these
tests fail, never skip, without it. Ray is imported in the fixtures, not at the top, so that a
venv without it still collects the rest of the suite (``-m "not slow"`` deselects these)."""

from __future__ import annotations

import csv
import json
import re

import pytest

from benchmark.config import RunConfig
from benchmark.core import workers
from benchmark.core.engine import run
from benchmark.simulator import SimulatorConfig, run_in_thread

FAST = dict(prefill_base_ms=2.0, prefill_per_token_ms=0.0, decode_base_ms=2.0,
            decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


@pytest.fixture(scope="module")
def ray():
    """The ``ray`` package (an ImportError here fails the tests), with no token auth and no
    RAY_ADDRESS from the environment."""
    import ray
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        patch.delenv("RAY_ADDRESS", raising=False)
        yield ray


@pytest.fixture(scope="module")
def cluster(ray):
    """A head node with no CPU for actors and two nodes of one CPU each (started once for the
    tests that use it: about 8 s on two cores)."""
    from ray.cluster_utils import Cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [nodes.add_node(num_cpus=1) for _ in range(2)]
        nodes.wait_for_nodes()
        yield nodes, {node.node_id for node in workers}
    finally:
        nodes.shutdown()


def engine_actors(nodes) -> dict:
    return {key: a for key, a in nodes.global_state.actor_table(None).items()
            if a["ActorClassName"].endswith("RayWorker")}


def config(url: str, tokenizer: str, out, **changes) -> RunConfig:
    values = dict(tokenizer_name=tokenizer, url=url, mode="rate", rates=(40,), requests=20,
                  arrivals="constant", schedule_seed=3, sequence_length=8, decode_length=4,
                  timeout_s=30.0, telemetry_interval_s=0.1, output_dir=str(out))
    values.update(changes)
    return RunConfig(**values)


def read(folder) -> tuple[list[str], list[dict[str, str]]]:
    with open(folder / "requests.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_local_starts_a_throwaway_cluster_and_shuts_it_down(ray, tiny_tokenizer, tmp_path,
                                                            monkeypatch):
    # "local" means a new cluster even where RAY_ADDRESS names another (here: nothing there).
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        result = run(config(sim.url, tiny_tokenizer, tmp_path, mode="concurrency",
                            batch_sizes=(4,), workers=2, ray_address="local"))
    assert result.status == "complete", result.message
    columns, lines = read(tmp_path)
    assert len(lines) == 20 and len({r["request_id"] for r in lines}) == 20
    assert not ray.is_initialized()  # the cluster the run started is shut down


def test_actors_on_two_nodes_send_one_schedule_from_one_start_and_merge_into_one_run(
        ray, cluster, tiny_tokenizer, tmp_path):
    nodes, worker_nodes = cluster
    before = set(engine_actors(nodes))
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        local = run(config(sim.url, tiny_tokenizer, tmp_path / "local"))
        result = run(config(sim.url, tiny_tokenizer, tmp_path / "ray", workers=2,
                            ray_address=nodes.address))
    assert local.status == "complete", local.message
    assert result.status == "complete", result.message
    assert not ray.is_initialized()  # the run disconnected from the cluster it joined

    # Two actors of the engine's worker, one on each one-CPU node (never on the head).
    actors = [a for key, a in engine_actors(nodes).items() if key not in before]
    assert len(actors) == 2
    assert {a["Address"]["NodeID"] for a in actors} == worker_nodes

    # One run: the files of a one-process run (same columns, same run.json keys), 20 rows with
    # unique request ids, every request answered.
    columns, lines = read(tmp_path / "ray")
    assert columns == read(tmp_path / "local")[0]
    assert len(lines) == 20 and len({r["request_id"] for r in lines}) == 20
    assert all(not r["error"] for r in lines)
    saved = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert sorted(saved) == sorted(json.loads((tmp_path / "local" / "run.json").read_text()))
    assert saved["config"]["ray_address"] == nodes.address and saved["config"]["workers"] == 2

    # One schedule from one start: each actor got the start instant as wall-clock time through
    # Ray and turned it into its own monotonic clock; the records came back on the parent's.
    # Arrival k is due k/40 s after the start, and both actors' starts agree.
    measured = sorted(result.records, key=lambda r: r.request)
    assert [r.scheduled_ns - r.step_start_ns for r in measured] == \
        [int(round(k / 40 * 1e9)) for k in range(1, 21)]
    starts = {r.step_start_ns for r in measured}
    assert max(starts) - min(starts) < 50_000_000
    for r in measured:  # each sent at or after its time, and its stamps in order
        assert r.sent_ns >= r.scheduled_ns, (r.request, r.sent_ns - r.scheduled_ns)
        assert r.end_ns >= r.token_ns[-1] >= r.token_ns[0] > r.sent_ns, r

    # The actors reported their own CPU and event loop to the parent's telemetry.
    with open(tmp_path / "ray" / "telemetry.csv", newline="", encoding="utf-8") as handle:
        found = {(r["metric"], r["labels"]) for r in csv.DictReader(handle)}
    assert {("worker_loop_cpu_pct", "worker=1"), ("worker_loop_cpu_pct", "worker=2")} <= found


def test_more_workers_than_the_cluster_has_cpus_fail_with_a_sentence_saying_so(
        ray, cluster, tiny_tokenizer, tmp_path, monkeypatch):
    # Three actors of one CPU each on two one-CPU nodes: the third is never placed. The run
    # fails (it does not wait forever) and says why, once the actor has not answered.
    monkeypatch.setattr(workers, "RAY_ANSWER_TIMEOUT_S", 8.0)
    nodes, _ = cluster
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **FAST)) as sim:
        result = run(config(sim.url, tiny_tokenizer, tmp_path, workers=3,
                            ray_address=nodes.address))
    assert result.status == "failed"
    # Which of the three Ray leaves unplaced is its choice.
    assert re.search(r"worker [123] of 3 \(a Ray actor\) did not answer for 8 s", result.message)
    assert "one CPU of the Ray cluster" in result.message and "has 2 CPUs" in result.message
    assert not ray.is_initialized()
