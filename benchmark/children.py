"""How our own child processes start: ``python -m benchmark...`` with this copy of the package
on the path (the simulated server, the log relay, the engine run by the app).

A leaf: the simulator, the server manager and the app all start children this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def with_package_path(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``env`` whose PYTHONPATH starts with ``PACKAGE_ROOT`` (the folder holding
    ``benchmark``), so that a ``python -m benchmark...`` child imports this copy."""
    path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path}
