"""A simulated TGI server: TGI's HTTP API, continuous batching and a timing model, no GPU.

From a shell (flags named like ``text-generation-launcher``'s):

    python -m benchmark.simulator --port 3000 --max-batch-size 32 --trace trace.jsonl

In tests:

    from benchmark.simulator import SimulatorConfig, run_in_thread
    with run_in_thread(SimulatorConfig(max_batch_size=8)) as sim:
        httpx.get(sim.url + "/info").json()["simulated"]   # True

Modules: ``config`` (settings, argv), ``model`` (timing model and scheduler), ``formats``
(SSE byte templates and bodies), ``validation`` (TGI's request checks and messages),
``tokens`` (prompt token counting, synthetic vocabulary), ``metrics`` (Prometheus text),
``server`` (aiohttp routes, ``run_in_thread``; its docstring lists the trace fields),
``process`` (the simulator as a child process: start, URL, stop),
``arrival`` (stamps each request when its first bytes are read), ``__main__`` (start-up log,
signals).
"""

from .config import DEFAULT_MODEL_ID, ROUTER_NAME, SimulatorConfig, parse_args
from .scheduler import TimingModel
from .server import Simulator, ThreadedSimulator, run_in_thread, trace_rows
from .tokens import TokenCounter

__all__ = [
    "DEFAULT_MODEL_ID",
    "ROUTER_NAME",
    "SimulatorConfig",
    "Simulator",
    "ThreadedSimulator",
    "TimingModel",
    "TokenCounter",
    "parse_args",
    "run_in_thread",
    "trace_rows",
]
