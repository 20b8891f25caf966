"""The study's configurations as data (presets.toml), looked up by the study's names."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from records.errors import InterpError, did_you_mean
from trainers.methods.base import MethodConfig
from trainers.methods.registry import method_from_dict

PRESETS_FILE = Path(__file__).with_name("presets.toml")


@cache
def load_presets(path: Path = PRESETS_FILE) -> dict[str, MethodConfig]:
    """Every preset in `path`, in file order; a malformed entry raises InterpError naming it."""
    with open(path, "rb") as f:
        table = tomllib.load(f)
    presets = {}
    for name, data in table.items():
        try:
            presets[name] = method_from_dict(data)
        except ValueError as exc:
            raise InterpError(f"{path}: preset {name!r}: {exc}") from exc
    return presets


def preset_names() -> list[str]:
    return list(load_presets())


def get_preset(name: str) -> MethodConfig:
    """The preset called exactly `name` (case-sensitive: 'loFF' and 'LOFF' differ)."""
    presets = load_presets()
    if name in presets:
        return presets[name]
    same_letters = [known for known in presets if known.lower() == name.lower()]
    error = did_you_mean("preset", name, same_letters or presets, where=str(PRESETS_FILE))
    if len(same_letters) > 1:
        others = ", ".join(repr(k) for k in same_letters)
        error = InterpError(f"{error}; preset names are case-sensitive: {others} differ")
    raise error
