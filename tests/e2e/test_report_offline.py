"""The one-file HTML report opens offline in headless Chromium with its charts drawn."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from benchmark.core.importers import import_files
from benchmark.report.html import write_html_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imports"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(120)


def test_report_draws_its_charts_with_the_network_cut(tmp_path):
    [folder] = import_files([FIXTURES / "vllm_bench_serve.json"], tmp_path)
    report = write_html_report(folder)
    asked: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()

            def refuse(route):
                asked.append(route.request.url)
                route.abort()

            page.route("http*://**/*", refuse)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(report.as_uri())
            page.wait_for_selector("#chart-0 .main-svg", timeout=20_000)
            drawn = page.locator("div.chart .main-svg").count()
            charts = page.locator("div.chart").count()
            assert charts >= 3 and drawn >= charts, (charts, drawn)
            assert page.get_by_text("not in the source file").first.is_visible()
            assert errors == []
        finally:
            browser.close()
    assert asked == [], f"the report tried to fetch {asked}"
