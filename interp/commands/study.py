"""`interp study GRID`: train a named grid of presets x seeds, resumably, and write the study's tables."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def study(
    grid: Annotated[str | None, typer.Argument(help="A grid of grids.toml: rq1, rq2, rq3, rq4, layers, all, core (see --list).", show_default=False)] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds; each preset is trained once per seed.")] = "123456,654321,123",
    data: options.DataDir = Path("runs/data"),
    base: options.Base = None,
    scale: Annotated[str, typer.Option("--scale", help="full: the study's protocol (all pairs, 256 tokens, 2 epochs, lr 1e-5); demo: a sample sized for 2 CPU cores.")] = "full",
    runs_dir: options.RunsDir = Path("runs"),
    device: Annotated[Device, typer.Option(help="auto picks CUDA when there is one.")] = Device.auto,
    precision: Annotated[str | None, typer.Option(
        "--precision", callback=options.precision,
        help=options.PRECISION_HELP + "Every run's (a training setting: runs made at another are refused). Default: the scale's, fp32.")] = None,
    log_with: Annotated[str, typer.Option(
        "--log-with", help="Each run trained also sends its curves to this tracker, offline, into its logs/ (see `interp train --log-with`): "
                           "none, tensorboard or wandb. Changes no number: runs made with another value are still the same runs.")] = "none",
    list_grids: Annotated[bool, typer.Option("--list", help="List the grids, their tables and presets, and the scales; train nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="If another process trains this grid in RUNS_DIR (or one of its runs), wait for it instead of stopping.")] = False,
    progress: options.Progress = True,
) -> None:
    """Train every preset of GRID once per seed as runs RUNS_DIR/<preset>-s<seed>; write RUNS_DIR/study/GRID/tables.{json,md}.

    Finished runs with the same settings are skipped, interrupted ones resumed; a run made with
    other settings is refused, never overwritten. A failing run is reported and the others go on
    (exit status 1 at the end); a full disk stops the study (exit status 2). A second process on
    the same grid and RUNS_DIR is refused, naming the first (or waits for it, with --wait).
    """
    from records.errors import FieldError, InterpError

    from interp.commands.train import check_log_with
    from interp.study import get_grid, get_scale, load_grid_file, parse_seeds, run_study

    if list_grids:
        _list(load_grid_file())
        return
    if grid is None:
        raise InterpError("give a GRID (see `interp study --list`)")
    chosen, chosen_scale, seed_list = get_grid(grid), get_scale(scale), parse_seeds(seeds)
    for seed in seed_list:  # checked before anything loads or trains
        try:
            chosen_scale.config(seed)
        except FieldError as exc:
            raise InterpError(f"--seeds {seeds}: {exc}") from exc
    options.creatable_dir("--runs-dir", runs_dir)
    options.data_dir("--data", data)
    options.base_shape(base)
    options.device(device.value)
    check_log_with(log_with)
    result = run_study(grid=chosen, seeds=seed_list, scale=chosen_scale, data_dir=data, runs_dir=runs_dir, base=base,
                       device=device.value, progress=progress, log=typer.echo, wait=wait, log_with=log_with, precision=precision)
    counts = ", ".join(f"{n} {status}" for status, n in result.counts().items())
    typer.echo(f"study {grid} ({scale}, seeds {seeds}): {counts}; tables -> {result.tables_json}, {result.tables_md}")
    if result.failed:
        for o in result.failed:
            typer.echo(f"failed: {o.name}: {o.error}", err=True)
        raise typer.Exit(1)


def _list(grid_file) -> None:
    for name, grid in grid_file.grids.items():
        scaling = f", LoRA scaling {grid.lora_scaling}" if grid.has_lora else ""
        typer.echo(f"{name}: {grid.description} ({len(grid.presets)} presets{scaling})")
        for table in grid.tables:
            typer.echo(f"    {table.id}: {', '.join(table.presets)}")
    for name, scale in grid_file.scales.items():
        limits = f", train_limit {scale.train_limit}, eval_limit {scale.eval_limit}" if scale.train_limit or scale.eval_limit else ""
        typer.echo(f"scale {name}: " + ", ".join(f"{k} {v}" for k, v in scale.train) + limits)
