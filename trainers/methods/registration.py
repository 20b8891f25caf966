"""Registering the project's peft methods with peft: explicit, once, in `register()`.

Importing `trainers` (or `records.errors`, or the configs) registers nothing and imports no
peft. `apply_method` and `load_delta` call `register()` before they build or load a delta; a
user who loads a run with peft alone calls it first:

    import trainers.methods, peft
    trainers.methods.register()
    model = peft.PeftModel.from_pretrained(base, "runs/loFF")

What is registered comes from the registry: every method whose tuner names a `peft_method`
(name, peft config class, peft tuner class); LoRA is peft's own, full fine-tuning needs none.
"""

from __future__ import annotations

from trainers.methods.peft_types import add_peft_type
from trainers.methods.registry import tuners


def register() -> None:
    """Register every project method that is a peft method (idempotent: a second call does nothing)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils import register_peft_method

    for tuner in tuners():
        if tuner.peft_method is None:
            continue
        name, config_cls, model_cls = tuner.peft_method
        peft_type = add_peft_type(name.upper())
        if peft_type not in PEFT_TYPE_TO_TUNER_MAPPING:
            register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)
