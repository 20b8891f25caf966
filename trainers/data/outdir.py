"""Where a data build may write, checked before anything is mined.

A build writes `train.jsonl`, `valid.jsonl`, `test.jsonl` and `manifest.json` into its output
directory, replacing files of those names. So it writes only where that loses nothing the
project did not make for the purpose: a directory that does not exist yet, an empty one, or an
earlier build (its data manifest, or the marker a build leaves while it moves its files in).
Anything else is refused with a sentence that says what is there: a run, a directory of runs,
a report, analysis results, AdvTest files that no build made, or other files. So is a place
inside a run or a report: they are replaced as a whole, and the data would go with them.

    check_out(path, label)  -> raises InterpError, naming `label`, unless a build may write into `path`
    enclosing(path)         -> None, or the run or report that `path` is inside
    unusable_path(path)     -> None, or why no directory can be made at `path`
    foreign_contents(path)  -> None, or what `path` holds that a build would overwrite
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from records.errors import InterpError
from records.places import DATA, MANIFEST, RUN, described, is_report, is_run, manifest_kind, read_json, some

MOVING = ".build-moving"  # present while a build moves its files in; such a directory is the build's own


def check_out(path: str | Path, label: str) -> None:
    """Raise `InterpError` starting with `label` (the option or path the user gave) unless a build may write into
    `path`. Give the string the user typed where there is one: `Path('')` is `.`, the current directory."""
    problem = unusable_path(path) or enclosing(Path(path))
    if problem is None:
        held = foreign_contents(Path(path))
        if held is not None:
            problem = (f"holds {held}; a data build writes only into a new or empty directory or over an earlier "
                       "build, so choose another")
    if problem is not None:
        raise InterpError(f"{label}: {problem}")


def enclosing(path: Path) -> str | None:
    """None unless `path` lies inside a run or a report, which are replaced as a whole (what is put
    there would go with them); else which one, in words."""
    for folder in path.resolve().parents:
        if is_run(folder):
            return f"is inside the run {folder}, which is replaced as a whole when it is written; choose a place outside it"
        if is_report(folder):
            return f"is inside the report {folder}, which is replaced as a whole when it is rendered; choose a place outside it"
    return None


def unusable_path(path: str | Path) -> str | None:
    """None when `path` is a writable directory or one can be made there; else why not, in words."""
    if not str(path).strip():
        return "an empty path (it would mean the current directory; write '.' for that)"
    if "\0" in str(path):
        return "the path contains a NUL byte"
    path = Path(path)
    try:
        path.resolve()
        if path.is_dir():
            return _not_writable(path)
        if path.exists() or path.is_symlink():
            return "exists and is not a directory"
        ancestor = path.parent
        while not os.path.lexists(ancestor):  # a dangling link stops here: it is in the way
            ancestor = ancestor.parent
    except OSError as exc:  # a name too long
        return exc.strerror or str(exc)
    except RuntimeError:
        return "a symbolic link on the way loops"
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    return _not_writable(ancestor)


def _not_writable(folder: Path) -> str | None:
    """None if a directory can be made in `folder` (one is made and removed: `os.access` says yes to
    root where the filesystem says no, as in /proc)."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".interp-probe-"))
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror})"
    return None


def foreign_contents(path: Path) -> str | None:
    """None when a build may write into `path` (missing, empty, or an earlier build); else what is there."""
    try:
        if not path.is_dir():
            return None if not path.exists() else "a file, not a directory"
        entries = sorted(entry.name for entry in os.scandir(path))
    except OSError as exc:
        return f"a directory that cannot be read ({exc.strerror})"
    if not entries or MOVING in entries:
        return None
    if MANIFEST in entries:
        return _manifest_kind(path / MANIFEST)
    if "index.html" in entries:
        return "a report (index.html)"
    runs = [name for name in entries if is_run(path / name)]
    if runs:
        return f"runs ({some(runs)})"
    if {"train.jsonl", "valid.jsonl", "test.jsonl"} & set(entries):
        return f"AdvTest files that no build made (no {MANIFEST}: {some(entries)})"
    if any(name.endswith(".json") and _json_has(path / name, "kind") for name in entries[:50]):
        return f"analysis results ({some(entries)})"
    return f"files the project did not make as data ({some(entries)})"


def _manifest_kind(manifest: Path) -> str | None:
    """None for a data manifest; else what the manifest says the directory is."""
    kind = manifest_kind(manifest)
    if kind == DATA:
        return None
    if kind == RUN:
        return described(RUN)
    return f"a {MANIFEST} that is not a data manifest"


def _json_has(path: Path, key: str) -> bool:
    data = read_json(path)
    return isinstance(data, dict) and key in data


def disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
