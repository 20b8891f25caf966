"""LoRA is peft's own method: built, saved and loaded by peft; its delta is scale * B @ A per layer."""

from __future__ import annotations

from torch import nn

from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.protocol import LINEAR, DeltaMatrix, frobenius


class LoraTuner(PeftTuner):
    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        """dW = scale * B @ A (d_out, d_in), what merging adds to the weight. peft's lora_A (r, d_in) and
        lora_B (d_out, r) act on a row vector as x A^T B^T; `scale` is the factor the module applies."""
        from peft.tuners.lora import LoraLayer

        if not isinstance(module, LoraLayer):
            return []
        found = []
        for adapter in module.lora_A:
            a = module.lora_A[adapter].weight.detach().double().cpu()  # (r, d_in)
            b = module.lora_B[adapter].weight.detach().double().cpu()  # (d_out, r)
            scale = float(module.scaling[adapter])
            found.append(DeltaMatrix(name, "lora", "scale*B@A", scale * b @ a, min(a.shape[0], b.shape[0], a.shape[1]),
                                     {"A": frobenius(a), "B": frobenius(b), "scale": scale}, LINEAR, family="update"))
        return found


TUNER = LoraTuner()
