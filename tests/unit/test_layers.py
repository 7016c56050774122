"""The package's floors, held by a test: every import of every module (those inside functions
too) is read with ``ast`` and checked against the rules the README states.

    leaves        errors, config, _version, children: import nothing of ours but errors
    core          leaves only; no gradio, plotly or argparse
    report        leaves and core; no gradio
    server        leaves and core
    calibration   leaves, core and the simulator it drives
    cli           anything but app
    app           anything but cli; the only floor that imports gradio
    simulator     leaves only
    everywhere    no import cycles; an import inside a function only for a heavy third-party
                  package (``LAZY_OK``), never one of ours; no private name (``_x``) imported
                  from another module of ours
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "benchmark"

LEAVES = {"errors", "config", "_version", "children"}
FLOORS = {
    "core": LEAVES | {"core"},
    "report": LEAVES | {"core", "report"},
    "server": LEAVES | {"core", "server"},
    "calibration": LEAVES | {"core", "simulator", "calibration"},
    "cli": LEAVES | {"core", "report", "server", "calibration", "simulator", "cli"},
    "app": LEAVES | {"core", "report", "server", "calibration", "simulator", "app"},
    "simulator": LEAVES | {"simulator"},
}
THIRD_PARTY_BANNED = {
    "core": {"gradio", "plotly", "argparse"},
    "report": {"gradio"},
    "server": {"gradio", "plotly"},
    "calibration": {"gradio", "plotly"},
    "cli": {"gradio"},
    "simulator": {"gradio", "plotly"},
}
# Packages slow to import that only some paths need: importing them inside a function is fine.
LAZY_OK = {"transformers", "tokenizers", "huggingface_hub", "gradio", "plotly", "prometheus_client",
           "psutil", "uvloop",  # optional: used when installed
           "pynvml", "ray", "pandas", "yaml"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                for sub in ast.walk(child):
                    if hasattr(sub, "lineno"):
                        lines.add(sub.lineno)
    return lines


def imports_of(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every runtime import of ``path``;
    names imported from a package that are modules count as those modules."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found: list[tuple[str, int, bool]] = []
    private: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import) and child.lineno not in skip:
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.lineno not in skip:
                private.extend((alias.name, child.lineno) for alias in child.names
                               if alias.name.startswith("_") and not alias.name.startswith("__")
                               and (child.level or (child.module or "").split(".")[0] == root.name))
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    is_module = (root.parent / sub.replace(".", "/")).with_suffix(".py").exists() \
                        or (root.parent / sub.replace(".", "/") / "__init__.py").exists()
                    found.append((sub if is_module else target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    found.extend((f"{PRIVATE}{name}", line, False) for name, line in private)
    return found


PRIVATE = "private name "


def floor_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1]


def violations(root: Path) -> list[str]:
    """Every broken rule under the package folder ``root``, one sentence each."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    top = root.name
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        floor = floor_of(name)
        graph.setdefault(name, set())
        for target, line, in_function in imports_of(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if target.startswith(PRIVATE):
                problems.append(f"{where}: imports the {target} of another module")
                continue
            ours = target == top or target.startswith(top + ".")
            if in_function and (ours or target.split(".")[0] not in LAZY_OK):
                problems.append(f"{where}: imports {target} inside a function")
            if not ours:
                if floor in THIRD_PARTY_BANNED and target.split(".")[0] in THIRD_PARTY_BANNED[floor]:
                    problems.append(f"{where}: {floor} imports {target}")
                if target.split(".")[0] == "gradio" and floor != "app":
                    problems.append(f"{where}: only app imports gradio ({name} does)")
                continue
            if target != top:
                graph[name].add(target)
            target_floor = floor_of(target)
            if target == top:
                if floor is not None:
                    problems.append(f"{where}: {name} imports the package's __init__")
                continue
            if floor in LEAVES:
                if target_floor != "errors":
                    problems.append(f"{where}: leaf {name} imports {target}")
            elif floor in FLOORS and target_floor not in FLOORS[floor]:
                problems.append(f"{where}: {floor} imports {target}")
    problems.extend(f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), as a readable path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group) + [sorted(group)[0]])

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return groups


def test_the_package_keeps_its_floors():
    assert violations(PACKAGE) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "benchmark"
    for rel, text in {"__init__.py": "", "errors.py": "", "config.py": "from .errors import X\n",
                      "core/__init__.py": "", "core/engine.py": "from ..config import A\n",
                      "app/__init__.py": "", "app/page.py": "import gradio\nfrom ..core import engine\n",
                      "simulator/__init__.py": "", "simulator/server.py": "from ..errors import E\n",
                      **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_clean_tree_passes_the_checker(tmp_path):
    assert violations(_tree(tmp_path, {})) == []


@pytest.mark.parametrize("files, expected", [
    ({"core/engine.py": "from ..app import page\n"}, "core imports benchmark.app.page"),
    ({"core/engine.py": "import gradio\n"}, "only app imports gradio"),
    ({"core/engine.py": "import argparse\n"}, "core imports argparse"),
    ({"simulator/server.py": "from ..core import engine\n"}, "simulator imports benchmark.core"),
    ({"config.py": "from .core import engine\n"}, "leaf benchmark.config imports"),
    ({"core/engine.py": "def f():\n    from ..config import A\n"}, "inside a function"),
    ({"core/engine.py": "def f():\n    import json\n"}, "imports json inside a function"),
    ({"core/engine.py": "from ..config import _secret\n"}, "imports the private name _secret"),
    ({"core/a.py": "from . import b\n", "core/b.py": "from . import a\n"},
     "import cycle: benchmark.core.a -> benchmark.core.b -> benchmark.core.a"),
])
def test_the_checker_names_each_broken_rule(tmp_path, files, expected):
    found = violations(_tree(tmp_path, files))
    assert any(expected in problem for problem in found), found


def test_type_only_imports_and_lazy_heavy_packages_are_allowed(tmp_path):
    root = _tree(tmp_path, {
        "core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import b\n",
        "core/b.py": "from . import a\n\ndef load():\n    import transformers\n",
    })
    assert violations(root) == []


def test_the_public_surface_is_what_the_readme_teaches():
    import benchmark

    assert sorted(benchmark.__all__) == sorted([
        "__version__", "RunConfig", "SamplingParams", "ServerSettings", "BenchmarkError",
        "ConfigError", "RequestRecord", "RunResult", "list_runs", "run"])
    assert all(hasattr(benchmark, name) for name in benchmark.__all__)
