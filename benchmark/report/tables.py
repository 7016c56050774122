"""TGI's three tables (parameters, latency, throughput) as markdown, and a plain-words headline.

    print(markdown_tables(result))       # what the CLI prints at the end; the UI renders it
    for sentence in headline(result):    # for readers who are not engineers
        print(sentence)

The layout follows ``text-generation-benchmark``: the latency table has one row per step kind
(Prefill, Decode (token), Decode (total)) and batch size with Average, Lowest, Highest, p50, p90,
p99 in ms; the throughput table has Prefill and Decode rows with Average, Lowest, Highest in
tokens/s. A fourth table, Requests, counts failures and short outputs per batch size, which TGI's
tool never had to (it cannot fail a request or stop early). In concurrency mode the "Batch Size"
column is "Users" (concurrent virtual users).

Balance rule used by ``headline``: the baseline is the median (p50) decode token latency of the
smallest batch size; among batch sizes whose median token latency stays within
``BALANCE_FACTOR`` (1.5x) of that baseline, the one with the highest average decode throughput is
the balance point.
"""

from __future__ import annotations

import functools
from typing import Any

from ..config import strip_credentials
from ..errors import redact
from ..core.stats import ALL_METRICS, METRICS, STAT_KEYS, StepSummary

__all__ = [
    "BALANCE_FACTOR",
    "SIMULATED_LINE",
    "markdown_tables",
    "parameters_table",
    "latency_table",
    "throughput_table",
    "requests_table",
    "headline",
    "balance_step",
    "step_label",
    "NOT_IN_SOURCE",
    "imported_tables",
    "compare_table",
]

BALANCE_FACTOR = 1.5
SIMULATED_LINE = "SIMULATED SERVER — these numbers are not a GPU's."
MISSING = "n/a"
NOT_IN_SOURCE = "not in the source file"

_LATENCY_ROWS = (
    ("Prefill", "prefill_latency_ms"),
    ("Decode (token)", "decode_token_latency_ms"),
    ("Decode (total)", "decode_total_latency_ms"),
)
_THROUGHPUT_ROWS = (
    ("Prefill", "prefill_throughput_tok_s"),
    ("Decode", "decode_throughput_tok_s"),
)


def step_label(mode: str, *, plural: bool = False, title: bool = False) -> str:
    """What a step is called: "batch size" (rounds) or "concurrent users" (concurrency)."""
    if mode == "concurrency":
        return "Users" if title else "concurrent users"
    if title:
        return "Batch Size"
    return "batch sizes" if plural else "batch size"


# ---------------------------------------------------------------------------------------------
# Markdown tables


def markdown_tables(result: Any, steps: list[StepSummary] | None = None) -> str:
    """The parameters, latency, throughput and requests tables of ``result`` as markdown
    (``steps``: its summaries when already computed)."""
    if steps is None:
        steps = result.steps()
    if getattr(result, "source", None):
        return imported_tables(result, steps)
    parts: list[str] = []
    if result.simulated:
        parts.append(f"> **{SIMULATED_LINE}** The server was the built-in simulator; use them to "
                     f"try the tool, not to size a deployment.")
    if result.status != "complete":
        parts.append(f"> **Run {result.status}.** " + _status_sentence(result, steps))
    parts.append("### Parameters\n\n" + parameters_table(result))
    if steps:
        parts.append("### Latency\n\n" + latency_table(steps, result.config.mode))
        parts.append("### Throughput\n\n" + throughput_table(steps, result.config.mode))
        parts.append("### Requests\n\n" + requests_table(steps, result.config.mode))
    else:
        parts.append("No request has been measured yet.")
    return "\n\n".join(parts) + "\n"


def parameters_table(result: Any) -> str:
    """TGI's parameter table, plus the endpoint, API, load pattern, server and simulation."""
    config = result.config
    sampling = config.sampling
    info = result.server_info or {}
    rows: list[tuple[str, Any]] = [
        ("Model", result.model),
        ("Tokenizer", config.tokenizer_name),
        ("Endpoint URL", strip_credentials(config.url)),
        ("API", config.api),
        ("Load pattern", "rounds (TGI's pattern)" if config.mode == "rounds"
         else "concurrency (sustained users)"),
        ("Users" if config.mode == "concurrency" else "Batch Sizes",
         ", ".join(str(b) for b in config.batch_sizes)),
        ("Sequence Length", config.sequence_length),
        ("Decode Length", config.decode_length),
    ]
    if config.mode == "rounds":
        rows += [("N Runs", config.runs), ("Warmups", config.warmups)]
    else:
        rows += [("Duration (s)", config.duration_s), ("Requests per step", config.requests),
                 ("Warmups", config.warmups)]
    rows += [
        ("Top N Tokens", sampling.top_n_tokens),
        ("Temperature", sampling.temperature),
        ("Top K", sampling.top_k),
        ("Top P", sampling.top_p),
        ("Typical P", sampling.typical_p),
        ("Repetition Penalty", sampling.repetition_penalty),
        ("Frequency Penalty", sampling.frequency_penalty),
        ("Watermark", sampling.watermark),
        ("Do Sample", sampling.do_sample),
        ("Seed", config.seed),
        ("Server version", info.get("version")),
    ]
    if result.server:
        quantize = result.server.get("quantize") or result.server.get("dtype")
        rows.append(("Server quantization", quantize))
    rows += [
        ("Simulated server", "yes" if result.simulated else "no"),
        ("Started", result.started_at),
        ("Status", result.status),
    ]
    return _table(["Parameter", "Value"], [[name, _plain(value)] for name, value in rows])


def latency_table(steps: list[StepSummary], mode: str = "rounds") -> str:
    """Prefill, Decode (token), Decode (total) per step: avg, lowest, highest, p50, p90, p99."""
    header = ["Step", step_label(mode, title=True), "Average", "Lowest", "Highest",
              "p50", "p90", "p99"]
    rows = []
    for name, key in _LATENCY_ROWS:
        for step in steps:
            stats = step.metric(key)
            values = ([MISSING] * 6 if stats is None else
                      [_ms(getattr(stats, s)) for s in STAT_KEYS])
            rows.append([name, str(step.step), *values])
    return _table(header, rows)


def throughput_table(steps: list[StepSummary], mode: str = "rounds") -> str:
    """Prefill and Decode throughput per step: avg, lowest, highest (tokens/s)."""
    header = ["Step", step_label(mode, title=True), "Average", "Lowest", "Highest"]
    rows = []
    for name, key in _THROUGHPUT_ROWS:
        for step in steps:
            stats = step.metric(key)
            values = ([MISSING] * 3 if stats is None else
                      [_tps(getattr(stats, s)) for s in ("avg", "min", "max")])
            rows.append([name, str(step.step), *values])
    return _table(header, rows)


def requests_table(steps: list[StepSummary], mode: str = "rounds") -> str:
    """Per step: requests, succeeded, errors (timeouts), short outputs, tokens received."""
    header = [step_label(mode, title=True), "Requests", "OK", "Errors", "Timeouts",
              "Cancelled", "Short outputs", "Output tokens (avg)", "Requests/s (avg)"]
    rows = []
    for step in steps:
        tokens = step.value("output_tokens", "avg")
        rps = step.value("requests_per_s", "avg")
        rows.append([
            str(step.step), str(step.requests), str(step.ok), str(step.errors),
            str(step.timeouts), str(step.cancelled), str(step.short_outputs),
            MISSING if tokens is None else f"{tokens:.1f} of {step.decode_length}",
            MISSING if rps is None else f"{rps:.2f}",
        ])
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["| " + " | ".join(_cell(h).ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c).ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    """A table cell as plain text: a name from a server's /info or a typed field cannot add
    links, images or HTML to a page that renders the markdown (a shared run on the Space)."""
    text = str(value).replace("\\", "\\\\")
    for char in "|[]`":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _plain(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    return redact(str(value))


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def _tps(value: float) -> str:
    return f"{value:.2f} tokens/s"


# ---------------------------------------------------------------------------------------------
# Headline


def balance_step(steps: list[StepSummary]) -> StepSummary | None:
    """The step with the best decode throughput whose p50 token latency is within 1.5x of the
    smallest step's; None when fewer than two steps have both numbers."""
    found = _balance(steps)
    return None if found is None else found[0]


def _balance(steps: list[StepSummary]) -> tuple[StepSummary, StepSummary] | None:
    """``balance_step``'s choice and the baseline step it measured against."""
    usable = [s for s in steps if s.value("decode_token_latency_ms", "p50") is not None
              and s.value("decode_throughput_tok_s") is not None]
    if len(usable) < 2:
        return None
    base = min(usable, key=lambda s: s.step)
    limit = base.value("decode_token_latency_ms", "p50") * BALANCE_FACTOR  # type: ignore[operator]
    within = [s for s in usable if s.value("decode_token_latency_ms", "p50") <= limit]  # type: ignore[operator]
    return max(within, key=lambda s: (s.value("decode_throughput_tok_s"), -s.step)), base


def headline(result: Any, steps: list[StepSummary] | None = None) -> list[str]:
    """A few plain sentences: best throughput, per-user latency per step, the balance point
    (``steps``: the summaries of ``result`` when already computed)."""
    if steps is None:
        steps = result.steps()
    if getattr(result, "source", None):
        return _imported_headline(result, steps)
    mode = result.config.mode
    at = functools.partial(_at, mode)
    name = functools.partial(_name, mode)
    sentences: list[str] = []
    if result.simulated:
        sentences.append("These numbers come from a simulated server, not a GPU: use them to try "
                         "the tool, not to size a deployment.")
    if result.status != "complete":
        sentences.append(_status_sentence(result, steps))
    if not steps:
        sentences.append("No request has been measured yet.")
        return sentences

    with_tps = [s for s in steps if s.value("decode_throughput_tok_s") is not None]
    if with_tps:
        best = max(with_tps, key=lambda s: s.value("decode_throughput_tok_s"))
        samples = best.metric("decode_throughput_tok_s").count  # type: ignore[union-attr]
        over = (f"average of {samples} runs" if mode == "rounds" and samples > 1
                else "measured over the whole step" if mode == "concurrency" else "one run")
        sentences.append(
            f"Highest generation speed: {_rate(best.value('decode_throughput_tok_s'))} tokens per "
            f"second in total {at(best.step)} ({over})."
        )
    token_parts = [f"{_short_ms(s.value('decode_token_latency_ms', 'p50'))} {at(s.step)}"
                   for s in steps if s.value("decode_token_latency_ms", "p50") is not None]
    if token_parts:
        sentences.append("Each user waits this long for every new token (median): "
                         + _join(token_parts) + ".")
    first_parts = [f"{_short_ms(s.value('prefill_latency_ms', 'p50'))} {at(s.step)}"
                   for s in steps if s.value("prefill_latency_ms", "p50") is not None]
    if first_parts:
        sentences.append("Wait for the first token (median): " + _join(first_parts) + ".")

    found = _balance(steps)
    if found is not None:
        balance, base = found
        base_ms = base.value("decode_token_latency_ms", "p50")
        if balance.step == base.step:
            sentences.append(
                f"Best balance: {name(base.step)}. Every larger "
                f"{'number of users' if mode == 'concurrency' else 'batch size'} made each user "
                f"wait more than {BALANCE_FACTOR:g}x longer per token than the "
                f"{_short_ms(base_ms)} {at(base.step)}."
            )
        else:
            sentences.append(
                f"Best balance: {name(balance.step)}, giving "
                f"{_rate(balance.value('decode_throughput_tok_s'))} tokens per second while each "
                f"user still gets a token every "
                f"{_short_ms(balance.value('decode_token_latency_ms', 'p50'))} (rule: the highest "
                f"throughput whose median time per token stays within {BALANCE_FACTOR:g}x of the "
                f"{_short_ms(base_ms)} {at(base.step)})."
            )

    total = sum(s.requests for s in steps)
    errors = sum(s.errors for s in steps)
    timeouts = sum(s.timeouts for s in steps)
    if errors:
        extra = f", {timeouts} of them timed out" if timeouts else ""
        sentences.append(
            f"{errors} of {total} requests failed{extra}. They are listed in requests.csv and "
            f"left out of the latency and throughput numbers."
        )
    short = sum(s.short_outputs for s in steps)
    if short:
        sentences.append(
            f"{short} requests ended before the {result.config.decode_length} tokens asked (the "
            f"model chose to stop); throughput counts only the tokens that came."
        )
    return sentences


def _status_sentence(result: Any, steps: list[StepSummary]) -> str:
    covered = ", ".join(str(s.step) for s in steps) or "none"
    words = step_label(result.config.mode, plural=True)
    if result.status == "running":
        return f"The run is still going; results so far cover {words}: {covered}."
    if result.status == "cancelled":
        return f"The run was stopped before the end; results cover {words}: {covered}."
    reason = f" {redact(result.message)}" if result.message else ""
    return f"The run failed.{reason} Results cover {words}: {covered}."


def _name(mode: str, step: int) -> str:
    """Return "batch size 4" or "4 concurrent users"."""
    if mode == "concurrency":
        return f"{step} concurrent user{'' if step == 1 else 's'}"
    return f"batch size {step}"


def _at(mode: str, step: int) -> str:
    """Return "at batch size 4" or "with 4 concurrent users"."""
    return ("with " if mode == "concurrency" else "at ") + _name(mode, step)


def _join(parts: list[str]) -> str:
    return "; ".join(parts)


def _short_ms(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _rate(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# ---------------------------------------------------------------------------------------------
# Runs imported from another tool's file


def _source(result: Any) -> dict[str, Any]:
    return result.source if isinstance(getattr(result, "source", None), dict) else {}


def _level(result: Any, step: int) -> str:
    labels = _source(result).get("step_labels") or {}
    return str(labels.get(str(step)) or step)


def imported_tables(result: Any, steps: list[StepSummary]) -> str:
    """Where the run came from, then every metric its file had, per load level; a statistic
    the file lacked reads "not in the source file"."""
    source = _source(result)
    rows = [
        ("Source tool", source.get("tool")),
        ("Tool version", source.get("tool_version")),
        ("Source file", source.get("file")),
        ("Per-request file", source.get("companion_file") or NOT_IN_SOURCE
         if not result.records else source.get("companion_file") or source.get("file")),
        ("Format", source.get("format")),
        ("Model", result.model),
        ("Endpoint URL", strip_credentials(result.config.url) or NOT_IN_SOURCE),
        ("Started", result.started_at),
        ("Imported", source.get("imported_at")),
        ("Status", result.status),
    ]
    parts = ["### Source\n\n" + _table(["Field", "Value"],
                                          [[n, _plain(v)] for n, v in rows])]
    notes = [str(n) for n in source.get("notes") or []]
    if notes:
        parts.append("\n".join(f"> {_cell(n)}" for n in notes))
    if not steps:
        parts.append("The file held no benchmark.")
        return "\n\n".join(parts) + "\n"
    header = ["Metric", "Level", "Average", "Lowest", "Highest", "p50", "p90", "p99",
              "Samples"]
    table_rows = []
    for key, info in ALL_METRICS.items():
        if not any(s.metrics.get(key) for s in steps):
            continue
        for step in steps:
            stats = step.metrics.get(key)
            values = [_unit(None if stats is None else getattr(stats, s), info.unit)
                      for s in STAT_KEYS]
            count = None if stats is None else stats.count
            table_rows.append([info.label, _level(result, step.step), *values,
                               NOT_IN_SOURCE if count is None else str(count)])
    parts.append("### Metrics\n\n" + _table(header, table_rows))
    missing = [info.label for key, info in METRICS.items()
               if not any(s.metrics.get(key) for s in steps)]
    if missing:
        parts.append("Not in the source file: " + _cell(", ".join(missing)) + ".")
    count_rows = [[_level(result, s.step), *(_known(getattr(s, k, None)) for k in (
        "requests", "ok", "errors", "cancelled", "input_tokens", "output_tokens")),
        NOT_IN_SOURCE if s.duration_s is None else f"{s.duration_s:.2f}"] for s in steps]
    parts.append("### Requests\n\n" + _table(
        ["Level", "Requests", "OK", "Errors", "Incomplete", "Prompt tokens", "Output tokens",
         "Duration (s)"], count_rows))
    return "\n\n".join(parts) + "\n"


def _unit(value: float | None, unit: str) -> str:
    if value is None:
        return NOT_IN_SOURCE
    return f"{value:.2f} {unit}"


def _known(value: Any) -> str:
    return NOT_IN_SOURCE if value is None else str(value)


def _imported_headline(result: Any, steps: list[StepSummary]) -> list[str]:
    source = _source(result)
    sentences = [f"Imported from {_who(result)}, file {source.get('file')}: the numbers are "
                 f"the ones that file holds."]
    if result.status != "complete":
        sentences.append("The source tool says the benchmark was stopped before the end.")
    for key, words in (("prefill_latency_ms", "Wait for the first token (median)"),
                       ("decode_token_latency_ms", "Time per output token after the first "
                                                   "(median)")):
        parts = [f"{_short_ms(s.value(key, 'p50'))} at {_level(result, s.step)}"
                 for s in steps if s.value(key, "p50") is not None]
        if parts:
            sentences.append(f"{words}: " + _join(parts) + ".")
    rates = [f"{_rate(s.value('output_throughput_tok_s'))} tokens/s at "
             f"{_level(result, s.step)}" for s in steps
             if s.metrics.get("output_throughput_tok_s") is not None
             and s.value("output_throughput_tok_s") is not None]
    if rates:
        sentences.append("Output throughput over the whole run: " + _join(rates) + ".")
    errors = [s.errors for s in steps if s.errors]
    if errors:
        sentences.append(f"{sum(errors)} requests failed in the source run.")
    return sentences


def compare_table(results: list[Any], steps: list[list[StepSummary]]) -> str:
    """For two runs: every statistic both have at the same step, side by side, with the
    difference (second minus first) and its share of the first. Steps match by number (the
    batch size or number of concurrent users); two single-step runs are matched anyway.
    Steps that are not numbers of concurrent requests (an imported file's rate levels) are
    never matched by number. Empty when nothing is in common."""
    if len(results) != 2 or len(steps) != 2:
        return ""
    (first, second), (a_steps, b_steps) = results, steps
    pairs = []
    if _concurrency_steps(first) and _concurrency_steps(second):
        pairs = [(a, b) for a in a_steps for b in b_steps if a.step == b.step]
    if not pairs and len(a_steps) == 1 and len(b_steps) == 1:
        pairs = [(a_steps[0], b_steps[0])]
    rows = []
    for a, b in pairs:
        for key, info in ALL_METRICS.items():
            sa, sb = a.metrics.get(key), b.metrics.get(key)
            if sa is None or sb is None:
                continue
            for stat in STAT_KEYS:
                va, vb = getattr(sa, stat), getattr(sb, stat)
                if va is None or vb is None:
                    continue
                share = "n/a" if va == 0 else f"{(vb - va) / abs(va) * 100:+.1f}%"
                rows.append([info.label, f"{a.step}" if a.step == b.step
                             else f"{a.step} / {b.step}", stat, f"{va:.2f}", f"{vb:.2f}",
                             f"{vb - va:+.2f} {info.unit}", share])
    if not rows:
        return ""
    return (f"### Differences (B − A)\n\nA: `{_cell(first.run_id)}` ({_cell(_who(first))}); "
            f"B: `{_cell(second.run_id)}` ({_cell(_who(second))}). Only the statistics both "
            f"runs have at the same step are listed.\n\n"
            + _table(["Metric", "Step", "Statistic", "A", "B", "B − A", "Change"], rows))


def _concurrency_steps(result: Any) -> bool:
    """Whether ``result``'s step numbers count concurrent requests (ours always do; an
    imported file's levels may be rates numbered 1, 2, ...)."""
    source = _source(result)
    return not source or bool(source.get("steps_are_concurrency", True))


def _who(result: Any) -> str:
    source = _source(result)
    if source:
        version = source.get("tool_version")
        return (f"{source.get('tool')} {version}" if version != NOT_IN_SOURCE
                else f"{source.get('tool')}, version not in the source file")
    return f"TGI Benchmark {getattr(result, 'tool_version', '')}".strip()
