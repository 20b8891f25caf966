"""The import graph of trainers/, interp/ and reports/ has no cycle, and importing trainers registers nothing.

The graph is read statically (ast): every `import` and `from ... import` anywhere in a module,
at its top or inside a function, is an edge to the project module it names (`from pkg import
name` goes to `pkg.name` when that is a module). Imports under `if TYPE_CHECKING:` count too:
a type a module needs lives where both sides can import it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("records", "trainers", "interp", "reports")


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `name` (at `path`) imports anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
], ids=["chain", "two-cycle", "three-cycle"])
def test_cycles_finds_what_a_hand_drawn_graph_has(graph, expected):
    assert cycles(graph) == expected


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path):
    modules = {"pkg": tmp_path / "pkg" / "__init__.py", "pkg.a": tmp_path / "pkg" / "a.py", "pkg.b": tmp_path / "pkg" / "b.py"}
    modules["pkg.a"].parent.mkdir()
    modules["pkg"].write_text("from . import a\n")
    modules["pkg.a"].write_text("def f():\n    from pkg.b import g\n")
    modules["pkg.b"].write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_the_project():
    modules = project_modules()
    assert "trainers.methods.registry" in modules and "interp.analyses.anatomy" in modules
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == []


# data flows one way: records <- trainers <- interp, and reports reads records only (it renders from JSON alone)
MAY_IMPORT = {"records": {"records"}, "reports": {"records", "reports"}, "trainers": {"records", "trainers"}}
# the one edge left: a manifest's method section is read through the method configs, which normalise older
# spellings (records.manifest.Manifest.trained_method, imported when called; torch-free, checked by test_report)
KNOWN_CROSSINGS = {"records.manifest -> trainers.methods.registry"}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_packages_below_it(package):
    modules = project_modules()
    crossing = sorted(f"{name} -> {target}" for name, path in modules.items() if name.split(".")[0] == package
                      for target in imports_of(name, path, modules) if target.split(".")[0] not in MAY_IMPORT[package])
    assert sorted(set(crossing) - KNOWN_CROSSINGS) == []


def test_importing_trainers_registers_nothing_with_peft():
    """A fresh interpreter: importing trainers (errors, configs, presets) leaves peft's registry as
    peft made it; `register()` then adds the project's methods, and a second call changes nothing."""
    script = """
import sys
import records.errors, trainers, trainers.methods
assert "peft" not in sys.modules, "importing trainers imported peft"
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.utils.peft_types import PeftType
before = (set(PEFT_TYPE_TO_CONFIG_MAPPING), set(PeftType.__members__))
assert not {"BOTTLENECK", "KV_PREFIX", "UNION"} & before[1], before[1]
trainers.methods.register()
after = (set(PEFT_TYPE_TO_CONFIG_MAPPING), set(PeftType.__members__))
trainers.methods.register()
assert (set(PEFT_TYPE_TO_CONFIG_MAPPING), set(PeftType.__members__)) == after
print(sorted(after[1] - before[1]), sorted(t.value for t in after[0] - before[0]))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['BOTTLENECK',", "'KV_PREFIX',", "'UNION']", "['BOTTLENECK',", "'KV_PREFIX',", "'UNION']"]
