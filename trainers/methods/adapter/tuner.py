"""Bottleneck adapters on a model: peft's machinery (peft_tuner.py), and what a BottleneckLayer holds."""

from __future__ import annotations

from torch import nn

from trainers.methods.adapter.layer import BottleneckLayer
from trainers.methods.adapter.model import BottleneckConfig, BottleneckModel
from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.protocol import LINEAR, DeltaMatrix, frobenius


class AdapterTuner(PeftTuner):
    peft_method = ("bottleneck", BottleneckConfig, BottleneckModel)

    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        """The linear part h W_down W_up of h + ReLU(h W_down + b_down) W_up + b_up, written as M h:
        M = (W_down W_up)^T = bottleneck_up.weight @ bottleneck_down.weight (d_out, d_in)."""
        if not isinstance(module, BottleneckLayer):
            return []
        found = []
        for adapter in module.bottleneck_down:
            down = module.bottleneck_down[adapter].weight.detach().double().cpu()  # (r, d) = W_down^T
            up = module.bottleneck_up[adapter].weight.detach().double().cpu()  # (d, r) = W_up^T
            found.append(DeltaMatrix(name, "adapter", "(W_down@W_up)^T", up @ down, min(down.shape),  # (d_out, d_in)
                                     {"W_down": frobenius(down), "W_up": frobenius(up)}, LINEAR, family="adapter"))
        return found

    def layer_outside_formula(self, module: nn.Module) -> int:
        """b_down and b_up: Table 4.2 counts only the two projection matrices."""
        if not isinstance(module, BottleneckLayer):
            return 0
        return sum(linear.bias.numel() for store in (module.bottleneck_down, module.bottleneck_up) for linear in store.values())


TUNER = AdapterTuner()
