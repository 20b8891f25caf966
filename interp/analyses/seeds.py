"""Seed groups, and the seed-noise null they give: does a difference exceed what a new seed changes?

A side of a comparison is one run, or a seed group: two or more finished runs of one
configuration with distinct seeds (`records.manifest.group_by_config`: the same preset,
method, training settings but the seed, base weights and data; `interp study` names them
`<preset>-s<seed>`), the rule `interp compare` and the report pool seeds by.

The null (`permutation_test`). With m runs on side A and n on side B, let D(r, r') be a
distance between runs r and r' that is a mean over examples (attn-diff: of the [CLS] rows'
total variation, per layer and head). The statistic is

    T = mean of D over the m x n between-side pairs  -  mean of D over the within-side pairs
        (the C(m,2) + C(n,2) seed-to-seed pairs of both sides, pooled)

and its p-value is the share of the C(m + n, m) ways of relabelling the m + n runs into groups
of m and n whose T is at least the observed one (the observed labelling included). It tests
the null that the trained runs are exchangeable, i.e. that the configuration changes nothing
a new seed would not, with the runs as the unit: examples only make each D precise. Exact
when C(m + n, m) <= EXACT_LIMIT, else Monte Carlo over MONTE_CARLO labellings with a fixed
seed and p = (1 + hits) / (1 + draws). Its floor is 1 / C(m+n, m) (2 / C(2k, k) for k
seeds a side, since swapping the sides gives the same T): 1/3 with 2 seeds a side, 0.1 with
3, 0.029 with 4, 0.008 with 5.

(A per-example paired test of between - within would have power with 2 seeds, but it tests a
claim about the particular runs trained: two seeds that happen to differ make it reject
whatever the configuration. tests/test_attn_diff.py measures it on simulated exchangeable runs.)

Heads are marked at a false discovery rate: `benjamini_hochberg` across everything tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from interp.analyses.base import BASE, RunRef, resolve_runs
from records.errors import InterpError, did_you_mean
from records.manifest import differences, group_by_config, group_label
from trainers.training.runs import list_runs

EXACT_LIMIT = 10_000
MONTE_CARLO = 9_999
PERMUTATION_SEED = 0
ALPHA = 0.05  # false discovery rate at which heads are marked


# -- sides: one run or a seed group ----------------------------------------------------------


@dataclass(frozen=True)
class Side:
    label: str  # the run's name, or the group's preset
    refs: list[RunRef]
    seeds: list[int | None]

    @property
    def runs(self) -> list[str]:
        return [r.name for r in self.refs]


def side_names(text: str, *, runs_dir: Path, seeds: bool, which: str) -> list[str]:
    """'a,b' -> ['a', 'b']; with `seeds`, each name is a preset and stands for every run of it in runs_dir."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise InterpError(f"run {which} {text!r}: an empty name in the comma list")
    if not seeds:
        return names
    runs = list_runs(Path(runs_dir))
    out = []
    for name in names:
        if name == BASE:
            out.append(name)
            continue
        members = [r.name for r in runs if r.manifest.preset == name]
        if not members:
            presets = {r.manifest.preset for r in runs if r.manifest.preset}
            raise did_you_mean("preset", name, presets, where=f"the manifests of {runs_dir}; --seeds takes presets, not run names")
        out += members
    return out


def resolve_sides(runs_dir: Path, a: str, b: str, *, seeds: bool = False, foreign=None) -> tuple[Side, Side, list[RunRef]]:
    """Sides A and B (each one run or one seed group) and every run's ref, A's first; `foreign` as `resolve_runs`'s."""
    names = [side_names(a, runs_dir=runs_dir, seeds=seeds, which="A"), side_names(b, runs_dir=runs_dir, seeds=seeds, which="B")]
    for which, side in zip("AB", names):
        repeated = sorted({n for n in side if side.count(n) > 1})
        if repeated:
            raise InterpError(f"run {repeated[0]!r} is named twice on side {which}")
    if len(names[0]) > 1 or len(names[1]) > 1:
        both = sorted(set(names[0]) & set(names[1]))
        if both:
            raise InterpError(f"run {both[0]!r} is on both sides; a seed group's runs must belong to one side")
    refs = resolve_runs(Path(runs_dir), names[0] + names[1], foreign=foreign)
    split = len(names[0])
    return _side(refs[:split], "A"), _side(refs[split:], "B"), refs


def _side(refs: list[RunRef], which: str) -> Side:
    if len(refs) == 1:
        ref = refs[0]
        return Side(ref.name, refs, [_seed(ref)])
    if any(r.is_base for r in refs):
        raise InterpError(f"side {which}: 'base' cannot be in a seed group (it has no seed)")
    unfinished = [r.name for r in refs if not r.run.finished]
    if unfinished:
        raise InterpError(f"side {which}: run {unfinished[0]!r} has not finished; a seed group needs finished runs")
    check_differ_only_in_seed(refs, which)
    return Side(group_label([r.run.manifest for r in refs]) or refs[0].name, refs, [_seed(r) for r in refs])


def _seed(ref: RunRef) -> int | None:
    return ref.run.manifest.seed if ref.run is not None else None


def check_differ_only_in_seed(refs: list[RunRef], which: str) -> None:
    """A seed group's runs must be one configuration with distinct seeds (`group_by_config`); else name what differs."""
    first = refs[0]
    for ref in refs[1:]:
        diffs = [d for d in differences(first.run.manifest, ref.run.manifest) if d.field != "train.seed"]
        if diffs:
            shown = ", ".join(d.text() for d in diffs[:4]) + (f" and {len(diffs) - 4} more" if len(diffs) > 4 else "")
            raise InterpError(f"side {which}: runs {first.name!r} and {ref.name!r} differ in more than the seed "
                              f"({shown}); a seed-noise null needs runs that differ only in the seed")
    groups, notes = group_by_config({r.name: r.run.manifest for r in refs})
    if len(groups) != 1:
        described = ", ".join(f"{r.name} (seed {_seed(r)})" for r in refs)
        raise InterpError(f"side {which}: runs {described} are not distinct seeds of one configuration ({notes[0] if notes else ''})")


def null_note(a: tuple[str, int], b: tuple[str, int]) -> str | None:
    """Why there is no seed-noise null, in one sentence; None when both sides have two or more runs.

    a, b: (label, number of runs) of side A and side B.
    """
    single = [f"side {w} ({label})" for w, (label, runs) in (("A", a), ("B", b)) if runs < 2]
    if not single:
        return None
    need = "a null needs two or more seeds of one configuration on each side"
    if len(single) == 2:
        return f"no seed-noise null: each side is one run ({need})"
    return f"no seed-noise null: {single[0]} is one run ({need})"


# -- the permutation test ----------------------------------------------------------------------


@dataclass(frozen=True)
class Permutation:
    between: np.ndarray  # (...): mean D over the between-side pairs
    within: np.ndarray  # (...): mean D over the within-side pairs
    p: np.ndarray  # (...): permutation p-value of T = between - within
    labellings: int  # how many labellings the p-value counts (all of them when exact)
    exact: bool
    floor: float  # the smallest p-value this design can give


def run_pairs(runs: int) -> list[tuple[int, int]]:
    """The order of the first axis of `permutation_test`'s distances: (0, 1), (0, 2), ..., (1, 2), ..."""
    return list(combinations(range(runs), 2))


def labellings(m: int, n: int, *, seed: int = PERMUTATION_SEED) -> tuple[np.ndarray, bool]:
    """(G, m + n) booleans, True for the runs labelled A; row 0 is the observed labelling (runs 0..m-1)."""
    total = math.comb(m + n, m)
    if total <= EXACT_LIMIT:
        rows = [np.isin(np.arange(m + n), c) for c in combinations(range(m + n), m)]
        return np.array(rows), True
    rng = np.random.default_rng(seed)
    observed = np.arange(m + n) < m
    draws = [np.isin(np.arange(m + n), rng.choice(m + n, m, replace=False)) for _ in range(MONTE_CARLO)]
    return np.array([observed] + draws), False


def permutation_test(distances: np.ndarray, m: int, n: int, *, seed: int = PERMUTATION_SEED) -> Permutation:
    """distances: (pairs, ...) = D over `run_pairs(m + n)`, A's m runs first. See the module docstring."""
    if m < 2 or n < 2:
        raise ValueError(f"a seed-noise null needs two or more runs a side, got {m} and {n}")
    pairs = run_pairs(m + n)
    d = np.asarray(distances, dtype=np.float64)
    if d.shape[0] != len(pairs):
        raise ValueError(f"distances should have {len(pairs)} rows (pairs of {m + n} runs), got {d.shape[0]}")
    labels, exact = labellings(m, n, seed=seed)  # (G, runs)
    i, j = np.array(pairs).T
    between = labels[:, i] != labels[:, j]  # (G, pairs)
    weights = between / between.sum(1, keepdims=True) - ~between / (~between).sum(1, keepdims=True)  # (G, pairs)
    flat = d.reshape(len(pairs), -1)  # (pairs, cells)
    t = weights @ flat  # (G, cells)
    tolerance = 1e-9 * max(float(np.abs(flat).max(initial=0.0)), 1e-12)
    hits = (t >= t[0] - tolerance).sum(0)  # row 0, the observed labelling, counts itself: Monte Carlo's (1 + hits) / (1 + draws)
    p = hits / len(labels)
    shape = d.shape[1:]
    obs = between[0]
    total = math.comb(m + n, m)
    floor = ((2 if m == n else 1) / total) if exact else 1 / len(labels)
    return Permutation(between=(flat[obs].mean(0)).reshape(shape), within=(flat[~obs].mean(0)).reshape(shape),
                       p=p.reshape(shape), labellings=len(labels), exact=exact, floor=floor)


@dataclass(frozen=True)
class SeedNullBase:
    """What every seed-noise null records of its permutation test; each analysis adds its `sides` (per side, its cells).

    attn-diff's (`attn_result.SeedNull`, per head) and CKA's (`cka_stats.CKASeedNull`, per layer) derive from it,
    so both serialise these fields under the same names, in this order, with `sides` last.
    """

    runs_a: int
    runs_b: int
    statistic: str  # what T is, in words
    labellings: int
    exact: bool
    floor: float  # the smallest p this design can give
    alpha: float
    correction: str
    tested: int  # cells in the Benjamini-Hochberg family
    seed: int  # of the Monte Carlo draws (unused when exact)
    note: str | None  # when the floor makes marking impossible

    @classmethod
    def of(cls, test: Permutation, *, m: int, n: int, statistic: str, cells: str, tested: int, seed: int = PERMUTATION_SEED,
           **fields):
        """From a `permutation_test`'s design: alpha ALPHA, Benjamini-Hochberg across every `cells` ('side x layer x
        head') tested, and the note when its floor is above ALPHA. `fields`: the subclass's own (its sides)."""
        unit = cells.rsplit(" ", 1)[-1]
        note = None
        if test.floor > ALPHA:
            note = (f"with {m} + {n} runs the smallest p a relabelling can give is {test.floor:.3g}, above {ALPHA}: no {unit} "
                    f"can be marked; 4 seeds a side give 0.029, 5 give 0.0079")
        return cls(runs_a=m, runs_b=n, statistic=statistic, labellings=test.labellings, exact=test.exact, floor=test.floor,
                   alpha=ALPHA, correction=f"Benjamini-Hochberg across every {cells} tested", tested=tested, seed=seed,
                   note=note, **fields)


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), same shape; valid under independence or positive dependence."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    m = flat.size
    if m == 0:
        return p.copy()
    order = np.argsort(flat, kind="stable")
    scaled = flat[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    out = np.empty(m)
    out[order] = adjusted
    return out.reshape(p.shape)
