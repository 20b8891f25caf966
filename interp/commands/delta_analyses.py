"""`interp ablate`, `interp anatomy` and `interp attribute`: where a delta acts, what it is made of,
and which tokens it listens to. Thin: parse, call the library, print a summary and the JSON path.

Mounted by the CLI as `app.command("ablate")(delta_analyses.ablate)` and so on.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from records.layers import layer_span

Split, DataFile, Device = options.RunSplit, options.DataFile, options.DeviceName


class Mode(str, Enum):
    drop = "drop"
    keep = "keep"


class PathMode(str, Enum):
    joint = "joint"
    sides = "sides"


class Reference(str, Enum):
    others = "others"
    pad = "pad"


def _mrr(value: float) -> str:
    return f"{value:.4f}"


def ablate(
    run: Annotated[str, typer.Argument(help="A trained run under RUNS_DIR, or a directory (a name with '/'): a peft "
                                        "adapter or a fine-tuned model directory.")],
    layers: Annotated[str | None, typer.Option("--layers", help="Layers to ablate, 1-based: '9-12', '3', '1,3,5-6' or 'last:4'.")] = None,
    mode: Annotated[Mode, typer.Option("--mode", help="drop: switch the delta off in --layers; keep: switch it off everywhere else.")] = Mode.drop,
    sweep: Annotated[bool, typer.Option("--sweep", help="Also every single layer dropped and kept, and every top-k and bottom-k block kept: a layer-importance curve.")] = False,
    split: Split = "test",
    data: DataFile = None,
    limit: options.Limit = None,
    device: Device = "auto",
    precision: options.Precision = "fp32",
    runs_dir: options.RunsDir = Path("runs"),
    progress: options.Progress = True,
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
    num_processes: options.NumProcesses = None,
) -> None:
    """Switch a run's delta off in some layers at inference (no retraining) and report the MRR against
    the intact run and the base. The study's loFF-on-layers-9-12 question (its Table 7.1), as a tool."""
    from interp.analyses.ablate import Ablation
    from interp.commands.launching import run_analysis_on

    ran = run_analysis_on(num_processes, Ablation, command="ablate", runs_dir=runs_dir, name=run, layers=layers,
                          mode=mode.value, sweep=sweep, split=split, data_file=data, limit=limit, device=device, progress=progress,
                          precision=precision, foreign=options.foreign(base, pooling, max_len))
    if ran is None:  # launched processes ran it
        return
    result, path = ran
    typer.echo(f"{result.run} ({result.method}; delta in layers {layer_span(result.delta_layers, empty='none')} of {result.depth}), {result.examples} queries")
    typer.echo(f"  intact MRR {_mrr(result.intact_mrr)}   base MRR {_mrr(result.base_mrr)}")
    for s in result.settings:
        if s.group in ("given", "keep top", "keep bottom"):
            kept = "" if s.retained is None else f", {100 * s.retained:.0f}% of the gain retained"
            typer.echo(f"  {s.label:<26} MRR {_mrr(s.mrr)} ({s.change:+.4f}{kept})")
    if result.curve:
        typer.echo("  layer  drop only: MRR lost   keep only: MRR gained over base")
        for p in result.curve:
            mark = "" if p.has_delta else "   (no delta here)"
            typer.echo(f"  {p.layer:>5}  {p.drop_loss:>+19.4f}   {p.keep_gain:>+31.4f}{mark}")
    typer.echo(f"-> {path}")


def anatomy(
    runs: Annotated[list[str], typer.Argument(help="One run, or two to compare (the same run twice compares it with itself).")],
    top: Annotated[int, typer.Option("--top", help="Singular values kept per matrix in the JSON.")] = 32,
    k: Annotated[int, typer.Option("--k", help="Most dimensions of the compared singular subspaces (also capped by each rank).")] = 8,
    vectors: Annotated[int, typer.Option("--vectors", help="Also keep each matrix's top singular vectors in the JSON, by side (input / output).")] = 0,
    seed_null: Annotated[bool, typer.Option("--seed-null/--no-seed-null", help="With two runs: set their overlap against the overlap "
                                            "of two seeds of one configuration, from the other seeds of each run found under RUNS_DIR "
                                            "(same preset, manifest differing only in train.seed, e.g. lora64-s1, lora64-s2).")] = True,
    runs_dir: options.RunsDir = Path("runs"),
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
) -> None:
    """Per layer and module: norm, singular-value spectrum and effective rank of the delta's update
    (LoRA scale*B@A, adapter (W_down@W_up)^T, prefix P - P_init, full W_run - W_base; every linear map
    as (d_out, d_in), so left singular vectors are its output side and right ones its input side), from
    the saved weights. For two runs, the overlap of their top singular subspaces (1 = same directions)
    against two references: random subspaces (k/d) and, when other seeds are found, seed-to-seed overlap.
    It reads weights only and runs no forward pass, so it has no --precision (its SVDs are float32)."""
    from interp.analyses.anatomy import Anatomy
    from interp.analyses.running import run_analysis

    result, path = run_analysis(Anatomy, runs_dir=runs_dir, names=runs, top=top, k=k, vectors=vectors, seed_null=seed_null,
                                foreign=options.foreign(base, pooling, max_len))
    for r in result.runs:
        typer.echo(f"{r.name} ({r.method}): {len(r.matrices)} matrices")
        typer.echo(f"  {'layer':>5}  {'module':<28} {'matrix':<17} {'||.||_F':>9} {'erank':>7}")
        for m in r.matrices:
            layer = "-" if m.layer is None else str(m.layer)
            typer.echo(f"  {layer:>5}  {m.module:<28} {m.matrix:<17} {m.frobenius:>9.4f} {m.effective_rank:>7.2f}")
    if result.overlaps:
        typer.echo("overlap of the top-k singular subspaces, output and input side: mean cos^2 of the principal angles "
                   "(1 = same directions; two random k-dim subspaces of R^d give k/d)")
        null = result.seed_null
        head = f"  {'layer':>5}  {'module':<28} {'k':>2}  {'output':>6} {'random':>6}  {'input':>6} {'random':>6}"
        typer.echo(head + ("   seed null (k): between / within, p   output | input" if null else ""))
        for o in result.overlaps:
            row = f"  {o.layer!s:>5}  {o.module:<28} {o.k:>2}  {_share(o.output):>6} {o.output_random:>6.3f}  {_share(o.input):>6} {o.input_random:>6.3f}"
            n = o.seed_null
            if n is not None:
                row += f"   ({n.k}) " + " | ".join(f"{s.between:.3f} / {s.within:.3f}, p {s.p:.2f}" for s in (n.output, n.input))
            typer.echo(row)
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"-> {path}")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def attribute(
    run: Annotated[str, typer.Argument(help="A trained run under RUNS_DIR (or 'base'), or a directory (a name with '/').")],
    example: Annotated[int | None, typer.Option("--example", help="The idx of an example of --split / --data.")] = None,
    query: Annotated[str | None, typer.Option("--query", help="A query text (with --code instead of --example).")] = None,
    code: Annotated[Path | None, typer.Option("--code", exists=True, dir_okay=False, help="A Python file holding the code (with --query).")] = None,
    baseline: Annotated[str | None, typer.Option("--baseline", help="Attribute score_RUN - score_BASELINE on the same pair instead.")] = None,
    split: Split = "test",
    data: DataFile = None,
    steps: Annotated[int, typer.Option("--steps", help="Integration steps (Gauss-Legendre) per path; more steps, smaller convergence delta.")] = 50,
    mode: Annotated[PathMode, typer.Option("--mode", help="joint: one path for both sides; sides: each side varied with the other held at its tokens.")] = PathMode.joint,
    reference: Annotated[Reference, typer.Option("--reference", help="others: other examples of --split / --data (unrelated pairs; in sides mode other codes for this query, other queries for this code), attributions averaged over the paths; pad: every non-special token the pad token.")] = Reference.others,
    others: Annotated[int, typer.Option("--others", help="How many other examples --reference others averages over (one path each).")] = 8,
    show: Annotated[int, typer.Option("--show", help="Tokens shown per side, by |attribution| (all of them are in the JSON).")] = 8,
    precision: options.Precision = "fp32",
    runs_dir: options.RunsDir = Path("runs"),
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
) -> None:
    """Integrated gradients (Captum) on the word embeddings: how much each query and code token adds
    to the pair's score (the inner product of the pooled embeddings, pooled as the run was trained)
    above the score of a reference: by default other examples of the split, whose mean score is the
    neutral level a rank is measured against. Prints the reference score and the convergence delta."""
    from interp.analyses.attribute import Attribution
    from interp.analyses.checks import at_least
    from interp.analyses.running import run_analysis

    at_least("--show", show, 0)
    result, path = run_analysis(Attribution, runs_dir=runs_dir, name=run, example=example, query=query, code_file=code,
                                baseline=baseline, split=split, data_file=data, steps=steps, mode=mode.value,
                                reference=reference.value, others=others, precision=precision,
                                foreign=options.foreign(base, pooling, max_len))
    pooling = result.pooling + (f" / {result.baseline_pooling}" if result.baseline else "")
    typer.echo(f"{result.function} = {result.score:.4f}" + (f" ({result.run_score:.4f} - {result.baseline_score:.4f})" if result.baseline else "")
               + f"   pooling {pooling}, reference {result.reference}")
    for p in result.paths:
        spread = f" (mean of {len(p.reference_scores)}: {min(p.reference_scores):.4f} to {max(p.reference_scores):.4f})" if len(p.reference_scores) > 1 else ""
        uncut = "" if p.uncut_score is None else f"; the same pairs read whole {p.uncut_score:.4f}"
        typer.echo(f"  varying {p.varies}: reference score {p.reference_score:.4f}{spread}{uncut}")
        typer.echo(f"    score - reference {p.score - p.reference_score:+.4f}, attributions sum {p.attribution_sum:+.4f}, "
                   f"convergence delta {p.convergence_delta:.2e}")
    for side, tokens in (("query", result.query_tokens), ("code", result.code_tokens)):
        best = sorted((t for t in tokens if not t.special), key=lambda t: -abs(t.attribution))[:show]
        typer.echo(f"  {side}: " + ", ".join(f"{t.text.strip() or t.token!r} {t.attribution:+.3f}" for t in best))
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"-> {path}")
