"""Where a layer-targeted peft method acts: module paths inside the chosen encoder layers.

Shared by the project's peft configs (bottleneck adapters, prefixes): `LayerTargetsConfig`
names the modules inside one encoder layer, the layer list's path and which layers (0-based);
`matches_layer_target` tells a tuner whether a module path is one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from peft.config import PeftConfig


@dataclass
class LayerTargetsConfig(PeftConfig):
    """Module paths inside one encoder layer, the layer list's path, and which layers (0-based)."""

    target_modules: list[str] = field(default_factory=list)  # e.g. ["output.dense"]
    layers_pattern: str = "encoder.layer"  # path of the ModuleList of encoder layers
    layers_to_transform: list[int] | None = None  # None: every layer

    def __post_init__(self):
        super().__post_init__()
        if not self.target_modules or not all(isinstance(t, str) and t for t in self.target_modules):
            raise ValueError(f"`target_modules` should list module paths inside a layer, got {self.target_modules!r}.")
        if self.layers_to_transform is not None:
            self.layers_to_transform = sorted(int(i) for i in self.layers_to_transform)



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
