"""Shared fixtures: a tiny tokenizer built here (no network) and the simulator. Small helpers the
test modules import (free ports, waiting for a condition or a process, reading a CSV) are in
``support/helpers.py``; the tests are grouped by floor: ``unit/`` (pure, fast), ``integration/``
(processes, servers, the app through gradio_client; marked ``slow``) and ``e2e/`` (a real
browser; marked ``slow``). ``pytest -m "not slow"`` runs the fast part.

Nothing in the tests reaches the network: the tokenizer is trained in the session on a few KB of
made-up text with the `tokenizers` library (``benchmark.core.prompts.build_tiny_tokenizer``, which
``calibrate`` uses too) and saved in a folder that ``AutoTokenizer`` loads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from benchmark.core.prompts import build_tiny_tokenizer  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Each test is marked with its floor (``unit``, ``integration``, ``e2e``); the last two
    are ``slow`` as well."""
    for item in items:
        floor = Path(str(item.fspath)).resolve().relative_to(ROOT / "tests").parts[0]
        if floor in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, floor))
        if floor in ("integration", "e2e"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> str:
    """Path of a folder holding a tiny tokenizer that ``AutoTokenizer.from_pretrained`` loads."""
    return str(build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tiny-tokenizer"))


# ---------------------------------------------------------------------------------------------
# The simulated TGI server as a subprocess (added by the simulator's owner)


def _simulator_flags(flags: dict) -> list[str]:
    """``{"max_batch_size": 8, "zero_cost": True}`` -> ``["--max-batch-size", "8", "--zero-cost"]``."""
    argv: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


@pytest.fixture
def simulator_process():
    """Factory: ``url = simulator_process(max_batch_size=8, trace=path)`` starts
    ``python -m benchmark.simulator --port 0 ...`` (keyword names are flag names with ``_``),
    waits for its ``Simulated TGI listening on`` line and returns the URL. The processes are
    stopped (SIGTERM, then kill) when the test ends. ``simulator_process.procs`` lists them
    (each with ``log_lines``, its output so far)."""
    from benchmark.simulator.process import SimulatorProcess

    sims: list[SimulatorProcess] = []
    procs: list = []

    def start(timeout_s: float = 30.0, **flags) -> str:
        sim = SimulatorProcess(_simulator_flags(flags))
        sims.append(sim)
        try:
            url = sim.start(timeout_s)
        except Exception as err:
            raise RuntimeError("simulator did not start:\n" + "\n".join(sim.lines[-20:])) from err
        sim.proc.log_lines = sim.lines  # type: ignore[union-attr]
        procs.append(sim.proc)
        return url

    start.procs = procs  # type: ignore[attr-defined]
    yield start
    for sim in sims:
        sim.stop()
