"""Locks: one process at a time writes a run, or trains a study.

A lock is a `filelock.FileLock` (flock: the kernel lets go of it when its holder dies, even by
kill -9) on a hidden file beside what it guards, with a note of who holds it beside that, so a
refused process can name the holder:

    runs/.NAME.lock, runs/.NAME.lock.json                a run (train, --resume, eval writing into it)
    runs/study/.GRID.lock, runs/study/.GRID.lock.json    a study of one grid in one runs directory

Both files are removed when the holder lets go (the lock file while still held, so a waiter
that opened the old one takes a fresh one); those of a killed holder are taken over by the next
process. Hidden names are never runs (`trainers.training.runs.list_runs`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from records.errors import InterpError
from records.io import DiskFullError, disk_full, write_json

HELD_ENV = "INTERP_LOCKS_HELD"  # lock files a parent process holds for its launched children (os.pathsep-separated)


class LockedError(InterpError):
    """Another process holds the lock: the message names it (pid, host, command, since when)."""


def run_lock_path(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / f".{name}.lock"


def study_lock_path(runs_dir: Path, grid: str) -> Path:
    return Path(runs_dir) / "study" / f".{grid}.lock"


def _info_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".json")


def holder(lock_path: Path) -> str:
    """Who holds the lock at `lock_path`, in words, from the note its holder wrote."""
    try:
        info = json.loads(_info_path(lock_path).read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']} ({info['command']}), since {since}"
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # not written yet, or by an older holder
        return f"another process (no note beside {lock_path})"


def held_by_parent(lock_path: Path) -> bool:
    """Whether a parent process holds `lock_path` for this one (a launched data-parallel process)."""
    return str(Path(lock_path).resolve()) in os.environ.get(HELD_ENV, "").split(os.pathsep)


@contextlib.contextmanager
def hold(lock_path: Path, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the lock at `lock_path` for the block; LockedError naming the holder if another
    process has it, or wait for it with `wait`. `what` names the thing locked ("run 'r' in runs")."""
    lock = _acquire(Path(lock_path), what, wait)
    try:
        yield
    finally:
        _release(lock, Path(lock_path))


@contextlib.contextmanager
def try_hold(lock_path: Path) -> Iterator[bool]:
    """Hold the lock if nobody does (True), else go on without it (False): for clean-ups that only
    a lock's holder may do, by a command that would not otherwise need it."""
    try:
        lock = _acquire(Path(lock_path), "", wait=False)
    except InterpError:  # held, or not to be had here (a directory this user cannot write in)
        yield False
        return
    try:
        yield True
    finally:
        _release(lock, Path(lock_path))


def _acquire(lock_path: Path, what: str, wait: bool) -> FileLock:
    made = [d for d in [lock_path.parent, *lock_path.parent.parents] if not d.exists()]
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InterpError(f"{lock_path.parent}: cannot make a directory there ({exc.strerror})") from None
    lock = FileLock(lock_path, timeout=-1 if wait else 0, is_singleton=False)
    lock.made = made  # directories to remove again on release if nothing else was put there
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(f"{what} is in use by {holder(lock_path)}; wait for it to finish, or pass --wait to wait") from None
    except OSError as exc:  # a directory this user cannot write in, a full disk
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"the disk is full: writing the lock {lock_path} failed; nothing else was written") from None
        raise InterpError(f"{lock_path}: cannot take the lock ({exc.strerror or exc})") from None
    try:
        with disk_full(f"the lock's note {_info_path(lock_path)} (nothing else was written)"):
            write_json(_info_path(lock_path), {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                               "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]})
    except BaseException:
        _release(lock, lock_path)
        raise
    return lock


def _release(lock: FileLock, lock_path: Path) -> None:
    try:
        for path in (_info_path(lock_path), lock_path):  # the lock file while still held: a waiter on it retries on a fresh one
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        lock.release()
        for directory in lock.made:  # innermost first
            with contextlib.suppress(OSError):
                directory.rmdir()


@contextlib.contextmanager
def lend_to_children(lock_path: Path) -> Iterator[None]:
    """Let processes started in the block know that this one holds `lock_path` for them."""
    before = os.environ.get(HELD_ENV)
    os.environ[HELD_ENV] = os.pathsep.join(filter(None, [before, str(Path(lock_path).resolve())]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HELD_ENV, None)
        else:
            os.environ[HELD_ENV] = before
