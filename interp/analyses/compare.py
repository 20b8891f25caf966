"""Is one delta really better than another? Paired per-query tests on reciprocal rank.

Every run ranks the gold code of the same queries, so runs are compared query by query on the
reciprocal rank (RR = 1 / rank; MRR is its mean). Differences are second minus first:
`interp compare lora256 loFF` reports MRR(loFF) - MRR(lora256), the mean over queries of the
per-query RR differences. For each pair (`DEFINITIONS` is stored with every result):

- `test`, the headline test, is about that mean. With one run a side it is the paired
  sign-flip randomisation test over queries, the usual test of IR evaluation: under its null
  each query's two RRs are exchangeable, so each difference is as likely to have the other
  sign; exact when there are at most `--permutations` sign patterns of the queries that
  differ, else that many random ones. When a side pools seeds it is a relabelling test over
  the runs: the statistic is recomputed for every split of all the runs of both sides into
  groups of the sides' sizes (exact up to `--permutations` splits); its null is that both
  sides are seeds of one configuration, so the difference is weighed against the
  seed-to-seed spread. It is conditional on the test queries and coarse with few seeds (2
  against 2 seeds: 6 splits, p >= 1/3); `min_p` says how small p can be.
- `ci`: with one run a side, scipy's BCa bootstrap of the mean difference over queries
  (paired); when a side pools seeds, a hierarchical bootstrap (each replicate resamples the
  seeds of each side and the queries, shared by all runs; percentile interval), whose width
  holds the seed-to-seed variance as well as the query sampling. `query_ci` then gives the
  queries-only BCa interval of the seed-averaged differences, for comparison.
- `wilcoxon`, secondary: the Wilcoxon signed-rank test of the same differences, a test of a
  median shift, not of the mean: many small gains and a few large losses give it a small p
  while the MRR difference is negative.
- `p_holm`: with more than two groups every pair is tested and Holm's adjustment of the
  headline p over the pairs is given beside each p.

Runs of one configuration trained with different seeds (`records.manifest.group_by_config`,
the rule the report's groups follow too: same preset, method, training settings but the seed,
base weights and data) are pooled into one group, named by their preset: its MRR is reported as
the mean and sample standard deviation (ddof = 1) over the seeds, and its per-query RR as the
mean over the seeds. Runs sharing a seed, and `base`, stay alone; when every run named is a
seed of one configuration, the seeds are compared with each other.

`base` is scored as the runs beside it were trained: at their `max_len` and with their
pooling (`BaseScoring`, recorded with the result); runs that disagree on either are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import ClassVar

import numpy as np

from interp.analyses.base import RunRef, resolve_runs
from interp.analyses.checks import at_least, at_most, check_split, distinct
from interp.analyses.inputs import BaseScoring, RankTable, base_scoring, check_same_split, data_label, load_rank_table  # noqa: F401
from interp.analyses.running import Prepared
from interp.analyses.stats import (Interval, RandomisationTest, Wilcoxon, hierarchical_interval, holm, paired_bca_interval,
                                   relabel_test, sign_flip_test, wilcoxon_paired)
from trainers.devices import DEFAULT_PRECISION, check_precision
from records.errors import InterpError
from records.manifest import group_by_config, group_label
from trainers.training.evaluate import DEFAULT_TIE_RULE

# -- grouping seeds of one configuration -----------------------------------------------------


@dataclass(frozen=True)
class GroupSpec:
    name: str
    runs: list[str]
    seeds: list[int | None]


def group_runs(refs: list[RunRef]) -> tuple[list[GroupSpec], list[str]]:
    """Pool the runs of one configuration with distinct seeds (`group_by_config`); everything else stays alone. Also notes."""
    trained = {r.name: r.run.manifest for r in refs if r.run is not None}
    seed = {r.name: (r.run.manifest.seed if r.run is not None else None) for r in refs}
    together, notes = group_by_config(trained)
    pooled = {name: members for members in together if len(members) > 1 for name in members}
    groups, placed = [], set()
    for ref in refs:
        members = pooled.get(ref.name)
        if members is None:
            groups.append(GroupSpec(ref.name, [ref.name], [seed[ref.name]]))
        elif members[0] not in placed:
            groups.append(GroupSpec(group_label([trained[n] for n in members]) or members[0], members, [seed[n] for n in members]))
            placed.add(members[0])
    names = [g.name for g in groups]
    groups = [GroupSpec(f"{g.name} (pooled)", g.runs, g.seeds) if len(g.runs) > 1 and names.count(g.name) > 1 else g for g in groups]
    for g in groups:
        if len(g.runs) > 1:
            notes.append(f"{g.name}: {len(g.runs)} seeds pooled ({', '.join(g.runs)})")
    return groups, notes


# -- the analysis ----------------------------------------------------------------------------

DEFINITIONS = {
    "ties": "the tie rule of every rank: 'codexglue' counts every other code scoring >= the gold one (CodeXGLUE's run.py)",
    "difference": "MRR(b) - MRR(a): the mean over queries of the per-query reciprocal-rank difference, each side's RR averaged over its seeds",
    "test": ("headline test of the mean difference, two-sided. One run a side: paired sign-flip randomisation test over "
             "queries (null: each query's two RRs exchangeable; scipy.stats.permutation_test, permutation_type='samples'). "
             "A side pooling seeds: relabelling test over runs (null: all runs of both sides are seeds of one configuration; "
             "the statistic recomputed for every split of the runs into groups of the sides' sizes; p as "
             "scipy.stats.permutation_test with permutation_type='independent' defines it), conditional on the test queries. "
             "Exact when every sign pattern or split is enumerated, else `resamples` random ones drawn with seed `seed`; "
             "p = twice the smaller one-sided share, Monte Carlo counts + 1; min_p: the smallest p the test can give"),
    "ci": ("interval of the difference at `level`. One run a side: BCa bootstrap over queries, paired (scipy.stats.bootstrap). "
           "A side pooling seeds: hierarchical percentile bootstrap, each replicate resampling each side's seeds with replacement "
           "and the queries with replacement (one query sample shared by every run), so it holds the seed-to-seed variance"),
    "query_ci": "pooled sides only: the queries-only BCa interval of the seed-averaged differences, without the seed-to-seed variance",
    "wilcoxon": ("secondary: Wilcoxon signed-rank test of the per-query differences (scipy, two-sided, zero differences dropped); "
                 "it tests a shift of their median, not their mean, and can disagree with the MRR difference"),
    "p_holm": "Holm's adjustment of test.p over all pairs of this comparison",
    "b_better": "queries where b's (seed-averaged) RR is higher; a_better: lower; same: equal",
    "mrr_std": "sample standard deviation (ddof 1) of the MRR over a group's seeds",
}


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
    test: RandomisationTest  # the headline test of `difference`
    ci: Interval
    query_ci: Interval | None  # queries only, when a side pools seeds
    wilcoxon: Wilcoxon  # secondary: a median shift
    p_holm: float  # Holm-adjusted test.p over all pairs of this comparison
    b_better: int  # queries where b's (seed-averaged) RR is higher
    a_better: int
    same: int


@dataclass(frozen=True)
class CompareResult:
    examples: int
    bootstrap: int
    permutations: int
    seed: int
    level: float
    groups: list[GroupResult]
    pairs: list[PairResult]
    base: BaseScoring | None = None
    ties: str = DEFAULT_TIE_RULE
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    notes: list[str] = field(default_factory=list)


class Compare:
    """Bound to the per-query ranks of some runs (over the same examples) and their grouping.

    Through the one face, binding is where the ranks are read (or computed, loading each run's
    model): `prepare` resolves the names and checks every option first.
    """

    kind: ClassVar[str] = "compare"

    def __init__(self, ranks: Mapping[str, np.ndarray], groups: list[GroupSpec], notes: list[str] | None = None,
                 base: BaseScoring | None = None, ties: str = DEFAULT_TIE_RULE):
        lengths = {len(r) for r in ranks.values()}
        if len(lengths) != 1:
            raise ValueError(f"`ranks` should cover the same examples for every run, got lengths {sorted(lengths)}.")
        missing = [n for g in groups for n in g.runs if n not in ranks]
        if missing:
            raise ValueError(f"`groups` names runs without ranks: {missing}.")
        self.ranks = {name: np.asarray(r, dtype=np.int64) for name, r in ranks.items()}
        self.groups = groups
        self.notes = list(notes or [])
        self.base = base
        self.ties = ties

    def compute(self, data: None = None, *, bootstrap: int = 10_000, permutations: int = 10_000, seed: int = 0,
                level: float = 0.95) -> CompareResult:
        """The tests over the bound ranks (`data` is None: the ranks are the inputs, bound with the runs)."""
        if data is not None:
            raise InterpError("compare's inputs are the ranks it is bound to; it takes no other data")
        if bootstrap < 1:
            raise InterpError(f"--bootstrap should be at least 1, got {bootstrap}")
        if permutations < 1:
            raise InterpError(f"--permutations should be at least 1, got {permutations}")
        rr = {name: 1.0 / r for name, r in self.ranks.items()}  # (n,) reciprocal ranks
        groups, runs_rr = [], {}
        for g in self.groups:
            run_mrr = {n: float(rr[n].mean()) for n in g.runs}
            values = np.array(list(run_mrr.values()))
            runs_rr[g.name] = np.stack([rr[n] for n in g.runs])  # (seeds, n)
            top1 = float(np.mean([(self.ranks[n] == 1).mean() for n in g.runs]))
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            groups.append(GroupResult(g.name, g.runs, g.seeds, float(values.mean()), std, run_mrr, top1))
        pairs = [self._pair(a, b, runs_rr[a], runs_rr[b], bootstrap=bootstrap, permutations=permutations, seed=seed, level=level)
                 for a, b in combinations([g.name for g in self.groups], 2)]
        adjusted = holm([p["test"].p for p in pairs])
        n = len(next(iter(self.ranks.values())))
        return CompareResult(n, bootstrap, permutations, seed, level, groups, [PairResult(**p, p_holm=q) for p, q in zip(pairs, adjusted)],
                             self.base, self.ties, dict(DEFINITIONS), self.notes)

    @classmethod
    def prepare(cls, *, runs_dir: Path, names: list[str], split: str = "test", data_file: Path | None = None,
                limit: int | None = None, bootstrap: int = 10_000, permutations: int = 10_000, seed: int = 0,
                progress: bool = True, precision: str = DEFAULT_PRECISION, foreign=None) -> Prepared:
        """Compare runs on one split or file: runs/analyses/compare/<A>-vs-<B>...json; every option checked, nothing scored."""
        if len(names) < 2:
            raise InterpError("compare needs at least two runs")
        at_least("--bootstrap", bootstrap, MIN_BOOTSTRAP)
        at_most("--bootstrap", bootstrap, MAX_RESAMPLES, "the interval's ends no longer move; the time grows with it")
        at_least("--permutations", permutations, 1)
        at_most("--permutations", permutations, MAX_RESAMPLES, "a Monte Carlo p-value's standard error is then below 0.0005")
        at_least("--seed", seed, 0)
        at_most("--seed", seed, 2**64 - 1, "a 64-bit seed")
        check_split(split, data_file)
        at_least("--limit", limit, 1)
        check_precision(precision)
        distinct("compare", names)
        refs = resolve_runs(Path(runs_dir), names, foreign=foreign)
        groups, _ = group_runs(refs)
        label = data_label(split, data_file, limit)
        if len(groups) < 2:
            groups = [GroupSpec(r.name, [r.name], []) for r in refs]
        held: dict[str, RankTable] = {}

        def bind() -> Compare:
            table = held["table"] = load_rank_table(runs_dir, names, split=split, data_file=data_file, limit=limit, progress=progress,
                                                    precision=precision, foreign=foreign)
            groups, notes = group_runs(table.refs)
            if len(groups) < 2:  # only seeds of one configuration: compare the seeds with each other instead
                notes = [f"all runs are seeds of one configuration ({groups[0].name!r}); compared seed by seed, not pooled"]
                groups = [GroupSpec(r.name, [r.name], s) for r, s in zip(table.refs, [[x] for x in groups[0].seeds])]
            if table.base is not None:
                notes.append(f"base scored at max_len {table.base.max_len} with {table.base.pooling} pooling, as the runs were trained")
            return cls(table.ranks, groups, notes, table.base, table.ties)

        def inputs(result: CompareResult) -> dict:
            return held["table"].inputs() | {"bootstrap": bootstrap, "permutations": permutations, "seed": seed}

        return Prepared(name="-vs-".join(g.name.replace(" (pooled)", "") for g in groups) + label, bind=bind,
                        options={"bootstrap": bootstrap, "permutations": permutations, "seed": seed}, inputs=inputs)

    @staticmethod
    def _pair(a: str, b: str, rr_a: np.ndarray, rr_b: np.ndarray, *, bootstrap: int, permutations: int, seed: int, level: float) -> dict:
        """One pair's numbers from (seeds_a, n) and (seeds_b, n) reciprocal ranks."""
        mean_a, mean_b = rr_a.mean(axis=0), rr_b.mean(axis=0)  # (n,) seed-averaged RR
        d = mean_b - mean_a  # (n,) per-query differences
        queries_ci = paired_bca_interval(mean_a, mean_b, resamples=bootstrap, seed=seed, level=level)
        if len(rr_a) == 1 and len(rr_b) == 1:
            test, ci, query_ci = sign_flip_test(d, resamples=permutations, seed=seed), queries_ci, None
        else:
            test = relabel_test(rr_a.mean(axis=1), rr_b.mean(axis=1), resamples=permutations, seed=seed)  # on the runs' MRR
            ci = hierarchical_interval(rr_a, rr_b, resamples=bootstrap, seed=seed, level=level)
            query_ci = queries_ci
        return dict(a=a, b=b, difference=float(d.mean()), test=test, ci=ci, query_ci=query_ci, wilcoxon=wilcoxon_paired(d),
                    b_better=int((d > 0).sum()), a_better=int((d < 0).sum()), same=int((d == 0).sum()))


MIN_BOOTSTRAP = 40  # resamples: with fewer, 2.5% of them is less than one draw, so a 95% interval has no ends
MAX_RESAMPLES = 1_000_000  # of the bootstrap and of a Monte Carlo randomisation test
