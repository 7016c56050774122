"""The README cannot drift from the code: its commands, flags and variables are checked here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_lines(markdown: str) -> list[str]:
    lines, fence = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif fence:
            lines.append(line.strip())
    return lines


def setup_commands() -> list[str]:
    """The commands a newcomer runs on a fresh machine: the ones that create the venv."""
    return [line for line in code_lines(README) if line.startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2, commands
    app, tests = commands
    assert "-r requirements.txt" in app and app.endswith("app.py")
    assert "-r tests/requirements.txt" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = setup_commands()[1]
    ci_commands = [line.strip() for line in ci.splitlines()
                   if line.strip() and not line.strip().startswith("#")]
    assert test_command in ci_commands
    # Nothing else runs tests: the only other lines install the browser.
    others = [line for line in ci_commands if "pytest" in line and line != test_command]
    assert others == []


def test_pinned_requirements_cover_what_the_app_imports():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    for package in ("gradio", "huggingface-hub", "httpx", "aiohttp", "transformers", "plotly",
                    "pandas"):
        assert package in pins, f"{package} is imported by the app but not pinned"


def help_flags(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-m", *args, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", out)) - {"--help"}


@pytest.mark.parametrize("command", [("benchmark",), ("benchmark", "calibrate"),
                                     ("benchmark", "import"), ("benchmark", "report"),
                                     ("benchmark.simulator",)])
def test_every_flag_is_documented(command):
    flags = help_flags(*command)
    assert flags, "no flags parsed from --help"
    missing = sorted(flag for flag in flags if f"`{flag}" not in README and f"{flag} " not in README)
    assert missing == [], f"flags of python -m {' '.join(command)} missing from README: {missing}"


def environment_variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(r"""(?:environ|env)(?:\.get\(|\[|\.pop\()\s*["']([A-Z][A-Z0-9_]+)["']""")
    for path in [ROOT / "app.py", *sorted((ROOT / "benchmark").rglob("*.py"))]:
        names |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return names - {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "HOME"}


def test_every_environment_variable_the_app_reads_is_documented():
    names = environment_variables_read_by_the_code()
    assert {"RESULTS_DIR", "HF_TOKEN", "RESULTS_REPO"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in README)
    assert missing == [], f"environment variables missing from README: {missing}"


def test_readme_screenshots_exist():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert images, "the README shows no screenshots"
    for image in images:
        assert (ROOT / image).is_file(), image
