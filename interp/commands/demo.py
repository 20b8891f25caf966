"""`interp demo`: the main job, end to end, on the embedded defaults.

1. mine the default code-search data from the installed Python source (skipped when
   runs/data already holds a build from the same sources and seed), and check it;
2. train three deltas of the study on a fixed sample of it: lora64, lora256 and loFF
   (runs that already finished are kept);
3. score the untrained base on the same test sample (`interp eval base`, the report's zero-shot
   row), and list the runs;
4. run the analyses on them, as the study did by hand: attn-diff lora64 vs lora256; CKA
   lora64 vs lora256 per layer over DEMO_CKA_LIMIT test examples ([CLS] states); an
   ablation of loff keeping only the top third of its layers (the study's 9-12 of 12 layers;
   5-6 of the default encoder's 6); qualitative sets with lora256 as baseline and loff as
   candidate; significance tests of all three; anatomy of lora64 vs lora256; one attribution;
5. build the HTML report (runs/report/index.html) and print its path.

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
DEMO_SIZES = {"train_limit": 480, "eval_limit": 200}
DEMO_CKA_LIMIT = 500  # CKA's samples: more than MiniLM's width (384), where the biased estimator is not inflated much
DEMO_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 2e-4, "evals_per_epoch": 2, "max_len": 96, "seed": 123456}


def demo(runs_dir: options.RunsDir = Path("runs"), progress: options.Progress = True) -> None:
    """Build the default data, check it, train lora64, lora256 and loFF on a sample, and list the runs."""
    from trainers import methods
    from trainers.data import build_corpus, check_dir
    from records.errors import InterpError
    from trainers.training.runs import list_runs
    from trainers.training.train import RunSpec, train_config, train_run

    from interp.commands.report import report as build_report_command
    from interp.commands.evaluation import eval_ as eval_command
    from interp.commands.listing import runs as list_runs_command

    _check_runs_dir(runs_dir)
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
    for name, preset in DEMO_RUNS.items():
        typer.echo(f"== train {name} (preset {preset})")
        if name in finished:
            typer.echo("finished earlier; kept")
            continue
        existing = (runs_dir / name).exists()
        cfg = train_config(runs_dir / name if existing else None, **DEMO_TRAIN)  # an interrupted run resumes with its own choices
        spec = RunSpec(name=name, method=methods.get_preset(preset), data_dir=data_dir, preset=preset, **DEMO_SIZES)
        manifest = train_run(spec, cfg, runs_dir=runs_dir, resume=existing, progress=progress)
        m = manifest.metrics
        typer.echo(f"{name}: valid MRR {m['valid_mrr']:.4f} (step {m['best_step']}), test MRR {m['test_mrr']:.4f}")

    typer.echo("== eval base (zero-shot)")  # the untrained encoder on the runs' test sample: the report's zero-shot row (~15-30 s)
    eval_command("base", runs_dir=runs_dir, progress=progress)
    typer.echo("== runs")
    list_runs_command(runs_dir=runs_dir)
    _analyses(runs_dir, progress)
    typer.echo("== report")
    build_report_command(runs_dir=runs_dir)
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s; everything is under {runs_dir}/")
    typer.echo(f"open the report: {(runs_dir / 'report' / 'index.html').resolve().as_uri()}")


def _analyses(runs_dir: Path, progress: bool) -> None:
    """Each analysis through its own command, on the demo's test sample."""
    from interp.commands import attn_diff, cka, delta_analyses, stats
    from trainers.data import load_split
    from trainers.training.runs import find_run
    from trainers.training.splits import EVAL_SUBSET_SEED, subset

    limit = DEMO_SIZES["eval_limit"]
    depth = find_run(runs_dir, "loff").manifest.base["layers"]
    top_third = f"last:{max(1, depth // 3)}"
    test = subset(load_split(runs_dir / "data", "test"), limit, EVAL_SUBSET_SEED)
    common = {"split": "test", "data": None, "limit": limit, "runs_dir": runs_dir, "progress": progress}

    typer.echo("== attn-diff lora64 lora256")
    attn_diff.attn_diff(a="lora64", b="lora256", example=str(test[0].idx), layer=None, side=attn_diff.Side("both"),
                        batch_size=32, device=attn_diff.Device.auto, **common)
    typer.echo(f"== cka lora64 lora256 --limit {DEMO_CKA_LIMIT}")
    cka.cka(a="lora64", b="lora256", seeds=False, side=cka.Side("both"), tokens=cka.Tokens("cls"), estimator=cka.Estimator("biased"),
            batch_size=32, device=cka.Device.auto, precision="fp32", **(common | {"limit": DEMO_CKA_LIMIT}))
    typer.echo(f"== ablate loff --layers {top_third} --mode keep")
    delta_analyses.ablate(run="loff", layers=top_third, mode=delta_analyses.Mode("keep"), sweep=True, device="auto", **common)
    typer.echo("== qualitative --baseline lora256 --candidate loff")
    stats.qualitative(runs="lora64,lora256,loff", baseline="lora256", candidate="loff", samples=3, **common)
    typer.echo("== compare lora64 lora256 loff")
    stats.compare(runs=["lora64", "lora256", "loff"], bootstrap=10_000, seed=0, **common)
    typer.echo("== anatomy lora64 lora256")
    delta_analyses.anatomy(runs=["lora64", "lora256"], top=32, k=8, runs_dir=runs_dir)
    typer.echo(f"== attribute loff --example {test[0].idx} --baseline lora256")
    delta_analyses.attribute(run="loff", example=test[0].idx, query=None, code=None, baseline="lora256", split="test", data=None,
                             steps=32, mode=delta_analyses.PathMode("joint"), show=8, runs_dir=runs_dir)


def _check_runs_dir(runs_dir: Path) -> None:
    """Refuse, before anything is mined, a runs directory that cannot be written or whose data/ is not a build's."""
    from trainers.data.outdir import check_out, enclosing, unusable_path
    from records.errors import InterpError

    problem = unusable_path(runs_dir) or enclosing(runs_dir)
    if problem is None and (runs_dir / "manifest.json").exists():
        problem = "is a run or a data directory (it holds manifest.json), not a directory of runs"
    elif problem is None and (runs_dir / "index.html").exists():
        problem = "is a report (it holds index.html), not a directory of runs"
    if problem is not None:
        raise InterpError(f"--runs-dir {str(runs_dir)!r}: {problem}")
    check_out(runs_dir / "data", f"--runs-dir {str(runs_dir)!r}: {runs_dir / 'data'}")


def _data_is_current(data_dir: Path) -> bool:
    """True when data_dir holds a build of the default sources, at their installed versions, with seed 0."""
    from trainers.data import read_manifest
    from trainers.data.neardup import thresholds
    from trainers.data.sources import resolve_sources
    from records.errors import InterpError

    try:
        manifest = read_manifest(data_dir)
    except InterpError:
        return False
    if manifest is None or manifest.seed != 0 or manifest.near_duplicates.get("thresholds") != thresholds():
        return False  # an older build (no near-duplicate filter) or other settings: build again
    wanted = [(s.name, s.version) for s in resolve_sources(None)]
    return [(s["name"], s["version"]) for s in manifest.sources] == wanted
