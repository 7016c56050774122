"""How accurately this machine measures, and up to where (``python -m benchmark calibrate``).

    analysis.py   pure: the engine's records + the simulator's trace -> errors, rows, a verdict
    measure.py    the simulated server as a child process, the engine run at each level

Reading the latest calibration for a run's note is ``benchmark.core.calibration_note`` (the
engine needs it, and the core does not import this floor).
"""

from ..core.calibration_note import (CALIBRATION_FILE, latest_path, load_latest, run_calibration,
                                     verdict_for)
from .analysis import (DEFAULT_LEVELS, NOTE, QUICK_LEVELS, CalibrationSettings, Row, Verdict,
                       decide, is_accurate, markdown_table, match_errors, stop_reason,
                       summarize_level)
from .measure import Calibration, SimulatedServer, calibrate, cpu_seconds, measure_level

__all__ = ["CALIBRATION_FILE", "DEFAULT_LEVELS", "NOTE", "QUICK_LEVELS", "Calibration",
           "CalibrationSettings", "Row", "SimulatedServer", "Verdict", "calibrate",
           "cpu_seconds", "decide", "is_accurate", "latest_path", "load_latest",
           "markdown_table", "match_errors", "measure_level", "run_calibration", "stop_reason",
           "summarize_level", "verdict_for"]
