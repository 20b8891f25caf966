"""Prefix tuning as a registered peft method: the peft-facing config and the tuner."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.tuners.tuners_utils import BaseTuner

from trainers.methods.peft_types import add_peft_type
from trainers.methods.targets import LayerTargetsConfig, matches_layer_target
from trainers.methods.prefix.layer import CHILD, PrefixLayer, unroute_attention


@dataclass
class KvPrefixConfig(LayerTargetsConfig):
    """peft config of `length` prefix keys and values in each targeted self-attention module."""

    length: int = 10
    init: str = "vocab"  # "vocab": the base model's keys/values of random tokens; "normal": N(0, 0.02^2)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type("KV_PREFIX")
        if isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1:
            raise ValueError(f"`length` should be a positive integer, got {self.length!r}.")
        if self.init not in ("vocab", "normal"):
            raise ValueError(f"`init` should be 'vocab' or 'normal', got {self.init!r}.")


class KvPrefixModel(BaseTuner):
    """Attaches a `PrefixLayer` to each targeted self-attention module and routes its attention."""

    prefix: str = "kv_prefix_"
    tuner_layer_cls = PrefixLayer
    target_module_mapping: dict = {}

    @staticmethod
    def _check_target_module_exists(peft_config: KvPrefixConfig, key: str) -> bool:
        return matches_layer_target(peft_config, key)

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs) -> None:
        weight = next(target.parameters())
        factory = {"device": weight.device, "dtype": weight.dtype, "inference_mode": peft_config.inference_mode}
        layer = getattr(target, CHILD, None)
        if isinstance(layer, PrefixLayer):
            layer.update_layer(adapter_name, peft_config.length, **factory)
            return
        config = self.model.config
        layer = PrefixLayer(adapter_name, peft_config.length, config.num_attention_heads, config.hidden_size, **factory)
        if adapter_name not in self.active_adapters:
            layer.requires_grad_(False)
        layer.attach(target)

    def _post_injection_hook(self, model, config: KvPrefixConfig, adapter_name: str) -> None:
        if config.init == "vocab" and not config.inference_mode:
            init_from_vocabulary(model, adapter_name, random_token_ids(model.config, config.length))

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        if merge:
            raise NotImplementedError("prefix keys and values cannot be merged into the base weights")
        detach_prefixes(self.model)
        if hasattr(self.model, "peft_config"):
            del self.model.peft_config
        return self.model


def detach_prefixes(model: torch.nn.Module) -> None:
    """Remove every PrefixLayer and give the self-attention modules their config back."""
    for module in list(model.modules()):
        layer = getattr(module, CHILD, None)
        if isinstance(layer, PrefixLayer):
            delattr(module, CHILD)
            layer.__dict__["_attention"] = None
            unroute_attention(module)


def random_token_ids(config, length: int) -> torch.Tensor:
    """`length` ids drawn uniformly from the vocabulary, avoiding the config's special ids."""
    special = {getattr(config, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id")}
    candidates = torch.tensor([i for i in range(config.vocab_size) if i not in special])
    return candidates[torch.randint(len(candidates), (length,))]


@torch.no_grad()
def init_from_vocabulary(model: torch.nn.Module, adapter_name: str, token_ids: torch.Tensor, chunk: int = 128) -> None:
    """Set each layer's P_k, P_v to the base model's keys and values for `token_ids` (length,).

    The tokens run through the model with every prefix switched off, in chunks of at most
    `chunk` tokens (so long prefixes stay within the position table). Skipped on the meta device.
    """
    layers = [m for m in model.modules() if isinstance(m, PrefixLayer) and adapter_name in m.kv_prefix_key]
    if not layers or layers[0].kv_prefix_key[adapter_name].is_meta:
        return
    length, device = len(token_ids), layers[0].kv_prefix_key[adapter_name].device
    for layer in layers:
        layer.capture = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, length, chunk):
            ids = token_ids[start : start + chunk].unsqueeze(0).to(device)  # (1, chunk)
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        for layer in layers:
            for store, index in ((layer.kv_prefix_key, 0), (layer.kv_prefix_value, 1)):
                states = torch.cat([pair[index] for pair in layer.capture], dim=2)  # (1, heads, length, head_dim)
                store[adapter_name].copy_(states[0].transpose(0, 1).reshape(length, -1))  # (length, hidden)
            layer.record_init(adapter_name)
    finally:
        for layer in layers:
            layer.capture = None
        model.train(was_training)
