"""Grids, tables and scales of the study, read from grids.toml; seeds parsed from the command line.

A grid is a list of tables; a table is a list of presets (its rows, in the thesis's order).
The runs of a grid are its presets (each once, in order of first appearance) x the seeds,
named `<preset>-s<seed>`. A grid states the LoRA scaling rule it trains with (`lora_scaling`,
applied to every LoRA part of its presets: `Grid.method`). A scale is the training settings
every run of a study shares.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from records.errors import InterpError, did_you_mean

GRIDS_FILE = Path(__file__).with_name("grids.toml")
STUDY_SEEDS = (123456, 654321, 123)  # the study's seeds (its Section 4.1.6)
LIMITS = ("train_limit", "eval_limit")


@dataclass(frozen=True)
class Table:
    id: str  # the thesis's table number, e.g. "4.6"
    title: str
    presets: tuple[str, ...]


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    tables: tuple[Table, ...]
    lora_scaling: str = "alpha"  # LoraConfig.scaling for every LoRA part of the presets

    def __post_init__(self):
        from trainers.methods.lora.config import SCALINGS

        if self.lora_scaling not in SCALINGS:
            raise InterpError(f"grid {self.name!r}: lora_scaling should be one of {', '.join(map(repr, SCALINGS))}, got {self.lora_scaling!r}")

    @property
    def presets(self) -> tuple[str, ...]:
        """Every preset of the grid's tables, once, in order of first appearance."""
        return tuple(dict.fromkeys(p for table in self.tables for p in table.presets))

    @property
    def has_lora(self) -> bool:
        from trainers.methods import get_preset
        from trainers.methods.lora.config import lora_parts

        return any(lora_parts(get_preset(p)) for p in self.presets)

    def method(self, preset: str):
        """The method config the grid trains for `preset`: the preset, its LoRA parts under `lora_scaling`."""
        from trainers.methods import get_preset
        from trainers.methods.lora.config import lora_parts, with_lora_scaling

        config = get_preset(preset)
        return with_lora_scaling(config, self.lora_scaling) if lora_parts(config) else config


@dataclass(frozen=True)
class Scale:
    """Training settings shared by every run of a study: TrainConfig fields but the seed, and sample sizes."""

    name: str
    train: tuple[tuple[str, object], ...]  # (field, value) pairs, frozen
    train_limit: int | None = None
    eval_limit: int | None = None
    description: str = field(default="", compare=False)

    def config(self, seed: int):
        """The run's TrainConfig for `seed`; InterpError naming a field TrainConfig does not have."""
        from dataclasses import fields

        from trainers.training.loop import TrainConfig

        known = {f.name for f in fields(TrainConfig)} - {"seed"}
        unknown = sorted(set(dict(self.train)) - known)
        if unknown:
            raise InterpError(f"scale {self.name!r}: unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return TrainConfig(**dict(self.train), seed=seed)


@dataclass(frozen=True)
class GridFile:
    grids: dict[str, Grid]
    scales: dict[str, Scale]
    path: Path


@cache
def load_grid_file(path: Path = GRIDS_FILE) -> GridFile:
    """Every grid and scale of `path`; a table naming an unknown preset, a grid an unknown table, or a
    grid with LoRA presets that does not state its `lora_scaling` is refused."""
    from trainers.methods import get_preset

    with open(path, "rb") as f:
        data = tomllib.load(f)
    tables = {}
    for table_id, entry in data.get("tables", {}).items():
        for preset in entry["presets"]:
            try:
                get_preset(preset)
            except InterpError as exc:
                raise InterpError(f"{path}: table {table_id!r}: {exc}") from None
        tables[table_id] = Table(table_id, entry["title"], tuple(entry["presets"]))
    grids = {}
    for name, entry in data.get("grids", {}).items():
        missing = [t for t in entry["tables"] if t not in tables]
        if missing:
            raise InterpError(f"{path}: grid {name!r} names unknown table(s) {', '.join(missing)}; known: {', '.join(tables)}")
        try:
            grid = Grid(name, entry.get("description", ""), tuple(tables[t] for t in entry["tables"]), entry.get("lora_scaling", "alpha"))
        except InterpError as exc:
            raise InterpError(f"{path}: {exc}") from None
        if grid.has_lora and "lora_scaling" not in entry:
            raise InterpError(f"{path}: grid {name!r} trains LoRA but does not state its lora_scaling (\"alpha\", \"alpha/r\" or \"alpha/sqrt(r)\")")
        grids[name] = grid
    scales = {}
    for name, entry in data.get("scales", {}).items():
        train = {k: v for k, v in entry.items() if k not in LIMITS and k != "description"}
        scales[name] = Scale(name, tuple(train.items()), entry.get("train_limit"), entry.get("eval_limit"), entry.get("description", ""))
    return GridFile(grids, scales, path)


def get_grid(name: str, path: Path = GRIDS_FILE) -> Grid:
    grids = load_grid_file(path).grids
    if name not in grids:
        raise did_you_mean("grid", name, grids, where=str(path))
    return grids[name]


def get_scale(name: str, path: Path = GRIDS_FILE) -> Scale:
    scales = load_grid_file(path).scales
    if name not in scales:
        raise did_you_mean("scale", name, scales, where=str(path))
    return scales[name]


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """'123456,654321,123' -> (123456, 654321, 123); InterpError naming the option and the bad value."""
    items = [item.strip() for item in text.split(",")]
    seeds = []
    for item in items:
        try:
            seed = int(item)
        except ValueError:
            raise InterpError(f"{option} {text!r}: {item!r} is not a whole number (give seeds like 123456,654321,123)") from None
        if seed < 0:
            raise InterpError(f"{option} {text!r}: seeds cannot be negative, got {seed}")
        if seed in seeds:
            raise InterpError(f"{option} {text!r}: seed {seed} is given twice")
        seeds.append(seed)
    return tuple(seeds)


def run_name(preset: str, seed: int) -> str:
    return f"{preset}-s{seed}"
