"""TGI Benchmark: TGI's benchmark over HTTP, with numbers you can trust.

Use it from Python like the CLI does:

    from benchmark import RunConfig, run
    result = run(RunConfig(tokenizer_name="gpt2", url="http://localhost:3000", batch_sizes=(1, 4)))
    result.save("results/my-run")

The package is built in floors; a module imports only from its own floor or the ones below
(``tests/unit/test_layers.py`` holds the rules):

    errors.py config.py _version.py children.py   leaves
    core/         records, prompts, clients/, patterns, probe, engine, stats, results, progress
    report/       tables and charts of a result (no gradio)
    server/       the text-generation-launcher process manager
    calibration/  how accurately this machine measures (drives the simulator)
    cli/          ``python -m benchmark``: run, launch, calibrate
    app/          the Gradio app (the only gradio importer)
    simulator/    the simulated TGI server (imports only the leaves)
"""

from ._version import __version__
from .config import RunConfig, SamplingParams, ServerSettings
from .core.engine import run
from .core.records import RequestRecord
from .core.results import RunResult, list_runs
from .errors import BenchmarkError, ConfigError

__all__ = [
    "__version__",
    "RunConfig",
    "SamplingParams",
    "ServerSettings",
    "BenchmarkError",
    "ConfigError",
    "RequestRecord",
    "RunResult",
    "list_runs",
    "run",
]
