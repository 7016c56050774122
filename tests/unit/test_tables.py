"""The markdown tables and the headline show the measured numbers (no server needed)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmark.config import RunConfig, SamplingParams
from benchmark.core.records import RequestRecord
from benchmark.core.cost import dollars
from benchmark.core.results import RunResult
from benchmark.report.tables import (
    SIMULATED_LINE,
    balance_step,
    headline,
    latency_table,
    markdown_tables,
    requests_table,
    throughput_table,
)

MS = 1_000_000


def rec(step, run, request, *, ttft, gap, tokens=5, requested=5, error=None, kind=None):
    sent = run * 1000 * MS
    stamps = [] if error else [sent + int(ttft * MS) + int(k * gap * MS) for k in range(tokens)]
    return RequestRecord(step=step, run=run, request=request, scheduled_ns=sent, sent_ns=sent,
                         token_ns=stamps, end_ns=stamps[-1] if stamps else sent + 5 * MS,
                         input_tokens=None if error else 16,
                         output_tokens=None if error else tokens,
                         requested_output_tokens=requested, error=error, error_kind=kind,
                         finish_reason=None if error else "length", status=200)


def cells(text: str) -> list[list[str]]:
    """Rows of every markdown table in ``text`` as lists of stripped cells (separators dropped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|-"):
            rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def result(*, token_gap=None, simulated=False, status="complete", mode="rounds", extra=()):
    """Per batch size b, every request has ttft 10*b ms and a token gap from ``token_gap``."""
    token_gap = token_gap or {1: 10.0, 2: 12.0, 4: 14.0, 8: 40.0}
    records = [rec(b, run, i, ttft=10 * b, gap=token_gap[b])
               for b in token_gap for run in range(2) for i in range(b)]
    records += list(extra)
    config = RunConfig(tokenizer_name="org/tiny-model", url="http://user:pw@10.0.0.5:8080",
                       batch_sizes=tuple(token_gap), sequence_length=16, decode_length=5, runs=2,
                       mode=mode, duration_s=5.0 if mode == "concurrency" else None,
                       sampling=SamplingParams(temperature=0.5, top_k=7))
    return RunResult(run_id="20261128-163012-tiny-3f9a", config=config,
                     server_info={"model_id": "org/tiny-model", "version": "3.3.6"},
                     simulated=simulated, status=status, records=records)


def test_tables_contain_parameters_and_measured_numbers():
    text = markdown_tables(result())
    for heading in ("### Parameters", "### Latency", "### Throughput", "### Requests"):
        assert heading in text
    assert "| Model " in text and "org/tiny-model" in text
    rows = cells(text)
    assert ["Sequence Length", "16"] in rows
    assert ["Temperature", "0.5"] in rows and ["Top K", "7"] in rows
    assert "3.3.6" in text
    assert "user:pw" not in text and "http://10.0.0.5:8080" in text
    assert SIMULATED_LINE not in text
    # batch size 4: ttft 40 ms for all, token latency 14 ms
    rows = cells(text)
    assert ["Prefill", "4", "40.00 ms", "40.00 ms", "40.00 ms", "40.00 ms", "40.00 ms",
            "40.00 ms"] in rows
    assert ["Decode (token)", "4"] + ["14.00 ms"] * 6 in rows
    assert ["Decode (total)", "8"] + ["160.00 ms"] * 6 in rows


def test_throughput_table_uses_per_round_values():
    steps = result().steps()
    table = throughput_table(steps)
    # batch size 2: 2 requests * 16 prompt tokens in 20 ms = 1600 tokens/s;
    # decode: 2 * 4 tokens in 4 * 12 ms = 166.67 tokens/s
    assert ["Prefill", "2"] + ["1600.00 tokens/s"] * 3 in cells(table)
    assert ["Decode", "2"] + ["166.67 tokens/s"] * 3 in cells(table)


def test_latency_table_shows_all_percentiles_and_missing_values():
    failing = [rec(16, 0, i, ttft=1, gap=1, error="HTTP 503: overloaded", kind="http")
               for i in range(2)]
    r = result(extra=failing)
    r.config = RunConfig(tokenizer_name="x", batch_sizes=(1, 2, 4, 8, 16), decode_length=5,
                         sequence_length=16, runs=2)
    table = latency_table(r.steps())
    rows = cells(table)
    assert rows[0] == ["Step", "Batch Size", "Average", "Lowest", "Highest", "p50", "p90", "p99"]
    assert ["Prefill", "16"] + ["n/a"] * 6 in rows
    requests = cells(markdown_tables(r).split("### Requests")[1])
    assert requests[0][:7] == ["Batch Size", "Requests", "OK", "Errors", "Timeouts", "Cancelled",
                               "Short outputs"]
    assert requests[-1][:4] == ["16", "2", "0", "2"]


def test_simulated_and_unfinished_runs_say_so():
    text = markdown_tables(result(simulated=True, status="cancelled"))
    assert SIMULATED_LINE in text
    assert "stopped before the end" in text
    assert ["Simulated server", "yes"] in cells(text)
    sentences = headline(result(simulated=True))
    assert "simulated server, not a GPU" in sentences[0]


def test_empty_run_has_parameters_and_a_sentence():
    r = result()
    r.records = []
    r.status = "running"
    text = markdown_tables(r)
    assert "### Parameters" in text and "No request has been measured yet." in text
    assert "### Latency" not in text
    assert headline(r)[-1] == "No request has been measured yet."


def test_headline_names_best_throughput_latency_and_balance():
    sentences = headline(result())
    text = " ".join(sentences)
    # decode throughput: b * 4 tokens / (4 * gap) -> 1: 100, 2: 166.7, 4: 285.7, 8: 200
    assert "Highest generation speed: 286 tokens per second in total at batch size 4" in text
    assert "10.0 ms at batch size 1; 12.0 ms at batch size 2; 14.0 ms at batch size 4; " \
           "40.0 ms at batch size 8" in text
    assert "Wait for the first token (median): 10.0 ms at batch size 1" in text
    assert "Best balance: batch size 4" in text and "1.5x" in text


def test_balance_is_largest_throughput_within_the_latency_budget():
    # batch 8 is fastest overall but its token latency (16 ms) is above 1.5 x 10 ms
    r = result(token_gap={1: 10.0, 2: 11.0, 4: 14.0, 8: 16.0})
    assert balance_step(r.steps()).step == 4
    # when every larger batch is too slow, batch 1 is the balance and the sentence says why
    slow = result(token_gap={1: 10.0, 2: 30.0})
    assert balance_step(slow.steps()).step == 1
    assert any("Every larger batch size made each user wait more than 1.5x" in s
               for s in headline(slow))
    # one step: no balance to find
    assert balance_step(result(token_gap={1: 10.0}).steps()) is None


def test_headline_reports_failures_and_short_outputs():
    extra = [rec(1, 2, 0, ttft=5, gap=5, tokens=2, requested=5),
             rec(1, 3, 0, ttft=5, gap=5, error="timeout after 1 s", kind="timeout")]
    text = " ".join(headline(result(extra=extra)))
    assert "1 of 32 requests failed, 1 of them timed out" in text
    assert "1 requests ended before the 5 tokens asked" in text


def test_concurrency_mode_talks_about_users():
    r = result(mode="concurrency", token_gap={1: 10.0, 2: 12.0})
    text = markdown_tables(r)
    assert ["Step", "Users", "Average", "Lowest", "Highest", "p50", "p90", "p99"] in cells(text)
    assert ["Users", "1, 2"] in cells(text)
    text = " ".join(headline(r))
    assert "10.0 ms with 1 concurrent user; 12.0 ms with 2 concurrent users" in text
    assert "in total with 2 concurrent users (measured over the whole step)" in text


@pytest.mark.parametrize("status,words", [("failed", "The run failed. Server died."),
                                          ("running", "still going")])
def test_status_sentences(status, words):
    r = result(status=status)
    r.message = "Server died."
    assert words in markdown_tables(r)


def test_a_hostile_model_name_cannot_put_links_images_or_html_in_the_tables():
    from dataclasses import replace

    hostile = "![x](http://evil.example/p.png)[Re-run here](http://evil.example)<img src=x>"
    data = result()
    data.server_info = {"model_id": hostile, "version": "<b>3.3.6</b>"}
    data.config = replace(data.config, tokenizer_name=hostile)
    text = markdown_tables(data)
    for active in ("![x](", "[Re-run here](", "<img", "<b>"):
        assert active not in text
    assert "Re-run here" in text and "evil.example" in text  # still readable


def test_a_short_average_output_is_never_rounded_up_to_the_length_asked():
    # 49 requests of 128 tokens and one of 127: 127.98 on average, and one short output
    records = [rec(1, run, 0, ttft=10, gap=1.0, tokens=128, requested=128) for run in range(49)]
    records.append(rec(1, 49, 0, ttft=10, gap=1.0, tokens=127, requested=128))
    config = RunConfig(tokenizer_name="t", url="http://h:1", batch_sizes=(1,), sequence_length=16,
                       decode_length=128, runs=50)
    run_result = RunResult(run_id="r", config=config, records=records)
    row = next(r for r in cells(requests_table(run_result.steps())) if r[0] == "1")
    assert row[6] == "1"                          # short outputs
    assert row[7] == "127.9 of 128"               # not "128.0 of 128"
    full = RunResult(run_id="r", config=config, records=records[:49])
    assert next(r for r in cells(requests_table(full.steps())) if r[0] == "1")[7] == "128.0 of 128"


def test_what_the_server_did_not_report_is_said_in_words_never_none():
    config = RunConfig(tokenizer_name="t", url="http://h:1", api="openai-chat", model="m",
                       batch_sizes=(1,), sequence_length=16, decode_length=5, runs=1)
    text = markdown_tables(RunResult(run_id="r", config=config, server_info={},
                                     server={"quantize": None, "dtype": None},
                                     records=[rec(1, 0, 0, ttft=10, gap=1.0)]))
    assert "None" not in text
    rows = dict(r[:2] for r in cells(text) if len(r) >= 2)
    assert rows["Server version"] == "not reported by the server"
    assert rows["Seed"] == "not set" and rows["Top K"] == "not set"


def test_latency_targets_table_and_headline_say_which_steps_kept_the_target():
    # ttft = 10*b ms: batch sizes 1, 2 and 4 are within a 45 ms target, 8 is not.
    run = result()
    run = RunResult(run_id=run.run_id, config=dataclasses.replace(
        run.config, slo_ttft_ms=45, slo_attainment=0.9), server_info=run.server_info,
        status="complete", records=run.records)
    text = markdown_tables(run)
    assert "### Latency targets" in text and "45 ms to the first token" in text
    rows = {r[0]: r for r in cells(text.split("### Latency targets")[1])}
    assert rows["4"][1:5] == ["8", "8", "100.0%", "yes (90%)"]       # 2 rounds of 4
    assert rows["8"][1:5] == ["16", "0", "0.0%", "no (90%)"]
    assert rows["8"][7] == "16"                                        # all missed TTFT
    words = " ".join(headline(run))
    assert "Requests within 45 ms to the first token (target 90%)" in words
    assert "0% at batch size 8" in words


def test_no_latency_target_means_no_targets_table():
    assert "### Latency targets" not in markdown_tables(result())


def test_a_rate_run_names_its_steps_as_rates_and_has_a_schedule_table():
    from benchmark.config import RunConfig
    from benchmark.core.records import RequestRecord
    from benchmark.core.results import RunResult
    from benchmark.report.tables import headline, markdown_tables

    config = RunConfig(tokenizer_name="t", mode="rate", rates=(2.5,), duration_s=2,
                       schedule_seed=11, decode_length=3)
    records = []
    for i in range(3):
        start = 1_000_000_000
        scheduled = start + (i + 1) * 400_000_000
        record = RequestRecord(step=2.5, run=1, request=i + 1, scheduled_ns=scheduled,
                               step_start_ns=start, queued_ns=scheduled,
                               admitted_ns=scheduled + 1_000_000,
                               sent_ns=scheduled + 2_000_000,
                               token_ns=[scheduled + 10_000_000 * k for k in (2, 3, 4)],
                               end_ns=scheduled + 40_000_000, output_tokens=3, input_tokens=10)
        records.append(record)
    result = RunResult(run_id="r", config=config, records=records, status="complete")
    text = markdown_tables(result)
    assert "| Rates (req/s)" in text and "| Schedule seed" in text and "11" in text
    assert "### Schedule" in text
    schedule = text.split("### Schedule")[1]
    row = [c.strip() for c in schedule.strip().splitlines()[2].strip("|").split("|")]
    assert row[0] == "2.5" and row[1] == "2.50" and row[2] == "2.50"
    assert row[4] == "2.00 ms" and row[6] == "1.00 ms"  # lag p50, client queue p99
    assert any("at 2.5 requests/s" in sentence for sentence in headline(result))


def test_cost_section_names_the_price_its_source_and_each_steps_dollars():
    run = result()
    assert "### Cost" not in markdown_tables(run)
    priced = dataclasses.replace(run, config=dataclasses.replace(run.config,
                                                                 gpu_price_per_hour=3.6))
    text = markdown_tables(priced)
    assert "### Cost" in text
    assert "Price: $3.60 per hour, typed by the user." in text
    first = priced.cost()["steps"][0]
    # $3.60/h = $0.001/s: $ per million output tokens = 1000 / output tokens per second
    assert first["usd_per_million_output_tokens"] == pytest.approx(
        1000.0 / first["output_tokens_per_s"])
    row = next(r for r in cells(text) if r[0] == "1" and r[-1].startswith("$")
               and len(r) == 6)
    assert row[3] == dollars(first["usd_per_million_output_tokens"])
    assert dollars(104.6) == "$105" and dollars(0.372) == "$0.372" and dollars(0.0042) == "$0.0042"
    assert dollars(0.8) == "$0.80" and dollars(12.4) == "$12.40" and dollars(2336) == "$2,336"


def test_headline_names_the_cheapest_step_when_priced():
    run = result()
    assert not any("per million" in s for s in headline(run))
    priced = dataclasses.replace(run, config=dataclasses.replace(run.config,
                                                                 gpu_price_per_hour=3.6))
    costs = priced.cost()["steps"]
    best = min(costs, key=lambda c: c["usd_per_million_output_tokens"])
    assert (f"Cheapest: {dollars(best['usd_per_million_output_tokens'])} per million output "
            f"tokens at batch size {best['step']:g}, at $3.60/hour.") in headline(priced)
