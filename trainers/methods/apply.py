"""Apply a method config to an encoder, and find what a model's delta is.

The method's tuner (registry line -> `<method>/tuner.py`) builds the delta: peft methods go
through `peft.get_peft_model`, which injects it into `encoder.model` in place and returns a
`PeftModel`; full fine-tuning returns the base model itself with the chosen weights trainable.
Either way the transformers model remembers the config it was given (`applied_method`), so
everything later asks that method's tuner instead of guessing from the model's structure.
"""

from __future__ import annotations

from torch import nn

from trainers.encoders import FAMILIES, Encoder
from records.errors import InterpError
from trainers.methods.base import MethodConfig
from trainers.methods.registration import register
from trainers.methods.registry import tuner_for

APPLIED = "interp_method"  # attribute of the transformers model: the MethodConfig applied to it


def apply_method(encoder: Encoder, config: MethodConfig) -> nn.Module:
    """The model to train: exactly the delta's parameters have requires_grad=True.

    Calling it with input_ids and attention_mask returns an output with `last_hidden_state`,
    so `encoder.embed(ids, mask, model=model)` works. The delta lives in `encoder.model`
    itself (as with peft), so apply a method to a freshly loaded encoder.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    if applied_method(encoder.model) is not None:
        raise InterpError(f"the encoder already carries a delta ({applied_method(encoder.model).describe()}); "
                          "apply a method to a freshly loaded encoder")
    if hasattr(encoder.model, "peft_config") or any(isinstance(m, BaseTunerLayer) for m in encoder.model.modules()):
        raise InterpError("the encoder already carries a PEFT delta; apply a method to a freshly loaded encoder")
    config.layer_indices(encoder.num_layers)  # InterpError for layers outside the encoder
    encoder.num_parameters  # noqa: B018 - cached now, so the Encoder keeps describing the base once the delta is in
    register()
    model = tuner_for(config).apply(encoder, config)
    setattr(transformers_model(model), APPLIED, config)
    return model


def applied_method(model: nn.Module) -> MethodConfig | None:
    """The config `apply_method` applied to `model` (a PeftModel or the transformers model), or None."""
    return transformers_model(model).__dict__.get(APPLIED)


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


def tuner_of(model: nn.Module):
    """The tuner of the method applied to `model`; InterpError when it carries no delta."""
    config = applied_method(model)
    if config is None:
        raise InterpError("this model carries no delta: use apply_method or load_delta first")
    return tuner_for(config)


def delta_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The delta's parameters by structure (not by requires_grad), under `model`'s own names, as its method says."""
    return tuner_of(model).delta_parameters(model)
