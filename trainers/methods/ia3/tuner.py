"""(IA)3 is peft's own method: built, saved and loaded by peft; anatomy sees each vector l as diag(l) - I."""

from __future__ import annotations

import torch
from torch import nn

from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.protocol import DeltaMatrix, frobenius


class Ia3Tuner(PeftTuner):
    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        """A scaling vector l multiplies features one by one: the linear map diag(l), whose change
        from the base (l = 1) is diag(l) - I. That (n, n) diagonal is what anatomy analyses: its
        Frobenius norm is ||l - 1||, its singular values the sorted |l_i - 1|, and its effective
        rank says over how many features the rescaling spreads. Both sides index the same space:
        the module's output (key, value) or its input (the FFN's inner activations). Its family is
        None: anatomy compares it with no other run's matrix (a diagonal has no subspace to share)."""
        from peft.tuners.ia3 import IA3Layer

        if not isinstance(module, IA3Layer):
            return []
        side = "input" if module.is_feedforward else "output"
        found = []
        for adapter in module.ia3_l:
            vector = module.ia3_l[adapter].detach().double().cpu().flatten()
            change = vector - 1.0
            found.append(DeltaMatrix(name, "ia3", "diag(l)-I", torch.diag(change), vector.numel(),
                                     {"l": frobenius(vector), "l-1": frobenius(change)}, {"left": side, "right": side},
                                     family=None))
        return found


TUNER = Ia3Tuner()
