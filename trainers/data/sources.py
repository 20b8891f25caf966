"""Where the corpus comes from: the standard library, installed packages, or directories.

A source is named by one string:

- `stdlib`: the Python standard library (`sysconfig.get_paths()["stdlib"]`);
- a directory (anything containing a path separator, or `.`): a user's own code, named after
  the directory;
- anything else: an installed package or module, dotted names too (`email.mime`), found
  without importing anything (`find_spec`).

Walking skips hidden directories and directories named like tests, caches, or the standard
library's own tools (`SKIP_DIRS`), and test files (`test_*.py`, `*_test.py`, `conftest.py`).
Files and directories are visited in sorted order, so a walk is the same on every run.

A walk stays inside its tree and reads only regular files; what it leaves out is counted by
reason (`Walk.skipped`, then the build's manifest): `not_a_regular_file` (a FIFO or device
named `x.py`, or a link to one), `symlink_leaves_source` (a link to a file outside the tree,
such as `/dev/zero` or another user's code), `symlinked_directory` (never followed),
`over_size_cap` (more than `extract.MAX_FILE_BYTES`), `unreadable_directory`, `name_not_utf8`
(a path that the output's `path` and `url` fields could not hold).
Finding a package never imports it, nor its parent packages for a dotted name.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import platform
import stat
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from trainers.data.extract import MAX_FILE_BYTES
from records.errors import InterpError, did_you_mean

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
        return self.walk().files

    def walk(self) -> Walk:
        """The source files, sorted by path, and what was left out and why."""
        found: list[Path] = []
        skipped: Counter[str] = Counter()
        for root in self.roots:
            if not root.is_dir():
                found.append(root)  # a single-module package: `mine_file` reads it only if it is a regular file
                continue
            inside = root.resolve()
            for folder, subfolders, names in os.walk(root, onerror=lambda _: skipped.update(["unreadable_directory"])):
                wanted = sorted(d for d in subfolders if d not in SKIP_DIRS and not d.startswith("."))
                links = [d for d in wanted if os.path.islink(os.path.join(folder, d))]
                skipped["symlinked_directory"] += len(links)
                subfolders[:] = [d for d in wanted if d not in links]
                for name in sorted(names):
                    if _is_source_file(name):
                        file = Path(folder, name)
                        reason = _skip_reason(file, inside)
                        if reason is None:
                            found.append(file)
                        else:
                            skipped[reason] += 1
        return Walk(sorted(set(found), key=lambda f: self.relative(f)), skipped)

    def relative(self, file: Path) -> str:
        return file.relative_to(self.base).as_posix()

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "version": self.version, "root": str(self.base)}


@dataclass(frozen=True)
class Walk:
    files: list[Path]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files


def _skip_reason(file: Path, inside: Path) -> str | None:
    """Why `file` (found under the resolved tree `inside`) is not mined, or None to mine it."""
    try:
        str(file).encode("utf-8")
    except UnicodeEncodeError:
        return "name_not_utf8"  # it could not be written as the pair's `path` and `url`
    try:
        info = file.lstat()
        if stat.S_ISLNK(info.st_mode):
            target = Path(os.path.realpath(file))
            if not target.is_relative_to(inside):
                return "symlink_leaves_source"
            info = target.stat()
    except OSError:
        return "not_a_regular_file"  # a dangling or looping link
    if not stat.S_ISREG(info.st_mode):
        return "not_a_regular_file"
    return "over_size_cap" if info.st_size > MAX_FILE_BYTES else None


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
    if not name.strip() or "\0" in name:
        raise InterpError(f"source {name!r}: give a package name, a directory, or 'stdlib'")
    if name == STDLIB:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return Source(STDLIB, "stdlib", (stdlib,), stdlib, platform.python_version())
    if os.sep in name or "/" in name or name in {".", ".."}:
        return _directory(name)
    return _package(name)


def _directory(given: str) -> Source:
    try:
        path = Path(given).expanduser().resolve()
        is_dir, exists = path.is_dir(), path.exists()
    except (OSError, RuntimeError) as exc:  # a name too long, a symlink loop
        raise InterpError(f"source directory {given!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if not is_dir:
        what = "is not a directory; give the directory that holds it" if exists else "does not exist"
        raise InterpError(f"source directory {given!r} {what}")
    return Source(path.name or "root", "directory", (path,), path, None)


def find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where the module `name` is, found without importing it or its parent packages
    (`importlib.util.find_spec` imports `a` to find `a.b`, running its code)."""
    spec, search = None, None
    for part in name.split("."):
        if not part.isidentifier() or (spec is not None and search is None):
            return None
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, search) if search is not None else importlib.util.find_spec(part)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations) if spec.submodule_search_locations else None
    return spec


def _package(name: str) -> Source:
    spec = find_spec(name)
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
