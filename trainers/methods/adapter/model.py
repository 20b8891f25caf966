"""Bottleneck adapters as a registered peft method: the peft-facing config and the tuner.

The project-facing `AdapterConfig` (config.py) stays free of torch and peft; this module holds
what peft saves in `adapter_config.json` and what `PeftModel.from_pretrained` rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner

from trainers.methods.adapter.layer import BottleneckLayer
from trainers.methods.peft_types import PeftType, matches_layer_target


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


@dataclass
class BottleneckConfig(LayerTargetsConfig):
    """peft config of bottleneck adapters after each target projection, bottleneck `r` (ReLU, biases)."""

    r: int = 64
    init_weights: bool = True  # False: W_up and b_up start random too, so the untrained adapter is not the identity

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.BOTTLENECK
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"`r` should be a positive integer, got {self.r!r}.")


class BottleneckModel(BaseTuner):
    """Wraps each targeted output projection in a `BottleneckLayer`."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict = {}

    @staticmethod
    def _check_target_module_exists(peft_config: BottleneckConfig, key: str) -> bool:
        return matches_layer_target(peft_config, key)

    def _prepare_adapter_config(self, peft_config, model_config):
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs) -> None:
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config.r, init_weights=peft_config.init_weights, inference_mode=peft_config.inference_mode)
            return
        new_module = BottleneckLayer(target, adapter_name, peft_config.r, init_weights=peft_config.init_weights,
                                     inference_mode=peft_config.inference_mode)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


# If importing this module is what first imported peft, finish registering our peft methods now.
from trainers.methods.peft_types import register_all  # noqa: E402

register_all()
