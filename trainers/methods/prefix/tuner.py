"""Prefix keys and values on a model: peft's machinery (peft_tuner.py), and what a PrefixLayer holds."""

from __future__ import annotations

from torch import nn

from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.prefix.layer import PrefixLayer
from trainers.methods.prefix.model import KvPrefixConfig, KvPrefixModel
from trainers.methods.protocol import DeltaMatrix, frobenius


class PrefixTuner(PeftTuner):
    peft_method = ("kv_prefix", KvPrefixConfig, KvPrefixModel)

    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        """P_k - P_k0 and P_v - P_v0 (length, d), under the self-attention module that holds the layer;
        P_k, P_v themselves (`raw`) when the checkpoint kept no initial values."""
        if not isinstance(module, PrefixLayer):
            return []
        attention = name.rsplit(".", 1)[0]
        found = []
        for adapter in module.kv_prefix_key:
            initial = module.initial(adapter)
            for i, (kind, label, side, store) in enumerate((("prefix_key", "P_k", "key", module.kv_prefix_key),
                                                             ("prefix_value", "P_v", "value", module.kv_prefix_value))):
                p = store[adapter].detach().double().cpu()  # (length, d)
                factors = {"P": frobenius(p)}
                if initial is None:
                    label += " (raw: no initial values stored)"
                else:
                    p0 = initial[i].detach().double().cpu()
                    p, label, factors["P_init"] = p - p0, f"{label}-{label}0", frobenius(p0)
                found.append(DeltaMatrix(attention, kind, label, p, min(p.shape), factors, {"left": "position", "right": side},
                                         family=None, raw=initial is None))
        return found


TUNER = PrefixTuner()
