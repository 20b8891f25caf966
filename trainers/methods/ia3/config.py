"""(IA)3 (Liu et al. 2022): learned vectors rescaling the keys, the values and the FFN's inner activations."""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainers.methods.base import MethodConfig, check_layers_spec


@dataclass(frozen=True)
class Ia3Config(MethodConfig):
    """k <- l_k * k, v <- l_v * v, and the FFN's inner activations a <- l_ff * a, in each chosen layer.

    peft's own IA3: the vectors start at 1 (the base unchanged). Key and value are scaled at
    their projections' outputs (width d); the FFN's is peft's "feedforward module": the FFN
    output projection (the Encoder's `ffn_output`, W2 in h = W2 a) whose input a =
    act(W1 x), the d_ff-wide inner activations, is scaled, as in the paper. Count: 2d + d_ff
    per layer. Saved in peft's own format: `peft.PeftModel.from_pretrained` loads it alone.
    """

    method = "ia3"
    layers: str | None = None

    def __post_init__(self):
        check_layers_spec(self.layers)

    def roles(self) -> tuple[str, ...]:
        return ("key", "value", "ffn_output")

    def formula(self, shape) -> int:
        return (2 * shape.hidden + shape.ffn) * len(self.layer_indices(shape.depth))  # l_k, l_v (d each), l_ff (d_ff)

    def describe(self) -> str:
        return "(IA)3" + self.layers_note()

    def to_peft(self, encoder):
        """The plain `peft.IA3Config` for `encoder`. Targets are exact regexes over module paths:
        peft's suffix matching would take the attention output 'attention.output.dense' for the
        FFN's 'output.dense', and a regex carries the layer restriction with it."""
        import peft

        spec = encoder.spec
        layers = "|".join(str(i) for i in self.layer_indices(encoder.num_layers))

        def paths(*modules: str) -> str:
            names = "|".join(re.escape(m) for m in modules)
            return rf"(?:.*\.)?{re.escape(spec.layers)}\.(?:{layers})\.(?:{names})"

        return peft.IA3Config(
            target_modules=paths(spec.key, spec.value, spec.ffn_output),
            feedforward_modules=paths(spec.ffn_output),
            base_model_name_or_path=encoder.source,
        )
