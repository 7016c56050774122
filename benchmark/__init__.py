"""TGI Benchmark: TGI's benchmark over HTTP, with numbers you can trust.

Use it from Python like the CLI does:

    from benchmark import RunConfig, run
    result = run(RunConfig(tokenizer_name="gpt2", url="http://localhost:3000", batch_sizes=(1, 4)))
    result.save("results/my-run")

Where things live (one room a file):

    config.py      every setting, default and check (RunConfig, ServerSettings)
    errors.py      the error tree (BenchmarkError and children)
    prompts.py     exact-length prompts built with the tokenizer
    records.py     RequestRecord: one request's raw stamps and what the server reported
    clients/       one HTTP client per API (tgi, openai), the shared streaming core in base.py
    load.py        load patterns: rounds (TGI's tool) and sustained concurrency
    engine.py      run(config, on_progress, cancel) -> RunResult
    stats.py       statistics (pure functions over records)
    results.py     RunResult, its files (run.json, summary.csv, requests.csv), run ids
    tables.py      the three markdown tables of TGI's tool
    progress.py    the machine-readable progress stream (JSON lines)
    charts.py      Plotly figures from results (no gradio)
    launcher.py    the text-generation-launcher process manager (ServerManager)
    launcher_logs.py     its log read into start-up phases and plain-words failure reasons
    launcher_process.py  the processes: output reader, group stop, kept servers, exit hooks
    launcher_cli.py      `python -m benchmark --launch`
    simulator/     the simulated TGI server
    calibrate.py   `python -m benchmark calibrate`: the client's own measurement error
    access.py      who may run what on a Space
    hub.py         durable results in a Hub dataset
    ui.py          the Gradio app factory (create_app, launch_options)
    ui_form.py     the app's form as data: typed text -> validated run plan
    ui_render.py   what the page shows: results, progress, history (no gradio)
    runner.py      the app's run queue: one run at a time, TGI + the CLI as a child process
    cli.py         `python -m benchmark`
"""

__version__ = "0.1.0"

from .config import RunConfig, SamplingParams, ServerSettings  # noqa: E402
from .errors import BenchmarkError, ConfigError  # noqa: E402
from .records import RequestRecord  # noqa: E402

__all__ = [
    "__version__",
    "RunConfig",
    "SamplingParams",
    "ServerSettings",
    "BenchmarkError",
    "ConfigError",
    "RequestRecord",
    "run",
]


def __getattr__(name: str):
    """``benchmark.run`` is the engine's entry point, imported on first use (it pulls in
    aiohttp, httpx and transformers, which ``python -m benchmark.simulator`` does not need)."""
    if name == "run":
        from .engine import run

        return run
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
