"""Bottleneck adapters (the study's Eq. 2.1): Adapter-ATTN, Adapter-FFN and Adapter-H."""

from __future__ import annotations

from dataclasses import dataclass

from trainers.methods.base import MethodConfig, check_layers_spec, one_of, positive_int

# placement -> the Encoder roles whose outputs the adapter follows
PLACEMENTS = {"attn": ("attn_output",), "ffn": ("ffn_output",), "both": ("attn_output", "ffn_output")}
_NAMES = {"attn": "adapter-attn", "ffn": "adapter-ffn", "both": "adapter-h"}


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """h + ReLU(h W_down + b_down) W_up + b_up after a sub-layer's output projection, bottleneck `r`.

    `placement` 'attn' follows the attention output projection (Adapter-ATTN), 'ffn' the FFN
    output projection (Adapter-FFN), 'both' both of them (Adapter-H, Houlsby et al.); each
    sits before its sub-layer's residual LayerNorm. W_up and b_up start at zero, so an
    untrained adapter leaves the base model's outputs unchanged.
    """

    method = "adapter"
    size_field = "r"  # named by check_fits when the delta would outgrow the base
    r: int
    placement: str = "both"
    layers: str | None = None

    def __post_init__(self):
        positive_int("r", self.r)
        one_of("placement", self.placement, tuple(PLACEMENTS))
        check_layers_spec(self.layers)

    @property
    def name(self) -> str:
        return _NAMES[self.placement]

    def roles(self) -> tuple[str, ...]:
        return PLACEMENTS[self.placement]

    def formula(self, shape) -> int:
        # Table 4.2: 2rd per adapter (Adapter-ATTN/FFN 2rd, Adapter-H 4rd per layer)
        return 2 * self.r * shape.hidden * len(self.roles()) * len(self.layer_indices(shape.depth))

    def biases(self, hidden: int, depth: int) -> int:
        return (self.r + hidden) * len(self.roles()) * len(self.layer_indices(depth))

    def describe(self) -> str:
        return f"{self.name} r={self.r}" + self.layers_note()

    def to_peft(self, encoder):
        from trainers.methods.adapter.model import BottleneckConfig

        spec = encoder.spec
        return BottleneckConfig(
            r=self.r,
            target_modules=[getattr(spec, role) for role in self.roles()],
            layers_pattern=spec.layers,
            layers_to_transform=list(self.layer_indices(encoder.num_layers)),
            base_model_name_or_path=encoder.source,
        )
