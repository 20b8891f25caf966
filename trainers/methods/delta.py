"""A delta on disk and in memory: save, load, snapshot, and switch off per layer.

On disk a delta is what its method's tuner writes (peft's own format for the peft methods:
adapter_config.json + adapter_model.safetensors, loadable with `peft.PeftModel.from_pretrained`
after `trainers.methods.register()`; the model's weights for full fine-tuning); beside it,
method.json holds the method config so `load_delta` needs nothing else. Everything
method-specific is asked of the tuner (`protocol.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

from trainers.encoders import Encoder
from records.errors import InterpError
from records.io import atomic_dir, write_json
from trainers.methods.apply import apply_method, applied_method, delta_parameters, layers_path, transformers_model, tuner_of
from trainers.methods.base import MethodConfig
from trainers.methods.registry import method_from_dict, tuner_for, tuners
from trainers.methods.state import METHOD_FILE, check_keys, read_safetensors


def delta_files() -> set[str]:
    """What save_delta may write, for any method; anything else already in a run directory (a manifest, metrics) is kept."""
    return {METHOD_FILE}.union(*(tuner.files for tuner in tuners()))


def save_delta(model: nn.Module, config: MethodConfig, out_dir: str | os.PathLike) -> Path:
    """Write the delta of `model` (from `apply_method(..., config)`) into `out_dir`, atomically.

    The directory is built under a temporary name and swapped into place; files in an existing
    `out_dir` that are not delta files are carried over (hard links where possible).
    """
    out_dir = Path(out_dir)
    applied = applied_method(model)
    if applied is None or applied.method != config.method:
        raise InterpError(f"save_delta: pass the model apply_method returned for {config.describe()!r}")
    tuner = tuner_for(config)
    keep = delta_files()
    with atomic_dir(out_dir) as tmp:
        if out_dir.is_dir():
            for entry in out_dir.iterdir():
                if entry.name not in keep:
                    _link_or_copy(entry, tmp / entry.name)
        tuner.save(model, tmp)
        write_json(tmp / METHOD_FILE, config.to_dict())
    return out_dir


def _link_or_copy(src: Path, dst: Path) -> None:
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        link(src, dst)


def read_method(run_dir: str | os.PathLike) -> MethodConfig:
    """The method config of the delta in `run_dir` (its method.json; a foreign delta's from its own files, `trainers.foreign`)."""
    path = Path(run_dir) / METHOD_FILE
    if not path.is_file():
        from trainers.foreign import foreign_method

        found = foreign_method(Path(run_dir))  # a foreign delta, or the project's own one an import references
        if found is not None:
            return found
        raise InterpError(f"{path}: not found; is {Path(run_dir)} a run directory written by save_delta?")
    try:
        return method_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InterpError(f"{path}: not a method config: {exc}") from exc


def load_delta(encoder: Encoder, run_dir: str | os.PathLike, *, trainable: bool = False) -> nn.Module:
    """`encoder` with the delta saved in `run_dir` (method read from its method.json).

    The model comes back in eval mode with every parameter frozen, unless `trainable`, where
    the delta's parameters train again (to resume). Checkpoint keys must match the method's
    exactly: a missing or extra tensor is an InterpError naming the file. A directory without a
    method.json is a foreign delta (`trainers.foreign`): a peft adapter loads with plain
    `peft.PeftModel.from_pretrained`, a model directory with transformers.
    """
    run_dir = Path(run_dir)
    if not (run_dir / METHOD_FILE).is_file():
        from trainers.foreign import delta_location, load_foreign

        if not (delta_location(run_dir) / METHOD_FILE).is_file():
            return load_foreign(encoder, run_dir, trainable=trainable)
        run_dir = delta_location(run_dir)  # the project's own delta, referenced by an imported run
    config = read_method(run_dir)
    tuner = tuner_for(config)
    path = run_dir / tuner.weights_file
    state = read_safetensors(path)
    model = apply_method(encoder, config)
    tuner.load(model, state, path)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def delta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the delta's tensors, for checkpointing mid-training."""
    return {name: p.detach().clone() for name, p in delta_parameters(model).items()}


@torch.no_grad()
def load_delta_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a `delta_state` snapshot back in; the names must match the delta's exactly."""
    params = delta_parameters(model)
    check_keys(Path("<delta state>"), expected=set(params), found=set(state))
    for name, p in params.items():
        p.copy_(state[name])


@contextlib.contextmanager
def disabled_layers(model: nn.Module, layers: Iterable[int]) -> Iterator[nn.Module]:
    """Switch the delta off in the given 0-based encoder layers, for the duration of the block.

    How is the method's (its tuner's `disabled`): peft methods switch off their tuner layers
    inside those encoder layers; full fine-tuning puts the base weights back in them, and
    switching off every layer also restores the weights outside the layers (embeddings,
    pooler), so disabling all layers gives exactly the base model. Always restored, even if
    the block raises.
    """
    tuner = tuner_of(model)
    depth = len(transformers_model(model).get_submodule(layers_path(model)))
    layers = sorted(set(layers))
    outside = [i for i in layers if not 0 <= i < depth]
    if outside:
        raise InterpError(f"layers {outside} (0-based): the encoder has {depth} layers (0-{depth - 1})")
    with tuner.disabled(model, layers):
        yield model
