"""User-facing errors.

Everything a user can get wrong (a malformed data file, an unknown preset, a bad layer range)
raises `InterpError` or a subclass. The command line prints its message on one line and exits
with status 2; library users catch it like any other exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class InterpError(Exception):
    """An error caused by the user's input, with a message that says what to fix."""


class DataError(InterpError):
    """A data file that cannot be used: names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


def did_you_mean(kind: str, name: str, known: Iterable[str], where: str | None = None) -> InterpError:
    """An error for an unknown `name`, suggesting the closest of `known`.

    >>> str(did_you_mean("run", "lora46", ["lora64", "lora256"]))
    "unknown run 'lora46'; did you mean 'lora64'?"
    """
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    message = f"unknown {kind} {name!r}"
    if close:
        message += f"; did you mean {close[0]!r}?"
    elif known:
        message += f"; known: {', '.join(known)}"
    if where is not None:
        message += f" (looked in {where})"
    return InterpError(message)


class FieldError(InterpError, ValueError):
    """A config field with a bad value: the message names the field, and `field` says which.

    A ValueError, as configs raise for bad fields (STYLE 2), and an InterpError, since users set
    them; a command turns `field` into the option the user typed.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)
