"""What a run says about its client's accuracy: the latest ``python -m benchmark calibrate`` of
this machine (``$RESULTS_DIR/calibration.json``), read and judged for a run's concurrency.

The engine puts ``client_calibration(concurrency)`` into run.json; the app shows
``verdict_for(concurrency, load_latest())`` beside a run. Measuring a calibration is
``benchmark.calibration``'s work; this module only reads the file it leaves. Pure but for
``load_latest``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .results import finite, results_root

__all__ = ["KIND", "RUN_KIND", "CALIBRATION_FILE", "verdict_for", "run_calibration",
           "client_calibration", "latest_path", "load_latest"]

KIND = "calibration"
RUN_KIND = "calibration-summary"  # the block a run.json carries (run_calibration)
CALIBRATION_FILE = "calibration.json"


def verdict_for(concurrency: int, calibration: dict[str, Any] | None) -> str | None:
    """A warning for a run at ``concurrency`` when it is beyond what ``calibration`` (the dict
    of a calibration.json, e.g. ``load_latest()``, or the block of a run.json made by
    ``run_calibration``) measured as accurate; None when within it or when there is no
    calibration. Pure: the app shows the sentence next to the results."""
    if not isinstance(calibration, dict):
        return None
    if calibration.get("kind") == RUN_KIND:
        calibration = _from_run_block(calibration)
    verdict = calibration.get("verdict")
    if not isinstance(verdict, dict):
        return None
    accurate = verdict.get("accurate_concurrency")
    tol = (calibration.get("settings") or {}).get("tolerance_ms", 1.0)
    when = str(calibration.get("ended_at") or calibration.get("started_at") or "")[:10]
    where = f"the calibration of this machine{f' ({when})' if when else ''}"
    if accurate is None:
        return (f"Client accuracy not confirmed: {where} did not measure within {tol:g} ms at "
                f"any concurrency. Latencies may include the client's own delays.")
    if concurrency <= int(accurate):
        return None
    highest = verdict.get("highest_measured")
    if highest is not None and concurrency > int(highest) and verdict.get("stopped_because") \
            is None and int(highest) == int(accurate):
        return (f"Concurrency {concurrency} is above what {where} measured ({accurate} "
                f"streams, accurate within {tol:g} ms); run `python -m benchmark calibrate` "
                f"to check the client keeps up.")
    return (f"Concurrency {concurrency} is beyond what {where} measured as accurate "
            f"({accurate} streams within {tol:g} ms): latencies here may include the client's "
            f"own delays. Use more client processes or a bigger machine.")



def run_calibration(concurrency: int, calibration: dict[str, Any] | None
                    ) -> dict[str, Any] | None:
    """What a run's ``run.json`` says about the client's accuracy (``RunResult.calibration``):
    when and where ``calibration`` was measured, up to which concurrency and token rate it found
    the client accurate, and ``verdict_for(concurrency, calibration)`` for the run's largest
    step (None when within). None without a calibration; fields it lacks are None. Pure."""
    if not isinstance(calibration, dict) or not isinstance(calibration.get("verdict"), dict):
        return None

    def part(name: str) -> dict[str, Any]:
        value = calibration.get(name)
        return value if isinstance(value, dict) else {}

    verdict = part("verdict")
    try:
        sentence = verdict_for(concurrency, calibration)
    except (TypeError, ValueError):  # a hand-edited file with odd values: no verdict
        sentence = None
    return {
        "kind": RUN_KIND,
        "measured_at": _text(calibration.get("ended_at") or calibration.get("started_at")),
        "cpu_count": _count(part("environment").get("cpu_count")),
        "platform": _text(part("environment").get("platform")),
        "tool_version": _text(part("tool").get("version")),
        "tolerance_ms": _number(part("settings").get("tolerance_ms")),
        "accurate_concurrency": _count(verdict.get("accurate_concurrency")),
        "accurate_token_rate": _number(verdict.get("accurate_token_rate")),
        "highest_measured": _count(verdict.get("highest_measured")),
        "stopped_because": _text(verdict.get("stopped_because")),
        "concurrency": concurrency,
        "verdict": _text(sentence),
    }


def _from_run_block(block: dict[str, Any]) -> dict[str, Any]:
    """The parts of a calibration that ``verdict_for`` reads, from a run.json block."""
    return {"ended_at": block.get("measured_at"),
            "settings": {"tolerance_ms": block.get("tolerance_ms") or 1.0},
            "verdict": {"accurate_concurrency": block.get("accurate_concurrency"),
                        "highest_measured": block.get("highest_measured"),
                        "stopped_because": block.get("stopped_because")}}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return finite(float(value))




def latest_path(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the latest calibration is kept: ``$RESULTS_DIR/calibration.json``."""
    return (Path(root) if root is not None else results_root()) / CALIBRATION_FILE


def load_latest(root: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The latest calibration (a dict), or None when there is none or it cannot be read."""
    try:
        data = json.loads(latest_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    return data



def client_calibration(concurrency: int) -> dict[str, Any] | None:
    """How accurate this machine's client was found to be (``run_calibration`` of the latest
    ``python -m benchmark calibrate``), judged for ``concurrency``; None when the machine was
    never calibrated. A missing or unreadable calibration never stops a run."""
    try:
        return run_calibration(concurrency, load_latest())
    except Exception:  # noqa: BLE001 - the calibration is a note, not part of the measurement
        return None
