"""``--mode capacity`` against the simulator: probes, the answer in run.json, plain refusals."""

from __future__ import annotations

import json
import math

import pytest

from benchmark.cli import main
from benchmark.simulator import SimulatorConfig, run_in_thread

# A small server: 4 sequences at a time, 8 ms per decode step, so its capacity is a few
# requests per second and a short search can find it.
SMALL = dict(max_batch_size=4, prefill_base_ms=5.0, prefill_per_token_ms=0.0,
             decode_base_ms=8.0, decode_per_seq_ms=0.0, decode_per_context_token_us=0.0)


def capacity_args(tokenizer: str, url: str, out, *extra: str) -> list[str]:
    return ["--tokenizer-name", tokenizer, "--url", url, "--mode", "capacity",
            "--sequence-length", "8", "--decode-length", "8", "--output-dir", str(out), *extra]


def test_capacity_search_writes_its_answer_and_every_probe(capsys, tiny_tokenizer, tmp_path):
    out = tmp_path / "run"
    progress = tmp_path / "progress.jsonl"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SMALL)) as sim:
        code = main(capacity_args(tiny_tokenizer, sim.url, out, "--slo-ttft-ms", "250",
                                  "--slo-tpot-ms", "50", "--max-duration", "40",
                                  "--progress-jsonl", str(progress)))
    assert code == 0
    printed = capsys.readouterr()
    assert "### Capacity" in printed.out and "This server keeps 90% of requests within 250 ms" \
        in printed.out
    assert "probe 1 (one at a time)" in printed.err
    capacity = json.loads((out / "run.json").read_text())["capacity"]
    assert capacity["slo"] == {"ttft_ms": 250.0, "tpot_ms": 50.0, "e2e_ms": None}
    assert capacity["attainment_target"] == 0.9
    kinds = [p["kind"] for p in capacity["probes"]]
    assert kinds[:2] == ["one at a time", "saturation"] and set(kinds[2:]) == {"rate"}
    assert [p["step"] for p in capacity["probes"]] == list(range(1, len(kinds) + 1))
    for probe in capacity["probes"]:
        assert {"rate_rps", "attainment", "passed", "ttft_ms", "tpot_ms"} <= set(probe)
    # 4 sequences of ~8 steps x 8 ms: at most ~60 requests/s; the answer is below the
    # saturation throughput, was seen to pass, and carries Little's law's in-flight count
    assert capacity["rate_rps"] is not None
    assert 0 < capacity["rate_rps"] <= capacity["max_throughput_rps"]
    answer = next(p for p in capacity["probes"] if p["rate_rps"] == capacity["rate_rps"])
    assert answer["passed"] and capacity["in_flight"] > 0
    events = [json.loads(line) for line in progress.read_text().splitlines()]
    assert sum(e["event"] == "probe_done" for e in events) == len(kinds)
    rows = (out / "summary.csv").read_text().splitlines()
    assert "probe_kind" in rows[0] and any(",saturation," in row for row in rows)


def test_a_target_missed_one_request_at_a_time_stops_at_once_and_says_so(capsys,
                                                                         tiny_tokenizer,
                                                                         tmp_path):
    out = tmp_path / "run"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SMALL)) as sim:
        code = main(capacity_args(tiny_tokenizer, sim.url, out, "--slo-ttft-ms", "1"))
    assert code == 0
    text = capsys.readouterr().out
    assert "One request at a time already takes" in text and "your target is 1 ms" in text
    capacity = json.loads((out / "run.json").read_text())["capacity"]
    assert capacity["rate_rps"] is None and len(capacity["probes"]) == 1


@pytest.mark.parametrize("argv, words", [
    ([], "argument --slo-ttft-ms: Finding the capacity needs at least one latency target"),
    (["--slo-ttft-ms", "500", "--max-duration", "5"], "argument --max-duration: Max duration "
                                                       "(s) must be at least 30"),
    (["--slo-ttft-ms", "500", "--duration", "10"], "--duration applies to --mode concurrency "
                                                   "or --mode rate"),
    (["--slo-ttft-ms", "500", "--slo-attainment", "0"], "argument --slo-attainment"),
    (["--max-duration", "60"], "--max-duration applies to --mode capacity"),
])
def test_bad_capacity_input_is_refused_before_anything_starts(capsys, argv, words):
    mode = [] if argv == ["--max-duration", "60"] else ["--mode", "capacity"]
    with pytest.raises(SystemExit) as info:
        main(["--tokenizer-name", "tok", "--url", "http://127.0.0.1:9", *mode, *argv])
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_priced_capacity_run_writes_cost_and_a_deployment_plan(capsys, tiny_tokenizer,
                                                                tmp_path):
    out = tmp_path / "run"
    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SMALL)) as sim:
        code = main(capacity_args(tiny_tokenizer, sim.url, out, "--slo-ttft-ms", "250",
                                  "--slo-tpot-ms", "50", "--max-duration", "40",
                                  "--hardware", "l4x1", "--peak-rps", "40",
                                  "--headroom", "25", "--api-price-per-million", "0.6"))
    assert code == 0
    printed = capsys.readouterr().out
    document = json.loads((out / "run.json").read_text())
    cost, capacity = document["cost"], document["capacity"]
    assert cost["price"]["usd_per_hour"] == 0.80 and cost["price"]["hardware"] == "l4x1"
    assert "Hugging Face's price for 1x Nvidia L4" in cost["price"]["source"]
    rate = capacity["rate_rps"]
    at = cost["capacity"]
    assert at["rate_rps"] == rate
    assert at["usd_per_thousand_requests"] == pytest.approx(0.80 / 3600 / rate * 1000)
    plan = cost["plan"]
    replicas = math.ceil(40 * 1.25 / rate - 1e-9)
    assert plan["replicas"] == replicas
    assert plan["usd_per_month"] == pytest.approx(replicas * 0.80 * 730)
    assert plan["sentence"].startswith(f"At 40 requests/s at peak you need {replicas} × L4")
    assert "### Cost" in printed and f"you need {replicas} × L4" in printed
    cost_rows = [[c.strip() for c in line.strip("|").split("|")]
                 for line in printed.split("### Cost", 1)[1].splitlines()
                 if line.startswith("| ") and line[2].isdigit()]
    verdicts = {str(p["step"]): p["passed"] for p in capacity["probes"]}
    assert {row[0]: row[-1].startswith("yes") for row in cost_rows} == verdicts
    header, *rows = (out / "summary.csv").read_text().splitlines()
    assert header.endswith("usd_per_million_output_tokens,usd_per_million_tokens,"
                           "usd_per_thousand_requests,kwh_per_million_output_tokens")
    assert all(row.split(",")[-4] for row in rows)     # every probe got a price per token


def test_a_search_stopped_midway_keeps_its_probes_and_says_it_was_stopped(tiny_tokenizer,
                                                                         tmp_path):
    import threading

    from benchmark.config import RunConfig
    from benchmark.core.engine import run

    out = tmp_path / "run"
    cancel = threading.Event()
    seen: list[str] = []

    def on_progress(event):
        seen.append(event["event"])
        if seen.count("probe_done") == 2:      # stop during the first rate probe
            threading.Timer(1.0, cancel.set).start()

    with run_in_thread(SimulatorConfig(tokenizer=tiny_tokenizer, **SMALL)) as sim:
        config = RunConfig(tokenizer_name=tiny_tokenizer, url=sim.url, mode="capacity",
                           sequence_length=8, decode_length=8, slo_ttft_ms=250,
                           max_duration_s=60, output_dir=str(out))
        result = run(config, on_progress=on_progress, cancel=cancel)
    assert result.status == "cancelled"
    saved = json.loads((out / "run.json").read_text())
    assert saved["status"] == "cancelled"
    capacity = saved["capacity"]
    assert capacity["ended"] == "stopped" and capacity["rate_rps"] is None
    assert capacity["message"].startswith("The search was stopped before")
    assert [p["kind"] for p in capacity["probes"]] == ["one at a time", "saturation"]
