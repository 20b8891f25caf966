"""What a place on disk is, as the project's commands see it. Plain Python (no torch), so the
data build's output check (`trainers.data.outdir`) and the report's (`reports.target`) decide alike.

    NOT_RUNS            names under a runs directory that are never runs: base (the base encoder's
                        name on the command line), analyses (results), data, report, study
    manifest_kind(m)    RUN, DATA or None: what the manifest.json at `m` says its folder is
    described(kind)     that, in words for a message ("a run (its manifest.json names a method)")
    is_run(folder)      a folder whose manifest.json names a method
    is_report(folder)   a site `interp report` wrote: its index page and its assets folder
    read_json(file)     the JSON in a file, None where it is not readable JSON
    some(names)         the first few names of a folder's entries, for a message
"""

from __future__ import annotations

import json
from pathlib import Path

NOT_RUNS = frozenset({"analyses", "base", "data", "report", "study"})
MANIFEST = "manifest.json"
DATA_FORMAT = "codexglue-advtest-jsonl"  # the `format` a data build's manifest names
RUN, DATA = "run", "data"
_SHOWN = 3  # entries named in a message
_LARGEST = 16 * 1024 * 1024  # bytes of JSON read to decide; a larger file is no manifest the project wrote
_WORDS = {RUN: f"a run (its {MANIFEST} names a method)", DATA: f"a data directory (its {MANIFEST} is a data build's)"}


def read_json(path: Path) -> object:
    """The JSON in `path`, or None where it is not readable JSON (missing, too large, damaged, nested too deeply)."""
    try:
        if not path.is_file() or path.stat().st_size > _LARGEST:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def manifest_kind(manifest: Path) -> str | None:
    """RUN when the manifest names a method, DATA when it is a data build's; None for any other file (or none)."""
    data = read_json(manifest)
    if not isinstance(data, dict):
        return None
    if "method" in data:
        return RUN
    if data.get("format") == DATA_FORMAT:
        return DATA
    return None


def described(kind: str) -> str:
    return _WORDS[kind]


def is_run(path: Path) -> bool:
    return path.is_dir() and manifest_kind(path / MANIFEST) == RUN


def is_report(path: Path) -> bool:
    return (path / "index.html").is_file() and (path / "assets").is_dir()


def some(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
