"""A delta on disk and in memory: save, load, snapshot, and switch off per layer.

On disk a delta is peft's own format for everything peft-registered (adapter_config.json +
adapter_model.safetensors, loadable with `peft.PeftModel.from_pretrained` after `import
trainers`), or the model's weights (config.json + model.safetensors) for `full`; beside it,
method.json holds the method config so `load_delta` needs nothing else.
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
from trainers.errors import InterpError
from trainers.io import atomic_dir, write_json
from trainers.methods.apply import apply_method, delta_parameters, full_state, layers_path, transformers_model
from trainers.methods.base import MethodConfig
from trainers.methods.registry import method_from_dict

METHOD_FILE = "method.json"
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"
FULL_WEIGHTS = "model.safetensors"
# What save_delta writes; anything else already in the run directory (a manifest, metrics) is kept.
DELTA_FILES = {METHOD_FILE, PEFT_WEIGHTS, PEFT_CONFIG, FULL_WEIGHTS, "config.json", "README.md"}


def save_delta(model: nn.Module, config: MethodConfig, out_dir: str | os.PathLike) -> Path:
    """Write the delta of `model` (from `apply_method(..., config)`) into `out_dir`, atomically.

    The directory is built under a temporary name and swapped into place; files in an existing
    `out_dir` that are not delta files are carried over (hard links where possible).
    """
    out_dir = Path(out_dir)
    is_full = config.method == "full"
    from peft import PeftModel

    if (full_state(model) is not None) != is_full or (not is_full and not isinstance(model, PeftModel)):
        raise InterpError(f"save_delta: pass the model apply_method returned for {config.describe()!r}")
    with atomic_dir(out_dir) as tmp:
        if out_dir.is_dir():
            for entry in out_dir.iterdir():
                if entry.name not in DELTA_FILES:
                    _link_or_copy(entry, tmp / entry.name)
        if is_full:
            transformers_model(model).save_pretrained(tmp)
        else:
            model.save_pretrained(tmp)
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
    path = Path(run_dir) / METHOD_FILE
    if not path.is_file():
        raise InterpError(f"{path}: not found; is {Path(run_dir)} a run directory written by save_delta?")
    try:
        return method_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise InterpError(f"{path}: not a method config: {exc}") from exc


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of `path`; a missing or corrupted file is an InterpError naming it."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise InterpError(f"{path}: not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ...: all mean "unreadable"
        raise InterpError(f"{path}: corrupted or unreadable safetensors file ({exc})") from exc


def load_delta(encoder: Encoder, run_dir: str | os.PathLike, *, trainable: bool = False) -> nn.Module:
    """`encoder` with the delta saved in `run_dir` (method read from its method.json).

    The model comes back in eval mode with every parameter frozen, unless `trainable`, where
    the delta's parameters train again (to resume). Checkpoint keys must match the method's
    exactly: a missing or extra tensor is an InterpError naming the file.
    """
    run_dir = Path(run_dir)
    config = read_method(run_dir)
    state = read_safetensors(run_dir / (FULL_WEIGHTS if config.method == "full" else PEFT_WEIGHTS))
    model = apply_method(encoder, config)
    if config.method == "full":
        _check_keys(run_dir / FULL_WEIGHTS, expected=set(model.state_dict()), found=set(state), allow_missing=_buffers(model))
        model.load_state_dict(state, strict=False)
    else:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        expected = set(get_peft_model_state_dict(model))
        _check_keys(run_dir / PEFT_WEIGHTS, expected=expected, found=set(state), allow_missing=_optional_state(model, expected))
        set_peft_model_state_dict(model, state)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def _buffers(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_buffers()}


def _optional_state(model: nn.Module, keys: set[str]) -> set[str]:
    """Those of `keys` a delta file may lack: state a method began saving later (a prefix's initial
    values), named by its tuner layers' `optional_state`; the layer marks what was not loaded."""
    names = {n for m in model.modules() for n in getattr(m, "optional_state", ())}
    return {k for k in keys if k.rsplit(".", 1)[-1] in names}


def _check_keys(path: Path, expected: set[str], found: set[str], allow_missing: set[str] = frozenset()) -> None:
    missing, extra = sorted(expected - found - allow_missing), sorted(found - expected)
    if missing or extra:
        said = [f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []
        said += [f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else []
        raise InterpError(f"{path}: does not match the method in {METHOD_FILE}: {'; '.join(said)}")


def delta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the delta's tensors, for checkpointing mid-training."""
    return {name: p.detach().clone() for name, p in delta_parameters(model).items()}


@torch.no_grad()
def load_delta_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy a `delta_state` snapshot back in; the names must match the delta's exactly."""
    params = delta_parameters(model)
    _check_keys(Path("<delta state>"), expected=set(params), found=set(state))
    for name, p in params.items():
        p.copy_(state[name])


@contextlib.contextmanager
def disabled_layers(model: nn.Module, layers: Iterable[int]) -> Iterator[nn.Module]:
    """Switch the delta off in the given 0-based encoder layers, for the duration of the block.

    peft methods (LoRA, adapters, prefix, unions): the tuner layers inside those encoder layers
    are switched off. full: those layers get the base weights back; switching off every layer
    also restores the weights outside the layers (embeddings, pooler), so disabling all layers
    gives exactly the base model. Always restored, even if the block raises.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    root = layers_path(model)
    base = transformers_model(model)
    layer_list = base.get_submodule(root)
    depth, layers = len(layer_list), sorted(set(layers))
    outside = [i for i in layers if not 0 <= i < depth]
    if outside:
        raise InterpError(f"layers {outside} (0-based): the encoder has {depth} layers (0-{depth - 1})")
    state = full_state(model)
    if state is None:
        switched = [m for i in layers for m in layer_list[i].modules() if isinstance(m, BaseTunerLayer)]
        saved = [m._disable_adapters for m in switched]  # set directly: enable_adapters() would also flip requires_grad
        try:
            for m in switched:
                m._disable_adapters = True
            yield model
        finally:
            for m, flag in zip(switched, saved):
                m._disable_adapters = flag
        return
    base_weights = state[1]
    prefixes = tuple(f"{root}.{i}." for i in layers)
    every = layers == list(range(depth))
    chosen = {n: p for n, p in base.named_parameters() if n.startswith(prefixes) or (every and not n.startswith(root + "."))}
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
