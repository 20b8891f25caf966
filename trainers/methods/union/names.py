"""A union's parameter names carry its registered prefix, as every peft method's do (`lora_`, `ia3_`).

peft finds a method's parameters by its prefix in a few places (the missing-key warning on load,
`delete_adapter`'s skipping of a tuner layer's insides, transformers' adapter loading), and its
own tests assume the prefix is in every adapter parameter's name. A union's parts are other
methods' tuner layers, whose containers are named by their own method (`lora_A`,
`bottleneck_up`, `kv_prefix_key`). So once the parts are injected, each tuner layer's own
children (everything but `base_layer`) are registered again under the union's prefix in front
(`lora_A` -> `union_lora_A`): parameter names, state dicts and saved keys read
`...query.union_lora_A.weight`. The old name stays an alias in the layer's `__dict__`, so each
part's code (`self.lora_A[...]`, `self.bottleneck_up[...]`) reads the same container as before.

Checkpoints saved before this carry the parts' own names; `migrate_keys` renames their keys to
the model's on load (old name -> prefixed name, for the children this module renamed).
"""

from __future__ import annotations

from collections.abc import Mapping

from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

PEFT_PREFIX = "base_model.model."  # what a PeftModel's keys (and peft's saved keys) start with


def prefix_layer_names(model: nn.Module, prefix: str) -> None:
    """Register every tuner layer's children (but its `base_layer`) under `prefix` + name; idempotent."""
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            _prefix_children(module, prefix)


def _prefix_children(layer: nn.Module, prefix: str) -> None:
    renamed = {}
    for name, child in layer._modules.items():
        if name == "base_layer" or name.startswith(prefix) or child is None:
            renamed[name] = child
            continue
        renamed[prefix + name] = child
        layer.__dict__[name] = child  # the part's own code keeps reading `layer.<name>`
    layer._modules.clear()
    layer._modules.update(renamed)  # same order: state dicts list the children as before


def renamed_children(model: nn.Module, prefix: str) -> dict[str, str]:
    """'<layer path>.<old name>' -> '<layer path>.<prefixed name>' for each child `prefix_layer_names`
    renamed, paths without a leading 'base_model.model.'."""
    moves = {}
    for path, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        path = path.removeprefix(PEFT_PREFIX)
        for name, child in module._modules.items():
            old = name.removeprefix(prefix)
            if old != name and module.__dict__.get(old) is child:
                moves[f"{path}.{old}"] = f"{path}.{name}"
    return moves


def migrate_keys(model: nn.Module, state: Mapping, prefix: str) -> dict:
    """`state` (checkpoint keys) with each key that names a renamed child by its old name renamed to
    the model's name; every other key, and a key whose new name is also present, is kept as it is."""
    moves = renamed_children(model, prefix)
    if not moves:
        return dict(state)
    out = {}
    for key, value in state.items():
        new = _moved(key, moves)
        out[new if new not in state else key] = value
    return out


def _moved(key: str, moves: dict[str, str]) -> str:
    bare = key.removeprefix(PEFT_PREFIX)
    lead = key[: len(key) - len(bare)]
    for i, char in enumerate(bare + "."):  # a key may end at the child (a ParameterDict's entry, saved without its adapter name)
        if char == "." and bare[:i] in moves:
            return lead + moves[bare[:i]] + bare[i:]
    return key
