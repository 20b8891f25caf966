"""`interp cka A B`: which layers a delta changed, from representations (linear CKA per layer pair).

Thin: parse, run `interp.analyses.cka.CKA` through the one face (`run_analysis`), print a summary.
Mounted by the CLI as `app.command("cka")(cka.cka)`.

    interp cka base lora64                       # which layers LoRA-64 moved away from the base
    interp cka lora64 lora256 --seeds            # every seed of each preset: with the seed-noise null
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.options import Device, Side


class Tokens(str, Enum):
    cls = "cls"
    all = "all"


class Estimator(str, Enum):
    biased = "biased"
    unbiased = "unbiased"


def cka(
    a: Annotated[str, typer.Argument(help="Side A: a run, 'base', or a comma list of one configuration's seeds.")],
    b: Annotated[str, typer.Argument(help="Side B, as side A, on the same base model.")],
    seeds: Annotated[bool, typer.Option("--seeds", help="A and B name presets: each side is every run of that preset in "
                                                        "--runs-dir; two or more seeds a side give the seed-noise null.")] = False,
    split: options.Split = "test",
    data: options.DataFile = None,
    limit: options.Limit = None,
    side: Annotated[Side, typer.Option("--side", help="Compare the query sequences, the code sequences, or both.")] = Side.both,
    tokens: Annotated[Tokens, typer.Option("--tokens", help="cls: the first token's state per example; all: every real token's.")] = Tokens.cls,
    estimator: Annotated[Estimator, typer.Option("--estimator", help="biased (Kornblith's; in [0, 1]) or unbiased (debiased CKA; "
                                                                     "for few examples against the width).")] = Estimator.biased,
    batch_size: options.BatchSize = 32,
    device: options.DeviceOption = Device.auto,
    precision: options.Precision = "fp32",
    runs_dir: options.RunsDir = Path("runs"),
    progress: options.Progress = True,
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
    num_processes: options.NumProcesses = None,
) -> None:
    """Linear CKA (Kornblith et al. 2019) between the hidden states of two runs (or seed groups), every layer
    against every layer, over a whole split, per side: which layers a delta changed, and whether two deltas
    change the same ones. With two or more seeds a side, each layer's CKA across is set against seed to seed."""
    from interp.analyses.cka import CKA
    from interp.commands.launching import run_analysis_on

    ran = run_analysis_on(num_processes, CKA, command="cka", runs_dir=runs_dir, a=a, b=b, seeds=seeds, split=split, data_file=data,
                          limit=limit, side=side.value, tokens=tokens.value, estimator=estimator.value, batch_size=batch_size,
                          device=device.value, precision=precision, progress=progress,
                          foreign=options.foreign(base, pooling, max_len))
    if ran is None:  # launched processes ran it
        return
    result, path = ran
    typer.echo(f"{result.examples} examples, {result.depth} layers, {result.tokens} tokens, {result.estimator} estimator")
    for letter, label, runs in (("A", result.a, result.runs_a), ("B", result.b, result.runs_b)):
        typer.echo(f"  {letter} = {label}" + (f": {len(runs)} runs ({', '.join(runs)})" if len(runs) > 1 else ""))
    if result.null_note:
        typer.echo(result.null_note)
    for s in result.sides:
        diagonal = result.stats[s].diagonal
        cells = " ".join("-" if v is None else f"{v:.3f}" for v in diagonal)
        typer.echo(f"== {s}: CKA at the same layer ({', '.join(result.layer_names[:1])}, 1..{result.depth}): {cells}")
        if result.seed_null is not None:
            null = result.seed_null.sides[s]
            marked = ", ".join(result.layer_names[k] for k in null.marked)
            typer.echo(f"  layers changed beyond seed noise (q <= {result.seed_null.alpha}): {marked or 'none'}")
            if result.seed_null.note:
                typer.echo(f"  {result.seed_null.note}")
    typer.echo(result.summary())
    typer.echo(f"{result.examples_per_second:.1f} sequences/s ({result.seconds:.1f} s)")
    typer.echo(f"-> {path}")
