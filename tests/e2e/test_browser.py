"""What a visitor sees, in headless Chromium: fill the form, Run, charts, download, share, restart.

Debian's chromium is driven by the playwright package. The tests take the screenshots of the
form and of the results that the README shows; they land in a temporary folder, or in
tests/screenshots/ (the README's copies) when UPDATE_SCREENSHOTS=1 is set, so that an ordinary
test run leaves the checkout clean.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from support.app_harness import AppProcess
from support.helpers import ROOT

SCREENSHOTS = (ROOT / "tests" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.mkdtemp(prefix="tgi-bench-screenshots-")))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_TIMEOUT_MS = 150_000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("browser-app")
    with AppProcess(folder / "results", tokenizer=tiny_tokenizer) as running:
        yield running


def new_page(browser, url: str) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    return page


def field(page: Page, name: str):
    return page.locator(f"#field-{name}").get_by_role("textbox")


def test_form_run_charts_download_share_and_restart(browser, app, tiny_tokenizer):
    page = new_page(browser, app.url)
    expect(page.locator("#run-button")).to_be_visible()
    expect(page.get_by_text("Running locally: no sign-in needed.")).to_be_visible()

    # The guide's example is one click away (the form as the README shows it).
    page.locator("#example-button").click()
    expect(field(page, "model_id")).to_have_value("astronomer/Llama-3-8B-Instruct-GPTQ-8-Bit")
    expect(page.locator("#field-quantize").get_by_role("combobox")).to_have_value("gptq")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "form.png"), full_page=True)

    # A word in a number field is refused with the field's label; nothing starts.
    field(page, "model_id").fill(tiny_tokenizer)
    page.locator("#field-quantize").get_by_role("combobox").click()
    page.get_by_role("option", name="none", exact=True).click()
    for name, text in {"batch_sizes": "1,2", "sequence_length": "16", "decode_length": "8",
                       "runs": "ten", "warmups": "1"}.items():
        field(page, name).fill(text)
    page.locator("#run-button").click()
    expect(page.locator("#form-error")).to_contain_text("Runs:")
    expect(page.locator("#form-error")).to_contain_text("whole number")
    assert not any(app.results_dir.iterdir())
    field(page, "runs").fill("2")

    page.locator("#run-button").click()
    expect(page.locator("#run-status")).to_contain_text("Benchmark complete",
                                                        timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#form-error")).to_be_hidden()
    expect(page.locator("#chart-0 .js-plotly-plot")).to_be_visible()
    expect(page.locator("#chart-3 .js-plotly-plot")).to_be_visible()
    expect(page.locator("#chart-4 .js-plotly-plot")).to_contain_text("Timeline of the run")
    expect(page.locator("#simulated-banner")).to_contain_text("SIMULATED SERVER")
    headline = page.locator("#headline").inner_text()
    assert "Highest generation speed" in headline
    share = page.locator("#share-link").get_by_role("textbox").input_value()
    assert share.startswith(app.url + "?run=")
    run_id = share.split("?run=", 1)[1]
    page.set_viewport_size({"width": 1280, "height": 1500})
    page.locator("#run-status").evaluate("element => element.scrollIntoView()")
    page.screenshot(path=str(SCREENSHOTS / "results.png"))

    # Download summary.csv from the page and read its rows.
    with page.expect_download() as info:
        page.locator("#downloads a[download='summary.csv']").click()
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert {r["step"] for r in rows} == {"1", "2"}
    speeds = {r["step"]: float(r["avg"]) for r in rows if r["metric"] == "decode_throughput_tok_s"}
    assert set(speeds) == {"1", "2"} and all(v > 0 for v in speeds.values())
    page.context.close()

    # The share link, in a fresh browser context: the same numbers, read-only, no form.
    shared = new_page(browser, share)
    expect(shared.locator("#readonly-message")).to_contain_text("Shared results, read-only")
    expect(shared.locator("#headline")).to_have_text(headline)
    expect(shared.locator("#run-button")).to_be_hidden()
    expect(shared.locator("#chart-0 .js-plotly-plot")).to_be_visible()
    shared.context.close()

    # After a restart the link still opens the same run.
    app.restart()
    again = new_page(browser, share)
    expect(again.locator("#headline")).to_have_text(headline)
    expect(again.locator("#results-title")).to_contain_text(run_id)
    again.context.close()


def test_a_shared_run_in_progress_updates_itself(browser, app, tiny_tokenizer):
    from gradio_client import Client

    from support.app_harness import form_values

    client = Client(app.url, verbose=False)
    job = client.submit(*form_values(model_id=tiny_tokenizer, batch_sizes="1,2,4",
                                     sequence_length="16", decode_length="8", runs="12",
                                     warmups="0"), api_name="/run")
    link = None
    while link is None:
        for out in job.outputs():
            for item in out:
                value = item.get("value") if isinstance(item, dict) else item
                if isinstance(value, str) and "?run=" in value:
                    link = value
        assert not job.done() or link, "the run ended without a share link"
        time.sleep(0.1)
    page = new_page(browser, link)                         # opened while the run goes on
    expect(page.locator("#readonly-message")).to_be_visible()
    expect(page.locator("#run-button")).to_be_hidden()
    expect(page.locator("#results-title")).to_contain_text("complete", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#chart-0 .js-plotly-plot")).to_be_visible()
    expect(page.locator("#readonly-message")).to_contain_text("Shared results, read-only")
    job.result()
    page.context.close()


def test_hostile_share_links_get_a_message_and_change_nothing(browser, app):
    before = sorted(p.name for p in app.results_dir.iterdir())
    for bad in ("../etc", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "<script>alert(1)</script>"):
        page = new_page(browser, f"{app.url}?run={bad}")
        expect(page.locator("#readonly-message")).to_contain_text("does not open a saved run")
        expect(page.locator("#readonly-message")).to_contain_text("not valid")
        expect(page.locator("#run-button")).to_be_visible()      # the normal page, unchanged
        page.context.close()
    assert sorted(p.name for p in app.results_dir.iterdir()) == before


def test_saved_runs_are_listed_and_compared(browser, app, tiny_tokenizer):
    """Two runs in the history tab, compared on the same charts (screenshot for the README)."""
    page = new_page(browser, app.url)
    field(page, "model_id").fill(tiny_tokenizer)
    for name, text in {"batch_sizes": "1,2", "sequence_length": "16", "decode_length": "8",
                       "runs": "2", "warmups": "0"}.items():
        field(page, name).fill(text)
    while len(list(app.results_dir.iterdir())) < 2:
        page.locator("#run-button").click()
        expect(page.locator("#stop-button")).to_be_visible()
        expect(page.locator("#run-status")).to_contain_text("Benchmark complete",
                                                            timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#run-button")).to_be_enabled()
    page.get_by_role("tab", name="Saved runs").click()
    table = page.locator("#history-table")
    expect(table).to_be_visible()
    ids = sorted(p.name for p in app.results_dir.iterdir())
    assert len(ids) >= 2
    # One run chosen by clicking its row in the table, the other in the picker.
    table.get_by_text(ids[0], exact=True).first.click()
    expect(page.locator("#history-pick")).to_contain_text(ids[0])
    picker = page.locator("#history-pick").get_by_role("combobox")
    picker.click()
    page.get_by_role("option", name=ids[1]).click()
    page.locator("#compare-button").click()
    expect(page.locator("#results-title")).to_contain_text("Comparing 2 runs")
    expect(page.locator("#chart-0 .js-plotly-plot")).to_be_visible()
    legend = page.locator("#chart-0 .legend").first.text_content() or ""
    assert ids[0] in legend and ids[1] in legend
    page.set_viewport_size({"width": 1280, "height": 1300})
    page.locator("#results-title").evaluate("element => element.scrollIntoView()")
    page.screenshot(path=str(SCREENSHOTS / "compare.png"))
    page.context.close()


def test_a_capacity_runs_page_plans_servers_as_the_visitor_types(browser, app):
    """A saved capacity run (written directly: its search is tested elsewhere) opened by its
    link: the plan for its own traffic, then new traffic typed and planned again."""
    from benchmark.config import RunConfig
    from benchmark.core.capacity import Capacity, Probe
    from benchmark.core.results import RunResult
    from benchmark.core.slo import Slo

    probe = Probe(kind="rate", step=3, rate_rps=12.4, attainment=0.95, passed=True,
                  mean_output_tokens=250.0, output_tokens_per_s=3100.0)
    capacity = Capacity(slo=Slo(ttft_ms=1000), rate_rps=12.4, in_flight=None,
                        output_tokens_per_s=3100.0, bracket=(12.4, 13.0), converged=True,
                        ended="converged", max_throughput_rps=20.0, probes=(probe,))
    run_id = "20261203-120000-browser-plan-abcd"
    RunResult(run_id=run_id, status="complete", capacity=capacity, simulated=True,
              config=RunConfig(tokenizer_name="org/tiny", mode="capacity", slo_ttft_ms=1000,
                               sequence_length=600, hardware="l4x1", plan_peak_rps=40.0)
              ).save(app.results_dir / run_id)
    page = new_page(browser, f"{app.url}?run={run_id}")
    result = page.locator("#plan-result")
    expect(result).to_contain_text("At 40 requests/s at peak you need 4 × L4",
                                   timeout=30_000)
    expect(result).to_contain_text("about $2,300 a month")
    peak = page.locator("#plan-plan_peak_rps").get_by_role("textbox")
    peak.fill("100")
    page.locator("#plan-plan_headroom").get_by_role("textbox").fill("50")
    page.locator("#plan-button").click()
    expect(result).to_contain_text("At 100 requests/s at peak you need 13 × L4", timeout=30_000)
    page.locator("#plan-plan_headroom").get_by_role("textbox").fill("150")
    page.locator("#plan-button").click()
    expect(result).to_contain_text("Headroom (%):", timeout=30_000)
    expect(result).not_to_contain_text("you need")
    page.screenshot(path=str(SCREENSHOTS / "deployment-plan.png"), full_page=False)


def test_chat_streams_an_answer_with_its_speed(browser, app, tiny_tokenizer):
    """The "Try the model" tab: start the form's server if none runs, send, read the answer."""
    page = new_page(browser, app.url)
    field(page, "model_id").fill(tiny_tokenizer)
    page.get_by_role("tab", name="Try the model").click()
    status = page.locator("#chat-status")
    expect(status).to_contain_text(re.compile("No server is running yet|Chatting with"),
                                   timeout=15_000)
    if "No server is running yet" in status.inner_text():
        page.locator("#chat-start-button").click()
        expect(page.locator("#chat-start-status")).to_contain_text("The server is ready",
                                                                   timeout=RUN_TIMEOUT_MS)
    expect(status).to_contain_text("SIMULATED", timeout=15_000)
    page.locator("#chat-settings").get_by_text("Chat settings").click()
    page.locator("#chat-system").get_by_role("textbox").fill("Answer in one sentence.")
    page.locator("#chat-max-new-tokens").get_by_role("textbox").fill("48")
    box = page.get_by_label("Message", exact=True)
    box.fill("   ")
    box.press("Enter")                                   # an empty message does nothing
    log = page.locator("#chat-log")
    box.fill("Hello there, model")
    page.locator("#chat-send").click()
    expect(log).to_contain_text("Hello there, model")
    expect(log).to_contain_text("tokens/s", timeout=60_000)
    expect(log).to_contain_text("SIMULATED · time to first token")
    expect(log).to_contain_text(" tokens/s · 48 tokens")
    expect(box).to_have_value("")
    assert log.inner_text().count("Hello there, model") == 1
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)
    # A second turn by Enter, in the same conversation.
    box.fill("And a second question")
    box.press("Enter")
    expect(log).to_contain_text("And a second question")
    expect(log.get_by_text("time to first token")).to_have_count(2, timeout=60_000)
    page.context.close()


HOSTILE_ANSWER = ('<img src=x onerror="document.title=\'owned\'"> **bold** '
                  '[link](http://example.invalid) <b>tag</b>')


class HostileServer(BaseHTTPRequestHandler):
    """An endpoint whose answer is full of HTML and markdown: the page must show it as text."""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps({"model_id": "<i>hostile</i>"} if self.path == "/info" else {}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in ({"choices": [{"index": 0, "delta": {"content": HOSTILE_ANSWER[:20]}}]},
                      {"choices": [{"index": 0, "delta": {"content": HOSTILE_ANSWER[20:]},
                                    "finish_reason": "stop"}]},
                      {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}):
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


def test_chat_with_an_endpoint_shows_its_answer_as_text(browser, app, tiny_tokenizer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), HostileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = new_page(browser, app.url)
        page.get_by_label("Benchmark an existing server (endpoint URL)").check()
        field(page, "url").fill(f"http://127.0.0.1:{server.server_port}")
        field(page, "tokenizer_name").fill(tiny_tokenizer)
        page.get_by_role("tab", name="Try the model").click()
        expect(page.locator("#chat-status")).to_contain_text("Chatting with the endpoint",
                                                             timeout=15_000)
        box = page.get_by_label("Message", exact=True)
        box.fill("Say something nasty")
        box.press("Enter")
        log = page.locator("#chat-log")
        expect(log).to_contain_text("time to first token", timeout=30_000)
        expect(log).to_contain_text("9 tokens")
        assert "SIMULATED" not in log.inner_text()
        expect(log).to_contain_text('<img src=x onerror="document.title=\'owned\'">')
        expect(log).to_contain_text("**bold** [link](http://example.invalid) <b>tag</b>")
        assert log.locator("img[src=x]").count() == 0
        assert log.locator("a[href='http://example.invalid']").count() == 0
        assert page.title() != "owned"
        page.context.close()
    finally:
        server.shutdown()
        server.server_close()
