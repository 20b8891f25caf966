"""`interp data build` and `interp data check`: thin commands over `trainers.data`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from trainers.data import DEFAULT_DATA_DIR, DEFAULT_SOURCES

app = typer.Typer(
    help="Build and check AdvTest-format code-search data.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="Directory to write train/valid/test.jsonl and manifest.json into.")] = DEFAULT_DATA_DIR,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help=f"An installed package, a directory (with a '/'), or 'stdlib'; repeat for several. "
                                      f"Default: {', '.join(DEFAULT_SOURCES)}."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the file-to-split assignment.")] = 0,
    workers: Annotated[int | None, typer.Option(min=1, help="Mining processes (default: one per CPU); the output does not depend on it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Mine docstring/function pairs from Python source into an AdvTest-style directory."""
    from trainers.data import build_corpus

    start = time.perf_counter()
    manifest = build_corpus(out=out, sources=source or None, seed=seed, progress=progress, workers=workers)
    typer.echo(manifest.summary())
    typer.echo(f"wrote {manifest.pairs} pairs to {out}/ in {time.perf_counter() - start:.0f} s")


@app.command()
def check(
    data_dir: Annotated[Path, typer.Argument(help="An AdvTest directory: train.jsonl, valid.jsonl, test.jsonl.")] = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Validate every line of an AdvTest directory and print counts, lengths and problems."""
    from trainers.data import check_dir

    report = check_dir(data_dir)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else str(report))
    if not report.ok:
        raise typer.Exit(1)
