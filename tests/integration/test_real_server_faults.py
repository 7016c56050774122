"""What went wrong against a real OpenAI-compatible server (issue 18, items 1-8), reproduced
with a stand-in server (``support/standin.py``) doing what that server did."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from benchmark.config import RunConfig
from benchmark.core.clients import OpenAIChatClient, open_session
from benchmark.config import SamplingParams
from benchmark.core.engine import run
from benchmark.core.records import RequestRecord
from benchmark.errors import ConfigError
from support.helpers import read_csv
from support.standin import StandIn


def config_for(url: str, tokenizer: str, out: Path, **changes) -> RunConfig:
    values = dict(tokenizer_name=tokenizer, url=url, api="openai-chat", model="stand-in",
                  batch_sizes=(4,), sequence_length=16, decode_length=4, runs=1, warmups=0,
                  output_dir=str(out), timeout_s=30.0)
    values.update(changes)
    return RunConfig(**values)


# -- item 1: dead pooled connections ---------------------------------------------------------


def test_connections_opened_by_a_failing_get_are_not_used_for_measured_requests(
        tiny_tokenizer, tmp_path):
    """/v1/models answers 500 and the server drops the next request on that socket: no
    measured request may fail for it, and the run says what the GET answered."""
    with StandIn(models_status=500, drop_after_error=True) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run",
                                batch_sizes=(1, 4), runs=2))
    assert result.status == "complete"
    assert [r.error for r in result.records if not r.ok] == []
    assert any("/v1/models" in w and "HTTP 500" in w for w in result.warnings), result.warnings


def test_a_request_lost_on_a_dead_pooled_connection_is_sent_again_once(tmp_path):
    """The retry itself: a kept-alive socket the server dropped loses the POST before any byte
    of it was answered; the client sends it again on a fresh connection and records that."""
    with StandIn(models_status=500, drop_after_error=True) as server:
        client = OpenAIChatClient(server.url, model="m", sampling=SamplingParams(),
                                  decode_length=4)

        async def go() -> RequestRecord:
            record = RequestRecord(step=1, run=1, request=1)
            async with open_session() as session:
                async with session.get(server.url + "/v1/models") as response:
                    await response.read()       # 500: this socket is now doomed
                await client.send(session, client.body("hello"), record, timeout_s=10)
            return record

        record = asyncio.run(go())
    assert record.ok, record.error
    assert record.retried is True
    assert server.dropped == 1 and server.posts == 1
    assert len(record.token_ns) == 4 and record.sent_ns > record.scheduled_ns


def test_a_measured_request_lost_on_a_closed_connection_is_retried_and_said(tiny_tokenizer,
                                                                            tmp_path):
    # the connection-opening GET is answered; the POST that follows on that socket is dropped
    with StandIn(drop_reused=1) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run", batch_sizes=(1,),
                                runs=2))
    assert server.dropped == 1
    assert [r.ok for r in result.records] == [True, True]
    assert [r.retried for r in result.records] == [True, False]
    assert result.steps()[0].retried == 1
    assert any("sent again once on a fresh connection" in w for w in result.warnings)
    rows = read_csv(tmp_path / "run" / "requests.csv")
    assert [row["retried"] for row in rows] == ["true", "false"]


def test_retried_requests_are_marked_in_requests_csv(tiny_tokenizer, tmp_path):
    with StandIn() as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run"))
    rows = read_csv(tmp_path / "run" / "requests.csv")
    assert [row["retried"] for row in rows] == ["false"] * 4
    assert all(r.retried is False for r in result.records)
    assert result.steps()[0].retried == 0
    assert not any("sent again" in w for w in result.warnings)


# -- item 3: --model missing ------------------------------------------------------------------


@pytest.mark.parametrize("status, models, said", [
    (500, (), "/v1/models answered HTTP 500 (cache folder not found)"),
    (200, (), "/v1/models listed no model"),
])
def test_a_missing_model_says_what_the_server_answered(tiny_tokenizer, tmp_path, status, models,
                                                       said):
    with StandIn(models_status=status, models=models) as server:
        with pytest.raises(ConfigError) as info:
            run(config_for(server.url, tiny_tokenizer, tmp_path / "run", model=None))
    assert info.value.field == "model"
    assert said in str(info.value) and "--model" in str(info.value)


# -- item 4: short outputs warned per step ----------------------------------------------------


def test_a_short_output_is_warned_in_every_step_it_happens(tiny_tokenizer, tmp_path):
    # batch 1: one request of 3 tokens; batch 2: 4 and 2 tokens (of 4 asked)
    with StandIn(tokens=[3, 4, 2]) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run",
                                batch_sizes=(1, 2)))
    short = [w for w in result.warnings if "shorter than asked" in w]
    assert len(short) == 2, result.warnings
    assert "batch size 1" in short[0] and "batch size 2" in short[1]


# -- item 5: events coalesced in one read -------------------------------------------------------


def test_events_that_arrive_in_one_read_give_no_zero_gap(tiny_tokenizer, tmp_path):
    with StandIn(tokens=6, per_write=2, gap_s=0.005) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run", decode_length=6))
    assert all(r.ok for r in result.records)
    assert all(r.coalesced_events >= 3 for r in result.records)
    step = result.steps()[0]
    assert step.coalesced_events == sum(r.coalesced_events for r in result.records)
    itl = step.metric("inter_token_latency_ms")
    assert itl is not None and itl.min > 0.0
    rows = read_csv(tmp_path / "run" / "requests.csv")
    assert all(int(row["coalesced_events"]) >= 3 for row in rows)
    summary = read_csv(tmp_path / "run" / "summary.csv")
    assert {row["coalesced_events"] for row in summary} == {str(step.coalesced_events)}
    # the token count still comes from usage
    assert all(r.output_token_count == 6 for r in result.records)


# -- item 6: request ids unique per run ---------------------------------------------------------


def test_two_runs_into_folders_of_the_same_name_send_different_request_ids(tiny_tokenizer,
                                                                           tmp_path):
    with StandIn() as server:
        run(config_for(server.url, tiny_tokenizer, tmp_path / "a" / "rounds"))
        first = list(server.request_ids)
        run(config_for(server.url, tiny_tokenizer, tmp_path / "b" / "rounds"))
        second = server.request_ids[len(first):]
    assert len(first) == len(second) == 4
    assert all(first) and not set(first) & set(second)


# -- item 8: no usage from the server -----------------------------------------------------------


def test_a_server_that_sends_no_usage_is_counted_from_events_and_said(tiny_tokenizer, tmp_path):
    with StandIn(tokens=4, usage=False) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run",
                                batch_sizes=(1, 2)))
    assert all(r.ok and r.output_tokens is None for r in result.records)
    assert all(r.output_token_count == 4 for r in result.records)
    steps = result.steps()
    assert [s.tokens_from_events for s in steps] == [1, 2]
    assert [s.output_tokens for s in steps] == [4, 8]
    notes = [w for w in result.warnings if "counted from" in w and "events" in w]
    assert notes, result.warnings
    rows = read_csv(tmp_path / "run" / "requests.csv")
    assert [row["tokens_from_events"] for row in rows] == ["true"] * 3
    assert [row["output_tokens"] for row in rows] == [""] * 3


def test_the_cli_says_what_v1_models_answered_without_the_usage_text(capsys, tiny_tokenizer,
                                                                      tmp_path):
    from benchmark.cli import main

    with StandIn(models_status=500) as server:
        code = main(["--tokenizer-name", tiny_tokenizer, "--url", server.url,
                     "--api", "openai-chat", "-b", "1", "--output-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "usage:" not in "\n".join(err)
    assert len(err) == 1 and err[0].startswith("python -m benchmark: error: argument --model: ")
    assert "/v1/models answered HTTP 500 (cache folder not found)" in err[0]


def test_a_capacity_search_survives_the_connections_it_had_to_drop(tiny_tokenizer, tmp_path):
    """Found on an H200 against ``transformers serve``: /v1/models answers 500, the engine
    gives up its pooled connections and opens a new session, and the capacity search went on
    with the closed one ("RuntimeError: Session is closed", a traceback). Every probe must use
    the session the engine holds now."""
    with StandIn(models_status=500, drop_after_error=True, tokens=4) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run", mode="capacity",
                                batch_sizes=(1,), slo_ttft_ms=1000.0, max_duration_s=30.0))
    assert "Session is closed" not in (result.message or "")
    assert result.status in ("complete", "failed"), result.message
    assert result.capacity is not None and len(result.capacity.probes) >= 2, result.capacity


def test_a_capacity_search_ends_with_the_servers_error_when_the_server_breaks(tiny_tokenizer,
                                                                              tmp_path):
    """Found on an H200: transformers serve's batching worker died (a CUDA error) after the
    saturation probe, every later request got HTTP 503, and the search went on bisecting down
    to 'only one request at a time kept the targets'. A broken server has no capacity: the
    search stops and says what the server answered."""
    from benchmark.report.tables import capacity_headline

    with StandIn(tokens=4, fail_after=200) as server:
        result = run(config_for(server.url, tiny_tokenizer, tmp_path / "run", mode="capacity",
                                batch_sizes=(1,), slo_ttft_ms=1000.0, max_duration_s=60.0))
    capacity = result.capacity
    assert capacity is not None and capacity.rate_rps is None
    text = capacity_headline(capacity)
    assert text.startswith("The search stopped: the server failed"), text
    assert "CB worker is dead" in text
    # it broke under the saturation probe: no rate was bisected on a broken server
    assert [p.kind for p in capacity.probes] == ["one at a time", "saturation"]
