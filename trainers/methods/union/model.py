"""A union of peft configs as one registered peft method, so one `adapter_config.json` holds it.

A `PeftModel` loads a single adapter config and refuses to mix peft types, so loFF (LoRA +
Adapter-FFN) cannot be two adapters. UNION is one peft type whose config lists the parts'
peft configs (plain `peft.LoraConfig`, BOTTLENECK, KV_PREFIX) and whose tuner injects each
part with that part's own tuner, in order. The parts' layers are ordinary peft tuner layers,
so peft's structural `_get_adapter_state_dict` saves all of them, under the same keys each
part would have on its own (e.g. `...query.lora_A.weight`, `...output.dense.bottleneck_up.weight`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer

from trainers.methods.peft_types import PeftType


@dataclass
class UnionPeftConfig(PeftConfig):
    """`parts`: peft configs (or their dicts, as read back from adapter_config.json)."""

    parts: list[Any] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.UNION
        parts = []
        for part in self.parts:
            if isinstance(part, dict):
                part = dict(part)
                part = PEFT_TYPE_TO_CONFIG_MAPPING[part.pop("peft_type")](**part)
            if not isinstance(part, PeftConfig) or part.peft_type == PeftType.UNION:
                raise ValueError(f"`parts` should hold peft configs other than unions, got {part!r}.")
            parts.append(part)
        if not parts:
            raise ValueError("`parts` should hold at least one peft config, got none.")
        self.parts = parts

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["parts"] = [_plain(part.to_dict()) for part in self.parts]
        return out


def _plain(data: dict) -> dict:
    """JSON-able: sets (peft keeps LoRA's target_modules as a set) become sorted lists."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}


class UnionModel(BaseTuner):
    """Injects each part of a `UnionPeftConfig` with the part's own peft tuner."""

    prefix: str = "union_"
    tuner_layer_cls = BaseTunerLayer
    target_module_mapping: dict = {}

    def inject_adapter(self, model, adapter_name: str, autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        config: UnionPeftConfig = self.peft_config[adapter_name]
        for part in config.parts:
            part.inference_mode = config.inference_mode
            tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[part.peft_type]
            tuner_cls(model, part, adapter_name=adapter_name, low_cpu_mem_usage=low_cpu_mem_usage)
            del model.peft_config  # each part's tuner leaves its own; the union's is set by BaseTuner
        self._mark_only_adapters_as_trainable(model)
        if config.inference_mode:
            for module in model.modules():
                if isinstance(module, BaseTunerLayer):
                    module.requires_grad_(False)

    def _create_and_replace(self, *args, **kwargs) -> None:
        raise NotImplementedError("a union injects through its parts' tuners")

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        from trainers.methods.prefix.model import detach_prefixes

        if merge:
            raise NotImplementedError("a union holds parts that cannot be merged into the base weights")
        detach_prefixes(self.model)
        return super()._unload_and_optionally_merge(merge=False)  # wrapped layers back to their base layers


# If importing this module is what first imported peft, finish registering our peft methods now.
from trainers.methods.peft_types import register_all  # noqa: E402

register_all()
