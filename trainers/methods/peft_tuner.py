"""What every method built on peft shares: build, save, load, parameters, switching off per layer.

A peft method's delta is made of peft tuner layers (`BaseTunerLayer`) injected into the
transformers model; the file format is peft's own (adapter_config.json +
adapter_model.safetensors). A method's tuner subclasses `PeftTuner` and describes only its own
tuner layers: which matrices are its delta (`layer_matrices`) and which of its parameters the
study's Table 4.2 leaves out (`layer_outside_formula`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from records.errors import InterpError
from trainers.methods.protocol import DeltaMatrix
from trainers.methods.state import check_keys, registered_name

PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"


class PeftTuner:
    weights_file = PEFT_WEIGHTS
    files = frozenset({PEFT_WEIGHTS, PEFT_CONFIG, "README.md"})  # what `save` writes
    peft_method: tuple[str, type, type] | None = None

    def apply(self, encoder, config) -> nn.Module:
        import peft

        with warnings.catch_warnings():  # peft asks the model a question transformers 5 has deprecated
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return peft.get_peft_model(encoder.model, config.to_peft(encoder))

    def save(self, model: nn.Module, directory: Path) -> None:
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            raise InterpError("save_delta: pass the model apply_method returned")
        model.save_pretrained(directory)

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        expected = set(get_peft_model_state_dict(model))
        check_keys(path, expected=expected, found=set(state), allow_missing=_optional_state(model, expected))
        set_peft_model_state_dict(model, state)

    def delta_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """Every parameter of a peft tuner layer except its wrapped base layer."""
        owners = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
        if not owners:
            raise InterpError("this model carries no delta: use apply_method or load_delta first")
        params = {}
        for name, p in model.named_parameters():
            for owner in owners:
                if name.startswith(owner + ".") and not name.startswith(owner + ".base_layer."):
                    params[name] = p
        return params

    @contextlib.contextmanager
    def disabled(self, model: nn.Module, layers: list[int]) -> Iterator[nn.Module]:
        """The tuner layers inside those encoder layers are switched off."""
        from trainers.methods.apply import layers_path, transformers_model

        layer_list = transformers_model(model).get_submodule(layers_path(model))
        switched = [m for i in layers for m in layer_list[i].modules() if isinstance(m, BaseTunerLayer)]
        saved = [m._disable_adapters for m in switched]  # set directly: enable_adapters() would also flip requires_grad
        try:
            for m in switched:
                m._disable_adapters = True
            yield model
        finally:
            for m, flag in zip(switched, saved):
                m._disable_adapters = flag

    def delta_matrices(self, model: nn.Module) -> list[DeltaMatrix]:
        from trainers.methods.apply import transformers_model

        return [matrix for name, m in transformers_model(model).named_modules() for matrix in self.layer_matrices(name, m)]

    def outside_formula(self, model: nn.Module) -> int:
        return sum(self.layer_outside_formula(m) for m in model.modules())

    # -- what a method says about its own tuner layers ---------------------------------------
    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        """The delta matrices of `module` (at path `name`) if it is one of this method's layers, else []."""
        return []

    def layer_outside_formula(self, module: nn.Module) -> int:
        """Parameters of `module` outside Table 4.2's formula if it is one of this method's layers, else 0."""
        return 0


def _optional_state(model: nn.Module, keys: set[str]) -> set[str]:
    """Those of `keys` a delta file may lack: state a method began saving later (a prefix's initial
    values), named by its tuner layers' `optional_state`; the layer marks what was not loaded."""
    names = {registered_name(m, n) for m in model.modules() for n in getattr(m, "optional_state", ())}
    return {k for k in keys if k.rsplit(".", 1)[-1] in names}

