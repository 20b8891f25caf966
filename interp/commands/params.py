"""`interp params`: what each preset trains on the base encoder, checked against the study's Table 4.2."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from interp.commands import options


def params(
    presets: Annotated[list[str] | None, typer.Argument(help="Preset names (case-sensitive, e.g. loFF lora64); default: all.", show_default=False)] = None,
    base: options.Base = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Count trainable parameters per preset: exact, without adapter biases, and by Table 4.2's formula."""
    from trainers.encoders import load_encoder
    from trainers.errors import InterpError
    from trainers.methods import count_parameters, get_preset, preset_names

    names = list(presets) if presets else preset_names()
    configs = {name: get_preset(name) for name in names}  # unknown names fail before the model loads
    encoder = load_encoder(base)
    rows = []
    for name, config in configs.items():
        try:
            rows.append({"preset": name} | count_parameters(encoder, config).to_dict())
        except InterpError as exc:
            if presets:
                raise InterpError(f"preset {name}: {exc}") from exc
            rows.append({"preset": name, "method": config.describe(), "skipped": str(exc)})
    where = f"{encoder.name}: {encoder.num_layers} layers, hidden {encoder.hidden_size}, {encoder.num_parameters:,} parameters"
    if as_json:
        typer.echo(json.dumps({"base": encoder.describe(), "presets": rows}, indent=2))
        return
    typer.echo(where)
    typer.echo(format_table(rows))


def format_table(rows: list[dict]) -> str:
    header = ("preset", "method", "trainable", "w/o biases", "biases", "formula check", "share of base")
    lines = [header]
    for row in rows:
        if "skipped" in row:
            lines.append((row["preset"], row["method"], "-", "-", "-", f"skipped: {row['skipped']}", "-"))
            continue
        if row["formula"] is None:
            check = "- (no formula)"
        else:
            check = ("ok" if row["matches_formula"] else "DIFFERS") + f" ({row['formula']:,})"
        lines.append((
            row["preset"], row["method"], f"{row['trainable']:,}", f"{row['trainable_without_biases']:,}",
            f"{row['adapter_biases']:,}", check, f"{row['share_of_base']:.2%}",
        ))
    counted = [line for line in lines if not line[5].startswith("skipped")]
    widths = [max(len(line[i]) for line in counted) for i in range(len(header))]
    right = {2, 3, 4, 6}
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )
