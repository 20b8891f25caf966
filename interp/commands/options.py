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
