"""The inputs analyses share: data labels in result names, per-query rank tables, example lookup.

    data_label(split, data_file, limit)   '' for the whole test split, '.valid', '.<file stem>', '.n<limit>'
    load_rank_table(runs_dir, names, ...)  every run's 1-based gold rank per example (compare, qualitative)
    find_example(examples, idx, ...)       the example of an AdvTest idx (an int, as `Example.idx` is)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interp.analyses.base import RunRef, resolve_runs
from interp.analyses.checks import check_split
from interp.analyses.ranks import DataRef, base_pooling, max_len_of, ranks, resolve_data
from trainers.devices import DEFAULT_PRECISION
from records.errors import InterpError
from trainers.training.evaluate import DEFAULT_TIE_RULE

@dataclass(frozen=True)
class BaseScoring:
    """How `base` was scored: at the runs' truncation and with their pooling, so that its ranks
    compare with theirs. `taken_from` names those runs; empty when no trained run was named
    (then the defaults: 256 tokens, capped by the tokenizer, and the default pooling)."""

    max_len: int
    pooling: str
    taken_from: list[str]


def base_scoring(refs: list[RunRef]) -> BaseScoring | None:
    """The max_len and pooling of the trained runs among `refs`, for `base`; None without `base`."""
    base = [r for r in refs if r.is_base]
    if not base:
        return None
    runs = [r for r in refs if not r.is_base]
    pooling = base_pooling(refs)  # refuses runs of different poolings
    if not runs:
        return BaseScoring(max_len_of(base[0]), pooling, [])
    lengths = {r.name: max_len_of(r) for r in runs}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} ({n})" for name, n in lengths.items())
        raise InterpError(f"'base' is scored at the max_len of the runs beside it, but they differ: {listed}; "
                          "compare 'base' with runs of one max_len at a time")
    return BaseScoring(lengths[runs[0].name], pooling, [r.name for r in runs])


@dataclass(frozen=True)
class RankTable:
    """The 1-based gold rank of every example of `data`, for every run, in the examples' order."""

    refs: list[RunRef]
    data: DataRef
    ranks: dict[str, np.ndarray]  # run name -> (n_examples,) int ranks
    label: str = ""  # names the data in result file names: '' for the full test split
    base: BaseScoring | None = None  # how 'base' was scored, when it is among the runs
    ties: str = DEFAULT_TIE_RULE  # the tie rule of every rank
    precision: str = DEFAULT_PRECISION  # of the forward passes that scored them (trainers.devices)

    def inputs(self) -> dict:
        return {"runs": [r.fingerprint() for r in self.refs], "data": self.data.describe(), "precision": self.precision}


def check_same_split(refs: list[RunRef], split: str) -> None:
    """The runs must have been tested on the same examples: refuse two different fingerprints."""
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.run is None:
            continue
        fp = ref.run.manifest.fingerprints.get(split)
        if fp is None:
            raise InterpError(f"run {ref.name!r} records no {split} data in its manifest; give --data FILE")
        for other, other_fp in seen.items():
            if other_fp != fp:
                raise InterpError(
                    f"runs {other!r} and {ref.name!r} were evaluated on different {split} data "
                    f"(fingerprints {other_fp[:12]} vs {fp[:12]}); compare them on one file with --data FILE"
                )
        seen[ref.name] = fp


def data_label(split: str, data_file: Path | None, limit: int | None) -> str:
    label = f".{Path(data_file).stem}" if data_file is not None else ("" if split == "test" else f".{split}")
    return label + (f".n{limit}" if limit is not None else "")


def load_rank_table(runs_dir: Path, names: list[str], *, split: str = "test", data_file: Path | None = None,
                    limit: int | None = None, ties: str = DEFAULT_TIE_RULE, progress: bool = True,
                    precision: str = DEFAULT_PRECISION, foreign=None) -> RankTable:
    """Resolve the runs (a directory's missing choices from `foreign`, `base.resolve_runs`), check they share the data, and
    read (or compute) their ranks under `ties`; `base` as the runs."""
    if not names:
        raise InterpError("name at least one run")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InterpError(f"run {repeated[0]!r} is named twice")
    check_split(split, data_file)
    refs = resolve_runs(Path(runs_dir), names, foreign=foreign)
    if data_file is None:
        check_same_split(refs, split)
    scoring = base_scoring(refs)
    data = resolve_data(refs, split=split, data_file=data_file, limit=limit)
    order = [str(e.idx) for e in data.examples]
    like = {"max_len": scoring.max_len, "pooling": scoring.pooling} if scoring is not None else {}
    table = {}
    for ref in refs:
        by_idx = ranks(ref, data, ties=ties, progress=progress, precision=precision, **like)
        table[ref.name] = np.array([by_idx[k] for k in order], dtype=np.int64)
    return RankTable(refs, data, table, data_label(split, data_file, limit), scoring, ties, precision)


def parse_idx(option: str, text: int | str | None) -> int | None:
    """An example idx as given on the command line ('17', 17 or None) as the int `Example.idx` is."""
    if text is None or isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise InterpError(f"{option} {text}: an example idx is a whole number") from None


def find_example(examples: Sequence, idx: int | None, *, option: str = "--example", where: Path | str | None = None):
    """The example whose AdvTest idx is `idx` (not its line number); the first one for None."""
    if idx is None:
        return examples[0]
    for example in examples:
        if example.idx == idx:
            return example
    known = sorted(e.idx for e in examples)
    span = f"{known[0]}..{known[-1]}" if known else "none"
    place = f"in {where}" if where is not None else "in the data"
    raise InterpError(f"{option} {idx} is not {place} ({len(known)} examples, idx {span})")
