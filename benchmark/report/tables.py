"""TGI's three tables (parameters, latency, throughput) as markdown, and a plain-words headline.

    print(markdown_tables(result))       # what the CLI prints at the end; the UI renders it
    for sentence in headline(result):    # for readers who are not engineers
        print(sentence)

The layout follows ``text-generation-benchmark``: the latency table has one row per step kind
(Prefill, Decode (token), Decode (total)) and batch size with Average, Lowest, Highest, p50, p90,
p99 in ms; the throughput table has Prefill and Decode rows with Average, Lowest, Highest in
tokens/s. A fourth table, Requests, counts failures and short outputs per batch size, which TGI's
tool never had to (it cannot fail a request or stop early). In concurrency mode the "Batch Size"
column is "Users" (concurrent virtual users); in rate mode it is "Rate (req/s)", and a fifth
table, Schedule, says how well each rate was kept (offered, scheduled, sent and completed rates,
schedule lag, wait behind the concurrency cap, end-to-end latency from the intended send).

Balance rule used by ``headline``: the baseline is the median (p50) decode token latency of the
smallest batch size; among batch sizes whose median token latency stays within
``BALANCE_FACTOR`` (1.5x) of that baseline, the one with the highest average decode throughput is
the balance point.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from ..config import strip_credentials
from ..errors import redact
from ..core.cost import dollars
from ..core.slo import slo_of
from ..core.stats import ALL_METRICS, METRICS, STAT_KEYS, StepSummary
from ..core.telemetry_data import CLIENT_BOUND_WORDS, step_figures

__all__ = [
    "BALANCE_FACTOR",
    "SIMULATED_LINE",
    "markdown_tables",
    "parameters_table",
    "latency_table",
    "throughput_table",
    "requests_table",
    "schedule_table",
    "slo_table",
    "capacity_headline",
    "capacity_table",
    "cost_sentences",
    "cost_table",
    "headline",
    "balance_step",
    "step_label",
    "telemetry_table",
    "telemetry_steps",
    "client_bound_steps",
    "CLIENT_BOUND_MARK",
    "md_text",
    "NOT_IN_SOURCE",
    "imported_tables",
    "compare_table",
]

BALANCE_FACTOR = 1.5
SIMULATED_LINE = "SIMULATED SERVER — these numbers are not a GPU's."
MISSING = "n/a"
CLIENT_BOUND_MARK = "⚠"
CLIENT_BOUND_NOTE = (f"{CLIENT_BOUND_MARK} {CLIENT_BOUND_WORDS[0].upper()}"
                     f"{CLIENT_BOUND_WORDS[1:]}: its CPU or event loop could not keep up (see "
                     f"the Telemetry table).")
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
    """What a step is called: "batch size" (rounds), "concurrent users" (concurrency) or
    "request rates" (rate)."""
    if mode == "rate":
        return "Rate (req/s)" if title else ("request rates" if plural else "request rate")
    if mode == "capacity":
        return "Probe" if title else ("probes" if plural else "probe")
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
    capacity = getattr(result, "capacity", None)
    if capacity is not None:
        parts.append("### Capacity\n\n" + capacity_headline(capacity) + "\n\n"
                     + capacity_table(capacity))
    parts.append("### Parameters\n\n" + parameters_table(result))
    figures = telemetry_steps(result)
    flagged = client_bound_steps(figures)
    note = f"\n\n{CLIENT_BOUND_NOTE}" if flagged else ""
    if steps:
        parts.append("### Latency\n\n" + latency_table(steps, result.config.mode, flagged)
                     + note)
        parts.append("### Throughput\n\n" + throughput_table(steps, result.config.mode,
                                                                flagged) + note)
        parts.append("### Requests\n\n" + requests_table(steps, result.config.mode))
        if result.config.mode == "rate":
            parts.append("### Schedule\n\n" + schedule_table(steps))
        slo = slo_of(result.config)
        if slo is not None and any(s.slo is not None for s in steps):
            parts.append(f"### Latency targets\n\nGood request: finished and within "
                         f"{_cell(slo.words())}; target: {slo.attainment:.0%} of requests.\n\n"
                         + slo_table(steps, result.config.mode))
    else:
        parts.append("No request has been measured yet.")
    cost = result.cost(steps, figures) if callable(getattr(result, "cost", None)) else None
    if cost:
        parts.append("### Cost\n\n" + " ".join(_cell(x) for x in cost_sentences(cost))
                     + ("\n\n" + cost_table(cost, result.config.mode, steps, capacity)
                        if cost["steps"] else ""))
    if result_telemetry(result) is not None:
        parts.append("### Telemetry\n\n" + telemetry_table(result, figures))
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
        ("Load pattern", {"rounds": "rounds (TGI's pattern)",
                          "concurrency": "concurrency (sustained users)",
                          "rate": "request rate (open loop)",
                          "capacity": "find capacity (automatic search)"}.get(config.mode,
                                                                               config.mode)),
    ]
    if config.mode != "capacity":
        rows.append(({"concurrency": "Users", "rate": "Rates (req/s)"}.get(config.mode,
                                                                           "Batch Sizes"),
                     ", ".join(str(b) for b in config.steps)))
    rows += [("Sequence Length", config.sequence_length),
             ("Decode Length", config.decode_length)]
    slo = slo_of(config)
    if slo is not None:
        rows += [("TTFT target (ms)", slo.ttft_ms), ("Time per token target (ms)", slo.tpot_ms),
                 ("End-to-end target (ms)", slo.e2e_ms),
                 ("Requests within target", f"{slo.attainment:.0%}")]
    if config.mode == "capacity":
        rows += [("Max duration (s)", config.capacity_duration_s),
                 ("Schedule seed", config.schedule_seed)]
    elif config.mode == "rounds":
        rows += [("N Runs", config.runs), ("Warmups", config.warmups)]
    elif config.mode == "rate":
        rows += [("Arrivals", config.arrivals), ("Burstiness", config.burstiness),
                 ("Ramp-up (s)", config.ramp_up_s), ("Duration (s)", config.duration_s),
                 ("Requests per step", config.requests),
                 ("Max concurrency", config.max_concurrency),
                 ("Schedule seed", config.schedule_seed)]
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
        ("Server version", NOT_REPORTED if info.get("version") is None else info["version"]),
    ]
    if result.server:
        quantize = result.server.get("quantize") or result.server.get("dtype")
        rows.append(("Server quantization", quantize or "none (the server's default)"))
    rows += [
        ("Simulated server", "yes" if result.simulated else "no"),
        ("Started", result.started_at),
        ("Status", result.status),
    ]
    return _table(["Parameter", "Value"], [[name, _plain(value)] for name, value in rows])


def _step_cell(step: int, flagged: frozenset[int]) -> str:
    return f"{step} {CLIENT_BOUND_MARK}" if step in flagged else str(step)


def latency_table(steps: list[StepSummary], mode: str = "rounds",
                  flagged: frozenset[int] = frozenset()) -> str:
    """Prefill, Decode (token), Decode (total) per step: avg, lowest, highest, p50, p90, p99
    (``flagged``: steps the client may have limited, marked with CLIENT_BOUND_MARK)."""
    header = ["Step", step_label(mode, title=True), "Average", "Lowest", "Highest",
              "p50", "p90", "p99"]
    rows = []
    for name, key in _LATENCY_ROWS:
        for step in steps:
            stats = step.metric(key)
            values = ([MISSING] * 6 if stats is None else
                      [_ms(getattr(stats, s)) for s in STAT_KEYS])
            rows.append([name, _step_cell(step.step, flagged), *values])
    return _table(header, rows)


def throughput_table(steps: list[StepSummary], mode: str = "rounds",
                     flagged: frozenset[int] = frozenset()) -> str:
    """Prefill and Decode throughput per step: avg, lowest, highest (tokens/s)."""
    header = ["Step", step_label(mode, title=True), "Average", "Lowest", "Highest"]
    rows = []
    for name, key in _THROUGHPUT_ROWS:
        for step in steps:
            stats = step.metric(key)
            values = ([MISSING] * 3 if stats is None else
                      [_tps(getattr(stats, s)) for s in ("avg", "min", "max")])
            rows.append([name, _step_cell(step.step, flagged), *values])
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
            MISSING if tokens is None else f"{_tokens(tokens, step.decode_length)} of "
                                           f"{step.decode_length}",
            MISSING if rps is None else f"{rps:.2f}",
        ])
    return _table(header, rows)


def schedule_table(steps: list[StepSummary]) -> str:
    """Rate mode, per rate: how well the schedule was kept and what a user arriving on it saw."""
    header = ["Rate (req/s)", "Scheduled (req/s)", "Sent (req/s)", "Completed (req/s)",
              "Schedule lag p50", "Schedule lag p99", "Client queue p99",
              "E2E from schedule p50", "E2E from schedule p99", "Incomplete"]
    rows = []
    for step in steps:
        def rate(key: str) -> str:
            value = step.value(key)
            return MISSING if value is None else f"{value:.2f}"

        def ms(key: str, stat: str) -> str:
            value = step.value(key, stat)
            return MISSING if value is None else _ms(value)

        rows.append([f"{step.step:g}", rate("scheduled_rate_per_s"), rate("sent_rate_per_s"),
                     rate("completed_rate_per_s"), ms("schedule_lag_ms", "p50"),
                     ms("schedule_lag_ms", "p99"), ms("client_queue_ms", "p99"),
                     ms("queued_e2e_latency_ms", "p50"), ms("queued_e2e_latency_ms", "p99"),
                     str(step.incomplete)])
    return _table(header, rows)


def slo_table(steps: list[StepSummary], mode: str = "rounds") -> str:
    """Per step: requests counted, good ones, attainment against the target, goodput, good
    output tokens/s and how many missed each target (a request can miss several)."""
    header = [step_label(mode, title=True), "Requests", "Good", "Attainment", "Target met",
              "Goodput (req/s)", "Good output tokens/s", "Missed TTFT", "Missed TPOT",
              "Missed E2E", "Errors"]
    rows = []
    for step in steps:
        slo = step.slo
        if slo is None:
            continue
        rows.append([
            str(step.step), str(slo.sent), str(slo.good),
            MISSING if slo.attainment is None else f"{slo.attainment:.1%}",
            ("yes" if slo.passed else "no") + f" ({slo.target:.0%})",
            MISSING if slo.goodput_rps is None else f"{slo.goodput_rps:.2f}",
            MISSING if slo.good_output_tokens_per_s is None
            else f"{slo.good_output_tokens_per_s:.1f}",
            *(str(slo.missed.get(k, 0)) for k in ("ttft", "tpot", "e2e", "error")),
        ])
    return _table(header, rows)
def result_telemetry(result: Any) -> Any:
    return getattr(result, "telemetry", None)


def telemetry_steps(result: Any) -> list[dict[str, Any]]:
    """Per-step telemetry figures of ``result`` (``telemetry_data.step_figures``); empty when
    the sampler was off."""
    data = result_telemetry(result)
    if data is None:
        return []
    return step_figures(data, result.measured_records, result.calibration)


def client_bound_steps(figures: list[dict[str, Any]]) -> frozenset[int]:
    """The steps the client may have limited."""
    return frozenset(int(f["step"]) for f in figures if f.get("client_bound"))


def _num(value: Any, fmt: str, unit: str = "") -> str:
    if value is None:
        return MISSING
    return f"{value:{fmt}}{unit}"


def telemetry_table(result: Any, figures: list[dict[str, Any]] | None = None) -> str:
    """Per step: GPU power and use, energy per output token, the server's peak queue and batch,
    the client's CPU and loop lag and its verdict; then the GPUs seen and each source that
    could not be read."""
    data = result_telemetry(result)
    if data is None:
        return "Telemetry was off for this run (--telemetry-interval 0)."
    figures = telemetry_steps(result) if figures is None else figures
    mode = result.config.mode
    header = [step_label(mode, title=True), "GPU power avg / peak", "GPU use",
              "Energy per output token", "Output tokens per kWh", "Server queue (peak)",
              "Server batch (peak)", "Client CPU", "Loop lag p50 / max", "Client"]
    rows = []
    for f in figures:
        power = (MISSING if f.get("power_w_mean") is None else
                 f"{f['power_w_mean']:.0f} / {f['power_w_peak']:.0f} W")
        lag = (MISSING if f.get("loop_lag_p50_ms") is None else
               f"{f['loop_lag_p50_ms']:.2f} / {f.get('loop_lag_max_ms') or 0:.2f} ms")
        cpu = _num(f.get("client_cpu_pct"), ".0f", "%")
        if f.get("worker_loop_cpu_pct") is not None:  # --workers: the busiest worker's too
            cpu += f"; busiest worker {f['worker_loop_cpu_pct']:.0f}%"
        if f.get("worker_loop_lag_p50_ms") is not None:
            lag += (f"; busiest worker {f['worker_loop_lag_p50_ms']:.2f} / "
                    f"{f.get('worker_loop_lag_max_ms') or 0:.2f} ms")
        rows.append([
            _step_cell(int(f["step"]), client_bound_steps([f])), power,
            _num(f.get("gpu_utilization_pct_mean"), ".0f", "%"),
            _num(f.get("j_per_output_token"), ".3g", " J"),
            _num(f.get("output_tokens_per_kwh"), ",.0f"),
            _num(f.get("peak_queue"), "g"), _num(f.get("peak_batch"), "g"),
            cpu, lag,
            f"{CLIENT_BOUND_MARK} may have limited this step" if f.get("client_bound")
            else "kept up",
        ])
    parts = [_table(header, rows) if rows else "No step has been sampled yet."]
    if data.gpus:
        parts.append("GPUs seen (on the machine that ran the benchmark): " + ", ".join(
            f"{_cell(g.get('name'))} ({int(g.get('memory_total_mib') or 0):,} MiB)"
            for g in data.gpus) + ".")
    for f in figures:
        if f.get("client_bound_reason"):
            parts.append(f"{CLIENT_BOUND_MARK} {_name(mode, int(f['step'])).capitalize()}: "
                         f"{_cell(f['client_bound_reason'])}")
    for sentence in data.missing:
        parts.append(f"Not measured: {_cell(redact(sentence))}")
    return "\n\n".join(parts)


def cost_sentences(cost: dict[str, Any]) -> list[str]:
    """Plain words of run.json's cost block: the price and where it came from, the cost at the
    capacity point, and the deployment plan."""
    out: list[str] = []
    price = cost.get("price")
    if price:
        out.append(f"Price: {dollars(price['usd_per_hour'])} per hour, {price['source']}.")
    else:
        out.append("No price was given (--gpu-price-per-hour or --hardware): energy only.")
    at = cost.get("capacity")
    if at and at.get("usd_per_million_output_tokens") is not None:
        out.append(f"At the capacity point ({_rate(at['rate_rps'])} requests/s within the "
                   f"targets) a million output tokens cost "
                   f"{dollars(at['usd_per_million_output_tokens'])}, a million tokens in all "
                   f"(prompt + output) {dollars(at['usd_per_million_tokens'])}, and a thousand "
                   f"requests {dollars(at['usd_per_thousand_requests'])}"
                   + (f" ({at['kwh_per_million_output_tokens']:.3g} kWh per million output "
                      f"tokens)" if at.get("kwh_per_million_output_tokens") is not None else "")
                   + ".")
    plan = cost.get("plan")
    if plan:
        out.append(str(plan["sentence"]))
    return out


def cost_table(cost: dict[str, Any], mode: str = "rounds",
               steps: list[StepSummary] | None = None, capacity: Any = None) -> str:
    """Per step: delivered tokens/s and requests/s over the step, $ per million output tokens,
    per million tokens (prompt + output), per thousand requests; kWh per million output tokens
    where telemetry measured energy; with latency targets, whether the step met them (a cheap
    step that misses them is no offer; a capacity run's probes give their own verdict, as the
    Capacity table does)."""
    rows_in = cost.get("steps") or []
    energy = any(c.get("kwh_per_million_output_tokens") is not None for c in rows_in)
    judged = {float(s.step): s.slo for s in steps or () if s.slo is not None}
    verdicts = {float(p.step): p.passed for p in getattr(capacity, "probes", None) or ()}
    header = [step_label(mode, title=True), "Output tokens/s", "Requests/s",
              "$ / M output tokens", "$ / M tokens", "$ / 1k requests"]
    header += ["kWh / M output tokens"] if energy else []
    header += ["Targets met"] if judged else []

    def money(value: Any) -> str:
        return MISSING if value is None else dollars(value)

    rows = []
    for c in rows_in:
        row = [f"{c['step']:g}", _rate(c.get("output_tokens_per_s")),
               _rate(c.get("requests_per_s")), money(c.get("usd_per_million_output_tokens")),
               money(c.get("usd_per_million_tokens")), money(c.get("usd_per_thousand_requests"))]
        if energy:
            kwh = c.get("kwh_per_million_output_tokens")
            row.append(MISSING if kwh is None else f"{kwh:.3g}")
        if judged:
            slo = judged.get(float(c["step"]))
            passed = verdicts.get(float(c["step"]), None if slo is None else slo.passed)
            row.append(MISSING if slo is None or slo.attainment is None
                       else ("yes" if passed else "no") + f" ({slo.attainment:.0%})")
        rows.append(row)
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["| " + " | ".join(_cell(h).ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(c).ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


# Characters with a meaning in markdown (links, images, code, emphasis, tables, maths) that a
# text must not use on a page; "<", ">" and "&" become HTML entities (no tags, no entities).
# "_" is left as it is, so that names like max_total_tokens stay readable in the markdown
# the CLI prints: at worst an "_x_" shows in italics, it cannot link, load or break a table.
# "$" alone is a price ($3.60); only "$$" (the page's LaTeX delimiter) is broken up.
_MARKDOWN_CHARS = "\\`*[]|~"
_LATEX_DELIMITER = re.compile(r"\$(?=\$)|(?<=\$)\$")
_MARKDOWN_ESCAPES = str.maketrans({**{c: "\\" + c for c in _MARKDOWN_CHARS},
                                   "<": "&lt;", ">": "&gt;", "&": "&amp;"})


def md_text(value: Any) -> str:
    """THE one place where text from a server, a file or a visitor (a model id from /info, an
    error a server sent, a typed value echoed back) becomes markdown that means only itself:
    secrets masked, every run of whitespace (newlines too: a blank line would end a table or
    a code span) made one space, markdown's own characters escaped and ``< > &`` made entities,
    so no link, image, HTML tag or formatting can come from it. Used for table cells too."""
    text = _LATEX_DELIMITER.sub(r"\\$", redact(str(value)).translate(_MARKDOWN_ESCAPES))
    return " ".join(text.split())


_cell = md_text


def _tokens(average: float, asked: int) -> str:
    """An average output length to one decimal, never rounded up to the length asked when it
    is below it (127.98 of 128 is "127.9", not "128.0" beside a short output)."""
    text = f"{average:.1f}"
    if average < asked and float(text) >= asked:
        text = f"{math.floor(average * 10) / 10:.1f}"
    return text


NOT_REPORTED = "not reported by the server"
NOT_SET = "not set"


def _plain(value: Any) -> str:
    """A parameter's value as text; a setting left unset is "not set" (never "None")."""
    if value is None:
        return NOT_SET
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
    capacity = getattr(result, "capacity", None)
    if capacity is not None:
        sentences.insert(0, capacity_headline(capacity))
    if result.status != "complete":
        sentences.append(_status_sentence(result, steps))
    if not steps:
        sentences.append("No request has been measured yet.")
        return sentences
    if capacity is not None:
        return sentences[:1] + _cost_headline(result, steps) + sentences[1:] \
            + _failure_sentences(result, steps)
    sentences += _cost_headline(result, steps)

    with_tps = [s for s in steps if s.value("decode_throughput_tok_s") is not None]
    if with_tps:
        best = max(with_tps, key=lambda s: s.value("decode_throughput_tok_s"))
        samples = best.metric("decode_throughput_tok_s").count  # type: ignore[union-attr]
        over = (f"average of {samples} runs" if mode == "rounds" and samples > 1
                else "measured over the whole step" if mode in ("concurrency", "rate")
                else "one run")
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
                f"Best balance: {name(base.step)}. Every "
                f"{'higher' if mode == 'rate' else 'larger'} "
                f"{_STEP_NOUN.get(mode, 'batch size')} made each user "
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

    sentences += _slo_sentences(result, steps)
    return sentences + _failure_sentences(result, steps)


def _cost_headline(result: Any, steps: list[StepSummary]) -> list[str]:
    """With a price: the cost at the capacity point and the plan, or the cheapest step."""
    cost = result.cost(steps) if callable(getattr(result, "cost", None)) else None
    if not cost or not cost.get("price"):
        return []
    hourly = dollars(cost["price"]["usd_per_hour"])
    at = cost.get("capacity")
    if at and at.get("usd_per_million_output_tokens") is not None:
        out = [f"Within the targets, a million output tokens cost "
               f"{dollars(at['usd_per_million_output_tokens'])} at {hourly}/hour."]
        if cost.get("plan"):
            out.append(str(cost["plan"]["sentence"]))
        return out
    priced = [c for c in cost["steps"] if c.get("usd_per_million_output_tokens") is not None]
    if not priced or result.config.mode == "capacity":
        return []
    judged = {float(s.step): s.slo for s in steps if s.slo is not None}
    within = ""
    if judged:   # with latency targets, only a step that met them is an offer
        priced = [c for c in priced if judged.get(float(c["step"])) is not None
                  and judged[float(c["step"])].passed]
        within = " within the latency targets"
        if not priced:
            return []
    best = min(priced, key=lambda c: c["usd_per_million_output_tokens"])
    return [f"Cheapest{within}: {dollars(best['usd_per_million_output_tokens'])} per million "
            f"output tokens {_at(result.config.mode, best['step'])}, at {hourly}/hour."]


def _failure_sentences(result: Any, steps: list[StepSummary]) -> list[str]:
    """Failed and short requests, client-bound steps and energy: said in every pattern."""
    at = functools.partial(_at, result.config.mode)
    sentences: list[str] = []
    total = sum(s.requests for s in steps)
    errors = sum(s.errors for s in steps)
    timeouts = sum(s.timeouts for s in steps)
    if errors:
        extra = f", {timeouts} of them timed out" if timeouts else ""
        sentences.append(
            f"{errors} of {total} requests failed{extra}. They are listed in requests.csv and "
            f"left out of the latency and throughput numbers."
        )
    figures = telemetry_steps(result)
    for f in [f for f in figures if f.get("client_bound")][:3]:
        sentences.append(f"{at(int(f['step'])).capitalize()}, {CLIENT_BOUND_WORDS}: "
                         f"{(f.get('client_bound_reason') or '').split(': ', 1)[-1]}")
    energy = [f for f in figures if f.get("j_per_output_token")]
    if energy:
        best = min(energy, key=lambda f: f["j_per_output_token"])
        sentences.append(
            f"Lowest energy per output token: {best['j_per_output_token']:.3g} J "
            f"{at(int(best['step']))} ({best['output_tokens_per_kwh']:,.0f} tokens per kWh, "
            f"all GPUs of this machine together).")
    short = sum(s.short_outputs for s in steps)
    if short:
        sentences.append(
            f"{short} requests ended before the {result.config.decode_length} tokens asked (the "
            f"model chose to stop); throughput counts only the tokens that came."
        )
    return sentences


_STEP_NOUN = {"concurrency": "number of users", "rate": "request rate"}
def capacity_headline(capacity: Any) -> str:
    """The answer of a capacity run in one sentence a non-engineer can act on (markdown)."""
    slo = capacity.slo
    share = f"{slo.attainment:.0%}"
    if capacity.ended == "running":
        passed = [p.rate_rps for p in capacity.probes if p.passed and p.kind == "rate"]
        so_far = (f"; the highest request rate kept so far is {_rps(max(passed))} per second"
                  if passed else "")
        return (f"Searching for the highest request rate that keeps {share} of requests within "
                f"{slo.words()}: {len(capacity.probes)} probe"
                f"{'' if len(capacity.probes) == 1 else 's'} done{so_far}.")
    if capacity.rate_rps is None:
        if capacity.message:
            return capacity.message
        single = next((p for p in capacity.probes if p.kind == "one at a time"), None)
        if single is not None and single.passed and single.rate_rps:
            return (f"No request rate with overlapping requests kept {share} of requests "
                    f"within {slo.words()}: only one request at a time did "
                    f"({_rps(single.rate_rps)} requests per second, each sent when the "
                    f"previous one ended). The targets are at the edge of what this server "
                    f"does alone.")
        return f"No request rate kept {share} of requests within {slo.words()}."
    parts = []
    if capacity.in_flight is not None:
        parts.append(f"about {capacity.in_flight:,.0f} requests in flight")
    if capacity.output_tokens_per_s is not None:
        parts.append(f"{capacity.output_tokens_per_s:,.0f} tokens/s")
    sentence = (f"This server keeps {share} of requests within {slo.words()} up to "
                f"**{_rps(capacity.rate_rps)} requests per second**")
    sentence += (": " + ", ".join(parts) + ".") if parts else "."
    if capacity.bracket is not None:
        low, high = capacity.bracket
        if capacity.converged:
            sentence += (f" (The limit lies between {_rps(low)} and {_rps(high)} requests per "
                         f"second; found in {len(capacity.probes)} probes.)")
        else:
            why = "time ran out" if capacity.ended == "time" else "the probes ran out"
            sentence += (f" The search stopped before it was within ±5% ({why}): the limit "
                         f"lies between {_rps(low)} and {_rps(high)} requests per second.")
    if capacity.message:
        sentence += " " + capacity.message
    return sentence


def capacity_table(capacity: Any) -> str:
    """Every probe of a capacity run: rate, attainment, verdict, goodput, TTFT and TPOT."""
    header = ["Probe", "Kind", "Rate (req/s)", "Requests", "Within target", "Passed",
              "Goodput (req/s)", "TTFT p50 / p90 / p99 (ms)", "TPOT p50 / p90 / p99 (ms)"]
    rows = []
    for probe in capacity.probes:
        rows.append([
            str(probe.step), probe.kind + _stopped(probe),
            _rps(probe.rate_rps), str(probe.requests),
            MISSING if probe.attainment is None else f"{probe.attainment:.1%}",
            "yes" if probe.passed else "no",
            MISSING if probe.goodput_rps is None else f"{probe.goodput_rps:.2f}",
            _triple(probe.ttft_ms), _triple(probe.tpot_ms),
        ])
    return _table(header, rows)


def _stopped(probe: Any) -> str:
    """" (stopped early: why)" for a probe cut short, else ""."""
    if not probe.stopped_early:
        return ""
    why = getattr(probe, "stopped_why", None)
    return f" (stopped early: {why})" if why else " (stopped early)"


def _triple(values: dict[str, float] | None) -> str:
    if not values:
        return MISSING
    return " / ".join(f"{values[k]:.0f}" if values[k] >= 100 else f"{values[k]:.1f}"
                      for k in ("p50", "p90", "p99"))


def _rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _slo_sentences(result: Any, steps: list[StepSummary]) -> list[str]:
    """Which steps kept the share of requests within the latency targets."""
    slo = slo_of(result.config)
    judged = [s for s in steps if s.slo is not None and s.slo.attainment is not None]
    if slo is None or not judged:
        return []
    mode = result.config.mode
    parts = [f"{s.slo.attainment:.0%} {_at(mode, s.step)}" for s in judged]  # type: ignore[union-attr]
    sentence = (f"Requests within {slo.words()} (target {slo.attainment:.0%}): "
                + _join(parts) + ".")
    passed = [s for s in judged if s.slo.passed]  # type: ignore[union-attr]
    if passed:
        best = max(passed, key=lambda s: s.slo.goodput_rps or 0.0)  # type: ignore[union-attr]
        goodput = best.slo.goodput_rps  # type: ignore[union-attr]
        if goodput is not None:
            sentence += (f" The highest goodput within the target: {goodput:.2f} good requests "
                         f"per second {_at(mode, best.step)}.")
    else:
        sentence += " No step met the target."
    return [sentence]


def _status_sentence(result: Any, steps: list[StepSummary]) -> str:
    covered = ", ".join(str(s.step) for s in steps) or "none"
    words = step_label(result.config.mode, plural=True)
    if result.status == "running":
        return f"The run is still going; results so far cover {words}: {covered}."
    if result.status == "cancelled":
        return f"The run was stopped before the end; results cover {words}: {covered}."
    reason = f" {md_text(result.message)}" if result.message else ""   # the server's words
    return f"The run failed.{reason} Results cover {words}: {covered}."


def _name(mode: str, step: float) -> str:
    """Return "batch size 4", "4 concurrent users" or "10 requests/s"."""
    if mode == "rate":
        return f"{step:g} requests/s"
    if mode == "concurrency":
        return f"{step} concurrent user{'' if step == 1 else 's'}"
    return f"batch size {step}"


def _at(mode: str, step: int) -> str:
    """Return "at batch size 4" or "with 4 concurrent users"."""
    return ("with " if mode == "concurrency" else "at ") + _name(mode, step)  # "at 10 requests/s"


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
    sentences = [f"Imported from {md_text(_who(result))}, file {md_text(source.get('file'))}: "
                 f"the numbers are "
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
