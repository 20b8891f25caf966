"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Base = Annotated[
    str | None,
    typer.Option("--base", help="Base encoder: a local Hugging Face directory or a hub id (default: all-MiniLM-L6-v2, shipped offline)."),
]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where runs, analyses and the report live.")]
DataDir = Annotated[Path, typer.Option("--data", help="A directory with train/valid/test.jsonl in AdvTest format (built by `interp data build`).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def choice(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Callback of --pooling, --ties and --batching: a value the library knows, else InterpError naming the option.

    (Not an Enum: the library's lists are the one home of the choices, and a bad value gets the CLI's one error line.)
    """
    if value is None:
        return value
    from trainers.encoders import POOLINGS
    from trainers.errors import InterpError
    from trainers.training.evaluate import TIE_RULES
    from trainers.training.loop import BATCHINGS

    allowed = {"pooling": POOLINGS, "ties": TIE_RULES, "batching": BATCHINGS}[param.name]
    if value not in allowed:
        raise InterpError(f"{param.opts[0]} {value}: should be one of {', '.join(allowed)}")
    return value


def finite(ctx: typer.Context, param: typer.CallbackParam, value: float | None) -> float | None:
    """Callback of float options: NaN and infinities are refused, naming the option."""
    import math

    from trainers.errors import InterpError

    if value is not None and not math.isfinite(value):
        raise InterpError(f"{param.opts[0]} {value}: should be a finite number")
    return value
