"""Other tools' result files opened as runs of ours (benchmark.core.importers).

Fixtures (tests/fixtures/imports, see its README):
- guidellm_benchmarks.json: REAL, GuideLLM 0.8.1 run against our simulator (trimmed);
- vllm_bench_serve.json: built from vLLM's source, vllm/benchmarks/serve.py (the result dict
  of benchmark() merged into main's result_json; --save-detailed arrays in seconds);
- aiperf_profile_export_aiperf.json + aiperf_profile_export.jsonl: built from AIPerf's
  documented schema (ai-dynamo/aiperf docs/tutorials/working-with-profile-exports.md);
- inference_benchmarker_results.json: built from huggingface/inference-benchmarker's
  src/writers.rs (BenchmarkReportWriter / BenchmarkResultsWriter / PercentilesWriter);
- llmperf_summary.json + llmperf_individual_responses.json: built from ray-project/llmperf's
  token_benchmark_ray.py (flattened results_* keys, seconds).
Every number below is checked against the source document the test reads itself.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from benchmark.core.importers import (convert_documents, detect, import_files, parse_document,
                                      to_run_result)
from benchmark.core.importers.common import ms_from_ns, ms_from_s
from benchmark.core.results import RunResult, list_runs
from benchmark.errors import ImportFileError
from benchmark.report import charts, tables
from benchmark.report.html import html_report, write_html_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"


def load(name: str):
    path = FIXTURES / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def run_of(*names: str, documents=None) -> RunResult:
    docs = documents or [(n, load(n)) for n in names]
    imported = convert_documents(docs)
    assert len(imported) == 1
    return to_run_result(imported[0])


def stats(result: RunResult, step: int, key: str):
    [found] = [s for s in result.steps() if s.step == step]
    return found.metrics.get(key)


# ---------------------------------------------------------------------------------------------
# Units


def test_unit_conversions_are_explicit():
    assert ms_from_s(0.021) == pytest.approx(21.0)
    assert ms_from_s(None) is None
    assert ms_from_ns(1_500_000) == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------
# Each importer on its fixture


def test_guidellm_real_file_numbers_match_the_source():
    source = load("guidellm_benchmarks.json")
    result = run_of("guidellm_benchmarks.json")
    assert result.source["tool"] == "guidellm" and result.source["tool_version"] == "0.8.1"
    assert [s.step for s in result.steps()] == [1, 2]          # concurrent streams 1 and 2
    assert result.source["step_labels"] == {"1": "1 concurrent stream",
                                            "2": "2 concurrent streams"}
    for bench, step in zip(source["benchmarks"], (1, 2)):
        m = bench["metrics"]
        ttft = m["time_to_first_token_ms"]["successful"]
        got = stats(result, step, "prefill_latency_ms")
        assert got.avg == pytest.approx(ttft["mean"])
        assert got.p50 == pytest.approx(ttft["percentiles"]["p50"])
        assert got.p99 == pytest.approx(ttft["percentiles"]["p99"])
        assert (got.min, got.max, got.count) == (pytest.approx(ttft["min"]),
                                                 pytest.approx(ttft["max"]), ttft["count"])
        # request_latency is in SECONDS in GuideLLM's file
        latency = m["request_latency"]["successful"]
        assert stats(result, step, "e2e_latency_ms").avg == pytest.approx(latency["mean"] * 1000)
        assert stats(result, step, "e2e_latency_ms").p90 == pytest.approx(
            latency["percentiles"]["p90"] * 1000)
        itl = m["inter_token_latency_ms"]["successful"]
        assert stats(result, step, "decode_token_latency_ms").avg == pytest.approx(itl["mean"])
        tpot = m["time_per_output_token_ms"]["successful"]
        assert stats(result, step, "time_per_output_token_incl_ttft_ms").avg == \
            pytest.approx(tpot["mean"])
        rps = stats(result, step, "requests_per_s")   # successful requests / window, as ours
        assert rps.avg == pytest.approx(m["request_totals"]["successful"] / bench["duration"])
        assert rps.p50 is None and rps.min is None     # a single number per level
        [summary] = [s for s in result.steps() if s.step == step]
        totals = m["request_totals"]
        assert (summary.requests, summary.ok, summary.errors) == (
            totals["total"], totals["successful"], totals["errored"])
        assert summary.duration_s == pytest.approx(bench["duration"])
    # GuideLLM does not measure these: absent, not zero
    assert stats(result, 1, "decode_throughput_tok_s") is None
    assert stats(result, 1, "inter_token_latency_ms") is None
    # per-request rows: send, first token, last token, end
    rows = source["benchmarks"][0]["requests"]["successful"]
    first = [r for r in result.records if r.step == 1][0]
    assert first.ttft_ms == pytest.approx(rows[0]["time_to_first_token_ms"], abs=1e-5)
    assert first.e2e_ms == pytest.approx(rows[0]["request_latency"] * 1000, abs=1e-5)
    assert first.output_tokens == rows[0]["output_tokens"]
    assert first.request_id == rows[0]["request_id"]
    assert len(result.records) == sum(len(b["requests"]["successful"])
                                      for b in source["benchmarks"])


def test_vllm_flat_keys_and_detailed_arrays_in_seconds():
    source = load("vllm_bench_serve.json")
    result = run_of("vllm_bench_serve.json")
    assert result.source["tool"] == "vllm bench serve"
    assert result.source["tool_version"] == tables.NOT_IN_SOURCE   # vLLM does not write it
    [step] = result.steps()
    assert step.step == source["max_concurrency"]
    assert (step.ok, step.errors, step.requests) == (3, 1, 4)
    ttft = stats(result, 2, "prefill_latency_ms")
    assert (ttft.avg, ttft.p50, ttft.p90, ttft.p99) == (source["mean_ttft_ms"],
                                                        source["median_ttft_ms"],
                                                        source["p90_ttft_ms"],
                                                        source["p99_ttft_ms"])
    assert ttft.min is None and ttft.max is None          # vLLM writes no min/max
    assert stats(result, 2, "decode_token_latency_ms").avg == source["mean_tpot_ms"]
    assert stats(result, 2, "inter_token_latency_ms").p99 == source["p99_itl_ms"]
    assert stats(result, 2, "e2e_latency_ms").p50 == source["median_e2el_ms"]
    assert stats(result, 2, "requests_per_s").avg == source["request_throughput"]
    assert stats(result, 2, "output_throughput_tok_s").avg == source["output_throughput"]
    # ttfts and itls are seconds: 0.010 s -> 10 ms, each gap 10 ms
    ok = [r for r in result.records if r.ok]
    assert ok[0].ttft_ms == pytest.approx(source["ttfts"][0] * 1000)
    assert ok[0].itl_ms == pytest.approx([g * 1000 for g in source["itls"][0]])
    failed = [r for r in result.records if not r.ok]
    assert len(failed) == 1 and "503" in failed[0].error
    assert result.source["every_token_stamp"] is True


def test_aiperf_summary_with_per_request_jsonl():
    source = load("aiperf_profile_export_aiperf.json")
    rows = load("aiperf_profile_export.jsonl")
    result = run_of(documents=[("profile_export.jsonl", rows),
                               ("profile_export_aiperf.json", source)])
    assert result.source["tool"] == "aiperf"
    assert result.source["companion_file"] == "profile_export.jsonl"
    ttft = stats(result, 2, "prefill_latency_ms")
    block = source["time_to_first_token"]
    assert (ttft.avg, ttft.min, ttft.max, ttft.p50, ttft.p90, ttft.p99) == (
        block["avg"], block["min"], block["max"], block["p50"], block["p90"], block["p99"])
    assert stats(result, 2, "decode_token_latency_ms").avg == source["inter_token_latency"]["avg"]
    [step] = result.steps()
    assert step.duration_s == pytest.approx(source["benchmark_duration"]["avg"])  # "sec"
    assert len(result.records) == len(rows)
    record = result.records[2]
    meta = rows[2]["metadata"]
    assert record.e2e_ms == pytest.approx((meta["request_end_ns"] - meta["request_start_ns"]) / 1e6)
    assert record.ttft_ms == pytest.approx(rows[2]["metrics"]["time_to_first_token"]["value"])
    assert record.itl_ms == pytest.approx(rows[2]["metrics"]["inter_chunk_latency"]["value"])


def test_aiperf_units_are_read_not_assumed():
    source = load("aiperf_profile_export_aiperf.json")
    in_seconds = copy.deepcopy(source)
    in_seconds["time_to_first_token"] = {"unit": "s", "avg": 0.0225, "p99": 0.0318}
    ttft = stats(run_of(documents=[("a.json", in_seconds)]), 2, "prefill_latency_ms")
    assert (ttft.avg, ttft.p99) == (pytest.approx(22.5), pytest.approx(31.8))
    strange = copy.deepcopy(source)
    strange["request_latency"]["unit"] = "fortnights"
    with pytest.raises(ImportFileError, match=r"^a\.json: .*request_latency\.unit"):
        run_of(documents=[("a.json", strange)])


def test_inference_benchmarker_skips_its_warmup():
    source = load("inference_benchmarker_results.json")
    result = run_of("inference_benchmarker_results.json")
    measured = source["results"][1]
    [step] = result.steps()               # the "warmup" result is not a step
    assert "ConstantArrivalRate" in result.source["step_labels"]["1"]
    ttft = stats(result, 1, "prefill_latency_ms")
    block = measured["time_to_first_token_ms"]
    assert (ttft.avg, ttft.p50, ttft.p90, ttft.p99) == (block["avg"], block["p50"],
                                                        block["p90"], block["p99"])
    assert stats(result, 1, "e2e_latency_ms").avg == measured["e2e_latency_ms"]["avg"]
    assert stats(result, 1, "output_throughput_tok_s").avg == measured["token_throughput_secs"]
    assert (step.ok, step.errors) == (measured["successful_requests"],
                                      measured["failed_requests"])
    assert step.duration_s == pytest.approx(measured["duration_ms"] / 1000)


def test_llmperf_seconds_become_milliseconds():
    source = load("llmperf_summary.json")
    result = run_of(documents=[("s.json", source),
                               ("i.json", load("llmperf_individual_responses.json"))])
    ttft = stats(result, 2, "prefill_latency_ms")
    assert ttft.avg == pytest.approx(source["results_ttft_s_mean"] * 1000)
    assert ttft.p90 == pytest.approx(source["results_ttft_s_quantiles_p90"] * 1000)
    assert ttft.min == pytest.approx(source["results_ttft_s_min"] * 1000)
    e2e = stats(result, 2, "e2e_latency_ms")
    assert e2e.p99 == pytest.approx(source["results_end_to_end_latency_s_quantiles_p99"] * 1000)
    # llmperf's ITL includes the TTFT: kept apart from our decode token latency
    assert stats(result, 2, "decode_token_latency_ms") is None
    assert stats(result, 2, "time_per_output_token_incl_ttft_ms").avg == pytest.approx(
        source["results_inter_token_latency_s_mean"] * 1000)
    assert stats(result, 2, "requests_per_s").avg == pytest.approx(
        source["results_num_completed_requests_per_min"] / 60)
    assert len(result.records) == 4
    assert result.records[0].ttft_ms == pytest.approx(15.0)


def test_formats_are_recognised_by_content_not_name(tmp_path):
    for name, tool in (("guidellm_benchmarks.json", "guidellm"),
                       ("vllm_bench_serve.json", "vllm bench serve"),
                       ("inference_benchmarker_results.json", "inference-benchmarker"),
                       ("llmperf_summary.json", "llmperf")):
        misleading = tmp_path / "profile_export_aiperf.txt"
        misleading.write_bytes((FIXTURES / name).read_bytes())
        [folder] = import_files([misleading], tmp_path / "runs")
        assert RunResult.load(folder).source["tool"] == tool
    assert detect({"hello": 1}) is None


# ---------------------------------------------------------------------------------------------
# Saved, reloaded, shown


def test_an_imported_run_saves_reloads_and_lists_like_any_other(tmp_path):
    [folder] = import_files([FIXTURES / "vllm_bench_serve.json"], tmp_path)
    again = RunResult.load(folder)
    assert again.source["file"] == "vllm_bench_serve.json"
    ttft = stats(again, 2, "prefill_latency_ms")
    assert ttft.min is None and ttft.avg == 20.0                 # None survives the round trip
    summary = (folder / "summary.csv").read_text()
    assert "prefill_latency_ms" in summary
    assert "decode_total_latency_ms" not in summary              # only what the file had
    assert (folder / "requests.csv").is_file()                   # --save-detailed rows
    [row] = list_runs(tmp_path)
    assert row.source == "vllm bench serve (version not in the source file)"
    [summary_only] = import_files([FIXTURES / "inference_benchmarker_results.json"],
                                  tmp_path / "other")
    assert not (summary_only / "requests.csv").exists()          # no per-request data


def test_missing_statistics_read_not_in_the_source_file_never_zero():
    result = run_of("vllm_bench_serve.json")
    text = tables.markdown_tables(result)
    line = next(l for l in text.splitlines() if l.startswith("| Prefill latency"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # Average, Lowest, Highest, p50, p90, p99, Samples
    assert cells[2] == "20.00 ms" and cells[3] == tables.NOT_IN_SOURCE
    assert cells[4] == tables.NOT_IN_SOURCE
    assert "Not in the source file: " in text and "Decode total latency" in text
    assert not re.search(r"\|\s*0\.00 ms", text)                 # no made-up zero
    assert any("vllm bench serve" in s for s in tables.headline(result))


def test_compare_two_tools_on_the_same_server_lists_differences():
    guidellm = run_of("guidellm_benchmarks.json")
    vllm = run_of("vllm_bench_serve.json")
    text = tables.compare_table([guidellm, vllm], [guidellm.steps(), vllm.steps()])
    line = next(l for l in text.splitlines()
                if l.startswith("| Prefill latency") and "| avg " in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    a = stats(guidellm, 2, "prefill_latency_ms").avg
    assert cells[1] == "2" and float(cells[3]) == pytest.approx(a, abs=0.01)
    assert float(cells[4]) == 20.0
    assert cells[5] == f"{20.0 - a:+.2f} ms"
    # metrics only one of them has are not in the table
    assert "Inter-token latency" not in text and "Time per output token, TTFT" not in text


def test_charts_skip_what_the_file_lacks():
    guidellm = run_of("guidellm_benchmarks.json")        # first/last token times only
    titles = [t for t, _ in charts.chart_figures([guidellm])]
    assert not any("Gaps between tokens" in t for t in titles)
    assert not any("Throughput by batch size" in t for t in titles)   # no prefill/decode tok/s
    assert any("Time to first token per request" in t for t in titles)
    vllm = run_of("vllm_bench_serve.json")               # every chunk's gap known
    assert any("Gaps between tokens" in t for t, _ in charts.chart_figures([vllm]))


# ---------------------------------------------------------------------------------------------
# HTML export


def test_html_report_is_self_contained_and_escapes_file_text(tmp_path):
    hostile = load("vllm_bench_serve.json")
    hostile["model_id"] = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    [folder] = import_files([_write(tmp_path / "v.json", hostile)], tmp_path / "runs")
    path = write_html_report(folder)
    page = path.read_text()
    assert path == folder / "report.html"
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)       # nothing fetched
    assert "<link" not in page
    assert "Plotly.newPlot" in page and "plotly.js" in page.lower()   # the library is inline
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page              # shown as text
    assert "20.00 ms" in page and tables.NOT_IN_SOURCE in page
    ours = html_report(RunResult.load(folder))
    assert ours.startswith("<!DOCTYPE html>")


def _write(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


# ---------------------------------------------------------------------------------------------
# Bad input: named, explained, nothing written


def test_unknown_format_names_the_file():
    with pytest.raises(ImportFileError, match=r"^notes\.json: not a result file .*'hello'"):
        convert_documents([("notes.json", {"hello": "world"})])


def test_truncated_json_names_the_file_and_says_truncated():
    text = (FIXTURES / "vllm_bench_serve.json").read_bytes()[:300]
    with pytest.raises(ImportFileError, match=r"^cut\.json: not valid JSON.*truncated"):
        parse_document("cut.json", text)
    with pytest.raises(ImportFileError, match="empty"):
        parse_document("e.json", b"  \n")
    with pytest.raises(ImportFileError, match="UTF-8"):
        parse_document("b.json", b"\xff\xfe\x00garbage")


@pytest.mark.parametrize("change, problem", [
    (lambda d: d.update(mean_ttft_ms=-5.0), r"mean_ttft_ms is negative"),
    (lambda d: d.update(p99_e2el_ms="fast"), r"p99_e2el_ms is 'fast', not a number"),
    (lambda d: d.update(completed=2.5), r"completed is 2.5, not a whole number"),
    (lambda d: d.update(mean_itl_ms=float("nan")), r"mean_itl_ms .*not a finite number"),
    (lambda d: d["ttfts"].pop(), r"itls does not have one entry per request"),
    (lambda d: d["itls"][0].__setitem__(0, -0.01), r"itls\[0\] is negative"),
])
def test_nonsense_values_are_refused_with_the_field(change, problem):
    document = load("vllm_bench_serve.json")
    change(document)
    with pytest.raises(ImportFileError, match=r"^v\.json: .*" + problem):
        convert_documents([("v.json", document)])


def test_missing_fields_are_refused():
    document = load("guidellm_benchmarks.json")
    del document["benchmarks"][1]["metrics"]
    with pytest.raises(ImportFileError, match=r"^g\.json: field benchmarks\[1\]\.metrics is "
                                              r"missing"):
        convert_documents([("g.json", document)])
    rows = load("aiperf_profile_export.jsonl")
    with pytest.raises(ImportFileError, match=r"^rows\.jsonl: .*per-request file"):
        convert_documents([("rows.jsonl", rows)])            # no summary given with it


def test_a_bad_file_among_good_ones_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"benchmarks": [')
    root = tmp_path / "results"
    with pytest.raises(ImportFileError, match=r"^bad\.json: "):
        import_files([FIXTURES / "guidellm_benchmarks.json", bad], root)
    assert not root.exists() or list(root.iterdir()) == []


def test_a_failure_while_saving_leaves_no_half_run(tmp_path, monkeypatch):
    root = tmp_path / "results"

    def broken_save(self, folder):
        (Path(folder) / "run.json").write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(RunResult, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        import_files([FIXTURES / "vllm_bench_serve.json"], root)
    assert list(root.iterdir()) == []                  # no folder, no hidden temp folder


def test_guidellm_yaml_report_reads_like_its_json():
    yaml = pytest.importorskip("yaml")
    document = load("guidellm_benchmarks.json")
    text = yaml.safe_dump(document).encode()          # GuideLLM's --output kind=yaml
    parsed = parse_document("benchmarks.yaml", text)
    result = run_of(documents=[("benchmarks.yaml", parsed)])
    assert result.source["tool"] == "guidellm"
    assert stats(result, 2, "prefill_latency_ms").avg == pytest.approx(
        document["benchmarks"][1]["metrics"]["time_to_first_token_ms"]["successful"]["mean"])


def test_aiperf_without_errors_counts_zero_failures():
    [step] = run_of("aiperf_profile_export_aiperf.json").steps()
    assert (step.requests, step.ok, step.errors) == (4, 4, 0)


def test_rate_levels_are_not_matched_to_concurrency_by_number():
    rates = run_of("inference_benchmarker_results.json")      # level 1 = 2 req/s, not 1 user
    assert rates.source["steps_are_concurrency"] is False
    ours_like = run_of("guidellm_benchmarks.json")             # steps 1 and 2 = streams
    assert tables.compare_table([ours_like, rates], [ours_like.steps(), rates.steps()]) == ""
    figure = charts.latency_vs_batch([rates])
    assert "Load level" in figure.layout.xaxis.title.text


def test_guidellm_real_rate_profile_becomes_ordered_levels():
    source = load("guidellm_constant_rate.json")          # REAL: constant 4 and 8 req/s
    result = run_of("guidellm_constant_rate.json")
    assert result.source["step_labels"] == {"1": "constant rate 4 req/s",
                                            "2": "constant rate 8 req/s"}
    assert result.source["steps_are_concurrency"] is False
    for index, step in enumerate((1, 2)):
        m = source["benchmarks"][index]["metrics"]
        assert stats(result, step, "output_throughput_tok_s").avg == pytest.approx(
            m["output_tokens_per_second"]["successful"]["mean"])
        assert stats(result, step, "e2e_latency_ms").max == pytest.approx(
            m["request_latency"]["successful"]["max"] * 1000)


def test_a_one_request_aiperf_jsonl_still_joins_its_summary(tmp_path):
    one = tmp_path / "profile_export.jsonl"
    one.write_text((FIXTURES / "aiperf_profile_export.jsonl").read_text().splitlines()[0] + "\n")
    [folder] = import_files([FIXTURES / "aiperf_profile_export_aiperf.json", one],
                            tmp_path / "runs")
    assert len(RunResult.load(folder).records) == 1


def test_long_hostile_file_names_are_cut_in_messages():
    with pytest.raises(ImportFileError) as caught:
        convert_documents([("x" * 500 + ".json", {"hello": 1})])
    assert len(str(caught.value).split(":")[0]) <= 120


def test_the_app_shows_an_imported_run_like_any_other(tmp_path):
    from benchmark.app.render import results_view

    [folder] = import_files([FIXTURES / "guidellm_benchmarks.json"], tmp_path)
    result = RunResult.load(folder)
    view = results_view([result], share_url="http://host/?run=" + result.run_id, folder=folder)
    assert "Imported from **guidellm** (version 0.8.1)" in view.title
    assert view.figures and view.calibration == "" and view.banner == ""
    assert tables.NOT_IN_SOURCE in view.tables
    assert {Path(p).name for p in view.downloads} == {"summary.csv", "requests.csv", "run.json"}
    assert "/info is not in the source file" in view.server_info
    other = run_of("vllm_bench_serve.json")
    both = results_view([result, other])
    assert both.tables.startswith("### Differences (B − A)")


def test_no_timeline_for_imported_runs():
    titles = [t for t, _ in charts.chart_figures([run_of("guidellm_benchmarks.json")])]
    assert not any(t.startswith("Timeline") for t in titles)


def test_a_hostile_tool_version_or_file_name_stays_text_in_the_headline():
    """An uploaded file's own words (its tool version, its name) reach the headline only
    through the one escaping function: no image, link or tag can come from them."""
    from benchmark.report.tables import headline

    result = run_of("guidellm_benchmarks.json")
    payload = "PWN<img src=x>![trk](http://127.0.0.1:9/t.png)\n\n"
    result.source = {**result.source, "tool_version": payload, "file": payload}
    text = " ".join(headline(result))
    assert "<img" not in text and "![trk](" not in text and "\n" not in text
    assert "PWN&lt;img src=x&gt;" in text
