"""Bottleneck adapters as a registered peft method: the peft-facing config and the tuner.

The project-facing `AdapterConfig` (config.py) stays free of torch and peft; this module holds
what peft saves in `adapter_config.json` and what `PeftModel.from_pretrained` rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.tuners.tuners_utils import BaseTuner

from trainers.methods.adapter.layer import BottleneckLayer
from trainers.methods.peft_types import add_peft_type
from trainers.methods.targets import LayerTargetsConfig, matches_layer_target


@dataclass
class BottleneckConfig(LayerTargetsConfig):
    """peft config of bottleneck adapters after each target projection, bottleneck `r` (ReLU, biases)."""

    r: int = 64
    init_weights: bool = True  # False: W_up and b_up start random too, so the untrained adapter is not the identity

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type("BOTTLENECK")
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
