"""Durable results in a Hub dataset, against a local stand-in for the Hub's HTTP API."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from benchmark.app import hub
from benchmark.config import RunConfig
from benchmark.errors import ConfigError, ResultFileError
from benchmark.core.records import RequestRecord
from benchmark.core.results import RunResult
from support.hub_stub import HubStub

TOKEN = "hf_StubSecretToken123456"
REPO = "alice/tgi-benchmark-results"
RUN_ID = "20261128-163012-tiny-3f9a"
MS = 1_000_000


def make_run(root: Path, run_id: str = RUN_ID, status: str = "complete") -> Path:
    config = RunConfig(tokenizer_name="org/tiny", url="http://127.0.0.1:3000", batch_sizes=(1,),
                       sequence_length=10, decode_length=4, runs=2, warmups=0)
    records = [
        RequestRecord(step=1, run=r, request=0, warmup=False, scheduled_ns=0, sent_ns=r * MS,
                      token_ns=[r * MS + (i + 5) * MS for i in range(4)], end_ns=r * MS + 9 * MS,
                      input_tokens=10, output_tokens=4, requested_output_tokens=4,
                      finish_reason="length", status=200, request_id=f"{run_id}-1-{r}-0")
        for r in range(2)
    ]
    result = RunResult(run_id=run_id, config=config, server_info={"model_id": "org/tiny"},
                       simulated=True, started_at="2026-11-28T16:30:12+00:00",
                       ended_at="2026-11-28T16:31:00+00:00", status=status, records=records)
    return result.save(root / run_id)


@pytest.fixture
def stub(monkeypatch):
    import huggingface_hub.constants as constants

    # tests/conftest.py turns the Hub off for the whole suite; this stub is on loopback.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with HubStub(token=TOKEN) as server:
        server.create_dataset(REPO)
        yield server


def results_repo(stub: HubStub, sleeps: list[float] | None = None, **kwargs) -> hub.ResultsRepo:
    record = sleeps if sleeps is not None else []
    return hub.ResultsRepo(REPO, TOKEN, endpoint=stub.url, sleep=record.append, **kwargs)


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_upload_puts_the_run_under_runs_and_keeps_the_local_copy(stub, tmp_path):
    folder = make_run(tmp_path / "results")
    before = local_files(folder)
    status = results_repo(stub).upload_run(folder)
    assert status.ok, status.message
    assert status.attempts == 1
    assert REPO in status.message and "restarts" in status.message
    assert status.url == f"{stub.url}/datasets/{REPO}/tree/main/runs/{RUN_ID}"
    stored = stub.files(REPO)
    assert set(stored) == {f"runs/{RUN_ID}/{n}" for n in ("run.json", "summary.csv",
                                                          "requests.csv")}
    assert stored[f"runs/{RUN_ID}/run.json"] == before["run.json"]
    assert local_files(folder) == before
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in stub.requests)


def test_fetch_brings_a_run_back_after_the_disk_was_wiped(stub, tmp_path):
    folder = make_run(tmp_path / "space-before-restart")
    repo = results_repo(stub)
    assert repo.upload_run(folder).ok
    fresh_disk = tmp_path / "space-after-restart"
    fetched = repo.fetch_run(RUN_ID, fresh_disk)
    assert fetched == fresh_disk / RUN_ID
    assert local_files(fetched) == local_files(folder)
    reopened = RunResult.load(fetched)
    assert reopened.run_id == RUN_ID and reopened.status == "complete"
    assert len(reopened.records) == 2
    assert [p.name for p in fresh_disk.iterdir()] == [RUN_ID]  # no staging folder left behind
    assert repo.list_remote_runs() == [RUN_ID]


def test_space_settings_alone_route_uploads_and_fetches_through_hf_endpoint(stub, tmp_path):
    env = {"RESULTS_REPO": REPO, "HF_TOKEN": TOKEN, "HF_ENDPOINT": stub.url}
    folder = make_run(tmp_path / "before")
    assert hub.from_env(env).upload_run(folder).ok
    fetched = hub.from_env(env).fetch_run(RUN_ID, tmp_path / "after")
    assert RunResult.load(fetched).run_id == RUN_ID
    assert stub.calls("commit") == 1 and stub.calls("resolve") >= 3


def test_fetch_of_a_run_already_on_disk_does_not_call_the_hub(stub, tmp_path):
    make_run(tmp_path)
    before = len(stub.requests)
    assert results_repo(stub).fetch_run(RUN_ID, tmp_path) == tmp_path / RUN_ID
    assert len(stub.requests) == before


def test_fetch_of_an_unknown_run_says_so(stub, tmp_path):
    with pytest.raises(ResultFileError, match="neither on this disk nor in the dataset"):
        results_repo(stub).fetch_run("20261128-000000-nope-0000", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_links_to_missing_runs_do_not_each_call_the_hub(stub, tmp_path):
    """A stream of ?run= links to runs the dataset lacks asks the Hub once per run a minute."""
    repo = results_repo(stub)
    with pytest.raises(ResultFileError, match="neither on this disk nor in the dataset"):
        repo.fetch_run("20261128-000000-nope-0000", tmp_path)
    before = len(stub.requests)
    for _ in range(5):
        with pytest.raises(ResultFileError, match="neither on this disk nor in the dataset"):
            repo.fetch_run("20261128-000000-nope-0000", tmp_path)
    assert len(stub.requests) == before


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "", "x y", "%2e%2e"])
def test_fetch_refuses_ids_that_are_not_run_ids_before_any_request(stub, tmp_path, bad):
    with pytest.raises(ResultFileError, match="not valid"):
        results_repo(stub).fetch_run(bad, tmp_path)
    assert stub.requests == []


def test_failed_upload_is_reported_retried_and_leaves_the_local_files(stub, tmp_path, caplog):
    folder = make_run(tmp_path)
    before = local_files(folder)
    stub.fail("commit", times=10, status=500)
    sleeps: list[float] = []
    with caplog.at_level(logging.INFO, logger="benchmark.app.hub"):
        status = results_repo(stub, sleeps, attempts=3, backoff_s=2.0).upload_run(folder)
    assert not status.ok
    assert status.attempts == 3
    assert stub.calls("commit") == 3
    assert "failed" in status.message and "500" in status.message
    assert "kept on this disk" in status.message and "Upload again" in status.message
    assert sleeps == [2.0, 4.0]  # bounded exponential backoff, no wait after the last try
    assert stub.files(REPO) == {}
    assert local_files(folder) == before
    assert TOKEN not in status.message and TOKEN not in caplog.text
    assert results_repo(stub).last_status(RUN_ID) is None  # statuses are per instance


def test_transient_failure_then_success(stub, tmp_path):
    folder = make_run(tmp_path)
    stub.fail("commit", times=1, status=503)
    sleeps: list[float] = []
    repo = results_repo(stub, sleeps)
    status = repo.upload_run(folder)
    assert status.ok, status.message
    assert status.attempts == 2
    assert sleeps == [2.0]
    assert f"runs/{RUN_ID}/run.json" in stub.files(REPO)
    assert repo.last_status(RUN_ID) == status


def test_rejected_token_stops_at_once_with_what_to_fix(stub, tmp_path):
    folder = make_run(tmp_path)
    sleeps: list[float] = []
    repo = hub.ResultsRepo(REPO, "hf_WrongToken99999999", endpoint=stub.url, sleep=sleeps.append)
    status = repo.upload_run(folder)
    assert not status.ok
    assert "HF_TOKEN" in status.message and "401" in status.message
    assert "hf_WrongToken99999999" not in status.message
    assert sleeps == []
    assert local_files(folder)


def test_no_write_access_is_not_retried(stub, tmp_path):
    folder = make_run(tmp_path)
    stub.fail("commit", times=5, status=403)
    sleeps: list[float] = []
    status = results_repo(stub, sleeps).upload_run(folder)
    assert not status.ok and "write access" in status.message
    assert "fix this, then press Upload again" in status.message
    assert stub.calls("commit") == 1 and sleeps == []


def test_missing_dataset_is_created_private_at_first_upload(stub, tmp_path):
    folder = make_run(tmp_path)
    repo = hub.ResultsRepo("alice/new-results", TOKEN, endpoint=stub.url, sleep=lambda s: None)
    status = repo.upload_run(folder)
    assert status.ok, status.message
    assert stub.calls("create") == 1
    assert f"runs/{RUN_ID}/summary.csv" in stub.files("alice/new-results")


def test_a_file_holding_the_token_is_never_uploaded(stub, tmp_path):
    folder = make_run(tmp_path)
    (folder / "server.log").write_text(f"launcher env HF_TOKEN={TOKEN}\n")
    status = results_repo(stub).upload_run(folder)
    assert not status.ok
    assert "server.log" in status.message and "HF_TOKEN" in status.message
    assert TOKEN not in status.message
    assert stub.calls("commit") == 0
    assert (folder / "server.log").exists()


def test_hidden_and_temporary_files_stay_local(stub, tmp_path):
    folder = make_run(tmp_path)
    (folder / ".run.json.abc.tmp").write_text("partial")
    (folder / "progress.jsonl").write_text('{"event":"done"}\n')
    assert results_repo(stub).upload_run(folder).ok
    assert sorted(p.rsplit("/", 1)[-1] for p in stub.files(REPO)) == [
        "progress.jsonl", "requests.csv", "run.json", "summary.csv"]


def test_unfinished_or_missing_runs_are_not_uploaded(stub, tmp_path):
    running = make_run(tmp_path / "a", status="running")
    status = results_repo(stub).upload_run(running)
    assert not status.ok and "still running" in status.message
    status = results_repo(stub).upload_run(tmp_path / "nothing-here")
    assert not status.ok and "Not uploaded" in status.message
    assert stub.calls("commit") == 0


def test_dropped_connections_are_retried_then_reported(stub, tmp_path):
    folder = make_run(tmp_path)
    stub.fail("commit", times=2, status=0)  # the Hub hangs up without an answer
    sleeps: list[float] = []
    status = results_repo(stub, sleeps, attempts=2).upload_run(folder)
    assert not status.ok and status.attempts == 2 and sleeps == [2.0]
    assert "kept on this disk" in status.message
    assert local_files(folder)
    assert results_repo(stub).upload_run(folder).ok  # the Upload button, pressed again


def test_check_reports_token_and_dataset(stub):
    ok, message = results_repo(stub).check()
    assert ok and REPO in message and "alice" in message
    ok, message = hub.ResultsRepo("alice/later", TOKEN, endpoint=stub.url).check()
    assert ok and "created" in message
    ok, message = hub.ResultsRepo(REPO, "hf_WrongToken99999999", endpoint=stub.url).check()
    assert not ok and "HF_TOKEN" in message and "hf_WrongToken99999999" not in message


def test_from_env_needs_both_the_dataset_and_a_token():
    assert hub.from_env({}) is None
    assert hub.from_env({"RESULTS_REPO": REPO}) is None
    assert hub.from_env({"HF_TOKEN": TOKEN}) is None
    repo = hub.from_env({"RESULTS_REPO": REPO, "HF_TOKEN": TOKEN,
                         "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert repo is not None and repo.repo_id == REPO and repo.endpoint == "http://127.0.0.1:9"
    assert TOKEN not in repr(repo)
    other = hub.from_env({"RESULTS_REPO": f"https://huggingface.co/datasets/{REPO}/",
                          "HUGGING_FACE_HUB_TOKEN": TOKEN})
    assert other is not None and other.repo_id == REPO


@pytest.mark.parametrize("bad", ["just-a-name", "a/b/c", "../x/y", "a/-b"])
def test_malformed_results_repo_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="RESULTS_REPO"):
        hub.from_env({"RESULTS_REPO": bad, "HF_TOKEN": TOKEN})
