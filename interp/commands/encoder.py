"""`interp encoder`: what the base encoder resolves to."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from interp.commands import options


def encoder(
    base: options.Base = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Show the resolved base encoder: family, layers, heads, hidden size, and where it was loaded from."""
    from trainers.encoders import load_encoder

    enc = load_encoder(base)
    info = enc.describe() | {"weights_sha256": enc.weights_hash}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        typer.echo(f"{key:<{width}}  {value}")
