"""``python -m benchmark import FILE [FILE...]`` and ``python -m benchmark report RUN_DIR``.

    python -m benchmark import benchmarks.json                 # a GuideLLM report -> results/<id>
    python -m benchmark import profile_export_aiperf.json profile_export.jsonl --output-dir runs
    python -m benchmark report results/<id>                    # -> results/<id>/report.html

``import`` reads other tools' result files (``core.importers``: recognised by content) and
saves each as a run of ours; every file is checked before anything is written, and a bad one
is refused with its name and what was wrong (exit status 2). ``report`` writes one
self-contained HTML page (``report.html``) for people who attach a file rather than a link.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..core.importers import import_files
from ..core.results import RunResult, results_root
from ..errors import BenchmarkError, redact
from ..report.html import REPORT_FILE, write_html_report
from ..report.tables import NOT_IN_SOURCE
from .exits import EXIT_OK, EXIT_USAGE

__all__ = ["import_main", "report_main", "import_parser", "report_parser"]


def import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark import",
        description="Open other tools' result files as runs of TGI Benchmark: GuideLLM "
                    "benchmarks.json/.yaml, vLLM bench serve --save-result JSON, AIPerf "
                    "profile_export_aiperf.json (+ profile_export.jsonl), inference-benchmarker "
                    "results JSON, llmperf _summary.json (+ _individual_responses.json).")
    parser.add_argument("files", nargs="+", metavar="FILE", help="result files to import")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="folder holding the runs (default: $RESULTS_DIR, else results)")
    return parser


def import_main(argv: Sequence[str]) -> int:
    parser = import_parser()
    args = parser.parse_args(list(argv))
    root = Path(args.output_dir) if args.output_dir else results_root()
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        parser.error(f"FILE {missing[0]!r} does not exist or is not a file; give the path of a "
                     f"result file.")
    try:
        folders = import_files(args.files, root)
    except BenchmarkError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        print("Nothing was imported.", file=sys.stderr)
        return EXIT_USAGE
    for folder in folders:
        result = RunResult.load(folder)
        source = result.source or {}
        version = source.get("tool_version")
        tool = (f"{source.get('tool')} {version}" if version != NOT_IN_SOURCE
                else f"{source.get('tool')} (version not in the source file)")
        print(f"{folder}  {tool}  {result.model}  from {source.get('file')}")
    print(f"Imported {len(folders)} run{'s' if len(folders) != 1 else ''}. Open them in the "
          f"app's Saved runs, or write a report: python -m benchmark report {folders[0]}")
    return EXIT_OK


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark report",
        description="Write one self-contained HTML file (headline, tables, interactive charts; "
                    "works offline) for a saved run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's folder (holds run.json)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help=f"where to write it (default: RUN_DIR/{REPORT_FILE})")
    return parser


def report_main(argv: Sequence[str]) -> int:
    parser = report_parser()
    args = parser.parse_args(list(argv))
    if args.output and Path(args.output).is_dir():
        parser.error(f"--output {args.output!r} is a folder; give a file name such as "
                     f"{Path(args.output) / REPORT_FILE}.")
    try:
        path = write_html_report(args.run_dir, args.output)
    except BenchmarkError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot write the report ({exc.strerror or exc}).", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return EXIT_OK
