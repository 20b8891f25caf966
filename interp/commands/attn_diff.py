"""`interp attn-diff A B`: where a delta moves the [CLS] attention, head by head (the study's App. 7.1).

Thin: parse, run `interp.analyses.attn_diff.AttnDiff` through `run_analysis`, print a summary. Mounted by the CLI
as `app.command("attn-diff")(attn_diff.attn_diff)`.

A side is one run, or a seed group, which gives the seed-noise null:

    interp attn-diff base lora64                          # two runs: no null, and it says so
    interp attn-diff lora64 lora256 --seeds               # every run of preset lora64 vs of lora256
    interp attn-diff lora64-s1,lora64-s2 lora256-s1,lora256-s2   # the same, named run by run
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.options import Device, Side


def attn_diff(
    a: Annotated[str, typer.Argument(help="Side A: a run, 'base', or a comma list of one configuration's seeds "
                                          "(lora64-s1,lora64-s2); differences are B - A.")],
    b: Annotated[str, typer.Argument(help="Side B, as side A, on the same base model.")],
    seeds: Annotated[bool, typer.Option("--seeds", help="A and B name presets: each side is every run of that preset in "
                                                        "--runs-dir (`interp study` names them <preset>-s<seed>). Two or more "
                                                        "seeds a side test each head's change against seed-to-seed change.")] = False,
    split: options.Split = "test",
    data: options.DataFile = None,
    limit: options.Limit = None,
    example: Annotated[str | None, typer.Option("--example", help="The idx of the example whose tokens x heads matrix and full attention are kept (default: the first).")] = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Layer of the example matrix and of the token ranking, 1-based (default: the last).")] = None,
    side: Annotated[Side, typer.Option("--side", help="Compare the query sequence, the code sequence, or both.")] = Side.both,
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
    """Compare the [CLS] attention of two runs (or two seed groups) over a whole split, per layer and
    head: total variation (the share of attention mass moved, length-invariant), Jensen-Shannon,
    the change of mass on content tokens, entropy change, the tokens that changed most, one
    example's tokens x heads matrices, and with seeds on both sides, which heads changed more
    than a new seed changes them. Seed groups: `interp attn-diff lora64 lora256 --seeds`, or
    name the runs: `interp attn-diff lora64-s1,lora64-s2 lora256-s1,lora256-s2`."""
    from interp.analyses.attn_diff import AttnDiff
    from interp.commands.launching import run_analysis_on

    # The forward passes at --precision (recorded in the result's inputs); rows float32, sums float64 either way.
    ran = run_analysis_on(num_processes, AttnDiff, command="attn-diff", runs_dir=runs_dir, a=a, b=b, seeds=seeds, split=split,
                          data_file=data, limit=limit, example=example, layer=layer, side=side.value, batch_size=batch_size,
                          device=device.value, precision=precision, progress=progress,
                          foreign=options.foreign(base, pooling, max_len))
    if ran is None:  # launched processes ran it
        return
    result, path = ran
    typer.echo(f"{result.examples} examples, {result.layers} layers x {result.heads} heads; differences are B - A")
    for letter, label, runs in (("A", result.a, result.runs_a), ("B", result.b, result.runs_b)):
        typer.echo(f"  {letter} = {label}" + (f": {len(runs)} runs ({', '.join(runs)})" if len(runs) > 1 else ""))
    if result.null_note:
        typer.echo(result.null_note)
    null = result.seed_null
    if null is not None:
        how = "exact" if null.exact else f"{null.labellings - 1:,} random"
        typer.echo(f"seed-noise null: per head, between-side TV against seed-to-seed TV; p over {null.labellings:,} "
                   f"relabellings of the {null.runs_a + null.runs_b} runs ({how}; smallest possible p {null.floor:.3g}); "
                   f"Benjamini-Hochberg across {null.tested} side x layer x head cells, marked at q <= {null.alpha}")
        if null.note:
            typer.echo(f"  {null.note}")
    for s in result.sides:
        stats = result.stats[s]
        typer.echo(f"== {s}")
        typer.echo(f"  total variation (share of attention mass moved, in [0, 1]), mean over heads {stats.mean_total_variation:.3g}; "
                   f"Jensen-Shannon {stats.mean_js_divergence:.3g}")
        for stat, label in (("total_variation", "total variation"), ("js_divergence", "JS divergence")):
            cells = ", ".join(f"L{h.layer}H{h.head} {h.value:.3g}" for h in result.top_heads(s, stat))
            typer.echo(f"  top heads by {label}: {cells}")
        if null is not None:
            marked = null.sides[s].marked
            cells = ", ".join(f"L{h.layer}H{h.head} {h.between:.3g} vs {h.within:.3g} (q {h.q:.2g})" for h in marked[:8])
            cells += f", ... {len(marked) - 8} more" if len(marked) > 8 else ""
            typer.echo(f"  heads whose change exceeds seed noise (TV between vs within): "
                       f"{cells or f'none of {result.layers * result.heads}'}")
        tokens = result.tokens[s][:10]
        if tokens:
            cells = ", ".join(f"{t.token!r} {t.mean_relative_signed_change:+.3g} (n={t.count})" for t in tokens)
            typer.echo(f"  tokens changed most at layer {result.token_layer} (signed change x length, i.e. in units of "
                       f"uniform attention): {cells}")
        else:
            typer.echo(f"  no token occurs {result.min_token_count} times or more; none ranked")
        ex = result.example.sides[s]
        typer.echo(f"  example {result.example.idx}, layer {result.example.layer} ({' vs '.join(result.example.runs)}): "
                   f"TV {ex.mean_total_variation:.3g} (mean over heads), max |B - A| {ex.max_abs_difference:.3g}, {len(ex.tokens)} tokens")
    typer.echo(f"{result.examples_per_second:.1f} examples/s ({result.seconds:.1f} s)")
    typer.echo(f"-> {path}")
