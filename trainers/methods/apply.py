"""Apply a method config to an encoder, and tell a delta's parameters from the base's.

peft methods (LoRA, adapters, prefix, unions) go through `peft.get_peft_model`, which injects
the delta into `encoder.model` in place and returns a `PeftModel`; `full` returns the base
model itself with the chosen weights trainable, keeping a copy of the base weights so that
`disabled_layers` can swap them back in.
"""

from __future__ import annotations

import warnings
import weakref

import torch
from torch import nn

from trainers.encoders import FAMILIES, Encoder
from trainers.errors import InterpError
from trainers.methods.base import MethodConfig
from trainers.methods.full.config import FullConfig

# base model -> (its full config, a CPU copy of its base weights) for models trained with `full`
_FULL: weakref.WeakKeyDictionary[nn.Module, tuple[FullConfig, dict[str, torch.Tensor]]] = weakref.WeakKeyDictionary()


def apply_method(encoder: Encoder, config: MethodConfig) -> nn.Module:
    """The model to train: exactly the delta's parameters have requires_grad=True.

    Calling it with input_ids and attention_mask returns an output with `last_hidden_state`,
    so `encoder.embed(ids, mask, model=model)` works. The delta lives in `encoder.model`
    itself (as with peft), so apply a method to a freshly loaded encoder.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    from trainers.methods.peft_types import register_all

    if hasattr(encoder.model, "peft_config") or any(isinstance(m, BaseTunerLayer) for m in encoder.model.modules()):
        raise InterpError("the encoder already carries a PEFT delta; apply a method to a freshly loaded encoder")
    if encoder.model in _FULL:
        raise InterpError("the encoder is already set up for full fine-tuning; apply a method to a freshly loaded encoder")
    config.layer_indices(encoder.num_layers)  # InterpError for layers outside the encoder
    encoder.num_parameters  # noqa: B018 - cached now, so the Encoder keeps describing the base once the delta is in
    if isinstance(config, FullConfig):
        return _apply_full(encoder, config)
    import peft

    register_all()
    with warnings.catch_warnings():  # peft asks the model a question transformers 5 has deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(encoder.model, config.to_peft(encoder))


def _apply_full(encoder: Encoder, config: FullConfig) -> nn.Module:
    model = encoder.model
    on_meta = any(p.is_meta for p in model.parameters())
    base = {} if on_meta else {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    _FULL[model] = (config, base)
    chosen = full_delta_names(model, config)
    for name, p in model.named_parameters():
        p.requires_grad_(name in chosen)
    return model


def full_delta_names(model: nn.Module, config: FullConfig) -> set[str]:
    """Every parameter, or with `layers` only those inside the chosen encoder layers."""
    if config.layers is None:
        return {name for name, _ in model.named_parameters()}
    root = layers_path(model)
    depth = len(model.get_submodule(root))
    prefixes = tuple(f"{root}.{i}." for i in config.layer_indices(depth))
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


def transformers_model(model: nn.Module) -> nn.Module:
    """The underlying transformers model of a PeftModel (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def layers_path(model: nn.Module) -> str:
    """Where the encoder layers live, from the Encoder's family table (e.g. 'encoder.layer')."""
    base = transformers_model(model)
    family = FAMILIES.get(getattr(base.config, "model_type", None))
    if family is None:
        raise InterpError(f"model type {getattr(base.config, 'model_type', None)!r} is not a supported encoder family")
    return family.layers


def full_state(model: nn.Module) -> tuple[FullConfig, dict[str, torch.Tensor]] | None:
    return _FULL.get(transformers_model(model))


def delta_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The delta's parameters by structure (not by requires_grad), under `model`'s own names.

    peft models: every parameter of a peft tuner layer except its wrapped base layer.
    full: the base weights it trains. Anything else has no delta: InterpError.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    state = full_state(model)
    if state is not None:
        chosen = full_delta_names(model, state[0])
        return {name: p for name, p in model.named_parameters() if name in chosen}
    owners = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if not owners:
        raise InterpError("this model carries no delta: use apply_method or load_delta first")
    params = {}
    for name, p in model.named_parameters():
        for owner in owners:
            if name.startswith(owner + ".") and not name.startswith(owner + ".base_layer."):
                params[name] = p
    return params
