"""A public share page of a run whose server sent markup (issue 18, item 9): in Chromium, the
payload is text, no <img> comes from it and the browser never fetches the tracking URL; the
form's error does not echo a visitor's markdown either."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect, sync_playwright

from benchmark.config import RunConfig
from benchmark.core.records import RequestRecord
from benchmark.core.results import RunResult
from support.app_harness import AppProcess

PAYLOAD = "PWN<img src=x>![trk](http://127.0.0.1:9/t.png)\n\n"
TRACKER = "127.0.0.1:9"
RUN_ID = "20261128-120000-pwn-abcd"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(300)


def save_hostile_run(results_dir) -> None:
    config = RunConfig(tokenizer_name="tok", batch_sizes=(1,), model="m" + PAYLOAD,
                       url="http://127.0.0.1:3000")
    info = {key: key + PAYLOAD for key in ("model_id", "version", "sha", "model_sha", "router",
                                           "docker_label")}
    record = RequestRecord(request_id="r1", step=1, run=1, request=0, sent_ns=1, end_ns=2,
                           requested_output_tokens=4, status=500, error="http 500: " + PAYLOAD,
                           error_kind="http")
    RunResult(run_id=RUN_ID, config=config, server_info=info, status="failed",
              message="The server said: " + PAYLOAD, warnings=["warning " + PAYLOAD],
              records=[record]).save(results_dir / RUN_ID)


def test_markup_from_a_server_is_text_on_a_share_page(tmp_path, tiny_tokenizer):
    results = tmp_path / "results"
    results.mkdir()
    save_hostile_run(results)
    with AppProcess(results, tokenizer=tiny_tokenizer) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(f"{app.url}?run={RUN_ID}")
            expect(page.locator("#results-title")).to_contain_text("PWN", timeout=30_000)
            for part in ("#results-title", "#headline", "#tables", "#server-info"):
                expect(page.locator(part)).to_contain_text("PWN<img src=x>![trk]")
            page.wait_for_timeout(1500)          # let any image the page holds be fetched
            sources = page.locator("img").evaluate_all("els => els.map(e => e.src)")
            hostile = [s for s in sources if TRACKER in s or s.endswith("/x")]
            assert hostile == [], hostile
            assert [u for u in fetched if TRACKER in u or u.endswith("/x")] == []

            # The form's error does not turn a typed Model ID into markup either.
            form = browser.new_context().new_page()
            form.on("request", lambda request: fetched.append(request.url))
            form.goto(app.url)
            form.get_by_role("tab", name="Saved runs").click()
            expect(form.locator("#history-table")).to_contain_text("PWN", timeout=30_000)
            form.wait_for_timeout(1000)
            assert form.locator("#history-table img").count() == 0
            form.get_by_role("tab", name="Run a benchmark").click()
            box = form.locator("#field-model_id textarea, #field-model_id input").first
            box.fill("![trk](http://127.0.0.1:9/t.png)<img src=x>")
            form.locator("#run-button").click()
            expect(form.locator("#form-error")).to_contain_text("![trk]", timeout=30_000)
            form.wait_for_timeout(1000)
            assert form.locator("#form-error img").count() == 0
            assert [u for u in fetched if TRACKER in u or u.endswith("/x")] == []
        finally:
            browser.close()
