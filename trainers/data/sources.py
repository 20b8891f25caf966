"""Where the corpus comes from: the standard library, installed packages, or directories.

A source is named by one string:

- `stdlib`: the Python standard library (`sysconfig.get_paths()["stdlib"]`);
- a directory (anything containing a path separator, or `.`): a user's own code, named after
  the directory;
- anything else: an installed package, found with `importlib.util.find_spec` (nothing is imported
  for a top-level name).

Walking skips hidden directories and directories named like tests, caches, or the standard
library's own tools (`SKIP_DIRS`), and test files (`test_*.py`, `*_test.py`, `conftest.py`).
Files and directories are visited in sorted order, so a walk is the same on every run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from trainers.errors import InterpError, did_you_mean

STDLIB = "stdlib"

# Dependencies of this project (direct or through torch, transformers, scipy, captum, typer,
# bertviz), so a fresh install has them all. Chosen to give well over 30,000 pairs after the
# filters in about two minutes on two cores; plotly is left out because after the duplicate
# filters its generated property code gives next to nothing.
DEFAULT_SOURCES = (
    STDLIB,
    "numpy",
    "scipy",
    "sympy",
    "networkx",
    "torch",
    "transformers",
    "huggingface_hub",
    "accelerate",
    "peft",
    "captum",
    "matplotlib",
    "jinja2",
    "click",
    "rich",
    "typer",
    "tqdm",
)

SKIP_DIRS = frozenset({
    "__pycache__", "site-packages", "dist-packages", "test", "tests", "testing", "idlelib", "lib2to3",
    "turtledemo", "ensurepip", "lib-dynload",
})


@dataclass(frozen=True)
class Source:
    """One place to mine: `name` becomes the `repo` field, `paths` are relative to `base`."""

    name: str
    kind: str  # "stdlib", "package" or "directory"
    roots: tuple[Path, ...]  # directories to walk, or single module files
    base: Path
    version: str | None

    def files(self) -> list[Path]:
        found: list[Path] = []
        for root in self.roots:
            if root.is_file():
                found.append(root)
                continue
            for folder, subfolders, names in os.walk(root):
                subfolders[:] = sorted(d for d in subfolders if d not in SKIP_DIRS and not d.startswith("."))
                found.extend(Path(folder, n) for n in sorted(names) if _is_source_file(n))
        return sorted(set(found), key=lambda f: self.relative(f))

    def relative(self, file: Path) -> str:
        return file.relative_to(self.base).as_posix()

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "version": self.version, "root": str(self.base)}


def _is_source_file(name: str) -> bool:
    if not name.endswith(".py") or name == "conftest.py":
        return False
    return not (name.startswith("test_") or name.endswith("_test.py"))


def resolve_sources(names: list[str] | tuple[str, ...] | None) -> list[Source]:
    """The sources for `names`, checked before anything is mined.

    With `names=None` the sources are `DEFAULT_SOURCES`, less any package that is not installed
    (the build records which); a name the caller gave must resolve.
    """
    if names is None:
        names = [name for name in DEFAULT_SOURCES if name == STDLIB or importlib.util.find_spec(name) is not None]
    names = list(names)
    if not names:
        raise InterpError("no sources given; name a package, a directory, or 'stdlib'")
    sources = [resolve_source(name) for name in names]
    seen: dict[str, str] = {}
    for name, source in zip(names, sources):
        if source.name in seen:
            raise InterpError(f"sources {seen[source.name]!r} and {name!r} are both named {source.name!r}; "
                              "each source becomes a `repo` and must be named differently")
        seen[source.name] = name
    return sources


def resolve_source(name: str) -> Source:
    if name == STDLIB:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return Source(STDLIB, "stdlib", (stdlib,), stdlib, platform.python_version())
    if os.sep in name or "/" in name or name in {".", ".."}:
        return _directory(Path(name))
    return _package(name)


def _directory(path: Path) -> Source:
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise InterpError(f"source directory {str(path)!r} does not exist")
    return Source(path.name or "root", "directory", (path,), path, None)


def _package(name: str) -> Source:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        hint = f"; for a directory of that name write ./{name}" if Path(name).is_dir() else ""
        error = did_you_mean("source", name, [STDLIB, *_installed_packages()])
        raise InterpError(f"{error}{hint}")
    if spec.submodule_search_locations:
        roots = tuple(sorted(Path(p) for p in spec.submodule_search_locations))
        base = Path(os.path.commonpath([root.parent for root in roots]))
    elif spec.origin and spec.origin.endswith(".py"):
        roots = (Path(spec.origin),)
        base = roots[0].parent
    else:
        raise InterpError(f"source {name!r} has no Python source files (it is built in or compiled)")
    return Source(name, "package", roots, base, _version(name.split(".")[0]))


def _installed_packages() -> list[str]:
    return sorted(n for n in importlib.metadata.packages_distributions() if n.isidentifier() and not n.startswith("_"))


def _version(top_level: str) -> str | None:
    for dist in sorted(importlib.metadata.packages_distributions().get(top_level, [])):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
