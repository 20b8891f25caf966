"""Capture the [CLS] row of every layer's attention weights, and never leave a hook behind.

    with capture_attention(encoder) as captured:
        encoder.embed(ids, mask, model=model)
    captured.cls[layer]    # (batch, heads, k_len): softmax weights from query position 0

The context manager switches the encoder to eager attention (the implementation that returns
the weights), registers a forward hook on each layer's self-attention module (asked of the
`Encoder`, never named here), and in `finally` removes every hook and restores the previous
attention implementation, whether the forward returned or raised.

Only the real key columns are kept. Prefix tuning puts its `l` prefix columns in front of the
keys, so eager weights are (batch, heads, q_len, l + k_len) and the real tokens are the last
k_len = q_len columns (this is self-attention: keys are the same tokens as queries). A prefix
run's [CLS] row therefore sums to 1 minus the mass it puts on the prefix; for every other
method it sums to 1 over the real tokens (padding columns get exactly 0 from the mask).

Distances between two such rows p and q (..., k_len), for attn-diff. Each row is read as a
distribution over its k_len token columns plus one "outside" cell holding 1 - sum(row), the
mass on a prefix (0 without one; padding columns hold 0 and count for nothing):

    total_variation(p, q)  TV = 1/2 sum |p - q| over tokens and the outside cell, in [0, 1]:
                           the attention mass that moved. It does not depend on the length
                           (appending zero-attention tokens leaves it unchanged), unlike the
                           mean over tokens of |p - q| (= 2 TV / k_len for rows without a prefix).
    jensen_shannon(p, q)   JS divergence in bits, in [0, 1], on the same distributions.
    entropy(p)             Shannon entropy in bits of the row renormalised over its tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from trainers.encoders import Encoder

DISTANCES = ("total_variation", "jensen_shannon")


@dataclass
class CapturedAttention:
    """What the hooks collected during the last forward pass(es); `clear()` between batches."""

    num_layers: int
    keep_full: bool = False
    cls: list[torch.Tensor | None] = field(default_factory=list)  # per layer: (batch, heads, k_len)
    full: list[torch.Tensor | None] = field(default_factory=list)  # per layer: (batch, heads, q_len, k_len)

    def __post_init__(self):
        self.clear()

    def clear(self) -> None:
        self.cls = [None] * self.num_layers
        self.full = [None] * self.num_layers

    def cls_rows(self) -> torch.Tensor:
        """(layers, batch, heads, k_len): the [CLS] rows of every layer of the last forward."""
        missing = [i for i, t in enumerate(self.cls) if t is None]
        if missing:
            raise RuntimeError(f"no attention was captured for layer(s) {missing}; run a forward pass inside the context")
        return torch.stack(self.cls)

    def full_weights(self) -> torch.Tensor:
        """(layers, batch, heads, q_len, k_len): every row, when captured with keep_full=True."""
        if not self.keep_full or any(t is None for t in self.full):
            raise RuntimeError("full attention was not captured: use capture_attention(..., full=True) and run a forward pass")
        return torch.stack(self.full)

    def hook(self, layer: int):
        def record(module, args, output) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(
                    f"layer {layer}'s self-attention returned no weights; attention capture needs eager attention"
                )
            q_len = weights.shape[-2]
            real = weights[..., -q_len:]  # (batch, heads, q_len, k_len): prefix columns, if any, dropped
            self.cls[layer] = real[:, :, 0, :].detach().float().clone()  # (batch, heads, k_len)
            if self.keep_full:
                self.full[layer] = real.detach().float().clone()

        return record


def attention_implementation(encoder: Encoder) -> str:
    return encoder.config._attn_implementation


@contextlib.contextmanager
def capture_attention(encoder: Encoder, *, full: bool = False) -> Iterator[CapturedAttention]:
    """Hooks on every layer's self-attention for the duration of the block; see the module docstring.

    `full=True` also keeps every query row (for one example's bertviz views; memory grows as
    batch x layers x heads x len^2, so use it with a batch of one).
    """
    captured = CapturedAttention(encoder.num_layers, keep_full=full)
    previous = attention_implementation(encoder)
    handles = []
    try:
        encoder.set_attention("eager")
        for layer in range(encoder.num_layers):
            module = encoder.module(layer, "self_attention")
            handles.append(module.register_forward_hook(captured.hook(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        encoder.set_attention(previous)


# -- distances between [CLS] rows --------------------------------------------------------------

def with_outside(rows: torch.Tensor) -> torch.Tensor:
    """(..., k_len) -> (..., k_len + 1): the row and its outside cell, 1 - sum (the prefix mass), clamped to [0, 1]."""
    outside = (1 - rows.sum(-1, keepdim=True)).clamp(0, 1)
    return torch.cat([rows, outside], -1)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(..., k_len) rows -> (...): half the L1 distance over the tokens and the outside cell, in [0, 1]."""
    return 0.5 * (with_outside(p) - with_outside(q)).abs().sum(-1)


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(..., k_len) rows -> (...): Jensen-Shannon divergence, base 2, over the tokens and the outside cell."""
    p, q = with_outside(p), with_outside(q)
    m = (p + q) / 2
    return ((_kl(p, m) + _kl(q, m)) / 2).clamp(0, 1)


def entropy(rows: torch.Tensor) -> torch.Tensor:
    """(..., k_len) -> (...): entropy in bits of the row renormalised over its tokens."""
    p = rows / rows.sum(-1, keepdim=True)
    return -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(-1)


def _kl(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * (torch.log2(p) - torch.log2(m)), torch.zeros_like(p)).sum(-1)
