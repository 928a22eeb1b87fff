"""The package's shape: no import cycle, no module over 400 lines, no standard-library names,
pure cores without Ray, and methods that are plug-ins."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "selectray"
JOBS = PACKAGE.parent / "jobs"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """selectray modules a file imports anywhere in it (also inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from selectray import serve` imports the submodule selectray.serve.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def test_no_import_cycle_inside_the_package():
    mods = _modules()
    graph = {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 30  # the walk saw the whole package


def test_no_module_over_400_lines():
    long = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_module_named_like_the_standard_library():
    names = {p.stem for p in [*PACKAGE.rglob("*.py"), *JOBS.glob("*.py")]} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
    clash = sorted(names & set(sys.stdlib_module_names))
    assert not clash, clash


def test_pure_cores_import_no_ray():
    pure = ["selectray.kcenter", "selectray.kcenter.greedy", "selectray.scoring", "selectray.prompts",
            "selectray.groups", "selectray.embeddings", "selectray.checkpoint", "selectray.storage",
            "selectray.stages.validate", "selectray.stages.selection"]
    code = f"import sys; import {', '.join(pure)}; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_pipeline_never_asks_which_method_runs():
    tree = ast.parse((PACKAGE / "pipeline.py").read_text())
    names = {"random", "length", "kcenter", "selectit", "selectllm", "hybrid"}
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Match)
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                assert not (isinstance(side, ast.Attribute) and side.attr == "method"), ast.unparse(node)
                assert not (isinstance(side, ast.Constant) and side.value in names), ast.unparse(node)
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not attrs & {"selectit", "selectllm", "hybrid"}  # no method's config section either


def test_readme_method_table_is_the_registry():
    from selectray.methods import METHODS

    readme = (PACKAGE.parent / "README.md").read_text()
    missing = [name for name, m in METHODS.items() if f"| `{name}` | {m.summary} |" not in readme]
    assert not missing, f"README's method table lacks or misdescribes {missing}"
