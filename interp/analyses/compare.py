"""Is one delta really better than another? Paired per-query tests on reciprocal rank.

Every run ranks the gold code of the same queries, so runs are compared query by query on the
reciprocal rank (RR = 1 / rank; MRR is its mean):

- a Wilcoxon signed-rank test of the per-query RR differences (two-sided; queries where both
  runs give the same rank carry no information and are dropped; all-zero differences mean the
  runs are identical on this split: p = 1);
- a paired bootstrap 95% interval of the MRR difference: queries resampled with replacement,
  `--bootstrap` times, seeded.

Runs of one preset trained with different seeds (same manifest `preset`, different
`train.seed`) are pooled into one group: its MRR is reported as the mean and sample standard
deviation (ddof = 1) over the seeds, and the paired tests use each query's RR averaged over
the seeds. The interval then reflects the variation over queries of the seed-averaged model,
not the seed-to-seed spread, which the standard deviation shows. Runs without a preset, runs
sharing a seed, and `base` stay alone; when every run named is a seed of one preset, the seeds
are compared with each other.

Differences are second minus first: `interp compare lora256 loFF` reports MRR(loFF) - MRR(lora256).
With more than two groups every pair is tested and Holm's adjustment is given beside each p.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from interp.analyses.base import RunRef, resolve_runs, save_result
from interp.analyses.ranks import DataRef, ranks, resolve_data
from interp.analyses.stats import Wilcoxon, bootstrap_mean_ci, holm, wilcoxon_paired
from trainers.errors import InterpError

# -- the shared input: ranks of several runs over one set of examples -----------------------


@dataclass(frozen=True)
class RankTable:
    """The 1-based gold rank of every example of `data`, for every run, in the examples' order."""

    refs: list[RunRef]
    data: DataRef
    ranks: dict[str, np.ndarray]  # run name -> (n_examples,) int ranks
    label: str = ""  # names the data in result file names: '' for the full test split

    def inputs(self) -> dict:
        return {"runs": [r.fingerprint() for r in self.refs], "data": self.data.describe()}


def check_same_split(refs: list[RunRef], split: str) -> None:
    """The runs must have been tested on the same examples: refuse two different fingerprints."""
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.run is None:
            continue
        fp = ref.run.manifest.get("data", {}).get(split, {}).get("fingerprint")
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
                    limit: int | None = None, progress: bool = True) -> RankTable:
    """Resolve the runs, check they share the data, and read (or compute) their ranks."""
    if not names:
        raise InterpError("name at least one run")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InterpError(f"run {repeated[0]!r} is named twice")
    refs = resolve_runs(Path(runs_dir), names)
    if data_file is None:
        check_same_split(refs, split)
    data = resolve_data(refs, split=split, data_file=data_file, limit=limit)
    order = [str(e.idx) for e in data.examples]
    table = {}
    for ref in refs:
        by_idx = ranks(ref, data, progress=progress)
        table[ref.name] = np.array([by_idx[k] for k in order], dtype=np.int64)
    return RankTable(refs, data, table, data_label(split, data_file, limit))


# -- grouping seeds of one preset ----------------------------------------------------------


@dataclass(frozen=True)
class GroupSpec:
    name: str
    runs: list[str]
    seeds: list[int | None]


def group_runs(refs: list[RunRef]) -> tuple[list[GroupSpec], list[str]]:
    """Pool runs of one preset with distinct seeds; everything else stays alone. Also notes."""
    by_preset: dict[str, list[RunRef]] = {}
    for ref in refs:
        preset = ref.run.manifest.get("preset") if ref.run is not None else None
        if preset:
            by_preset.setdefault(preset, []).append(ref)
    seed = lambda r: r.run.manifest.get("train", {}).get("seed") if r.run is not None else None  # noqa: E731
    pooled, notes = {}, []
    for preset, members in by_preset.items():
        seeds = [seed(r) for r in members]
        if len(members) > 1 and None not in seeds and len(set(seeds)) == len(seeds):
            pooled[preset] = members
        elif len(members) > 1:
            notes.append(f"runs {', '.join(r.name for r in members)} share preset {preset!r} but not distinct seeds; kept apart")
    groups, placed = [], set()
    for ref in refs:
        preset = ref.run.manifest.get("preset") if ref.run is not None else None
        if preset in pooled:
            if preset not in placed:
                members = pooled[preset]
                groups.append(GroupSpec(preset, [r.name for r in members], [seed(r) for r in members]))
                placed.add(preset)
        else:
            groups.append(GroupSpec(ref.name, [ref.name], [seed(ref)]))
    names = [g.name for g in groups]
    groups = [GroupSpec(f"{g.name} (pooled)", g.runs, g.seeds) if len(g.runs) > 1 and names.count(g.name) > 1 else g for g in groups]
    for g in groups:
        if len(g.runs) > 1:
            notes.append(f"{g.name}: {len(g.runs)} seeds pooled ({', '.join(g.runs)})")
    return groups, notes


# -- the analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupResult:
    name: str
    runs: list[str]
    seeds: list[int | None]
    mrr: float  # mean over the group's runs
    mrr_std: float | None  # sample standard deviation over the runs; None for a single run
    run_mrr: dict[str, float]
    top1: float  # share of queries with the gold code first (averaged over the runs)


@dataclass(frozen=True)
class PairResult:
    a: str
    b: str
    difference: float  # MRR(b) - MRR(a)
    ci_low: float
    ci_high: float
    wilcoxon: Wilcoxon
    p_holm: float  # Holm-adjusted over all pairs of this comparison
    b_better: int  # queries where b's (seed-averaged) RR is higher
    a_better: int
    same: int


@dataclass(frozen=True)
class CompareResult:
    examples: int
    bootstrap: int
    seed: int
    level: float
    groups: list[GroupResult]
    pairs: list[PairResult]
    notes: list[str] = field(default_factory=list)


class Compare:
    """Bound to the per-query ranks of some runs (over the same examples) and their grouping."""

    def __init__(self, ranks: Mapping[str, np.ndarray], groups: list[GroupSpec], notes: list[str] | None = None):
        lengths = {len(r) for r in ranks.values()}
        if len(lengths) != 1:
            raise ValueError(f"`ranks` should cover the same examples for every run, got lengths {sorted(lengths)}.")
        missing = [n for g in groups for n in g.runs if n not in ranks]
        if missing:
            raise ValueError(f"`groups` names runs without ranks: {missing}.")
        self.ranks = {name: np.asarray(r, dtype=np.int64) for name, r in ranks.items()}
        self.groups = groups
        self.notes = list(notes or [])

    def compute(self, *, bootstrap: int = 10_000, seed: int = 0, level: float = 0.95) -> CompareResult:
        if bootstrap < 1:
            raise InterpError(f"--bootstrap should be at least 1, got {bootstrap}")
        rr = {name: 1.0 / r for name, r in self.ranks.items()}  # (n,) reciprocal ranks
        groups, group_rr = [], {}
        for g in self.groups:
            run_mrr = {n: float(rr[n].mean()) for n in g.runs}
            values = np.array(list(run_mrr.values()))
            group_rr[g.name] = np.mean([rr[n] for n in g.runs], axis=0)  # (n,) seed-averaged RR
            top1 = float(np.mean([(self.ranks[n] == 1).mean() for n in g.runs]))
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            groups.append(GroupResult(g.name, g.runs, g.seeds, float(values.mean()), std, run_mrr, top1))
        pairs = []
        for a, b in combinations([g.name for g in self.groups], 2):
            d = group_rr[b] - group_rr[a]  # (n,) per-query RR differences
            low, high = bootstrap_mean_ci(d, resamples=bootstrap, seed=seed, level=level)
            test = wilcoxon_paired(d)
            pairs.append(dict(a=a, b=b, difference=float(d.mean()), ci_low=low, ci_high=high, wilcoxon=test,
                              b_better=int((d > 0).sum()), a_better=int((d < 0).sum()), same=int((d == 0).sum())))
        adjusted = holm([p["wilcoxon"].p for p in pairs])
        n = len(next(iter(self.ranks.values())))
        return CompareResult(n, bootstrap, seed, level, groups, [PairResult(**p, p_holm=q) for p, q in zip(pairs, adjusted)], self.notes)


def run_compare(*, runs_dir: Path, names: list[str], split: str = "test", data_file: Path | None = None,
                limit: int | None = None, bootstrap: int = 10_000, seed: int = 0, progress: bool = True) -> tuple[CompareResult, Path]:
    """Compare runs on one split or file and save runs/analyses/compare/<name>.json."""
    if len(names) < 2:
        raise InterpError("compare needs at least two runs")
    table = load_rank_table(runs_dir, names, split=split, data_file=data_file, limit=limit, progress=progress)
    groups, notes = group_runs(table.refs)
    if len(groups) < 2:  # only seeds of one preset: compare the seeds with each other instead
        notes = [f"all runs are seeds of preset {groups[0].name!r}; compared seed by seed, not pooled"]
        groups = [GroupSpec(r.name, [r.name], s) for r, s in zip(table.refs, [[x] for x in groups[0].seeds])]
    result = Compare(table.ranks, groups, notes).compute(bootstrap=bootstrap, seed=seed)
    name = "-vs-".join(g.name.replace(" (pooled)", "") for g in groups) + table.label
    inputs = table.inputs() | {"bootstrap": bootstrap, "seed": seed}
    return result, save_result(Path(runs_dir), "compare", name, result, inputs)
