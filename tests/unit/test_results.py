"""Result files: round trips, CSV shapes, run ids, damaged files, history (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.config import RunConfig, SamplingParams
from benchmark.errors import ResultFileError
from benchmark.core.records import RequestRecord
from benchmark.core.results import (
    REQUEST_COLUMNS,
    SUMMARY_COLUMNS,
    RunResult,
    check_run_id,
    default_output_dir,
    list_runs,
    new_run_id,
    run_dir,
)
from benchmark.core.stats import METRIC_KEYS
from support.helpers import read_csv

MS = 1_000_000


def record(step: int, run: int, request: int, ttft: int = 50, *, gap: int = 10, tokens: int = 4,
           error: str | None = None, warmup: bool = False) -> RequestRecord:
    sent = 1_000_000_000 + run * 500 * MS
    stamps = [] if error else [sent + ttft * MS + i * gap * MS for i in range(tokens)]
    return RequestRecord(
        step=step, run=run, request=request, warmup=warmup, scheduled_ns=sent - 123_456,
        sent_ns=sent, token_ns=stamps, end_ns=(stamps[-1] if stamps else sent + 7 * MS),
        input_tokens=None if error else 10, output_tokens=None if error else tokens,
        requested_output_tokens=4, finish_reason=None if error else "length",
        status=422 if error else 200, error=error, error_kind="http" if error else None,
        request_id=f"rid-{step}-{run}-{request}",
    )


def make_result(run_id: str = "20261128-163012-tiny-3f9a", **changes) -> RunResult:
    config = RunConfig(tokenizer_name="org/tiny", url="http://127.0.0.1:3000",
                       batch_sizes=(1, 2), sequence_length=10, decode_length=4, runs=2,
                       warmups=1, sampling=SamplingParams(temperature=0.7, top_k=5), seed=7)
    records = [record(1, r, 0, ttft=40 + r) for r in range(2)]
    records += [record(2, r, i, ttft=60 + i) for r in range(2) for i in range(2)]
    records[-1] = record(2, 1, 1, error="HTTP 422: Input validation error")
    values = dict(
        run_id=run_id, config=config,
        server_info={"model_id": "org/tiny", "version": "3.3.6", "max_input_tokens": 4096,
                     "simulated": True},
        simulated=True, started_at="2026-11-28T16:30:12+00:00",
        ended_at="2026-11-28T16:31:00+00:00", status="complete", message=None,
        warnings=["1 request stopped early"], records=records,
        server={"model_id": "org/tiny", "quantize": "gptq", "port": 3000},
        calibration={"ttft_offset_ms": 1.5},
    )
    values.update(changes)
    return RunResult(**values)


# -- round trip --------------------------------------------------------------------------------

def test_save_then_load_restores_the_run_exactly(tmp_path):
    result = make_result()
    folder = result.save(tmp_path / "run")
    again = RunResult.load(folder)
    assert again.records == result.records
    assert again.config == result.config
    for name in ("run_id", "server_info", "simulated", "started_at", "ended_at", "status",
                 "message", "warnings", "server", "calibration", "tool_version"):
        assert getattr(again, name) == getattr(result, name), name
    assert again.complete is True
    assert [s.to_dict() for s in again.steps()] == [s.to_dict() for s in result.steps()]
    # run.json can also be opened directly
    assert RunResult.load(folder / "run.json").run_id == result.run_id


def test_run_json_is_self_describing(tmp_path):
    result = make_result(status="cancelled", message="Stopped by the user.")
    data = json.loads((result.save(tmp_path) / "run.json").read_text())
    assert data["schema_version"] == 1
    assert data["tool"]["name"] == "tgi-benchmark" and data["tool"]["version"]
    assert data["complete"] is False and data["status"] == "cancelled"
    assert data["simulated"] is True
    assert data["config"]["batch_sizes"] == [1, 2]
    assert data["server_info"]["version"] == "3.3.6"
    env = data["environment"]
    assert env["python"] and env["cpu_count"] and "hostname" not in env
    assert [s["step"] for s in data["steps"]] == [1, 2]
    step2 = data["steps"][1]
    assert step2["errors"] == 1 and step2["ok"] == 3
    assert set(step2["metrics"]) == set(METRIC_KEYS)
    assert set(step2["metrics"]["prefill_latency_ms"]) == {
        "avg", "min", "max", "p50", "p90", "p99", "count"}
    assert len(data["requests"]) == 6


def test_warmups_never_reach_the_files(tmp_path):
    result = make_result()
    result.records.append(record(1, 0, 0, ttft=9999, warmup=True))
    folder = result.save(tmp_path)
    assert len(read_csv(folder / "requests.csv")) == 6
    assert len(json.loads((folder / "run.json").read_text())["requests"]) == 6
    assert RunResult.load(folder).steps()[0].metric("prefill_latency_ms").max == 41


# -- CSV files ---------------------------------------------------------------------------------

def test_summary_csv_has_one_row_per_step_and_metric(tmp_path):
    folder = make_result().save(tmp_path)
    rows = read_csv(folder / "summary.csv")
    assert tuple(rows[0].keys()) == SUMMARY_COLUMNS
    assert len(rows) == 2 * len(METRIC_KEYS)
    ttft1 = next(r for r in rows if r["step"] == "1" and r["metric"] == "prefill_latency_ms")
    # batch size 1: two rounds with 40 ms and 41 ms to the first token
    assert ttft1["unit"] == "ms"
    assert float(ttft1["avg"]) == pytest.approx(40.5)
    assert float(ttft1["min"]) == pytest.approx(40.0) and float(ttft1["max"]) == pytest.approx(41)
    assert float(ttft1["p90"]) == pytest.approx(40.9)
    assert ttft1["count"] == "2" and ttft1["mode"] == "rounds"
    decode2 = next(r for r in rows if r["step"] == "2" and r["metric"] == "decode_throughput_tok_s")
    assert decode2["unit"] == "tokens/s" and decode2["count"] == "2"
    assert decode2["errors"] == "1" and decode2["requests"] == "4"


def test_summary_csv_leaves_cells_empty_without_samples(tmp_path):
    result = make_result(records=[record(1, 0, 0, error="HTTP 500: boom")])
    rows = read_csv(result.save(tmp_path) / "summary.csv")
    assert len(rows) == len(METRIC_KEYS)
    assert all(r["avg"] == "" and r["count"] == "0" for r in rows)
    assert rows[0]["errors"] == "1"


def test_requests_csv_has_one_row_per_measured_request(tmp_path):
    rows = read_csv(make_result().save(tmp_path) / "requests.csv")
    assert tuple(rows[0].keys()) == REQUEST_COLUMNS
    assert len(rows) == 6
    first = rows[0]
    assert (first["batch_size"], first["run"], first["request"]) == ("1", "0", "0")
    assert float(first["ttft_ms"]) == pytest.approx(40.0)
    assert float(first["decode_ms"]) == pytest.approx(30.0)
    assert float(first["token_latency_ms"]) == pytest.approx(10.0)
    assert float(first["e2e_ms"]) == pytest.approx(70.0)
    assert float(first["dispatch_lag_ms"]) == pytest.approx(0.123456)
    assert (first["input_tokens"], first["output_tokens"], first["finish_reason"]) == (
        "10", "4", "length")
    assert first["error"] == "" and first["request_id"] == "rid-1-0-0"
    failed = rows[-1]
    assert failed["error"] == "HTTP 422: Input validation error"
    assert failed["status"] == "422" and failed["ttft_ms"] == "" and failed["output_tokens"] == ""


def test_saving_leaves_no_temp_files_and_replaces_previous_files(tmp_path):
    result = make_result(status="running", records=[record(1, 0, 0)])
    result.save(tmp_path)
    result.records.append(record(1, 1, 0))
    result.status = "complete"
    result.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "requests.csv", "run.json", "summary.csv"]
    assert len(read_csv(tmp_path / "requests.csv")) == 2
    assert RunResult.load(tmp_path).complete


def test_tokens_in_messages_are_masked(tmp_path, monkeypatch):
    secret = "hf_abcdefghijklmnopqrstuvwxyz123456"
    monkeypatch.setenv("HF_TOKEN", secret)
    result = make_result(message=f"failed with token {secret}",
                         warnings=[f"Authorization: Bearer {secret}"],
                         records=[record(1, 0, 0, error=f"HTTP 401: bad token {secret}")])
    folder = result.save(tmp_path)
    for name in ("run.json", "summary.csv", "requests.csv"):
        assert secret not in (folder / name).read_text(), name
    assert "***" in RunResult.load(folder).message


# -- run ids -----------------------------------------------------------------------------------

def test_new_run_ids_are_safe_and_name_the_model():
    run_id = new_run_id("meta-llama/Llama-3-8B-Instruct")
    assert check_run_id(run_id) == run_id
    assert "-llama-3-8b-instruct-" in run_id
    assert new_run_id("meta-llama/Llama-3-8B") != new_run_id("meta-llama/Llama-3-8B")
    assert check_run_id(new_run_id("/tmp/some folder/../weird name!/"))
    assert "-run-" in new_run_id("")


@pytest.mark.parametrize("bad", [
    "../etc", "..", "a/b", "a\\b", "/abs", "", " ", ".hidden", "a b", "x" * 200, "a..b",
    "run%2F..", "run\x00", "run\n", None, 42, "é-run",
])
def test_check_run_id_refuses_unsafe_ids(bad):
    with pytest.raises(ResultFileError) as info:
        check_run_id(bad)
    assert "letters, digits" in str(info.value)


def test_run_dir_stays_inside_the_root(tmp_path):
    assert run_dir(tmp_path, "20261128-163012-x-1a2b") == tmp_path / "20261128-163012-x-1a2b"
    with pytest.raises(ResultFileError):
        run_dir(tmp_path, "../outside")


def test_default_output_dir_uses_results_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "store"))
    folder = default_output_dir("org/My-Model")
    assert folder.parent == tmp_path / "store" and "-my-model-" in folder.name
    monkeypatch.delenv("RESULTS_DIR")
    assert default_output_dir("gpt2").parent == Path("results")


# -- unreadable files --------------------------------------------------------------------------

def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(ResultFileError, match="does not exist"):
        RunResult.load(tmp_path / "nope")
    with pytest.raises(ResultFileError, match="run.json is missing"):
        RunResult.load(tmp_path)


@pytest.mark.parametrize("content,words", [
    ("{not json", "cannot be read"),
    ("[1, 2, 3]", "not a JSON object"),
    ('{"schema_version": 99, "tool": {"version": "9.0"}}', "schema version 99"),
    ('{"tool": {}}', "schema version None"),
    ('{"schema_version": 1, "run_id": "x"}', "damaged or incomplete"),
    (b"\xff\xfe\x00garbage", "cannot be read"),
])
def test_corrupt_files_give_a_plain_sentence(tmp_path, content, words):
    file = tmp_path / "run.json"
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content)
    with pytest.raises(ResultFileError) as info:
        RunResult.load(tmp_path)
    assert words in str(info.value)


@pytest.mark.parametrize("field,value", [
    ("token_ns", "abc"), ("token_ns", [1.5, 2]), ("sent_ns", "soon"), ("step", None),
    ("error", 42),
])
def test_requests_with_wrong_types_are_refused(tmp_path, field, value):
    folder = make_result().save(tmp_path)
    data = json.loads((folder / "run.json").read_text())
    data["requests"][0][field] = value
    (folder / "run.json").write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="damaged or incomplete"):
        RunResult.load(folder)


def test_tampered_run_id_or_status_is_refused(tmp_path):
    folder = make_result().save(tmp_path)
    data = json.loads((folder / "run.json").read_text())
    data["run_id"] = "../../etc"
    (folder / "run.json").write_text(json.dumps(data))
    with pytest.raises(ResultFileError):
        RunResult.load(folder)
    data["run_id"] = "fine-id"
    data["status"] = "exploded"
    (folder / "run.json").write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="unknown status"):
        RunResult.load(folder)


# -- history -----------------------------------------------------------------------------------

def test_list_runs_newest_first_skipping_junk(tmp_path):
    make_result("20261128-100000-old-aaaa", started_at="2026-11-28T10:00:00+00:00",
                simulated=False).save(tmp_path / "20261128-100000-old-aaaa")
    make_result("20261128-120000-new-bbbb", started_at="2026-11-28T12:00:00+00:00",
                status="cancelled").save(tmp_path / "20261128-120000-new-bbbb")
    (tmp_path / "broken-cccc").mkdir()
    (tmp_path / "broken-cccc" / "run.json").write_text("{oops")
    (tmp_path / "empty-dddd").mkdir()
    (tmp_path / "notes.txt").write_text("not a run")
    rows = list_runs(tmp_path)
    assert [r.run_id for r in rows] == ["20261128-120000-new-bbbb", "20261128-100000-old-aaaa"]
    newest = rows[0]
    assert newest.model == "org/tiny" and newest.status == "cancelled" and not newest.complete
    assert newest.simulated is True and rows[1].simulated is False
    assert newest.batch_sizes == (1, 2)
    steps = RunResult.load(newest.path).steps()
    best = max(steps, key=lambda s: s.value("decode_throughput_tok_s"))
    assert newest.best_decode_throughput_tok_s == pytest.approx(
        best.value("decode_throughput_tok_s"))
    assert newest.best_batch_size == best.step
    assert (newest.requests, newest.errors) == (6, 1)
    assert list_runs(tmp_path / "missing") == []


def test_list_runs_sees_a_run_update(tmp_path):
    result = make_result("20261128-120000-live-eeee", status="running", records=[])
    folder = result.save(tmp_path / result.run_id)
    assert list_runs(tmp_path)[0].status == "running"
    assert list_runs(tmp_path)[0].best_decode_throughput_tok_s is None
    result.records = [record(1, 0, 0, tokens=6)]
    result.status = "complete"
    result.save(folder)
    row = list_runs(tmp_path)[0]
    assert row.status == "complete" and row.requests == 1
    assert row.best_decode_throughput_tok_s == pytest.approx(100.0)   # 5 tokens in 50 ms


def test_credentials_in_the_url_never_reach_run_json(tmp_path):
    """Python callers may pass user:password@ in the URL; the saved files never hold it."""
    from benchmark.config import RunConfig
    from benchmark.core.results import RunResult

    config = RunConfig(tokenizer_name="org/model", url="http://bob:s3cret-pass@10.0.0.5:8080")
    result = RunResult(run_id="20261128-000000-model-abcd", config=config, server_info={},
                       simulated=True, started_at="2026-11-28T00:00:00+00:00", ended_at=None,
                       status="running", message=None, warnings=[], records=[], server=None,
                       calibration=None)
    folder = result.save(tmp_path / "run")
    text = (folder / "run.json").read_text()
    assert "s3cret-pass" not in text and "bob" not in text
    assert RunResult.load(folder).config.url == "http://10.0.0.5:8080"
