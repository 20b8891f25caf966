"""`interp attn-diff A B`: where a delta moves the [CLS] attention, head by head (the study's App. 7.1).

Thin: parse, call `interp.analyses.attn_diff.run_attn_diff`, print a summary. Mounted by the CLI
as `app.command("attn-diff")(attn_diff.attn_diff)`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.train import Device


class Side(str, Enum):
    query = "query"
    code = "code"
    both = "both"


def attn_diff(
    a: Annotated[str, typer.Argument(help="Run A (or 'base'); differences are B - A.")],
    b: Annotated[str, typer.Argument(help="Run B (or 'base'), on the same base model as A.")],
    split: Annotated[str, typer.Option("--split", help="train, valid or test of the runs' data.")] = "test",
    data: Annotated[Path | None, typer.Option("--data", exists=True, dir_okay=False, help="Any AdvTest-format jsonl instead of --split.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only this many examples: the same fixed sample as a run's --eval-limit.")] = None,
    example: Annotated[str | None, typer.Option("--example", help="The idx of the example whose tokens x heads matrix and full attention are kept (default: the first).")] = None,
    layer: Annotated[int | None, typer.Option("--layer", help="Layer of the example matrix and of the token ranking, 1-based (default: the last).")] = None,
    side: Annotated[Side, typer.Option("--side", help="Compare the query sequence, the code sequence, or both.")] = Side.both,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")] = 32,
    device: Annotated[Device, typer.Option("--device", help="auto picks CUDA when there is one.")] = Device.auto,
    runs_dir: options.RunsDir = Path("runs"),
    progress: options.Progress = True,
) -> None:
    """Compare the [CLS] attention of two runs over a whole split, per layer and head: mean and max
    |B - A|, the change of mass on content tokens, entropy change, Jensen-Shannon divergence, the
    tokens that changed most, and one example's full tokens x heads matrices."""
    from interp.analyses.attn_diff import run_attn_diff

    result, path = run_attn_diff(runs_dir=runs_dir, a=a, b=b, split=split, data_file=data, limit=limit, example=example,
                                 layer=layer, side=side.value, batch_size=batch_size, device=device.value, progress=progress)
    typer.echo(f"{result.examples} examples, {result.layers} layers x {result.heads} heads; differences are {b} - {a}")
    for s in result.sides:
        typer.echo(f"== {s}")
        for stat, label, fmt in (("mean_abs_difference", "mean |B - A|", ".2e"), ("js_divergence", "JS divergence", ".2e")):
            cells = ", ".join(f"L{h.layer}H{h.head} {h.value:{fmt}}" for h in result.top_heads(s, stat))
            typer.echo(f"  top heads by {label}: {cells}")
        tokens = result.tokens[s][:10]
        if tokens:
            cells = ", ".join(f"{t.token!r} {t.mean_signed_change:+.2e} (n={t.count})" for t in tokens)
            typer.echo(f"  tokens changed most at layer {result.token_layer} (mean signed change): {cells}")
        else:
            typer.echo(f"  no token occurs {result.min_token_count} times or more; none ranked")
        ex = result.example.sides[s]
        typer.echo(f"  example {result.example.idx}, layer {result.example.layer}: max |B - A| {ex.max_abs_difference:.3g}, "
                   f"mean {ex.mean_abs_difference:.3g} over {len(ex.tokens)} tokens")
    typer.echo(f"{result.examples_per_second:.1f} examples/s ({result.seconds:.1f} s)")
    typer.echo(f"-> {path}")
