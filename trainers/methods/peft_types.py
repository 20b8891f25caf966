"""The project's methods as peft methods: new `PeftType` members and their registration.

peft 0.21 registers a method with `register_peft_method(name=..., config_cls=..., model_cls=...)`,
which needs a member of the `PeftType` enum named like the method. The enum is closed, so the
members are added here once, the way `enum` itself builds them (an idempotent extension, done
before any of our peft configs is built). `register_all()` then registers

- BOTTLENECK: bottleneck adapters (adapter/model.py),
- KV_PREFIX: prefix keys and values that keep position ids (prefix/model.py),
- UNION: several of those and plain peft LoRA in one adapter (union/model.py),

so `peft.PeftModel.from_pretrained(base, run_dir)` loads any of them from peft's own
`adapter_config.json` + `adapter_model.safetensors`.
"""

from __future__ import annotations

import re

from peft.utils.peft_types import PeftType

NEW_TYPES = ("BOTTLENECK", "KV_PREFIX", "UNION")


def _extend_peft_type(name: str) -> None:
    if name in PeftType.__members__:
        return
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)


for _name in NEW_TYPES:
    _extend_peft_type(_name)


def register_all() -> None:
    """Register the project's peft methods (idempotent).

    Registration imports the tuner modules. When one of them is what first imported peft (so
    it is only partly initialised while peft's import hook runs), its method is left for the
    call at the end of that module, once its names exist.
    """
    from importlib import import_module

    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    for module_name, config_name, model_name in _TUNERS:
        try:
            module = import_module(module_name)
            config_cls, model_cls = getattr(module, config_name), getattr(module, model_name)
        except (ImportError, AttributeError) as exc:
            if "partially initialized module" in str(exc) or isinstance(exc, AttributeError):
                continue  # registered by the register_all() call at the end of the module being imported
            raise
        name = model_cls.prefix.removesuffix("_")
        if getattr(PeftType, name.upper()) not in PEFT_TYPE_TO_TUNER_MAPPING:
            register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls)


_TUNERS = (
    ("trainers.methods.adapter.model", "BottleneckConfig", "BottleneckModel"),
    ("trainers.methods.prefix.model", "KvPrefixConfig", "KvPrefixModel"),
    ("trainers.methods.union.model", "UnionPeftConfig", "UnionModel"),
)


def layer_target_pattern(target_modules, layers_pattern: str) -> re.Pattern:
    """Matches '<...>.<layers_pattern>.<i>.<target>' exactly, capturing i, for any of `target_modules`.

    Exact paths avoid peft's suffix matching, under which the FFN output 'output.dense' would
    also match the attention output 'attention.output.dense'.
    """
    targets = "|".join(re.escape(t) for t in target_modules)
    return re.compile(rf"(?:.*\.)?{re.escape(layers_pattern)}\.(\d+)\.(?:{targets})")


def matches_layer_target(config, key: str) -> bool:
    """Whether module `key` is one of `config.target_modules` in one of `config.layers_to_transform`."""
    match = layer_target_pattern(config.target_modules, config.layers_pattern).fullmatch(key)
    if match is None:
        return False
    return config.layers_to_transform is None or int(match.group(1)) in config.layers_to_transform


register_all()
