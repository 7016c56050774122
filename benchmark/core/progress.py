"""Progress of a run: typed events, a JSON-lines stream for programs, a plain-text bar for people.

    with JsonLinesProgress.open("progress.jsonl") as stream:     # or "-" for stdout
        run(config, on_progress=fan_out(stream, ConsoleProgress(sys.stderr)))

The engine emits the frozen dataclasses below; ``to_json`` writes one as a line of the stream
and ``from_json`` reads it back (the app reads the engine child's stream this way). Each event
is also a read-only mapping of its JSON object (``event["step"]``, ``event == {...}``), so a
callback written for the plain dicts of earlier versions keeps working. The stream's bytes:

    {"event":"start","run_id","output_dir","steps":[1,2,4],"planned_requests":N|null,"simulated":b,
     "mode":"rounds"|"concurrency"|"rate"}
    {"event":"step_start","step":4,"index":1,"of":3}
    {"event":"round_done","step":4,"run":2,"runs":5,"warmup":false,"errors":0}      (rounds)
    {"event":"requests_done","step":4,"done":n,"total":N|null,"elapsed_s":x,"errors":e} (concurrency, rate)
    {"event":"step_done","step":4}            (the files in output_dir already hold this step)
    {"event":"probe_done","step":3,"probe_kind":"rate","rate_rps":x,"attainment":a|null,
     "passed":b,"stopped_early":b,"requests":n}      (capacity: step_start has "of": null)
    {"event":"warning","message":"..."}
    {"event":"done","status":"complete"|"cancelled"|"failed","message":str|null,"output_dir"}

Keys are written in the order of the dataclass fields; a new field goes last so that readers of
older streams are not surprised. Readers ignore kinds they do not know.

The console bar is plain text on stderr: redrawn in place on a terminal; otherwise one line per
step, per warning, and at most one every 10 s in between, so logs of a CI job stay readable.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Iterator

__all__ = ["ProgressEvent", "Start", "StepStart", "RoundDone", "RequestsDone", "StepDone",
           "ProbeDone", "RunWarning", "Done", "EVENT_TYPES", "as_event", "JsonLinesProgress",
           "ConsoleProgress", "fan_out", "ProgressCallback", "probe_line"]


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), separators=(",", ":"), allow_nan=False)


class ProgressEvent(Mapping):
    """One progress event; subclasses are frozen dataclasses named by ``kind``."""

    kind: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    def to_json(self) -> str:
        """The event as one line of the stream (without the newline)."""
        return _dumps(self.to_dict())

    @staticmethod
    def from_json(text: str) -> "ProgressEvent | None":
        """The event a stream line holds; None for a blank, broken or unknown line."""
        text = text.strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return as_event(data) if isinstance(data, Mapping) else None

    # A read-only mapping of the JSON object (for callbacks that index events like dicts).
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass(frozen=True, eq=False)
class Start(ProgressEvent):
    kind: ClassVar[str] = "start"
    run_id: str
    output_dir: str
    steps: tuple[float, ...]  # batch sizes, users or requests/s
    planned_requests: int | None
    simulated: bool
    mode: str = "rounds"  # the load pattern (absent from older streams: rounds)


@dataclass(frozen=True, eq=False)
class StepStart(ProgressEvent):
    kind: ClassVar[str] = "step_start"
    step: float
    index: int
    of: int | None  # None: capacity mode, whose number of probes is not known ahead


@dataclass(frozen=True, eq=False)
class RoundDone(ProgressEvent):
    """A round of the rounds pattern ended (``run`` of ``runs``; warm-up or measured)."""

    kind: ClassVar[str] = "round_done"
    step: float
    run: int
    runs: int
    warmup: bool
    errors: int


@dataclass(frozen=True, eq=False)
class RequestsDone(ProgressEvent):
    """Requests finished so far in a step of the concurrency pattern."""

    kind: ClassVar[str] = "requests_done"
    step: float
    done: int
    total: int | None
    elapsed_s: float
    errors: int


@dataclass(frozen=True, eq=False)
class StepDone(ProgressEvent):
    kind: ClassVar[str] = "step_done"
    step: float


@dataclass(frozen=True, eq=False)
class ProbeDone(ProgressEvent):
    """A capacity probe ended (``step`` is its number); its verdict against the targets."""

    kind: ClassVar[str] = "probe_done"
    step: int
    probe_kind: str        # "one at a time", "saturation" or "rate"
    rate_rps: float
    attainment: float | None
    passed: bool
    stopped_early: bool
    requests: int


@dataclass(frozen=True, eq=False)
class RunWarning(ProgressEvent):
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True, eq=False)
class Done(ProgressEvent):
    kind: ClassVar[str] = "done"
    status: str
    message: str | None
    output_dir: str


EVENT_TYPES: dict[str, type[ProgressEvent]] = {
    cls.kind: cls
    for cls in (Start, StepStart, RoundDone, RequestsDone, StepDone, ProbeDone, RunWarning,
                Done)}


def as_event(data: Mapping[str, Any]) -> ProgressEvent | None:
    """``data`` as a typed event (an event is returned as is); None when its kind is unknown or
    a field is missing."""
    if isinstance(data, ProgressEvent):
        return data
    cls = EVENT_TYPES.get(data.get("event"))  # type: ignore[arg-type]
    if cls is None:
        return None
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is not dataclasses.MISSING:  # a field added later, with a default
                continue
            return None
        value = data[f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


ProgressCallback = Callable[[ProgressEvent], None]


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

    def __call__(self, event: Mapping[str, Any]) -> None:
        text = event.to_json() if isinstance(event, ProgressEvent) else _dumps(event)
        self.stream.write(text + "\n")
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

    def call(event: Any) -> None:
        for callback in active:
            callback(event)

    return call


def probe_line(event: ProbeDone) -> str:
    """A finished capacity probe in words: "probe 3 (rate): 12.4 req/s, 93% within target,
    passed"."""
    attainment = event.attainment
    share = "no request counted" if attainment is None else f"{attainment:.0%} within target"
    verdict = "passed" if event.passed else "missed"
    early = " (stopped early: already over the limit)" if event.stopped_early else ""
    return (f"probe {event.step} ({event.probe_kind}): {float(event.rate_rps or 0):.3g} req/s, "
            f"{share}, {verdict}{early}")


class ConsoleProgress:
    """A text progress bar: ``[#######-------]  45%  batch size 4 (2/3)  run 3/5  0 errors``.

    Errors are the measured requests' (what the Requests table counts); failures of warm-up
    rounds, which are not measured, are shown apart: ``0 errors  2 warm-up errors (not
    measured)``."""

    def __init__(self, stream: IO[str] | None = None, *, width: int = 28,
                 tty: bool | None = None, line_every_s: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.planned: int | None = None
        self.done = 0
        self.errors = 0
        self.warmup_errors = 0
        self.step_label = ""
        self.mode = "rounds"
        self.detail = ""
        self._step_base = 0
        self._errors_base = 0
        self._drawn = False
        self.line_every_s = line_every_s  # without a terminal: progress lines at most this often
        self._last_line = time.perf_counter()

    def __call__(self, event: Mapping[str, Any]) -> None:
        typed = as_event(event)
        if isinstance(typed, Start):
            self.planned = typed.planned_requests
            self.mode = typed.mode
            simulated = "  (SIMULATED server)" if typed.simulated else ""
            steps = {"concurrency": "users", "rate": "rates (requests/s)"}.get(self.mode,
                                                                             "batch sizes")
            what = (f"{steps} {', '.join(map(str, typed.steps))}" if typed.steps
                    else "capacity search")
            self._line(f"Benchmark {typed.run_id}: {what}{simulated}")
        elif isinstance(typed, StepStart):
            if typed.of is None:     # capacity mode: probes, their number not known ahead
                self.step_label = f"probe {typed.index}"
            else:
                step = {"concurrency": f"{typed.step} users",
                        "rate": f"{typed.step} requests/s"}.get(self.mode,
                                                                f"batch size {typed.step}")
                self.step_label = f"{step} ({typed.index}/{typed.of})"
            self.detail = ""
            self._step_base = self.done
            self._errors_base = self.errors
            self._draw()
        elif isinstance(typed, RoundDone):
            self.done += int(typed.step)
            if typed.warmup:
                self.warmup_errors += int(typed.errors or 0)
            else:
                self.errors += int(typed.errors or 0)
            phase = "warm-up" if typed.warmup else "run"
            self.detail = f"{phase} {typed.run}/{typed.runs}"
            self._draw()
        elif isinstance(typed, RequestsDone):
            self.done = self._step_base + int(typed.done)
            self.errors = self._errors_base + int(typed.errors or 0)
            self.detail = (f"{typed.done}/{typed.total} requests" if typed.total
                           else f"{typed.elapsed_s or 0:.0f} s")
            self._draw()
        elif isinstance(typed, StepDone):
            self._draw(final=True)
        elif isinstance(typed, ProbeDone):
            self._line(probe_line(typed))
        elif isinstance(typed, RunWarning):
            self._line(f"warning: {typed.message}")
        elif isinstance(typed, Done):
            self._line(f"Run {typed.status}" + (f": {typed.message}" if typed.message else ""))

    def render(self) -> str:
        """The bar as one line of text."""
        if self.planned:
            fraction = min(1.0, self.done / self.planned)
            filled = int(round(fraction * self.width))
            bar = f"[{'#' * filled}{'-' * (self.width - filled)}] {fraction * 100:3.0f}%"
        else:
            bar = f"{self.done} requests"
        errors = f"{self.errors} error{'s' if self.errors != 1 else ''}"
        warmups = (f"{self.warmup_errors} warm-up error{'s' if self.warmup_errors != 1 else ''} "
                   f"(not measured)" if self.warmup_errors else "")
        parts = [bar, self.step_label, self.detail, errors, warmups]
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
