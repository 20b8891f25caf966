"""Atomic writes: a file or directory is either the old version or the complete new one, never half.

Every file the project writes goes through here: the data goes to a temporary file in the
same directory, is flushed to disk, and is renamed over the target. A directory is built under
a temporary name and swapped in (`atomic_dir`); a swap cut short is finished or undone by
`recover_dir`, which the next command that takes the directory's lock calls.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from records.errors import InterpError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def dumps_json(obj: Any) -> str:
    """The project's one JSON style: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


class DiskFullError(InterpError):
    """A write failed because the disk (or the user's quota) is full; what was being written is gone, nothing else."""


@contextlib.contextmanager
def disk_full(what: str) -> Iterator[None]:
    """Turn a full disk while writing `what` into DiskFullError naming it; other OSErrors pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFullError(f"the disk is full: writing {what} failed") from None


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name; swap it into place only if the block succeeds.

    An existing directory at `path` stays untouched until the new one is complete, and is then
    replaced as a whole: moved into `.NAME.XXXX.old/`, the new one renamed onto `path`. A journal
    beside it (`.NAME.swap.json`) names both while they move, so a swap cut short between the two
    renames (a kill) is finished or undone by `recover_dir`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    journal = _journal(path)
    swapping = False
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
            return
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        write_json(journal, {"tmp": tmp.name, "old": old.name})
        swapping = True
        os.replace(path, old / path.name)
        os.replace(tmp, path)
        journal.unlink()
        swapping = False
    except BaseException:
        if swapping:  # between the renames: put the old directory back (or leave the journal to recover_dir)
            if not path.exists() and (old / path.name).exists():
                os.replace(old / path.name, path)
            journal.unlink()
            swapping = False
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None and not swapping:
            shutil.rmtree(old, ignore_errors=True)


SWAP_JOURNAL = ".swap.json"
SWAP_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.(?P<kind>tmp|old)")  # tempfile.mkdtemp's names in atomic_dir


def _journal(path: Path) -> Path:
    return path.parent / f".{path.name}{SWAP_JOURNAL}"


def leftovers(path: str | Path) -> list[Path]:
    """What interrupted `atomic_dir(path)` calls left beside `path`: temporary and old directories, a journal."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*") if (m := SWAP_TEMP.fullmatch(p.name)) and m["name"] == path.name]
    return sorted(found + [j for j in [_journal(path)] if j.exists()])


def recover_dir(path: str | Path) -> str | None:
    """Finish or undo a swap of `path` that was cut short; remove what interrupted writes left beside it.

    Only for a caller that knows no `atomic_dir(path)` is running (it holds the lock that writers
    take): a temporary directory of a live writer would be taken for a leftover. Returns
    "completed" (the new directory is in place), "rolled back" (the old one is), or None.
    """
    path = Path(path)
    journal, done = _journal(path), None
    if journal.exists():
        try:
            names = json.loads(journal.read_text(encoding="utf-8"))
            tmp, old = path.parent / names["tmp"], path.parent / names["old"]
        except (ValueError, KeyError, TypeError):  # cut short while written: no rename had happened
            tmp = old = None
        if tmp is not None and tmp.is_dir():  # the journal is written once the new directory is complete
            if path.exists() and not (old / path.name).exists():
                os.replace(path, old / path.name)
            if not path.exists():
                os.replace(tmp, path)
                done = "completed"
        elif tmp is not None and not path.exists() and (old / path.name).exists():
            os.replace(old / path.name, path)
            done = "rolled back"
        journal.unlink()
    if not path.exists():  # an older swap, without a journal: the old directory goes back
        olds = [p / path.name for p in leftovers(path) if p.name.endswith(".old") and (p / path.name).is_dir()]
        if olds:
            os.replace(olds[-1], path)
            done = "rolled back"
    for p in leftovers(path):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return done
