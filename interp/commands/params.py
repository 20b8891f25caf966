"""`interp params`: what each preset trains on the base encoder, checked against the study's Table 4.2."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from interp.commands import options


def _lora_scaling(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Callback of --lora-scaling: a rule of LoraConfig.SCALINGS (their one home), else InterpError naming the option."""
    if value is None:
        return value
    from records.errors import InterpError
    from trainers.methods.lora.config import SCALINGS

    if value not in SCALINGS:
        raise InterpError(f"{param.opts[0]} {value}: should be one of {', '.join(SCALINGS)}")
    return value


# Shared with `interp train`.
LoraScalingOption = Annotated[str | None, typer.Option(
    "--lora-scaling", callback=_lora_scaling, show_default=False,
    help="LoRA's scaling rule, applied to every LoRA part (presets' too): alpha (the factor is alpha, the study's Eq. 2.3; "
         "the default), alpha/r (OpenDelta's and peft's LoRA, which the study's code ran) or alpha/sqrt(r) (rsLoRA).")]


def params(
    presets: Annotated[list[str] | None, typer.Argument(help="Preset names (case-sensitive, e.g. loFF lora64); default: all.", show_default=False)] = None,
    base: options.Base = None,
    lora_scaling: LoraScalingOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Count trainable parameters per preset: exact, without adapter biases, and by Table 4.2's formula; LoRA's scale."""
    from trainers.encoders import load_encoder
    from records.errors import InterpError
    from trainers.methods import count_parameters, get_preset, preset_names
    from trainers.methods.lora.config import lora_parts, with_lora_scaling

    names = list(presets) if presets else preset_names()
    configs = {name: get_preset(name) for name in names}  # unknown names fail before the model loads
    if lora_scaling is not None:
        unscaled = [name for name, config in configs.items() if not lora_parts(config)]
        if presets and unscaled:
            raise InterpError(f"--lora-scaling {lora_scaling}: preset(s) {', '.join(unscaled)} have no LoRA part")
        configs = {name: with_lora_scaling(c, lora_scaling) if lora_parts(c) else c for name, c in configs.items()}
    encoder = load_encoder(base)
    rows = []
    for name, config in configs.items():
        lora = [{"r": p.r, "alpha": p.alpha, "scaling": p.scaling, "scale": p.scale} for p in lora_parts(config)]
        try:
            rows.append({"preset": name} | count_parameters(encoder, config).to_dict() | {"lora": lora})
        except InterpError as exc:
            if presets:
                raise InterpError(f"preset {name}: {exc}") from exc
            rows.append({"preset": name, "method": config.describe(), "skipped": str(exc), "lora": lora})
    where = f"{encoder.name}: {encoder.num_layers} layers, hidden {encoder.hidden_size}, {encoder.num_parameters:,} parameters"
    if as_json:
        typer.echo(json.dumps({"base": encoder.describe(), "presets": rows}, indent=2))
        return
    typer.echo(where)
    typer.echo(format_table(rows))


def format_table(rows: list[dict]) -> str:
    header = ("preset", "method", "trainable", "w/o biases", "biases", "formula check", "share of base", "LoRA scale")
    lines = [header]
    for row in rows:
        scale = ", ".join(f"{part['scale']:g}" for part in row["lora"]) or "-"
        if "skipped" in row:
            lines.append((row["preset"], row["method"], "-", "-", "-", f"skipped: {row['skipped']}", "-", scale))
            continue
        if row["formula"] is None:
            check = "- (no formula)"
        else:
            check = ("ok" if row["matches_formula"] else "DIFFERS") + f" ({row['formula']:,})"
        lines.append((
            row["preset"], row["method"], f"{row['trainable']:,}", f"{row['trainable_without_biases']:,}",
            f"{row['adapter_biases']:,}", check, f"{row['share_of_base']:.2%}", scale,
        ))
    counted = [line for line in lines if not line[5].startswith("skipped")]
    widths = [max(len(line[i]) for line in counted) for i in range(len(header))]
    right = {2, 3, 4, 6, 7}
    return "\n".join(
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    )
