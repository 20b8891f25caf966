"""Prefix keys and values, spliced into attention without touching inputs or position ids.

peft's own prefix tuning hands the prefix over as `past_key_values`, which shifts BERT/RoBERTa
position ids by the prefix length and cannot skip layers. Here the prefix enters where keys
and values meet, through transformers' attention interface:

- a `PrefixLayer` (a peft tuner layer holding P_k and P_v) is attached as a child of each
  chosen self-attention module, whose own forward, module path and class stay unchanged
  (so `Encoder.module(layer, "query")` and transformers' attention capture still work);
- that module's `config` is replaced by a view that answers `_attn_implementation` with
  PREFIX_ATTENTION, so its forward calls `prefix_attention`;
- `prefix_attention` concatenates the prefix in front of the keys and values, extends the
  mask to cover it, and calls the implementation the model is set to: "sdpa" (the fast path)
  or the model family's own eager function (which returns the attention weights).

`Encoder.set_attention("eager" | "sdpa")` keeps working: the view reads the model's live
setting. Masks stay the model's own; only the prefix columns are added in front.
"""

from __future__ import annotations

import sys

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from trainers.methods.state import registered_name

PREFIX_ATTENTION = "interp_kv_prefix"
CHILD = "prefix"  # attribute of the self-attention module that holds the PrefixLayer
INIT_STORES = ("kv_prefix_init_key", "kv_prefix_init_value")  # the initial P_k, P_v (buffers)


class PrefixLayer(nn.Module, BaseTunerLayer):
    """P_k and P_v, each (length, hidden), per adapter name; `states()` gives them per head.

    Their initial values are kept beside them as buffers (`kv_prefix_init_key`,
    `kv_prefix_init_value`: never trained, saved in the delta file), so what training changed,
    P - P_init, can be read from a checkpoint. A checkpoint saved before they were kept has
    none: loading it leaves them NaN, which `initial()` reports as unknown.
    """

    adapter_layer_names = ("kv_prefix_key", "kv_prefix_value")
    other_param_names = INIT_STORES
    optional_state = INIT_STORES  # older checkpoints lack them (delta.load_delta accepts that)

    mergeable = False  # keys and values in front of the base's own: no weight to fold them into

    def __init__(self, adapter_name: str, length: int, num_heads: int, hidden: int, *, device=None, dtype=None, inference_mode=False):
        super().__init__()
        self.num_heads, self.hidden = num_heads, hidden
        self.in_features = self.out_features = hidden  # peft's layers expose both; attention maps hidden to hidden
        self.__dict__["_attention"] = None  # the self-attention module it sits in (set by attach; not a child module)
        self.kv_prefix_key = nn.ParameterDict()
        self.kv_prefix_value = nn.ParameterDict()
        self.kv_prefix_init_key = BufferDict(persistent=True)
        self.kv_prefix_init_value = BufferDict(persistent=True)
        self._disable_adapters = False
        self.merged_adapters = []
        self._active_adapter = adapter_name
        self.capture: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # set while initialising from real tokens
        self.update_layer(adapter_name, length, device=device, dtype=dtype, inference_mode=inference_mode)

    def update_layer(self, adapter_name: str, length: int, *, device=None, dtype=None, inference_mode=False) -> None:
        for store in (self.kv_prefix_key, self.kv_prefix_value):
            store[adapter_name] = nn.Parameter(torch.randn(length, self.hidden, device=device, dtype=dtype) * 0.02)
        self.record_init(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    @torch.no_grad()
    def record_init(self, adapter_name: str) -> None:
        """Keep the current P_k, P_v of `adapter_name` as its initial values."""
        self.kv_prefix_init_key[adapter_name] = self.kv_prefix_key[adapter_name].detach().clone()
        self.kv_prefix_init_value[adapter_name] = self.kv_prefix_value[adapter_name].detach().clone()

    def initial(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(P_k, P_v) as they were before training, each (length, hidden); None when the checkpoint did not keep them."""
        pair = (self.kv_prefix_init_key[adapter_name], self.kv_prefix_init_value[adapter_name])
        return None if any(torch.isnan(p).any() for p in pair) else pair

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs before the buffers' own loading: what the checkpoint has overwrites the NaN. Only the adapters
        # this state dict loads are touched (loading a second adapter leaves the first one's initial values).
        # The stores are read under their registered names (a union registers them under its prefix).
        trained = [registered_name(self, name) for name in self.adapter_layer_names]
        for name in INIT_STORES:
            store, saved = getattr(self, name), registered_name(self, name)
            for adapter in list(store):
                loads = any(f"{prefix}{kept}.{adapter}" in state_dict for kept in trained)
                if loads and f"{prefix}{saved}.{adapter}" not in state_dict:
                    store[adapter] = torch.full_like(store[adapter], float("nan"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def states(self, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(prefix keys, prefix values), each (batch, heads, length, head_dim); None when switched off."""
        names = [n for n in self.active_adapters if n in self.kv_prefix_key]
        if self.disable_adapters or self.capture is not None or not names:
            return None
        out = []
        for store in (self.kv_prefix_key, self.kv_prefix_value):
            prefix = torch.cat([store[n] for n in names])  # (length, hidden)
            prefix = prefix.view(1, prefix.shape[0], self.num_heads, -1).transpose(1, 2)  # (1, heads, length, head_dim)
            out.append(prefix.expand(batch, -1, -1, -1))
        return out[0], out[1]

    def attach(self, attention: nn.Module) -> None:
        """Sit in `attention` (as its child CHILD) and route its attention through the prefix."""
        attention.add_module(CHILD, self)
        self.__dict__["_attention"] = attention
        route_attention(attention)

    def get_base_layer(self) -> nn.Module:
        """The self-attention module the prefix sits in (peft's other layers wrap theirs; this one is a child of it).

        Without it peft's `get_base_layer()` would return the layer itself, and `.weight` would recurse forever."""
        attention = self.__dict__["_attention"]
        if attention is None:
            raise AttributeError("this PrefixLayer is not attached to a self-attention module")
        return attention

    def _get_base_layer_device_and_dtype(self, base_layer):
        weight = next(base_layer.parameters(), None)  # a self-attention module has no `weight` of its own
        return (None, None) if weight is None else (weight.device, weight.dtype)

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise NotImplementedError("prefix keys and values cannot be merged into the base weights")

    def unmerge(self) -> None:
        raise NotImplementedError("prefix keys and values are never merged into the base weights")

    def __repr__(self) -> str:
        return "kv_prefix." + super().__repr__()


class PrefixRoutedConfig:
    """The model's config as a prefixed self-attention module sees it.

    Everything reads through to the shared config, except `_attn_implementation`, which names
    PREFIX_ATTENTION; `routed_implementation` is the model's live setting ("sdpa" / "eager").
    """

    def __init__(self, config):
        self.__dict__["_config"] = config

    @property
    def _attn_implementation(self) -> str:
        return PREFIX_ATTENTION

    @property
    def routed_implementation(self) -> str:
        return self.__dict__["_config"]._attn_implementation

    def __getattr__(self, name):
        config = self.__dict__.get("_config")
        if config is None:  # during copy/unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(config, name)

    def __setattr__(self, name, value):
        setattr(self.__dict__["_config"], name, value)


def route_attention(module: nn.Module) -> None:
    if not isinstance(module.config, PrefixRoutedConfig):
        module.config = PrefixRoutedConfig(module.config)


def unroute_attention(module: nn.Module) -> None:
    if isinstance(module.config, PrefixRoutedConfig):
        module.config = module.config.__dict__["_config"]


def _extend_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Let every query see the `length` prefix positions, in front of the model's own mask.

    Transformers passes None (sdpa, no padding), a bool mask (sdpa, True = attend) or an
    additive float mask (eager, 0 = attend), each (batch, 1 or heads, q_len, k_len).
    """
    if mask is None:
        return None
    shape = (*mask.shape[:-1], length)
    prefix = torch.ones(shape, dtype=torch.bool, device=mask.device) if mask.dtype == torch.bool else mask.new_zeros(shape)
    return torch.cat([prefix, mask], dim=-1)  # (batch, 1, q_len, length + k_len)


def _eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Plain softmax attention, for families whose modeling file has no eager function."""
    weights = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.dropout(nn.functional.softmax(weights, dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _inner_attention(module: nn.Module):
    implementation = module.config.routed_implementation
    if implementation == "eager":
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward", _eager)
    if implementation == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    raise NotImplementedError(f"prefix tuning runs on 'sdpa' or 'eager' attention, not {implementation!r}")


def prefix_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """query (batch, heads, q_len, head_dim); key, value (batch, heads, k_len, head_dim)."""
    layer = getattr(module, CHILD, None)
    if layer is not None and layer.capture is not None:
        layer.capture.append((key.detach(), value.detach()))
    states = None if layer is None else layer.states(query.shape[0])
    if states is not None:
        prefix_key, prefix_value = states
        key = torch.cat([prefix_key.to(key.dtype), key], dim=2)  # (batch, heads, length + k_len, head_dim)
        value = torch.cat([prefix_value.to(value.dtype), value], dim=2)
        attention_mask = _extend_mask(attention_mask, prefix_key.shape[2])
    return _inner_attention(module)(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
