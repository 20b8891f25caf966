"""The method registry: one line per method. A new method is a folder plus a line here."""

from __future__ import annotations

from typing import Any

from trainers.methods.adapter.config import AdapterConfig
from trainers.methods.base import MethodConfig
from trainers.methods.full.config import FullConfig
from trainers.methods.lora.config import LoraConfig
from trainers.methods.prefix.config import PrefixConfig
from trainers.methods.union.config import UnionConfig

METHODS: dict[str, type[MethodConfig]] = {
    "full": FullConfig,
    "lora": LoraConfig,
    "prefix": PrefixConfig,
    "adapter": AdapterConfig,
    "union": UnionConfig,
}


def method_from_dict(data: dict[str, Any]) -> MethodConfig:
    """The inverse of `MethodConfig.to_dict()`: ValueError naming the field for bad input."""
    if not isinstance(data, dict) or "method" not in data:
        raise ValueError(f"a method config should be a dict with a `method` field, got {data!r}.")
    cls = METHODS.get(data["method"])
    if cls is None:
        raise ValueError(f"`method` should be one of {', '.join(map(repr, METHODS))}, got {data['method']!r}.")
    return cls.from_dict(data)
