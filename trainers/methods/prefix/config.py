"""Prefix tuning (the study's Eq. 2.2): trainable keys and values prepended in every layer."""

from __future__ import annotations

from dataclasses import dataclass

from trainers.methods.base import MethodConfig, check_layers_spec, one_of, positive_int

INITS = ("vocab", "normal")


@dataclass(frozen=True)
class PrefixConfig(MethodConfig):
    """ATTN(Q, concat(P_k, K), concat(P_v, V)) with P_k, P_v of shape (length, hidden) per layer.

    No reparameterisation MLP: the 2 * length * hidden parameters per layer are trained
    directly. `init` 'vocab' starts P_k, P_v at the base model's keys and values for `length`
    random vocabulary tokens (Li & Liang's "real words"; the study initialised from random
    words); 'normal' draws them from N(0, 0.02^2). The real tokens keep their position ids,
    and padding stays masked.
    """

    method = "prefix"
    size_field = "length"  # named by check_fits when the delta would outgrow the base
    length: int
    init: str = "vocab"
    layers: str | None = None

    def __post_init__(self):
        positive_int("length", self.length)
        one_of("init", self.init, INITS)
        check_layers_spec(self.layers)

    def roles(self) -> tuple[str, ...]:
        return ("self_attention",)

    def formula(self, shape) -> int:
        return 2 * self.length * shape.hidden * len(self.layer_indices(shape.depth))  # Table 4.2: 2ld per layer

    def describe(self) -> str:
        return f"prefix l={self.length}" + self.layers_note()

    def to_peft(self, encoder):
        from trainers.methods.prefix.model import KvPrefixConfig

        spec = encoder.spec
        return KvPrefixConfig(
            length=self.length,
            init=self.init,
            target_modules=[spec.self_attention],
            layers_pattern=spec.layers,
            layers_to_transform=list(self.layer_indices(encoder.num_layers)),
            base_model_name_or_path=encoder.source,
        )
