"""One self-contained HTML file for a run: headline, tables and interactive charts, offline.

    text = html_report(RunResult.load(folder))      # a str; write it anywhere
    path = write_html_report(folder)                 # <folder>/report.html (atomic)

For people who attach a file instead of sharing a link. plotly.js is embedded (no
``<script src>``, no network); every text that comes from a file (model names, errors, a
peer's notes) is escaped: the page has no HTML of its own but ours. The tables are the same
markdown ``tables.py`` gives the app, turned into HTML tables here.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import plotly.io as pio
from plotly.offline import get_plotlyjs

from ..core.results import RunResult, atomic_write
from .charts import chart_figures
from .tables import SIMULATED_LINE, headline, markdown_tables

__all__ = ["REPORT_FILE", "html_report", "write_html_report", "markdown_to_html"]

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
blockquote { border-left: 4px solid #e0a100; margin: 0.8em 0; padding: 0.2em 0.8em;
             background: rgba(224, 161, 0, 0.08); }
.chart { margin: 1.5em 0; }
.foot { color: #666; font-size: 0.85em; margin-top: 3em; }
"""


def html_report(result: RunResult) -> str:
    """The whole page for ``result`` as one string."""
    steps = result.steps()
    esc = html.escape
    parts = [f"<h1>{esc(result.model)}</h1>",
             f"<p>Run <code>{esc(result.run_id)}</code> · started {esc(str(result.started_at))}"
             f" · {esc(result.status)}</p>"]
    if result.simulated:
        parts.append(f"<blockquote><b>{esc(SIMULATED_LINE)}</b></blockquote>")
    parts.append("<h2>In short</h2><ul>" + "".join(
        f"<li>{esc(s)}</li>" for s in headline(result, steps)) + "</ul>")
    charts = []
    for index, (title, figure) in enumerate(chart_figures([result], [steps])):
        charts.append(_chart_div(f"chart-{index}", title, figure))
    if charts:
        parts.append("<h2>Charts</h2>" + "".join(charts))
    parts.append("<h2>Tables</h2>" + markdown_to_html(markdown_tables(result, steps)))
    parts.append(f"<p class='foot'>Written by TGI Benchmark {esc(result.tool_version)}. "
                 f"The charts are interactive and work offline (plotly.js is included).</p>")
    script = _library_text(get_plotlyjs())
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(result.model)} · {esc(result.run_id)}</title>"
            f"<style>{_STYLE}</style><script>{script}</script></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_html_report(folder: str | Path, output: str | Path | None = None) -> Path:
    """Write the report of the run saved in ``folder`` to ``output`` (default
    ``<folder>/report.html``), atomically; return its path."""
    result = RunResult.load(folder)
    path = Path(output) if output is not None else Path(folder) / REPORT_FILE
    atomic_write(path, html_report(result))
    return path


def _chart_div(div_id: str, title: str, figure: Any) -> str:
    data = json.loads(pio.to_json(figure, validate=False))
    payload = _json_text(data)
    return (f"<div class='chart'><h3>{html.escape(title)}</h3><div id='{div_id}'></div>"
            f"<script>(function () {{ var f = {payload}; Plotly.newPlot('{div_id}', f.data, "
            f"f.layout, {{responsive: true, displaylogo: false}}); }})();</script></div>")


def _json_text(data: Any) -> str:
    """JSON safe inside <script>: every <, > and & written as a \\u escape, so no text from a
    file ("</script>", "<!--") can end or bend the script; the values are unchanged."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _library_text(code: str) -> str:
    """plotly.js inside <script>: a "</script" in its code would end the tag early."""
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.I)


_ROW = re.compile(r"^\|(.*)\|\s*$")


def markdown_to_html(text: str) -> str:
    """Our tables' markdown (### headings, > notes, | tables |, paragraphs) as HTML, every
    cell escaped. Only the subset ``tables.py`` writes is understood."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            out.append(_table(rows))
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith(">"):
            out.append(f"<blockquote>{_inline(line.lstrip('>').strip())}</blockquote>")
        else:
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _cells(row: str) -> list[str]:
    body = _ROW.match(row.rstrip())
    inner = body.group(1) if body else row.strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def _table(rows: list[str]) -> str:
    if len(rows) < 2:
        return ""
    header = _cells(rows[0])
    body = [_cells(r) for r in rows[2:]]
    head = "".join(f"<th>{_inline(c)}</th>" for c in header)
    lines = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                    for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>"


def _inline(text: str) -> str:
    """Markdown escapes undone, then everything escaped for HTML; **bold** and `code` kept."""
    plain = html.unescape(re.sub(r"\\(.)", r"\1", text))
    escaped = html.escape(plain)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)
