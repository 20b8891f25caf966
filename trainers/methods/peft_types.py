"""The `PeftType` members of the project's peft methods (BOTTLENECK, KV_PREFIX, UNION), added on demand.

A leaf module (it imports only peft), so a peft config can name its type without importing the
registry. Adding a member registers nothing: `registration.register()` does that.
"""

from __future__ import annotations


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
