"""Progress of a run: a JSON-lines stream for programs, a plain-text bar for people.

    with JsonLinesProgress.open("progress.jsonl") as stream:     # or "-" for stdout
        run(config, on_progress=fan_out(stream, ConsoleProgress(sys.stderr)))

Events (one JSON object a line, flushed after each):

    {"event":"start","run_id","output_dir","steps":[1,2,4],"planned_requests":N|null,"simulated":b}
    {"event":"step_start","step":4,"index":1,"of":3}
    {"event":"round_done","step":4,"run":2,"runs":5,"warmup":false,"errors":0}      (rounds)
    {"event":"requests_done","step":4,"done":n,"total":N|null,"elapsed_s":x,"errors":e} (concurrency)
    {"event":"step_done","step":4}            (the files in output_dir already hold this step)
    {"event":"probe_done","step":3,"kind":"rate","rate_rps":x,"attainment":a|null,
     "passed":b,"stopped_early":b,"requests":n}      (capacity: step_start has "of": null)
    {"event":"warning","message":"..."}
    {"event":"done","status":"complete"|"cancelled"|"failed","message":str|null,"output_dir"}

The console bar is plain text on stderr: redrawn in place on a terminal; otherwise one line per
step, per warning, and at most one every 10 s in between, so logs of a CI job stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["JsonLinesProgress", "ConsoleProgress", "fan_out", "ProgressCallback", "probe_line"]

ProgressCallback = Callable[[dict[str, Any]], None]


class JsonLinesProgress:
    """Writes each event as one JSON line and flushes it."""

    def __init__(self, stream: IO[str], *, close: bool = False):
        self.stream = stream
        self._close = close

    @classmethod
    def open(cls, target: str | Path) -> "JsonLinesProgress":
        """``"-"`` is stdout; anything else a file (created, truncated; parent folders made)."""
        if str(target) == "-":
            return cls(sys.stdout)
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("w", encoding="utf-8", buffering=1), close=True)

    def __call__(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._close:
            self.stream.close()

    def __enter__(self) -> "JsonLinesProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def fan_out(*callbacks: ProgressCallback | None) -> ProgressCallback:
    """One callback calling each of ``callbacks`` (None entries are skipped) in order."""
    active = [c for c in callbacks if c is not None]

    def call(event: dict[str, Any]) -> None:
        for callback in active:
            callback(event)

    return call


def probe_line(event: dict[str, Any]) -> str:
    """A finished capacity probe in words: "probe 3 (rate): 12.4 req/s, 93% within target,
    passed"."""
    attainment = event.get("attainment")
    share = "no request counted" if attainment is None else f"{attainment:.0%} within target"
    verdict = "passed" if event.get("passed") else "missed"
    early = " (stopped early: already over the limit)" if event.get("stopped_early") else ""
    return (f"probe {event.get('step')} ({event.get('kind')}): "
            f"{float(event.get('rate_rps') or 0):.3g} req/s, {share}, {verdict}{early}")


class ConsoleProgress:
    """A text progress bar: ``[#######-------]  45%  batch size 4 (2/3)  run 3/5  0 errors``."""

    def __init__(self, stream: IO[str] | None = None, *, width: int = 28,
                 tty: bool | None = None, line_every_s: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.planned: int | None = None
        self.done = 0
        self.errors = 0
        self.step_label = ""
        self.detail = ""
        self._step_base = 0
        self._errors_base = 0
        self._drawn = False
        self.line_every_s = line_every_s  # without a terminal: progress lines at most this often
        self._last_line = time.perf_counter()

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.planned = event.get("planned_requests")
            simulated = "  (SIMULATED server)" if event.get("simulated") else ""
            steps = event.get("steps") or []
            what = (f"batch sizes {', '.join(map(str, steps))}" if steps
                    else "capacity search")
            self._line(f"Benchmark {event.get('run_id')}: {what}{simulated}")
        elif kind == "step_start":
            self.step_label = (f"probe {event['index']}" if event.get("of") is None else
                               f"batch size {event['step']} ({event['index']}/{event['of']})")
            self.detail = ""
            self._step_base = self.done
            self._errors_base = self.errors
            self._draw()
        elif kind == "round_done":
            self.done += int(event["step"])
            self.errors += int(event.get("errors") or 0)
            phase = "warm-up" if event.get("warmup") else "run"
            self.detail = f"{phase} {event['run']}/{event['runs']}"
            self._draw()
        elif kind == "requests_done":
            self.done = self._step_base + int(event["done"])
            self.errors = self._errors_base + int(event.get("errors") or 0)
            total = event.get("total")
            self.detail = (f"{event['done']}/{total} requests" if total
                           else f"{event.get('elapsed_s', 0):.0f} s")
            self._draw()
        elif kind == "step_done":
            self._draw(final=True)
        elif kind == "probe_done":
            self._line(probe_line(event))
        elif kind == "warning":
            self._line(f"warning: {event.get('message')}")
        elif kind == "done":
            message = event.get("message")
            self._line(f"Run {event.get('status')}" + (f": {message}" if message else ""))

    def render(self) -> str:
        """The bar as one line of text."""
        if self.planned:
            fraction = min(1.0, self.done / self.planned)
            filled = int(round(fraction * self.width))
            bar = f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction * 100:3.0f}%"
        else:
            bar = f"{self.done} requests"
        errors = f"{self.errors} error{'s' if self.errors != 1 else ''}"
        parts = [bar, self.step_label, self.detail, errors]
        return "  ".join(p for p in parts if p)

    def _draw(self, final: bool = False) -> None:
        text = self.render()
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + text + "\033[K" + ("\n" if final else ""))
            self._drawn = not final
        elif final or now - self._last_line >= self.line_every_s:
            self.stream.write(text + "\n")
        else:
            return
        self._last_line = now
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self._drawn:
            self.stream.write("\n")
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
