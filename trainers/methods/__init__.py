"""The PEFT methods of the study as configs, and what to do with them.

Configs and presets (this module's eager names) load without torch or peft:

    MethodConfig, FullConfig, LoraConfig, PrefixConfig, AdapterConfig, UnionConfig,
    METHODS, method_from_dict, PRESETS, get_preset, preset_names, parse_layers

The model-side API is imported on first use (it needs torch and peft):

    apply_method(encoder, config) -> nn.Module          # the model to train
    save_delta(model, config, out_dir) / load_delta(encoder, run_dir, trainable=False)
    delta_state(model) / load_delta_state(model, state)  # in-memory snapshots
    disabled_layers(model, layers)                       # context manager for ablations
    count_parameters(encoder, config) -> ParameterCount
    register()                                           # the project's peft methods, with peft (once)

Each method lives in its own folder: config.py (the frozen config, validated in
__post_init__), tuner.py (what the method does on a model: build, save, load, count, switch
off per layer, expose its delta matrices; see protocol.py), and for the peft-registered ones
layer.py (the tuner layer) and model.py (peft's config and tuner). The registry is one line
per method in registry.py. Nothing is registered with peft on import: `register()` does it.
"""

from __future__ import annotations

import importlib

from trainers.methods.adapter.config import AdapterConfig
from trainers.methods.base import MethodConfig, parse_layers
from trainers.methods.full.config import FullConfig
from trainers.methods.lora.config import LoraConfig
from trainers.methods.prefix.config import PrefixConfig
from trainers.methods.presets import get_preset, load_presets, preset_names
from trainers.methods.registry import METHODS, method_from_dict
from trainers.methods.union.config import UnionConfig

PRESETS = load_presets()

_LAZY = {
    "apply_method": "trainers.methods.apply",
    "save_delta": "trainers.methods.delta",
    "load_delta": "trainers.methods.delta",
    "read_method": "trainers.methods.delta",
    "delta_state": "trainers.methods.delta",
    "load_delta_state": "trainers.methods.delta",
    "disabled_layers": "trainers.methods.delta",
    "count_parameters": "trainers.methods.counting",
    "register": "trainers.methods.registration",
    "ParameterCount": "trainers.methods.counting",
}

__all__ = [
    "AdapterConfig", "FullConfig", "LoraConfig", "MethodConfig", "PrefixConfig", "UnionConfig", "METHODS", "PRESETS",
    "get_preset", "method_from_dict", "parse_layers", "preset_names", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainers.methods' has no attribute {name!r}")
