"""LoRA on the attention query and value projections (the study's Eq. 2.3), under a recorded scaling rule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from records.errors import FieldError
from trainers.methods.base import MethodConfig, check_layers_spec, number_in, one_of, positive_int

# rule -> what multiplies the low-rank product h W_down W_up
SCALINGS = {
    "alpha": "alpha (the study's Eq. 2.3)",
    "alpha/r": "alpha / r (OpenDelta's and peft's LoRA, what the study's code ran)",
    "alpha/sqrt(r)": "alpha / sqrt(r) (rsLoRA, peft's use_rslora)",
}
DEFAULT_SCALING = "alpha"


@dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """h_out <- h_out + scale * h W_down W_up on query and value, rank `r`.

    `scaling` is the rule that turns `alpha` into `scale`, the factor actually applied:
    'alpha' (the study's Eq. 2.3 reads alpha as the factor itself; the default, so presets
    and checkpoints written before the rule was recorded keep their meaning), 'alpha/r'
    (OpenDelta's and peft's convention, which the study's code ran) or 'alpha/sqrt(r)'
    (rsLoRA). With alpha 4 and r 64 the first two differ 64-fold. `to_peft` picks peft's
    `lora_alpha` and `use_rslora` so that peft applies exactly `scale`.
    """

    method = "lora"
    size_field = "r"  # named by check_fits when the delta would outgrow the base
    r: int
    alpha: float = 4.0
    dropout: float = 0.0
    layers: str | None = None
    scaling: str = DEFAULT_SCALING

    def __post_init__(self):
        positive_int("r", self.r)
        object.__setattr__(self, "alpha", number_in("alpha", self.alpha, 0.0, low_open=True))
        object.__setattr__(self, "dropout", number_in("dropout", self.dropout, 0.0, 1.0))
        check_layers_spec(self.layers)
        one_of("scaling", self.scaling, tuple(SCALINGS))

    @property
    def lora_alpha(self) -> float:
        """peft's `lora_alpha`: peft applies lora_alpha / r (or / sqrt(r) under rsLoRA)."""
        return self.alpha * self.r if self.scaling == "alpha" else self.alpha

    @property
    def use_rslora(self) -> bool:
        return self.scaling == "alpha/sqrt(r)"

    @property
    def scale(self) -> float:
        """The factor multiplying the low-rank product, computed as peft computes it (so equal to the bit)."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"lora_alpha": self.lora_alpha, "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraConfig:
        """The inverse of `to_dict`; also reads dicts written before the rule was recorded.

        Those have `"scaling": <number>` (the factor, which was alpha) and `"lora_alpha"`: they
        load as rule 'alpha', and the number must agree. Recorded numbers that disagree with
        r, alpha and the rule are refused, naming the field.
        """
        data = dict(data)
        recorded = {key: data.pop(key) for key in ("lora_alpha", "scale") if key in data}
        old = data.get("scaling")
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            data["scaling"] = "alpha"
        config = super().from_dict(data)
        if isinstance(old, (int, float)) and not isinstance(old, bool) and not _close(old, config.scale):
            raise ValueError(
                f"`scaling` should be {config.scale!r} (alpha, for r={config.r}, alpha={config.alpha:g}): a number there "
                f"comes from before the rule was recorded, when the factor was alpha; got {old!r}."
            )
        for key, value in recorded.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not _close(value, getattr(config, key)):
                raise ValueError(
                    f"`{key}` should be {getattr(config, key)!r} for r={config.r}, alpha={config.alpha:g}, "
                    f"scaling={config.scaling!r}, got {value!r}."
                )
        return config

    def roles(self) -> tuple[str, ...]:
        return ("query", "value")

    def formula(self, shape) -> int:
        return 4 * self.r * shape.hidden * len(self.layer_indices(shape.depth))  # Table 4.2: 4rd per layer

    def describe(self) -> str:
        rule = "" if self.scaling == DEFAULT_SCALING else f" scaling={self.scaling}"
        return f"lora r={self.r} alpha={self.alpha:g}{rule}" + self.layers_note()

    def to_peft(self, encoder):
        """The plain `peft.LoraConfig` for `encoder` (targets and layer pattern come from the Encoder)."""
        import peft

        spec = encoder.spec
        layers = self.layer_indices(encoder.num_layers)
        return peft.LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            use_rslora=self.use_rslora,
            lora_dropout=self.dropout,
            target_modules=[spec.query, spec.value],
            layers_to_transform=None if self.layers is None else list(layers),
            layers_pattern=None if self.layers is None else spec.layers.rsplit(".", 1)[-1],
            bias="none",
            base_model_name_or_path=encoder.source,
        )


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def with_lora_scaling(config: MethodConfig, scaling: str) -> MethodConfig:
    """`config` with every LoRA part (itself, or a union's LoRA parts) under `scaling`.

    ValueError naming `scaling` when the rule is unknown or `config` has no LoRA part.
    """
    one_of("scaling", scaling, tuple(SCALINGS))
    if isinstance(config, LoraConfig):
        return dataclasses.replace(config, scaling=scaling)
    parts = getattr(config, "parts", None)
    if parts is None or not any(isinstance(part, LoraConfig) for part in parts):
        raise FieldError("scaling", f"`scaling` applies to LoRA only, and {config.describe()!r} has no LoRA part; got {scaling!r}.")
    return dataclasses.replace(config, parts=tuple(with_lora_scaling(p, scaling) if isinstance(p, LoraConfig) else p for p in parts))


def lora_parts(config: MethodConfig) -> tuple[LoraConfig, ...]:
    """The LoRA configs in `config`: itself, a union's LoRA parts, or none."""
    if isinstance(config, LoraConfig):
        return (config,)
    return tuple(part for part in getattr(config, "parts", ()) if isinstance(part, LoraConfig))
