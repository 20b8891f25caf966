"""The bottleneck adapter as a peft tuner layer wrapping a sub-layer's output projection."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """base(x) followed by h + ReLU(h W_down + b_down) W_up + b_up, one bottleneck per adapter name.

    Wraps the attention or FFN output projection (an nn.Linear), so the adapter acts before
    that sub-layer's dropout, residual sum and LayerNorm.
    """

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    mergeable = False  # the ReLU in between: no weight matrix equals it

    def __init__(self, base_layer: nn.Module, adapter_name: str, r: int, *, init_weights: bool = True, inference_mode: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, init_weights=init_weights, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, r: int, *, init_weights: bool = True, inference_mode: bool = False) -> None:
        """Add adapter `adapter_name`; `init_weights` False starts W_up, b_up random too (not the identity)."""
        weight = self.get_base_layer().weight  # (hidden, in_features)
        hidden = weight.shape[0]
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.bottleneck_down[adapter_name] = nn.Linear(hidden, r, bias=True, **factory)
        self.bottleneck_up[adapter_name] = nn.Linear(r, hidden, bias=True, **factory)
        if init_weights:
            nn.init.zeros_(self.bottleneck_up[adapter_name].weight)  # untrained: exactly the base outputs
            nn.init.zeros_(self.bottleneck_up[adapter_name].bias)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        h = self.base_layer(x, *args, **kwargs)  # (batch, seq, hidden)
        if self.disable_adapters:
            return h
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down, up = self.bottleneck_down[name], self.bottleneck_up[name]
            h = h + up(torch.relu(down(h.to(down.weight.dtype)))).to(h.dtype)  # (batch, seq, r) inside
        return h

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise NotImplementedError("a bottleneck adapter is non-linear and cannot be merged into the base weights")

    def unmerge(self) -> None:
        raise NotImplementedError("a bottleneck adapter is never merged into the base weights")

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()
