"""Text that came from a server, a file or a visitor is text on the page: the hostile probe's
payload (an <img>, a markdown image pointing at a tracking URL, then a blank line) must not
become markup anywhere the results area, the tables, the headline or the form's error show it.

The browser test (tests/e2e/test_browser.py) checks the same payload in Chromium; this one
renders the markdown with markdown-it (CommonMark + tables, raw HTML allowed, as a page does).
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from benchmark.app.page import _error_markdown
from benchmark.app.render import calibration_markdown, results_view
from benchmark.config import RunConfig
from benchmark.core.records import RequestRecord
from benchmark.core.results import RunResult
from benchmark.errors import ConfigError, ServerUnreachable
from benchmark.report.tables import markdown_tables
from benchmark.app.render import md_text

PAYLOAD = "PWN<img src=x>![trk](http://127.0.0.1:9/t.png)\n\n"
RENDER = MarkdownIt("commonmark", {"html": True}).enable("table")


def hostile_run(status: str = "failed") -> RunResult:
    config = RunConfig(tokenizer_name="tok" + PAYLOAD, batch_sizes=(1,), model="m" + PAYLOAD,
                       url="http://127.0.0.1:3000")
    info = {key: key + PAYLOAD for key in ("model_id", "version", "sha", "model_sha",
                                           "router", "docker_label")}
    record = RequestRecord(request_id="r1", step=1, run=1, request=0, sent_ns=1, end_ns=2,
                           requested_output_tokens=4, status=500)
    record.error, record.error_kind = "http 500: " + PAYLOAD, "http"
    return RunResult(run_id="20261128-120000-pwn-abcd", config=config, server_info=info,
                     status=status, message="The server said: " + PAYLOAD,
                     warnings=["warning " + PAYLOAD], records=[record],
                     server={"model_id": "x" + PAYLOAD, "quantize": PAYLOAD})


def assert_inert(markdown: str, shown: bool = True) -> None:
    html = RENDER.render(markdown)
    assert "<img" not in html, html
    assert "127.0.0.1:9" not in "".join(
        part for part in html.split('"') if part.startswith("http")), html
    assert 'src="http' not in html and 'href="http://127.0.0.1:9' not in html, html
    assert "PWN" in html or not shown       # the text is still there, as text


@pytest.mark.parametrize("status", ["failed", "running", "complete"])
def test_every_part_of_the_results_area_shows_the_payload_as_text(status):
    view = results_view([hostile_run(status)])
    for part in (view.title, view.tables, view.server_info):
        assert_inert(part)
    assert_inert(view.headline, shown=status == "failed")
    compared = results_view([hostile_run(status), hostile_run(status)])
    for part in (compared.title, compared.headline, compared.tables, compared.server_info):
        assert_inert(part)


def test_markdown_tables_keep_each_row_on_one_line():
    tables = markdown_tables(hostile_run())
    assert_inert(tables)
    rows = [line for line in tables.splitlines() if line.startswith("| Model ")]
    assert len(rows) == 1 and rows[0].endswith("|")


def test_a_calibration_file_is_text_too():
    calibration = {"verdict": {"sentence": PAYLOAD, "accurate_concurrency": 64,
                               "accurate_token_rate": 6000.0, "highest_measured": 128},
                   "settings": {"tolerance_ms": 1.0}}
    assert_inert(calibration_markdown(hostile_run(), calibration))


def test_the_forms_error_does_not_echo_the_visitors_markdown():
    for exc in (ConfigError("model_id", f"Model ID {PAYLOAD!r} is not a Hub id."),
                ConfigError("model_id", f"Model ID {PAYLOAD} is not a Hub id."),
                ServerUnreachable("http://h" + PAYLOAD, "nothing", "refused " + PAYLOAD)):
        assert_inert(_error_markdown(exc))


def test_md_text_is_one_line_of_plain_text():
    text = md_text("a\n\nb | c `d` [e](f) <g> *h* _i_ \\ ~j~ $k$ $$l$$")
    assert "\n" not in text
    assert RENDER.renderInline(text) == (
        "a b | c `d` [e](f) &lt;g&gt; *h* <em>i</em> \\ ~j~ $k$ $$l$$")
    assert "$$" not in text                  # the page's LaTeX delimiter is broken up
