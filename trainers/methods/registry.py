"""The method registry: one line per method. A new method is a folder plus a line here.

Each line names the method's config class (torch-free, so configs and presets load instantly)
and the module of its tuner: the object, `TUNER` in that module, that builds, saves, loads,
counts, switches off and dissects the method on a model (`protocol.Tuner`). Nothing outside
the method's folder knows more about it than this line.
"""

from __future__ import annotations

import importlib

from trainers.methods.adapter.config import AdapterConfig
from trainers.methods.base import KNOWN_METHODS, MethodConfig, method_from_dict
from trainers.methods.full.config import FullConfig
from trainers.methods.ia3.config import Ia3Config
from trainers.methods.lora.config import LoraConfig
from trainers.methods.prefix.config import PrefixConfig
from trainers.methods.union.config import UnionConfig

REGISTRY: dict[str, tuple[type[MethodConfig], str]] = {
    "full": (FullConfig, "trainers.methods.full.tuner"),
    "lora": (LoraConfig, "trainers.methods.lora.tuner"),
    "prefix": (PrefixConfig, "trainers.methods.prefix.tuner"),
    "adapter": (AdapterConfig, "trainers.methods.adapter.tuner"),
    "ia3": (Ia3Config, "trainers.methods.ia3.tuner"),
    "union": (UnionConfig, "trainers.methods.union.tuner"),
}
METHODS: dict[str, type[MethodConfig]] = KNOWN_METHODS  # what `method_from_dict` reads (a union reads its parts with it)
METHODS.update({name: config for name, (config, _) in REGISTRY.items()})

__all__ = ["METHODS", "REGISTRY", "method_from_dict", "tuner_for", "tuners"]


def tuner_for(config: MethodConfig):
    """The tuner (`protocol.Tuner`) of `config`'s method; imports torch and peft on first use."""
    return importlib.import_module(REGISTRY[config.method][1]).TUNER


def tuners():
    """Every registered method's tuner, in registry order (imports them all)."""
    return [importlib.import_module(module).TUNER for _, module in REGISTRY.values()]
