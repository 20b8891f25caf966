"""Registering the project's peft methods with peft: explicit, once, in `register()`.

Importing `trainers` (or `trainers.errors`, or the configs) registers nothing and imports no
peft. `apply_method` and `load_delta` call `register()` before they build or load a delta; a
user who loads a run with peft alone calls it first:

    import trainers.methods, peft
    trainers.methods.register()
    model = peft.PeftModel.from_pretrained(base, "runs/loFF")

What is registered comes from the registry: every method whose tuner names a `peft_method`
(name, peft config class, peft tuner class); LoRA is peft's own, full fine-tuning needs none.
"""

from __future__ import annotations

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


def add_peft_type(name: str):
    """The member `name` of peft's `PeftType`, added if peft does not have it (idempotent).

    peft 0.21.2 offers no supported way to add a type: `register_peft_method` requires the
    member to exist already and says to add an entry to `PeftType`, a closed `str` enum. So
    the member is built the way `enum` builds its own members, and entered in the enum's
    lookup tables; nothing else of peft is touched.
    """
    from peft.utils.peft_types import PeftType

    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    return member
