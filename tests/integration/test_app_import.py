"""The app's import box and HTML download, through gradio_client (a real ``python app.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from support.app_harness import AppProcess, named, text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("app-import")
    with AppProcess(folder / "results", tokenizer=tiny_tokenizer) as running:
        yield running


def files_of(item) -> list[str]:
    value = item.get("value") if isinstance(item, dict) and "value" in item else item
    if not value:
        return []
    value = value if isinstance(value, list) else [value]
    return [v["path"] if isinstance(v, dict) else str(v) for v in value]


def test_import_two_tools_compare_and_download_a_report(app):
    client = Client(app.url, verbose=False)
    out = named(client, "/import", client.predict(
        [handle_file(str(FIXTURES / "guidellm_benchmarks.json"))], api_name="/import"))
    assert "Imported 1 run" in text(out["Import message"])
    assert "guidellm" in text(out["Run title"]).lower()
    assert "0.8.1" in text(out["Run title"])
    assert "not in the source file" in text(out["Tables"])
    [guidellm_id] = [p.name for p in app.results_dir.iterdir() if "guidellm" in p.name]

    out = named(client, "/import", client.predict(
        [handle_file(str(FIXTURES / "vllm_bench_serve.json"))], api_name="/import"))
    [vllm_id] = [p.name for p in app.results_dir.iterdir() if "vllm" in p.name]
    assert vllm_id in text(out["Import message"])

    compared = named(client, "/compare", client.predict([guidellm_id, vllm_id],
                                                        api_name="/compare"))
    tables = text(compared["Tables"])
    assert "Differences (B − A)" in tables and "Prefill latency" in tables

    opened = named(client, "/open", client.predict([guidellm_id], api_name="/open"))
    assert "Imported from" in text(opened["Run title"])
    report = client.predict(guidellm_id, api_name="/report")
    paths = files_of(report)
    html_files = [p for p in paths if p.endswith("report.html")]
    assert html_files, paths
    page = Path(html_files[0]).read_text()
    assert "Plotly.newPlot" in page and "<script src" not in page


def test_a_bad_upload_is_named_and_saves_nothing(app, tmp_path):
    before = sorted(p.name for p in app.results_dir.iterdir())
    broken = tmp_path / "half.json"
    broken.write_bytes((FIXTURES / "vllm_bench_serve.json").read_bytes()[:150])
    client = Client(app.url, verbose=False)
    out = named(client, "/import", client.predict(
        [handle_file(str(FIXTURES / "llmperf_summary.json")), handle_file(str(broken))],
        api_name="/import"))
    message = text(out["Import message"])
    assert "Not imported" in message and "half.json" in message and "Nothing was saved" in message
    assert sorted(p.name for p in app.results_dir.iterdir()) == before
