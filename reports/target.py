"""Where a report may go: checked before anything is read or rendered.

A site is swapped into OUT as a whole (reports.atomic), so whatever OUT held is replaced. It goes
only where that loses nothing the project did not make for the purpose: a path that does not exist
yet, an empty directory, or an earlier report. Anything else is refused with a sentence that says
what is there: a file, the runs directory itself, a run, a data directory, other files.

    problem(out, runs_dir) -> None, or why the site may not go to `out`, in words
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MANIFEST = "manifest.json"
_SHOWN = 3  # entries named in a message


def is_report(path: Path) -> bool:
    """A site `interp report` wrote: its index page and its assets folder."""
    return (path / "index.html").is_file() and (path / "assets").is_dir()


def problem(out: Path, runs_dir: Path) -> str | None:
    """None when a report may replace `out`; else what is wrong with it."""
    text = str(out)
    if not text.strip():
        return "an empty path"
    if "\0" in text:
        return "the path contains a NUL byte"
    try:
        here, runs = out.resolve(), runs_dir.resolve()
        if here == runs or here in runs.parents:
            return f"holds the runs directory {runs_dir}; the site replaces its folder as a whole, so choose another"
        for ancestor in here.parents:
            held = _manifest_kind(ancestor / MANIFEST)
            if held is not None:
                return f"inside {ancestor}, {held}; choose a folder of its own"
        if out.is_dir():
            return _contents(out)
        if out.exists() or out.is_symlink():
            return "exists and is not a directory"
        ancestor = here.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
    except OSError as exc:  # a name too long, a symlink loop, a folder that cannot be read
        return exc.strerror or str(exc)
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{ancestor} is not writable"
    return None


def _contents(out: Path) -> str | None:
    entries = sorted(entry.name for entry in os.scandir(out))
    if not entries or is_report(out):
        return None
    held = _manifest_kind(out / MANIFEST) if MANIFEST in entries else None
    if held is None:
        shown = ", ".join(entries[:_SHOWN]) + (f" and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else "")
        held = f"a non-empty directory that is not a report ({shown})"
    return f"{held}; it would be replaced, so choose another"


def _manifest_kind(manifest: Path) -> str | None:
    """What a run's or a data build's manifest.json says its folder is; None for any other file (or none)."""
    try:
        if not manifest.is_file() or manifest.stat().st_size > 1 << 24:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(data, dict) and "method" in data:
        return "a run (its manifest.json names a method)"
    if isinstance(data, dict) and "format" in data and "splits" in data:
        return "a data directory (its manifest.json is a data build's)"
    return None
