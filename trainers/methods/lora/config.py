"""LoRA on the attention query and value projections (the study's Eq. 2.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainers.methods.base import MethodConfig, check_layers_spec, number_in, positive_int


@dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """h_out <- h_out + alpha * h W_down W_up on query and value, rank `r`.

    The study's `alpha` multiplies the low-rank product directly. peft scales by
    `lora_alpha / r`, so `lora_alpha = alpha * r` gives the same update; `scaling` is the
    factor actually applied, recorded in checkpoints' manifests.
    """

    method = "lora"
    r: int
    alpha: float = 4.0
    dropout: float = 0.0
    layers: str | None = None

    def __post_init__(self):
        positive_int("r", self.r)
        object.__setattr__(self, "alpha", number_in("alpha", self.alpha, 0.0, low_open=True))
        object.__setattr__(self, "dropout", number_in("dropout", self.dropout, 0.0, 1.0))
        check_layers_spec(self.layers)

    @property
    def lora_alpha(self) -> float:
        return self.alpha * self.r

    @property
    def scaling(self) -> float:
        """The factor peft multiplies the low-rank product by: lora_alpha / r == alpha."""
        return self.lora_alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"lora_alpha": self.lora_alpha, "scaling": self.scaling}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraConfig:
        derived = {k: data[k] for k in ("lora_alpha", "scaling") if k in data}
        config = super().from_dict({k: v for k, v in data.items() if k not in derived})
        for key, value in derived.items():
            if abs(getattr(config, key) - value) > 1e-9:
                raise ValueError(f"`{key}` should be {getattr(config, key)} for r={config.r}, alpha={config.alpha}, got {value!r}.")
        return config

    def roles(self) -> tuple[str, ...]:
        return ("query", "value")

    def formula(self, hidden: int, depth: int) -> int:
        return 4 * self.r * hidden * len(self.layer_indices(depth))  # Table 4.2: 4rd per layer

    def describe(self) -> str:
        return f"lora r={self.r} alpha={self.alpha:g}" + self.layers_note()

    def to_peft(self, encoder):
        """The plain `peft.LoraConfig` for `encoder` (targets and layer pattern come from the Encoder)."""
        import peft

        spec = encoder.spec
        layers = self.layer_indices(encoder.num_layers)
        return peft.LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.dropout,
            target_modules=[spec.query, spec.value],
            layers_to_transform=None if self.layers is None else list(layers),
            layers_pattern=None if self.layers is None else spec.layers.rsplit(".", 1)[-1],
            bias="none",
            base_model_name_or_path=encoder.source,
        )
