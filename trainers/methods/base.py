"""What every method config shares: the `MethodConfig` base, layer specs, and field checks.

This module imports neither torch nor peft, so configs and presets load instantly (the CLI
lists them without touching a model). Layers are counted 1-based in specs, as the study does
("loFF on layers 9-12"), and 0-based everywhere inside the code.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from records.errors import FieldError, InterpError

# Where a method changes an encoder layer, in the Encoder's role names, with the words used in messages.
ROLE_WORDS = {
    "query": "the query projection",
    "key": "the key projection",
    "value": "the value projection",
    "attn_output": "the attention output",
    "ffn_output": "the FFN output",
    "self_attention": "the attention keys and values",
}

_LAYER_ITEM = re.compile(r"(\d+)(?:-(\d+))?")
_LAST = re.compile(r"last:(\d+)")
LAYERS_HELP = "'9-12', '9', '1,3,5-6' or 'last:4' (1-based, inclusive)"


def check_layers_spec(spec: str | None) -> None:
    """Raise ValueError unless `spec` is None or a well-formed layer spec (depth is checked later)."""
    if spec is None:
        return
    if not isinstance(spec, str):
        raise FieldError("layers", f"`layers` should be a string like {LAYERS_HELP}, got {spec!r}.")
    text = spec.replace(" ", "")
    last = _LAST.fullmatch(text)
    if last:
        if int(last.group(1)) < 1:
            raise FieldError("layers", f"`layers` should name at least one layer, got {spec!r}.")
        return
    for item in text.split(","):
        match = _LAYER_ITEM.fullmatch(item)
        if not match:
            raise FieldError("layers", f"`layers` should look like {LAYERS_HELP}, got {spec!r}.")
        first, end = int(match.group(1)), int(match.group(2) or match.group(1))
        if first < 1 or end < first:
            raise FieldError("layers", f"`layers` counts from 1 and ranges go upwards, got {spec!r}.")


def parse_layers(spec: str | None, depth: int) -> tuple[int, ...]:
    """0-based, sorted layer indices of `spec` in an encoder of `depth` layers (None: all of them).

    >>> parse_layers("9-12", 12), parse_layers("last:2", 6), parse_layers("1,3,5-6", 6)
    ((8, 9, 10, 11), (4, 5), (0, 2, 4, 5))
    """
    if spec is None:
        return tuple(range(depth))
    check_layers_spec(spec)
    text = spec.replace(" ", "")
    out_of_range = InterpError(f"layers {spec}: the encoder has {depth} layers (1-{depth})")
    last = _LAST.fullmatch(text)
    if last:
        count = int(last.group(1))
        if count > depth:
            raise out_of_range
        return tuple(range(depth - count, depth))
    chosen: set[int] = set()
    for item in text.split(","):
        match = _LAYER_ITEM.fullmatch(item)
        first, end = int(match.group(1)), int(match.group(2) or match.group(1))
        if end > depth:
            raise out_of_range
        chosen.update(range(first - 1, end))
    return tuple(sorted(chosen))


def fixed_layers(spec: str | None) -> frozenset[int] | None:
    """The 0-based layers of `spec` when they do not depend on the depth ('9-12'), else None."""
    if spec is None or _LAST.fullmatch(spec.replace(" ", "")):
        return None
    return frozenset(parse_layers(spec, depth=10**6))


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldError(name, f"`{name}` should be a positive integer, got {value!r}.")
    return value


def number_in(name: str, value: Any, low: float, high: float | None = None, *, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if low_open else value >= low
        ok = ok and (high is None or value < high)
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and < {high}")
        raise FieldError(name, f"`{name}` should be a number {bounds}, got {value!r}.")
    return float(value)


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FieldError(name, f"`{name}` should be one of {', '.join(map(repr, choices))}, got {value!r}.")
    return value


@dataclass(frozen=True)
class MethodConfig:
    """A PEFT method's settings: frozen, self-validating, JSON-able through `to_dict()`.

    Subclasses set `method` (the registry name), declare their fields (each has a `layers`
    spec, None meaning every layer), and answer three questions about themselves: which
    roles they touch in a layer, how many parameters the study's Table 4.2 predicts, and a
    one-line description.
    """

    method: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method} | {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MethodConfig:
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names - {"method"})
        if unknown:
            raise FieldError(unknown[0], f"unknown field(s) for method {cls.method!r}: {', '.join(unknown)}")
        required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise FieldError(missing[0], f"method {cls.method!r} needs `{missing[0]}`")
        return cls(**{k: v for k, v in data.items() if k in names})

    # -- what subclasses describe ------------------------------------------------------------
    def roles(self) -> tuple[str, ...]:
        """The Encoder roles this method modifies in each of its layers."""
        raise NotImplementedError

    def formula(self, shape) -> int | None:
        """Trainable parameters by the study's Table 4.2 (adapter biases excluded) on a base of `shape`
        (an encoder's `BaseShape`: depth, hidden width d, FFN width d_ff); None where it has none."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    size_field: ClassVar[str] = "layers"  # the field that sets the delta's size (r, length), named when it is too big

    def check_fits(self, shape) -> None:
        """FieldError naming the field unless this method fits a base of `shape` (an encoder's
        `BaseShape`): its layers exist, and by the study's formula it trains no more parameters
        than the whole base (full fine-tuning trains fewer). Checked before anything is
        allocated, so a rank of 10^12 is refused instead of tried."""
        try:
            self.layer_indices(shape.depth)
        except InterpError as exc:
            raise FieldError("layers", str(exc)) from None
        trained = self.formula(shape)
        if trained > shape.parameters:
            raise FieldError(self.size_field, f"`{self.size_field}` {getattr(self, self.size_field)}: {self.describe()} would "
                                              f"train {trained:,} parameters, more than the whole base (about {shape.parameters:,}).")

    def with_layers(self, layers: str) -> MethodConfig:
        """This method restricted to `layers` (a spec such as '5-6' or 'last:2').

        A method already restricted to other layers is refused rather than silently widened.
        """
        own = getattr(self, "layers", None)
        if own is not None and own.replace(" ", "") != str(layers).replace(" ", ""):
            raise FieldError("layers", f"`layers` {layers!r}: {self.describe()} is already restricted to layers {own}.")
        return dataclasses.replace(self, layers=layers)

    # -- shared ------------------------------------------------------------------------------
    def layer_indices(self, depth: int) -> tuple[int, ...]:
        return parse_layers(getattr(self, "layers", None), depth)

    def layers_note(self) -> str:
        layers = getattr(self, "layers", None)
        return "" if layers is None else f" layers {layers}"


# name -> config class; filled by registry.py (one line per method), read here so that a config
# holding other configs (a union's parts) can read them without importing the registry.
KNOWN_METHODS: dict[str, type[MethodConfig]] = {}


def method_from_dict(data: dict[str, Any]) -> MethodConfig:
    """The inverse of `MethodConfig.to_dict()`: ValueError naming the field for bad input."""
    if not isinstance(data, dict) or "method" not in data:
        raise ValueError(f"a method config should be a dict with a `method` field, got {data!r}.")
    cls = KNOWN_METHODS.get(data["method"])
    if cls is None:
        raise ValueError(f"`method` should be one of {', '.join(map(repr, KNOWN_METHODS))}, got {data['method']!r}.")
    return cls.from_dict(data)
