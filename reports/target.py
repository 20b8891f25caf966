"""Where a report may go: checked before anything is read or rendered.

A site is swapped into OUT as a whole (records.io.atomic_dir), so whatever OUT held is replaced. It goes
only where that loses nothing the project did not make for the purpose: a path that does not exist
yet, an empty directory, or an earlier report. Anything else is refused with a sentence that says
what is there: a file, the runs directory itself, a run, a data directory, other files.

    problem(out, runs_dir) -> None, or why the site may not go to `out`, in words
"""

from __future__ import annotations

import os
from pathlib import Path

from records.places import MANIFEST, described, is_report, manifest_kind, some


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
        held = f"a non-empty directory that is not a report ({some(entries)})"
    return f"{held}; it would be replaced, so choose another"


def _manifest_kind(manifest: Path) -> str | None:
    """What a run's or a data build's manifest.json says its folder is; None for any other file (or none)."""
    kind = manifest_kind(manifest)
    return None if kind is None else described(kind)
