"""The checks every analysis makes of its arguments before anything loads, each naming the option at fault.

An analysis is called as `run_<kind>(runs_dir=..., split=..., limit=..., device=...)`, from the
command line or a script; either way a bad value is an `InterpError` that names the command-line
option (`--limit 0: should be at least 1`), raised before a model or a data file is read.
"""

from __future__ import annotations

import json
from pathlib import Path

from trainers.data import SPLITS
from records.errors import InterpError


def at_least(option: str, value: int | float | None, low: int) -> None:
    """`value` (None: not given) is at least `low`."""
    if value is not None and value < low:
        raise InterpError(f"{option} should be at least {low}, got {value}")


def at_most(option: str, value: int | float | None, high: int, why: str) -> None:
    """`value` (None: not given) is at most `high`; `why` says what the limit protects."""
    if value is not None and value > high:
        raise InterpError(f"{option} should be at most {high:,} ({why}), got {value}")


def check_runs_dir(runs_dir: Path) -> Path:
    """An existing directory, else one line naming --runs-dir."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        what = "not a directory" if runs_dir.exists() or runs_dir.is_symlink() else "no such directory"
        raise InterpError(f"--runs-dir {runs_dir}: {what} (train a run first: interp train --name NAME --preset lora64)")
    return runs_dir


def check_split(split: str, data_file: Path | None = None) -> str:
    """One of train, valid or test (not looked at when a --data file is given)."""
    if data_file is None and split not in SPLITS:
        raise InterpError(f"--split {split!r}: should be one of {', '.join(SPLITS)} (or give --data FILE)")
    return split


def check_layer(option: str, layer: int | None, depth: int | None) -> None:
    """A 1-based layer of an encoder of `depth` layers (None: not known before the model loads)."""
    if layer is None:
        return
    if layer < 1 or (depth is not None and layer > depth):
        span = f"the encoder has {depth} layers (1-{depth})" if depth is not None else "layers count from 1"
        raise InterpError(f"{option} {layer}: {span}")


def distinct(option: str, names: list[str]) -> None:
    """No name twice, and no empty name (as `a,,b` gives)."""
    if any(not n for n in names):
        raise InterpError(f"{option} {','.join(names)!r}: an empty name ('') in the comma list")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InterpError(f"{option}: run {repeated[0]!r} is named twice; name different runs")


def check_result_target(path: Path, kind: str) -> None:
    """`path` is free, or holds an earlier interp `kind` result (which the new one replaces).

    Anything else there (a directory, a file that is not such a result) was not made by interp for
    this purpose: refused, naming what is there, so that nothing of the user's is overwritten.
    """
    path = Path(path)
    try:
        if not path.exists() and not path.is_symlink():
            return
    except OSError as exc:  # a name too long for the file system
        raise InterpError(f"{path}: the {kind} result cannot go here ({exc.strerror or exc})") from None
    if path.is_symlink() or not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise InterpError(f"{path}: the {kind} result would go here, but this is {what}; move it away or delete it")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        fine = isinstance(saved, dict) and saved.get("kind") == kind and isinstance(saved.get("result"), dict)
        detail = "" if fine else f" (it has no kind {kind!r} with a result)"
    except json.JSONDecodeError as exc:
        fine, detail = False, f" (line {exc.lineno}: not valid JSON: {exc.msg})"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        fine, detail = False, f" ({type(exc).__name__})"
    if not fine:
        raise InterpError(f"{path}: the {kind} result would replace this file, which is not an interp {kind} result"
                          f"{detail}; move it away or delete it")
