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
    wait: Annotated[bool, typer.Option("--wait", help="If another build is writing the same site, wait for it instead of stopping.")] = False,
) -> None:
    """Render run manifests, training curves, analyses and study tables into a self-contained static site.

    The site needs no network: plotly, d3 and jQuery are copied into OUT/assets. Sections with no
    results yet say how to make them. Files that cannot be read are listed on the index page.
    One build writes a site at a time: a second, while the first runs, is refused naming it
    (or waits for it, with --wait).
    """
    from reports import build_report, target
    from reports.collect import printable
    from records.errors import InterpError

    if not runs_dir.is_dir():
        what = "not a directory" if runs_dir.exists() else "no such directory"
        raise InterpError(f"--runs-dir {runs_dir}: {what} (train a run first: interp train --name NAME --preset lora64)")
    where = out if out is not None else runs_dir / "report"
    problem = target.problem(where, runs_dir)
    if problem is not None:
        raise InterpError(f"{'--out' if out is not None else 'the default --out'} {printable(str(where))}: {problem}")
    from records.io import recover_dir
    from trainers.locks import hold

    lock = where.parent / f".{where.name}.lock"  # one writer of a site at a time; a second is refused, naming the first
    try:
        with hold(lock, f"the report at {printable(str(where))}", wait=wait):
            recover_dir(where)  # a swap a killed build cut short is finished or undone first
            built = build_report(runs_dir=runs_dir, out=out)
    except OSError as exc:  # a full disk, a permission, a name the file system refuses
        raise InterpError(f"--out {printable(str(where))}: cannot write the site ({exc.strerror or exc}); "
                          "the previous site, if there was one, is kept as it was") from None
    for problem in built.problems:
        typer.echo(f"warning: skipped {printable(problem)}", err=True)
    typer.echo(f"report: {built.pages} pages -> {built.index}")
    if open_:
        webbrowser.open(built.index.resolve().as_uri())
