"""A union of peft configs as one registered peft method, so one `adapter_config.json` holds it.

A `PeftModel` loads a single adapter config and refuses to mix peft types, so loFF (LoRA +
Adapter-FFN) cannot be two adapters. UNION is one peft type whose config lists the parts'
peft configs (plain `peft.LoraConfig`, BOTTLENECK, KV_PREFIX) and whose tuner injects each
part with that part's own tuner, in order. The parts' layers are ordinary peft tuner layers,
so peft's structural `_get_adapter_state_dict` saves all of them; their containers carry the
union's prefix (names.py), so the keys read `...query.union_lora_A.weight`,
`...output.dense.union_bottleneck_up.weight`. Files saved before that, under the parts' own
names, are renamed on load (`_remap_adapter_state_dict_for_load`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peft.config import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from trainers.methods.peft_types import add_peft_type
from trainers.methods.union.names import migrate_keys, prefix_layer_names


@dataclass
class UnionPeftConfig(PeftConfig):
    """`parts`: peft configs (or their dicts, as read back from adapter_config.json)."""

    parts: list[Any] = field(default_factory=list)
    init_weights: bool | None = None  # given: every part's own init flag (LoRA's init_lora_weights) is set to it

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_peft_type("UNION")
        parts = []
        for part in self.parts:
            if isinstance(part, dict):
                part = dict(part)
                part = PEFT_TYPE_TO_CONFIG_MAPPING[part.pop("peft_type")](**part)
            if not isinstance(part, PeftConfig) or part.peft_type == add_peft_type("UNION"):
                raise ValueError(f"`parts` should hold peft configs other than unions, got {part!r}.")
            parts.append(part)
        if not parts:
            raise ValueError("`parts` should hold at least one peft config, got none.")
        if self.init_weights is not None:
            for part in parts:
                for flag in ("init_weights", "init_lora_weights"):
                    if hasattr(part, flag):
                        setattr(part, flag, self.init_weights)
        self.parts = parts

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["parts"] = [_plain(part.to_dict()) for part in self.parts]
        return out


def _plain(data: dict) -> dict:
    """JSON-able: sets (peft keeps LoRA's target_modules as a set) become sorted lists."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}


class UnionModel(BaseTuner):
    """Injects each part of a `UnionPeftConfig` with the part's own peft tuner.

    Each part's tuner is built bare (`_part_tuner`): bound to the model, told which adapters are
    active, but never given the union's `peft_config` dict, so a second adapter (`add_adapter`,
    `load_adapter`) is recorded under its own union config, stays inactive and frozen, and every
    tuner layer keeps serving the active adapter. Merging is refused before anything is merged
    when any part cannot merge (a bottleneck's ReLU, a prefix): all or nothing.
    """

    prefix: str = "union_"
    tuner_layer_cls = BaseTunerLayer
    target_module_mapping: dict = {}

    def _part_tuner(self, model, part: PeftConfig, adapter_name: str) -> BaseTuner:
        tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING[part.peft_type]
        tuner = tuner_cls.__new__(tuner_cls)
        nn.Module.__init__(tuner)
        tuner.model = model
        # the part of this type in each union adapter, so the part's tuner sees every adapter it may be asked about
        configs = {name: same for name, config in self.peft_config.items()
                   for same in config.parts if same.peft_type == part.peft_type}
        tuner.peft_config = configs | {adapter_name: part}
        tuner.active_adapter = list(self.active_adapters)
        tuner.targeted_module_names, tuner.targeted_parameter_names = [], []
        return tuner

    def inject_adapter(self, model, adapter_name: str, autocast_adapter_dtype: bool = True, low_cpu_mem_usage: bool = False,
                       state_dict=None) -> None:
        config: UnionPeftConfig = self.peft_config[adapter_name]
        for part in config.parts:
            part.inference_mode = config.inference_mode
            tuner = self._part_tuner(model, part, adapter_name)
            tuner._pre_injection_hook(model, part, adapter_name)
            tuner.inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                 low_cpu_mem_usage=low_cpu_mem_usage)
            tuner._post_injection_hook(model, part, adapter_name)
            new = [n for n in tuner.targeted_module_names if n not in self.targeted_module_names]
            self.targeted_module_names.extend(new)
        prefix_layer_names(model, self.prefix)  # every part's containers under the union's prefix: union_lora_A, ...
        # Each part's inject_adapter already kept the active adapters active, froze the base, left the new adapter
        # frozen unless active, and restored the trainability of what existed before (another adapter's parameters).

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        """A file saved under the parts' own names (`...query.lora_A.weight`) is read under the union's
        (`...query.union_lora_A.weight`) first; then peft's own remapping (adapter names) follows."""
        return super()._remap_adapter_state_dict_for_load(model, config, adapter_name, migrate_keys(model, state_dict, cls.prefix))

    def _create_and_replace(self, *args, **kwargs) -> None:
        raise NotImplementedError("a union injects through its parts' tuners")

    def _check_mergeable(self, adapter_names=None) -> None:
        """NotImplementedError naming the parts that cannot merge, before anything is merged."""
        names = self.active_adapters if adapter_names is None else adapter_names
        refused = sorted({str(part.peft_type.value) for name in names for part in self.peft_config[name].parts
                          if not getattr(PEFT_TYPE_TO_TUNER_MAPPING[part.peft_type].tuner_layer_cls, "mergeable", True)})
        if refused:
            raise NotImplementedError("this union holds parts that cannot be merged into the base weights "
                                      f"({', '.join(refused)}); nothing was merged")

    def merge_adapter(self, adapter_names=None, safe_merge: bool = False) -> None:
        self._check_mergeable(adapter_names)
        super().merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge)

    def _unload_and_optionally_merge(self, merge=True, progressbar=False, safe_merge=False, adapter_names=None):
        from trainers.methods.prefix.model import detach_prefixes

        if merge:
            self._check_mergeable(adapter_names)
        detach_prefixes(self.model)
        return super()._unload_and_optionally_merge(merge=merge, progressbar=progressbar, safe_merge=safe_merge,
                                                    adapter_names=adapter_names)
