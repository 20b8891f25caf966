"""Full fine-tuning as a tuner that trains existing weights (as peft's `ln_tuning` does for LayerNorms).

`apply` makes the chosen base weights trainable in place and keeps a CPU copy of the base
weights on the model (`BASE_WEIGHTS`), which `disabled` swaps back in and anatomy compares
against. On disk the delta is the model's own files (config.json + model.safetensors).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from trainers.methods.full.config import FullConfig
from trainers.methods.protocol import LINEAR, DeltaMatrix, frobenius
from trainers.methods.state import check_keys

BASE_WEIGHTS = "interp_full_base_weights"  # attribute of the tuned model: name -> its base weight (CPU copy)


class FullTuner:
    weights_file = "model.safetensors"
    files = frozenset({weights_file, "config.json"})
    peft_method = None  # trains the base's own weights: nothing to register with peft

    def apply(self, encoder, config: FullConfig) -> nn.Module:
        model = encoder.model
        on_meta = any(p.is_meta for p in model.parameters())
        base = {} if on_meta else {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
        model.__dict__[BASE_WEIGHTS] = base
        chosen = _chosen(model, config)
        for name, p in model.named_parameters():
            p.requires_grad_(name in chosen)
        return model

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
        buffers = {name for name, _ in model.named_buffers()}
        check_keys(path, expected=set(model.state_dict()), found=set(state), allow_missing=buffers)
        model.load_state_dict(state, strict=False)

    def delta_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]:
        """The base weights it trains: every one, or those inside the chosen encoder layers."""
        chosen = _chosen(model, _config(model))
        return {name: p for name, p in model.named_parameters() if name in chosen}

    @contextlib.contextmanager
    def disabled(self, model: nn.Module, layers: list[int]) -> Iterator[nn.Module]:
        """Those layers get the base weights back; every layer switched off also restores the
        weights outside the layers (embeddings, pooler), giving exactly the base model."""
        root = _layers_path(model)
        depth = len(model.get_submodule(root))
        base_weights = model.__dict__[BASE_WEIGHTS]
        prefixes = tuple(f"{root}.{i}." for i in layers)
        every = list(layers) == list(range(depth))
        chosen = {n: p for n, p in model.named_parameters() if n.startswith(prefixes) or (every and not n.startswith(root + "."))}
        with torch.no_grad():
            tuned = {n: p.detach().clone() for n, p in chosen.items()}
        try:
            with torch.no_grad():
                for n, p in chosen.items():
                    p.copy_(base_weights[n])
            yield model
        finally:
            with torch.no_grad():
                for n, p in chosen.items():
                    p.copy_(tuned[n])

    def delta_matrices(self, model: nn.Module) -> list[DeltaMatrix]:
        """W_run - W_base for every 2-D weight that changed, oriented (d_out, d_in); an embedding
        table (looked up as one_hot @ E) transposed; a bias's change as a factor."""
        before = model.__dict__[BASE_WEIGHTS]
        tuned = dict(model.named_parameters())
        found = []
        for name, weight in before.items():
            if not name.endswith(".weight") or weight.dim() != 2:
                continue
            delta = tuned[name].detach().double().cpu() - weight.double()
            if not delta.any():
                continue
            module = name[: -len(".weight")]
            owner = model.get_submodule(module)
            label, sides = "W_run-W_base", LINEAR
            if isinstance(owner, torch.nn.Embedding) or type(owner).__name__ == "Conv1D":  # stored (d_in, d_out)
                delta, label = delta.T, "(W_run-W_base)^T"
            elif not isinstance(owner, torch.nn.Linear):
                sides = {"left": "rows", "right": "columns"}  # not a known linear map: no sides claimed
            bias = tuned.get(module + ".bias")
            factors = {} if bias is None else {"bias": frobenius(bias.detach().double().cpu() - before[module + ".bias"].double())}
            found.append(DeltaMatrix(module, "full", label, delta, min(delta.shape), factors, sides, family="update"))
        return found

    def outside_formula(self, model: nn.Module) -> int:
        return 0


def _config(model: nn.Module) -> FullConfig:
    from trainers.methods.apply import applied_method

    return applied_method(model)


def _layers_path(model: nn.Module) -> str:
    from trainers.methods.apply import layers_path

    return layers_path(model)


def _chosen(model: nn.Module, config: FullConfig) -> set[str]:
    """Every parameter, or with `layers` only those inside the chosen encoder layers."""
    if config.layers is None:
        return {name for name, _ in model.named_parameters()}
    root = _layers_path(model)
    depth = len(model.get_submodule(root))
    prefixes = tuple(f"{root}.{i}." for i in config.layer_indices(depth))
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


TUNER = FullTuner()
