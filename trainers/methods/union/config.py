"""A combination of methods is a config too (like adapters' `ConfigUnion`): loFF = LoRA + Adapter-FFN."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from records.errors import FieldError
from trainers.methods.base import ROLE_WORDS, MethodConfig, check_layers_spec, fixed_layers, method_from_dict, parse_layers


@dataclass(frozen=True)
class UnionConfig(MethodConfig):
    """Several method configs applied together; they must modify different places.

    `parts` may be given as configs or as their dicts; nested unions are flattened. `layers`,
    when set, is given to every part (a part that names other layers is refused). Two parts
    that modify the same role in a common layer are refused with a sentence naming both;
    when a part's layers depend on the depth ('last:4'), that check waits for `apply_method`.
    Full fine-tuning cannot be a part: it already trains everything.
    """

    method = "union"
    parts: tuple[MethodConfig, ...]
    layers: str | None = None

    def __post_init__(self):
        check_layers_spec(self.layers)
        if isinstance(self.parts, (str, bytes, dict)) or not hasattr(self.parts, "__iter__"):
            raise FieldError("parts", f"`parts` should be a list of method configs, got {self.parts!r}.")
        parts: list[MethodConfig] = []
        for part in self.parts:
            part = method_from_dict(part) if isinstance(part, dict) else part
            if not isinstance(part, MethodConfig):
                raise FieldError("parts", f"`parts` should hold method configs or their dicts, got {part!r}.")
            parts.extend(part.parts if isinstance(part, UnionConfig) else [part])
        if len(parts) < 2:
            raise FieldError("parts", f"`parts` should hold at least two methods, got {len(parts)}.")
        for part in parts:
            if part.method == "full":
                raise FieldError("parts", "`parts` cannot include full fine-tuning: it already trains every weight.")
        if self.layers is not None:
            for i, part in enumerate(parts):
                if part.layers not in (None, self.layers):
                    raise FieldError("layers", f"`layers` is {self.layers!r} but part {part.describe()!r} names layers {part.layers!r}.")
                parts[i] = dataclasses.replace(part, layers=self.layers)
        object.__setattr__(self, "parts", tuple(parts))
        clash = find_overlap(self.parts, depth=None)
        if clash:
            raise FieldError("parts", clash)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "parts": [p.to_dict() for p in self.parts], "layers": self.layers}

    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(role for part in self.parts for role in part.roles()))

    def formula(self, shape) -> int:
        return sum(part.formula(shape) for part in self.parts)

    def biases(self, hidden: int, depth: int) -> int:
        return sum(getattr(part, "biases", lambda *_: 0)(hidden, depth) for part in self.parts)

    def describe(self) -> str:
        if self.layers is None:
            return " + ".join(part.describe() for part in self.parts)
        return " + ".join(dataclasses.replace(p, layers=None).describe() for p in self.parts) + self.layers_note()

    def check_fits(self, shape) -> None:
        for part in self.parts:
            part.check_fits(shape)
        self.check_depth(shape.depth)
        trained = self.formula(shape)
        if trained > shape.parameters:
            raise FieldError("parts", f"{self.describe()} would train {trained:,} parameters, more than the whole base "
                                      f"(about {shape.parameters:,}).")

    def with_layers(self, layers: str) -> UnionConfig:
        """Every part restricted to `layers` (each part answers for itself)."""
        own = self.layers
        if own is not None and own.replace(" ", "") != str(layers).replace(" ", ""):
            raise FieldError("layers", f"`layers` {layers!r}: {self.describe()} is already restricted to layers {own}.")
        return dataclasses.replace(self, layers=layers, parts=tuple(part.with_layers(layers) for part in self.parts))

    def layer_indices(self, depth: int) -> tuple[int, ...]:
        return tuple(sorted({i for part in self.parts for i in part.layer_indices(depth)}))

    def check_depth(self, depth: int) -> None:
        """The overlap check for layers that depend on the depth; FieldError (an InterpError) if two parts clash."""
        clash = find_overlap(self.parts, depth=depth)
        if clash:
            raise FieldError("layers", clash)

    def to_peft(self, encoder):
        from trainers.methods.union.model import UnionPeftConfig

        self.check_depth(encoder.num_layers)
        return UnionPeftConfig(parts=[part.to_peft(encoder) for part in self.parts], base_model_name_or_path=encoder.source)


def find_overlap(parts: tuple[MethodConfig, ...], depth: int | None) -> str | None:
    """A sentence naming the first two parts that modify the same place, or None.

    Without `depth`, pairs whose layers depend on it ('last:4' against '1-6') are skipped.
    """
    for a, b in combinations(parts, 2):
        shared = [role for role in a.roles() if role in b.roles()]
        if not shared:
            continue
        if depth is None:
            common = _common_layers_without_depth(a.layers, b.layers)
            if common == ():
                continue  # disjoint, or only the depth can tell
        else:
            common = sorted(set(parse_layers(a.layers, depth)) & set(parse_layers(b.layers, depth)))
        if common == []:
            continue
        where = ROLE_WORDS[shared[0]] + f" ({shared[0]})"
        if common is None:
            in_layers = " in every layer" if a.layers is None and b.layers is None else ""
        else:
            in_layers = f" in layer(s) {', '.join(str(i + 1) for i in common)}"
        return f"{a.describe()} and {b.describe()} both modify {where}{in_layers}; a union's parts must not overlap"
    return None


def _common_layers_without_depth(a: str | None, b: str | None) -> list[int] | None | tuple:
    """Shared 0-based layers of two specs before the depth is known: a list, None for 'all of
    them', or () when they are disjoint or only the depth can tell ('last:4' against '1-6')."""
    fixed_a, fixed_b = fixed_layers(a), fixed_layers(b)
    if a is None or b is None:
        other = fixed_b if a is None else fixed_a
        return None if other is None else sorted(other)
    if fixed_a is not None and fixed_b is not None:
        return sorted(fixed_a & fixed_b) or ()
    if fixed_a is None and fixed_b is None:
        return None  # two 'last:k' specs always share the last layer
    return ()
