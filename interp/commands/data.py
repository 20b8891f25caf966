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


def _workers(ctx: typer.Context, param: typer.CallbackParam, value: int | None) -> int | None:
    """Callback of --workers: between 1 and a few per CPU, else InterpError naming the option."""
    from trainers.data.build import WORKERS_PER_CPU, max_workers
    from records.errors import InterpError

    if value is not None and not 1 <= value <= max_workers():
        raise InterpError(f"--workers {value}: should be between 1 and {max_workers()} "
                          f"({WORKERS_PER_CPU} per CPU; more processes only compete for the CPUs)")
    return value


@app.command()
def build(
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Directory to write train/valid/test.jsonl and manifest.json into: "
                                                   "a new or empty one, or an earlier build.")] = str(DEFAULT_DATA_DIR),
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help=f"An installed package, a directory (with a '/'), or 'stdlib'; repeat for several. "
                                      f"Default: {', '.join(DEFAULT_SOURCES)}."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the file-to-split assignment.")] = 0,
    workers: Annotated[int | None, typer.Option(callback=_workers, help="Mining processes (default: one per CPU, at most 4 per CPU); the output does not depend on it.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Mine docstring/function pairs from Python source into an AdvTest-style directory."""
    from trainers.data import build_corpus
    from trainers.data.outdir import check_out
    from trainers.data.sources import resolve_sources
    from records.errors import InterpError

    # checked here too, so that the error names the option; out is a string because Path('') is '.'
    check_out(out, f"--out {out!r}")
    if source:
        try:
            resolve_sources(source)
        except InterpError as exc:
            raise InterpError(f"--source: {exc}") from None
    start = time.perf_counter()
    manifest = build_corpus(out=Path(out), sources=source or None, seed=seed, progress=progress, workers=workers)
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
