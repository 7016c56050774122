"""The real app (``python app.py``) driven end to end through gradio_client.

One app process serves the module; runs are tiny (batch sizes 1,2; 16 prompt tokens; 8 new
tokens; 2 runs) on the fake text-generation-launcher, which serves the simulator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client

from support.app_harness import FIELDS_SMALL_RUN, AppProcess, form_values, labels, named, submit_and_wait
from support.helpers import read_csv


pytestmark = pytest.mark.timeout(240)

# The launcher prints this token in its log (FAKE_TGI_LEAK_TOKEN): the page must never show it.
SECRET_TOKEN = "hf_UiTestSecretToken0123456789"


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("app")
    # A slower simulated decode so that a run lasts long enough to watch and to stop.
    with AppProcess(folder / "results", tokenizer=tiny_tokenizer,
                    sim_args="--decode-base-ms 15",
                    extra_env={"FAKE_TGI_SLOW_START": "2", "HF_TOKEN": SECRET_TOKEN,
                               "FAKE_TGI_LEAK_TOKEN": "1"}) as running:
        yield running


def value(item: Any) -> Any:
    if isinstance(item, dict) and ("__type__" in item or set(item) <= {"value", "visible",
                                                                         "label", "choices"}):
        return item.get("value")
    return item


def run(client: Any, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit /run, return (final outputs by label, every intermediate output by label)."""
    job = submit_and_wait(client, **fields)
    names = labels(client, "/run")
    final = dict(zip(names, job.result()))
    steps = [dict(zip(names, out)) for out in job.outputs()]
    return final, steps


def text(item: Any) -> str:
    got = value(item)
    if isinstance(got, list):
        return "\n".join(map(str, got))
    return "" if got is None else str(got)


def run_id_of(final: dict[str, Any]) -> str:
    link = text(final["Share link: opens these results read-only"])
    assert "?run=" in link, link
    return link.split("?run=", 1)[1]


def test_run_shows_results_saves_files_and_a_share_link(app, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    final, steps = run(client, model_id=tiny_tokenizer, **FIELDS_SMALL_RUN)

    assert "Benchmark complete" in text(final["Run status"]), app.log()
    statuses = " ".join(text(s.get("Run status")) for s in steps)
    logs = [s.get("Server log (last lines)") for s in steps]
    assert any(isinstance(log, dict) and log.get("visible") and "Warming up" in text(log)
               for log in logs), "the server's log is shown while it starts"
    assert any("Using token" in text(log) for log in logs)
    assert SECRET_TOKEN not in json.dumps(steps, default=str)      # masked everywhere
    assert SECRET_TOKEN not in app.log()
    assert "Starting the server" in statuses or "Benchmark running" in statuses
    assert "Batch size 1" in statuses and "Batch size 2" in statuses
    assert "SIMULATED SERVER" in text(final["Simulated banner"])
    assert "Highest generation speed" in text(final["Headline"])
    assert "tgi-benchmark-simulator" in text(final["Server info"])
    tables = text(final["Tables"])
    assert "Latency" in tables and "Throughput" in tables

    run_id = run_id_of(final)
    assert text(final["Share link: opens these results read-only"]) == f"{app.url}?run={run_id}"
    folder = app.results_dir / run_id
    for name in ("run.json", "summary.csv", "requests.csv", "telemetry.csv"):
        assert SECRET_TOKEN not in (folder / name).read_text()
    saved = json.loads((folder / "run.json").read_text())
    assert saved["status"] == "complete" and saved["simulated"] is True
    assert saved["server"]["model_id"] == tiny_tokenizer   # the launched settings are recorded

    charts = [final[f"Chart {i}"] for i in range(10)]
    shown = [c for c in charts if isinstance(c, dict) and c.get("visible")]
    assert len(shown) >= 7, charts
    for chart in shown:
        assert chart["value"]["type"] == "plotly"
        assert json.loads(chart["value"]["plot"])["data"], chart["label"]
    titles = " | ".join(c["label"] for c in shown)
    assert "Throughput" in titles and "Latency" in titles and "over latency" in titles
    assert "Timeline of the run" in titles                   # the sampler ran (default 1 s)
    assert "Telemetry" in tables

    files = {Path(p).name: p for p in value(final["Downloads"])}
    assert set(files) == {"summary.csv", "requests.csv", "telemetry.csv", "run.json"}
    summary = read_csv(files["summary.csv"])
    assert {row["step"] for row in summary} == {"1", "2"}
    throughput = [r for r in summary if r["metric"] == "decode_throughput_tok_s"]
    assert len(throughput) == 2 and all(float(r["avg"]) > 0 for r in throughput)
    requests = read_csv(files["requests.csv"])
    assert len(requests) == 2 * (1 + 2)                     # runs x (batch 1 + batch 2)
    assert {r["output_tokens"] for r in requests} == {"8"}
    assert all(r["request_id"].startswith(run_id) for r in requests)

    history = value(final["Saved runs"])
    assert run_id in [row[0] for row in history["data"]]


def test_typed_mistakes_are_refused_with_the_field_named_and_nothing_starts(app, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    before = set(p.name for p in app.results_dir.iterdir())
    cases = [
        (dict(runs="ten"), "**Runs:**", "whole number"),
        (dict(batch_sizes="1,50000"), "**Batch sizes:**", "at most 8192"),
        (dict(sequence_length="1.5"), "**Sequence length:**", "whole number"),
        (dict(max_total_tokens="20"), "max_total_tokens = 20", "Lower one of them"),
        (dict(model_id=""), "**Model ID:**", "empty"),
        (dict(model_id="../../etc/passwd"), "**Model ID:**", "not a Hub id"),
        (dict(target="Benchmark an existing server (endpoint URL)", url="ftp://host"),
         "**Endpoint URL:**", "http://host:port"),
        (dict(temperature="hot"), "**Temperature:**", "must be a number"),
    ]
    for overrides, field, words in cases:
        fields = {"model_id": tiny_tokenizer, **FIELDS_SMALL_RUN, **overrides}
        final, _ = run(client, **fields)
        message = text(final["Form message"])
        assert field in message and words in message, (overrides, message)
        label = field.strip("*:")
        assert f"{field} {label}" not in message, message    # the field is named once
        assert "Benchmark" not in text(final.get("Run status"))
    assert set(p.name for p in app.results_dir.iterdir()) == before


def test_endpoint_limits_are_checked_before_the_run(app, tiny_tokenizer, simulator_process):
    client = Client(app.url, verbose=False)
    before = set(p.name for p in app.results_dir.iterdir())
    url = simulator_process(max_input_tokens=100, max_total_tokens=120,
                            tokenizer=tiny_tokenizer)
    endpoint = dict(target="Benchmark an existing server (endpoint URL)", url=url,
                    tokenizer_name=tiny_tokenizer, **FIELDS_SMALL_RUN)
    final, _ = run(client, **{**endpoint, "sequence_length": "110"})
    assert "longer than the server accepts (max_input_tokens = 100)" in text(
        final["Form message"])
    final, _ = run(client, **{**endpoint, "sequence_length": "100", "decode_length": "30"})
    assert "max_total_tokens = 120" in text(final["Form message"])
    final, _ = run(client, **{**endpoint, "url": "http://127.0.0.1:9"})
    message = text(final["Form message"])
    assert "**Endpoint URL:** nothing answers at http://127.0.0.1:9" in message
    assert "--url" not in message          # the page has a field, not a flag
    assert set(p.name for p in app.results_dir.iterdir()) == before
    final, _ = run(client, **endpoint)
    assert "Benchmark complete" in text(final["Run status"]), app.log()
    assert "SIMULATED SERVER" in text(final["Simulated banner"])


def raw_call(url: str, api_name: str, data: list[Any]) -> Any:
    """Call an event the way a hand-written client would: any data, a fresh session."""
    config = httpx.get(url + "config", timeout=10).json()
    index = next(i for i, dep in enumerate(config["dependencies"])
                 if dep.get("api_name") == api_name.strip("/"))
    session = "raw-" + str(time.monotonic_ns())
    joined = httpx.post(url + "gradio_api/queue/join", timeout=10,
                        json={"data": data, "fn_index": index, "session_hash": session,
                              "event_data": None, "trigger_id": None})
    joined.raise_for_status()
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session},
                      timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:") and "process_completed" in line:
                return json.loads(line[5:])["output"]["data"][0]
    raise AssertionError("no answer from " + api_name)


def test_stop_keeps_partial_results_shown_progressively(app, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    job = client.submit(*form_values(model_id=tiny_tokenizer, batch_sizes="1,2,4,8",
                                     sequence_length="16", decode_length="8", runs="40",
                                     warmups="0"), api_name="/run")
    names = labels(client, "/run")
    deadline = time.monotonic() + 150
    partial = None
    while partial is None:
        assert time.monotonic() < deadline and not job.done(), "no partial results appeared"
        for out in job.outputs():
            got = dict(zip(names, out))
            if "in progress (partial results)" in text(got.get("Run title")):
                partial = got
        time.sleep(0.2)
    # The first batch size is on the page (table and charts) while the run goes on.
    assert "| 1 " in text(partial["Tables"]) or "1 |" in text(partial["Tables"])
    assert any(isinstance(partial.get(f"Chart {i}"), dict) and partial[f"Chart {i}"].get("visible")
               for i in range(10))
    # Another visitor who learnt the run's id cannot stop it, even by sending the id in place
    # of the page's hidden state (Gradio keeps that state on the server, per session).
    run_id = text(partial["Share link: opens these results read-only"]).split("?run=", 1)[1]
    stranger = Client(app.url, verbose=False)
    assert "Nothing to stop" in text(stranger.predict(api_name="/stop"))
    assert "Nothing to stop" in text(raw_call(app.url, "/stop", [run_id]))
    assert not job.done()
    said = client.predict(api_name="/stop")
    assert "Stopping" in text(said)
    while not job.done():
        time.sleep(0.2)
    final = dict(zip(names, job.result()))
    assert "Stopped" in text(final["Run status"])
    # "Stopping…" is cleared when the run ends: the status says how it ended.
    assert final["Form message"].get("visible") is False, final["Form message"]
    run_id = run_id_of(final)
    saved = json.loads((app.results_dir / run_id / "run.json").read_text())
    assert saved["status"] == "cancelled"
    assert saved["requests"], "the requests measured before Stop are kept"
    assert "stopped early" in text(final["Run title"])


def test_one_run_at_a_time_others_wait_in_line_and_compare(app, tiny_tokenizer):
    first = Client(app.url, verbose=False)
    second = Client(app.url, verbose=False)
    slow = dict(model_id=tiny_tokenizer, batch_sizes="1,2", sequence_length="16",
                decode_length="8", runs="40", warmups="0")
    job_a = first.submit(*form_values(**slow), api_name="/run")
    names = labels(first, "/run")
    deadline = time.monotonic() + 120
    while "Benchmark running" not in " ".join(text(dict(zip(names, o))["Run status"])
                                              for o in job_a.outputs()):
        assert time.monotonic() < deadline, "first run did not start"
        time.sleep(0.2)
    visiting = named(second, "/load", second.predict(api_name="/load"))
    assert "A benchmark is running now" in text(visiting["Access"])
    job_b = second.submit(*form_values(model_id=tiny_tokenizer, **FIELDS_SMALL_RUN),
                          api_name="/run")
    for job in (job_a, job_b):
        while not job.done():
            assert time.monotonic() < deadline + 200
            time.sleep(0.2)
    seen_b = " ".join(text(dict(zip(names, o))["Run status"]) for o in job_b.outputs())
    assert "already running for another visitor" in seen_b
    assert "number 1 in the queue" in seen_b
    final_a = dict(zip(names, job_a.result()))
    final_b = dict(zip(names, job_b.result()))
    id_a, id_b = run_id_of(final_a), run_id_of(final_b)
    assert id_a != id_b
    for run_id in (id_a, id_b):
        saved = json.loads((app.results_dir / run_id / "run.json").read_text())
        assert saved["status"] == "complete" and saved["run_id"] == run_id

    # Two saved runs on the same charts.
    compared = named(first, "/compare", first.predict([id_a, id_b], api_name="/compare"))
    assert id_a in text(compared["Run title"]) and id_b in text(compared["Run title"])
    plot = json.loads(compared["Chart 0"]["value"]["plot"])
    legend = json.dumps([trace.get("name") for trace in plot["data"]])
    assert id_a in legend and id_b in legend
    lonely = named(first, "/compare", first.predict([id_a], api_name="/compare"))
    assert "two or more" in text(lonely["History message"])
    opened = named(first, "/open", first.predict([id_b], api_name="/open"))
    assert id_b in text(opened["Run title"])
    assert {Path(p).name for p in value(opened["Downloads"])} == {
        "summary.csv", "requests.csv", "telemetry.csv", "run.json"}


def test_hostile_run_ids_get_a_message_and_change_nothing(app):
    client = Client(app.url, verbose=False)
    before = sorted(p.name for p in app.results_dir.iterdir())
    for hostile in ("../etc", "..", "a/b", "/etc/passwd", "x" * 300, "run id with spaces",
                    "20261128-000000-missing-0000", "[x](http://evil.example)",
                    "<img src=x onerror=alert(1)>"):
        out = named(client, "/open", client.predict([hostile], api_name="/open"))
        message = text(out["History message"])
        assert message.startswith("**Cannot open:**"), (hostile, message)
        assert "not valid" in message or "No saved run" in message
        assert str(app.results_dir) not in message          # no server paths on the page
        assert "[x](" not in message and "<img" not in message   # a link's id stays text
    assert sorted(p.name for p in app.results_dir.iterdir()) == before


def test_locally_nobody_signs_in(app):
    config = httpx.get(app.url + "config", timeout=10).json()
    buttons = [c.get("props", {}).get("value") for c in config["components"]
               if c.get("type") == "button"]
    assert "Sign in with Hugging Face" not in buttons
    client = Client(app.url, verbose=False)
    loaded = named(client, "/load", client.predict(api_name="/load"))
    assert "Running locally: no sign-in needed." in text(loaded["Access"])


def test_a_server_that_cannot_start_is_explained_with_its_log(tmp_path, tiny_tokenizer):
    with AppProcess(tmp_path / "results", tokenizer=tiny_tokenizer,
                    extra_env={"FAKE_TGI_FAIL": "oom"}) as broken:
        client = Client(broken.url, verbose=False)
        final, _ = run(client, model_id=tiny_tokenizer, **FIELDS_SMALL_RUN)
        status = text(final["Run status"])
        assert "The benchmark failed" in status and "memory" in status.lower(), status
        log = final["Server log (last lines)"]
        assert log["visible"] and "Not enough memory" in text(log)
        assert not final["Share link: opens these results read-only"]["visible"]
        assert list(broken.results_dir.iterdir()) == []


def test_a_server_that_crashes_mid_run_keeps_the_results_and_says_why(tmp_path, tiny_tokenizer):
    # Batch size 1 takes 3 requests (1 warm-up + 2 runs); the server dies during batch size 2.
    with AppProcess(tmp_path / "results", tokenizer=tiny_tokenizer,
                    extra_env={"FAKE_TGI_FAIL": "crash_after_requests=5"}) as crashing:
        client = Client(crashing.url, verbose=False)
        final, _ = run(client, model_id=tiny_tokenizer, **FIELDS_SMALL_RUN)
        status = text(final["Run status"])
        assert "TGI server stopped while it was in use" in status, status
        assert "shard" in text(final["Server log (last lines)"]).lower()
        saved = json.loads((crashing.results_dir / run_id_of(final) / "run.json").read_text())
        assert saved["status"] == "failed" and saved["complete"] is False
        assert "TGI server stopped while it was in use" in saved["message"]
        assert {r["step"] for r in saved["requests"] if r["error"] is None} >= {1}


def test_anyone_calling_compare_or_upload_directly_cannot_tie_up_the_machine(app):
    """Endpoints every visitor can call: a long compare list, a big file on Gradio's /upload."""
    client = Client(app.url, verbose=False)
    ids = [f"20261128-000000-run-{i:04d}" for i in range(500)]
    out = named(client, "/compare", client.predict(ids, api_name="/compare"))
    assert "at most 8 runs" in text(out["History message"])
    # Gradio accepts uploads on /gradio_api/upload; the app keeps them to the import box's
    # 16 MB so that nobody can fill the disk or host large files on the app's address.
    response = httpx.post(app.url + "gradio_api/upload",
                          files={"files": ("big.bin", b"x" * 17_000_000)}, timeout=60)
    assert response.status_code == 413, (response.status_code, response.text[:200])


def test_the_page_serves_no_file_outside_the_results_folder(app, tiny_tokenizer):
    """Gradio's file route serves the results folder (downloads) and nothing else."""
    client = Client(app.url, verbose=False)
    final, _ = run(client, model_id=tiny_tokenizer, **{**FIELDS_SMALL_RUN, "batch_sizes": "1"})
    run_id = run_id_of(final)
    inside = app.results_dir / run_id / "summary.csv"
    outside = [Path("/etc/passwd"), Path(__file__).resolve().parents[2] / "app.py",
               Path(tiny_tokenizer) / "tokenizer.json", app.log_path]
    for path in outside:
        assert path.is_file()
        got = httpx.get(f"{app.url}gradio_api/file={path}", timeout=10)
        assert got.status_code in (403, 404), (path, got.status_code)
    sneaky = f"{app.results_dir}/../{app.log_path.name}"
    assert httpx.get(f"{app.url}gradio_api/file={sneaky}", timeout=10).status_code in (403, 404)
    served = httpx.get(f"{app.url}gradio_api/file={inside}", timeout=10)
    assert served.status_code == 200 and served.text.startswith("step,metric,unit")
    assert SECRET_TOKEN not in served.text


def test_a_capacity_runs_page_plans_servers_for_typed_traffic(app):
    from benchmark.config import RunConfig
    from benchmark.core.capacity import Capacity, Probe
    from benchmark.core.results import RunResult
    from benchmark.core.slo import Slo

    probe = Probe(kind="rate", step=3, rate_rps=12.4, attainment=0.95, passed=True,
                  mean_output_tokens=250.0, output_tokens_per_s=3100.0)
    capacity = Capacity(slo=Slo(ttft_ms=1000), rate_rps=12.4, in_flight=None,
                        output_tokens_per_s=3100.0, bracket=(12.4, 13.0), converged=True,
                        ended="converged", max_throughput_rps=20.0, probes=(probe,))
    run_id = "20261203-120000-planned-abcd"
    RunResult(run_id=run_id, status="complete", capacity=capacity, simulated=True,
              config=RunConfig(tokenizer_name="org/tiny", mode="capacity", slo_ttft_ms=1000,
                               sequence_length=600, hardware="l4x1", plan_peak_rps=40.0)
              ).save(app.results_dir / run_id)
    client = Client(app.url, verbose=False)
    opened = named(client, "/open", client.predict([run_id], api_name="/open"))
    assert text(opened["Peak traffic (requests/s)"]) == "40"
    assert text(opened["GPU price ($/hour)"]) == "0.8"
    assert "you need 4 × L4 (about $2,300 a month)" in text(opened["Deployment plan"])
    assert "### Cost" in text(opened["Tables"])
    # New traffic typed on the page: recomputed from the saved capacity, nothing run again.
    plan = client.predict("100", "", "", "2", "50", "0.8", "", api_name="/plan")
    assert "At 100 requests/s at peak you need 13 × L4" in plan     # 150 / 12.4 = 12.1
    refused = client.predict("100", "", "", "2", "150", "", "", api_name="/plan")
    assert refused.startswith("**Headroom (%):** must be between 0 and 100%")
    assert sorted(p.name for p in (app.results_dir / run_id).iterdir()) == [
        "requests.csv", "run.json", "summary.csv"]


def test_a_request_rate_run_shows_its_schedule_and_rate_charts(app, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    final, steps = run(client, model_id=tiny_tokenizer, mode="Request rate", rates="2.5, 10",
                       arrivals="constant", duration_s="1", sequence_length="8",
                       decode_length="4")
    assert "Benchmark complete" in text(final["Run status"]), app.log()
    statuses = " ".join(text(s.get("Run status")) for s in steps)
    assert "2.5 requests/s" in statuses and "10 requests/s" in statuses
    tables = text(final["Tables"])
    assert "### Schedule" in tables and "| Rates (req/s)" in tables
    charts = [final[f"Chart {i}"] for i in range(10)]
    titles = " | ".join(c["label"] for c in charts if isinstance(c, dict) and c.get("visible"))
    assert "Latency by request rate" in titles
    assert "Achieved throughput against offered rate" in titles
    saved = json.loads((app.results_dir / run_id_of(final) / "run.json").read_text())
    assert saved["config"]["rates"] == [2.5, 10] and saved["config"]["arrivals"] == "constant"
    assert len(saved["requests"]) == 2 + 9  # 1 s at 2.5/s and at 10/s, constant gaps


def test_a_request_rate_form_mistake_names_the_field(app, tiny_tokenizer):
    client = Client(app.url, verbose=False)
    job = submit_and_wait(client, model_id=tiny_tokenizer, mode="Request rate", rates="0",
                          duration_s="5")
    final = dict(zip(labels(client, "/run"), job.result()))
    message = text(final["Form message"])
    assert "Rates (requests/s)" in message and "greater than 0" in message
