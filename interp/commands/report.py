"""`interp report`: render every run and analysis under RUNS_DIR into an offline HTML site."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options


def report(
    runs_dir: options.RunsDir = Path("runs"),
    out: Annotated[Path | None, typer.Option("--out", help="Where the site goes (default RUNS_DIR/report); replaced as a whole when the new one is complete.")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the index in a web browser afterwards.")] = False,
) -> None:
    """Render run manifests, training curves, analyses and study tables into a self-contained static site.

    The site needs no network: plotly, d3 and jQuery are copied into OUT/assets. Sections with no
    results yet say how to make them. Files that cannot be read are listed on the index page.
    """
    from reports import build_report
    from trainers.errors import InterpError

    if not runs_dir.is_dir():
        raise InterpError(f"--runs-dir {runs_dir}: no such directory (train a run first: interp train --name NAME --preset lora64)")
    if out is not None and out.exists() and not out.is_dir():
        raise InterpError(f"--out {out}: exists and is not a directory")
    if out is not None and out.is_dir() and any(out.iterdir()) and not (out / "index.html").is_file():
        raise InterpError(f"--out {out}: a non-empty directory that is not a report; it would be replaced, so choose another")
    built = build_report(runs_dir=runs_dir, out=out)
    for problem in built.problems:
        typer.echo(f"warning: skipped {problem}", err=True)
    typer.echo(f"report: {built.pages} pages -> {built.index}")
    if open_:
        webbrowser.open(built.index.resolve().as_uri())
