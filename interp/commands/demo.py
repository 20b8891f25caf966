"""`interp demo`: the main job, end to end, on the embedded defaults.

1. mine the default code-search data from the installed Python source (skipped when
   runs/data already holds a build from the same sources and seed), and check it;
2. train three deltas of the study on a fixed sample of it: lora64, lora256 and loFF
   (runs that already finished are kept);
3. list the runs.

The sizes are chosen so that the whole demo fits in about 10 minutes on 2 CPU cores; every
run's manifest records the sample sizes and settings it used. The study's full protocol is
`interp train --preset ...` with the defaults.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from interp.commands import options

DEMO_RUNS = {"lora64": "lora64", "lora256": "lora256", "loff": "loFF"}  # run name -> preset
DEMO_SIZES = {"train_limit": 640, "eval_limit": 300}
DEMO_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 2e-4, "evals_per_epoch": 3, "max_len": 128, "seed": 123456}


def demo(runs_dir: options.RunsDir = Path("runs"), progress: options.Progress = True) -> None:
    """Build the default data, check it, train lora64, lora256 and loFF on a sample, and list the runs."""
    from trainers import methods
    from trainers.data import build_corpus, check_dir
    from trainers.errors import InterpError
    from trainers.training.loop import TrainConfig
    from trainers.training.runs import list_runs
    from trainers.training.train import RunSpec, train_run

    from interp.commands.train import runs as list_runs_command

    start = time.perf_counter()
    data_dir = runs_dir / "data"
    typer.echo(f"== data: {data_dir}")
    if _data_is_current(data_dir):
        typer.echo("up to date (same sources and seed); not rebuilt")
    else:
        build_corpus(out=data_dir, sources=None, seed=0, progress=progress)
    report = check_dir(data_dir)
    typer.echo(str(report))
    if not report.ok:
        raise InterpError(f"{data_dir}: the data check found problems (see above)")

    finished = {r.name for r in list_runs(runs_dir) if r.finished}
    cfg = TrainConfig(**DEMO_TRAIN)
    for name, preset in DEMO_RUNS.items():
        typer.echo(f"== train {name} (preset {preset})")
        if name in finished:
            typer.echo("finished earlier; kept")
            continue
        existing = (runs_dir / name).exists()
        spec = RunSpec(name=name, method=methods.get_preset(preset), data_dir=data_dir, preset=preset, **DEMO_SIZES)
        manifest = train_run(spec, cfg, runs_dir=runs_dir, resume=existing, progress=progress)
        m = manifest["metrics"]
        typer.echo(f"{name}: valid MRR {m['valid_mrr']:.4f} (step {m['best_step']}), test MRR {m['test_mrr']:.4f}")

    typer.echo("== runs")
    list_runs_command(runs_dir=runs_dir)
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s; everything is under {runs_dir}/")


def _data_is_current(data_dir: Path) -> bool:
    """True when data_dir holds a build of the default sources, at their installed versions, with seed 0."""
    from trainers.data import read_manifest
    from trainers.data.sources import resolve_sources
    from trainers.errors import InterpError

    try:
        manifest = read_manifest(data_dir)
    except InterpError:
        return False
    if manifest is None or manifest.seed != 0:
        return False
    wanted = [(s.name, s.version) for s in resolve_sources(None)]
    return [(s["name"], s["version"]) for s in manifest.sources] == wanted
