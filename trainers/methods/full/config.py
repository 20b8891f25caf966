"""Full fine-tuning: every base weight trains (or every weight of the chosen layers)."""

from __future__ import annotations

from dataclasses import dataclass

from records.errors import FieldError, InterpError
from trainers.methods.base import ROLE_WORDS, MethodConfig, check_layers_spec


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """All base weights trainable. With `layers`, only those encoder layers train (embeddings freeze)."""

    method = "full"
    layers: str | None = None

    def __post_init__(self):
        check_layers_spec(self.layers)

    def roles(self) -> tuple[str, ...]:
        return tuple(ROLE_WORDS)

    def check_fits(self, shape) -> None:
        try:  # full fine-tuning trains the base's own weights: only its layers are checked
            self.layer_indices(shape.depth)
        except InterpError as exc:
            raise FieldError("layers", str(exc)) from None

    def formula(self, shape) -> None:
        return None  # Table 4.2 has no formula for full fine-tuning: it trains the base model itself

    def describe(self) -> str:
        return "full fine-tuning" + self.layers_note()
