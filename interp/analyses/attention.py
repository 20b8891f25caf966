"""Capture the [CLS] row of every layer's attention weights at the cost of inference, and never leave a hook behind.

    with capture_attention(encoder) as captured:
        encoder.embed(ids, mask, model=model)
    captured.cls[layer]    # (batch, heads, k_len): softmax weights from query position 0

The forward pass runs on SDPA, which never materialises a (heads, L, L) matrix. For the
duration of the block the context manager puts a wrapper in front of transformers' "sdpa"
attention function (the entry of `ALL_ATTENTION_FUNCTIONS` that every BERT/RoBERTa self-
attention module, and the prefix method's routing, looks up on each call). For the encoder's
own self-attention modules (asked of the `Encoder`, never named here) the wrapper receives
exactly what SDPA receives: the queries and keys as the module's projections made them (so
LoRA on query/key, (IA)3's key scaling, full fine-tuning and the hidden states that bottleneck
adapters changed below are all in them), the prefix keys already in front, and the mask
already extended over them. From these it computes the first token's row,

    softmax(q_0 K^T * scaling + mask)      # (batch, heads, 1, l + k_len), in fp32

then hands everything to SDPA unchanged: the model's outputs are those of plain inference.
Every other module (another model's) passes straight through. In `finally` the wrapper is
removed and the model's previous attention implementation restored, whether the forward
returned or raised. With `full=True` every query row is computed the same way (for the one
example the bertviz pages draw; memory batch x layers x heads x len^2).

This equals what eager attention returns (`capture_attention_eager`, the former capture,
kept as the reference for the tests and benchmarks/capture.py) within float rounding.

Only the real key columns are kept. Prefix tuning puts its `l` prefix columns in front of the
keys, so a full row is (batch, heads, q_len, l + k_len) and the real tokens are the last
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
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from trainers.encoders import Encoder

DISTANCES = ("total_variation", "jensen_shannon")
_ABSENT = object()


@dataclass
class CapturedAttention:
    """What the capture collected during the last forward pass(es); `clear()` between batches."""

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

    def record(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
               scaling: float | None) -> None:
        """Softmax rows of one layer from what its attention function receives.

        query (batch, heads, q_len, head_dim); key (batch, heads, l + k_len, head_dim), prefix keys
        (if any) in front; mask None (attend everywhere), bool (True = attend) or additive float,
        (batch, 1 or heads, q_len or 1, l + k_len). Rows: query 0 only, or every query when keep_full.
        The weights are those before attention dropout, which the analyses' eval mode switches off.
        They are float32 whatever the forward pass's precision: under bf16 autocast the projections
        hand over bfloat16 queries and keys, and the scores, softmax and rows (full ones included)
        are computed from them in float32 with autocast switched off (autocast would run the full
        rows' matmul and a bool-masked softmax in bfloat16).
        """
        with torch.autocast(query.device.type, enabled=False):  # fp32 rows, even inside a bf16 forward pass
            self._record(layer, query, key, mask, scaling)

    def _record(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                scaling: float | None) -> None:
        q_len = query.shape[2]
        rows = q_len if self.keep_full else 1
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        if self.keep_full:
            scores = torch.matmul(query.float(), key.float().transpose(2, 3))  # (batch, heads, q_len, l + k_len)
        else:  # one row: a product and a sum, cheaper than a batched matmul against the strided keys
            scores = (key.float() * query[:, :, :1].float()).sum(-1).unsqueeze(2)  # (batch, heads, 1, l + k_len)
        scores = scores * scale
        if mask is not None:
            mask = mask[:, :, :rows]  # a (.., 1, ..) mask broadcasts over the rows
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # as eager's additive mask
            else:
                scores = scores + mask.float()
        real = torch.softmax(scores, dim=-1)[..., -q_len:]  # (batch, heads, rows, k_len): prefix columns dropped
        self.cls[layer] = real[:, :, 0].detach().clone()  # (batch, heads, k_len)
        if self.keep_full:
            self.full[layer] = real.detach()


def attention_implementation(encoder: Encoder) -> str:
    return encoder.config._attn_implementation


@contextlib.contextmanager
def capture_attention(encoder: Encoder, *, full: bool = False) -> Iterator[CapturedAttention]:
    """SDPA forward passes that also record each layer's [CLS] row for the block; see the module docstring.

    `full=True` also keeps every query row (for one example's bertviz views; memory grows as
    batch x layers x heads x len^2, so use it with a batch of one).
    """
    captured = CapturedAttention(encoder.num_layers, keep_full=full)
    layers = {encoder.module(i, "self_attention"): i for i in range(encoder.num_layers)}
    previous = attention_implementation(encoder)
    # GeneralInterface keeps per-instance overrides in `_local_mapping`, in front of the class-wide
    # registry: the wrapper goes there, and whatever was there before (usually nothing) comes back.
    overrides = ALL_ATTENTION_FUNCTIONS._local_mapping
    before = overrides.get("sdpa", _ABSENT)
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def sdpa_recording(module: nn.Module, query, key, value, attention_mask, *args, **kwargs):
        layer = layers.get(module)
        if layer is not None:
            captured.record(layer, query, key, attention_mask, kwargs.get("scaling"))
        return sdpa(module, query, key, value, attention_mask, *args, **kwargs)

    try:
        encoder.set_attention("sdpa")
        overrides["sdpa"] = sdpa_recording
        yield captured
    finally:
        if before is _ABSENT:
            overrides.pop("sdpa", None)
        else:
            overrides["sdpa"] = before
        encoder.set_attention(previous)


@contextlib.contextmanager
def capture_attention_eager(encoder: Encoder, *, full: bool = False) -> Iterator[CapturedAttention]:
    """The former capture, kept as the reference `capture_attention` is checked against (tests, benchmarks/capture.py).

    Switches the encoder to eager attention, which materialises every (batch, heads, q_len,
    l + k_len) weight matrix and returns it from each self-attention module, where a forward
    hook reads it; in `finally` the hooks go and the previous implementation comes back.
    """
    captured = CapturedAttention(encoder.num_layers, keep_full=full)
    previous = attention_implementation(encoder)
    handles = []

    def hook(layer: int):
        def read(module, args, output) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(f"layer {layer}'s self-attention returned no weights; the eager capture needs eager attention")
            real = weights[..., -weights.shape[-2]:]  # (batch, heads, q_len, k_len): prefix columns, if any, dropped
            captured.cls[layer] = real[:, :, 0, :].detach().float().clone()  # (batch, heads, k_len)
            if full:
                captured.full[layer] = real.detach().float().clone()

        return read

    try:
        encoder.set_attention("eager")
        for layer in range(encoder.num_layers):
            handles.append(encoder.module(layer, "self_attention").register_forward_hook(hook(layer)))
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
