"""anatomy's seed-noise null: other seeds of a run's configuration, and a permutation test on overlaps.

Another seed of a run is a finished run under the same runs directory whose manifest differs
from the run's only in `train.seed` (`records.manifest.differs_only_in_seed`, the rule of
`interp compare` and the report: the same preset, method config, base weights, data (each split's
fingerprint) and every other training setting, older manifests read as they were trained).
`interp study` names them `<preset>-s<seed>`; the names do not matter, the manifests do.
Execution details (device, processes) are not compared. Runs of the run's preset that differ
in more than the seed are named in the notes.

The test. Configuration A has runs a_1..a_m (the named run first), B has b_1..b_n, m + n >= 3.
From one subspace overlap per pair of runs, `between` is the mean over the m*n cross pairs
(a_i, b_j) and `within` the mean over the seed-to-seed pairs (a_i, a_i'), (b_j, b_j'). The
statistic within - between is large when the two configurations share fewer directions than
two seeds of one configuration do. Its p-value is exact: the share of the C(m+n, m) ways to
split the m+n runs into groups of sizes m and n whose statistic is at least the observed one.
With few seeds it cannot be small: the smallest possible value is 1/C(m+n, m), twice that when
m = n (a split and its mirror give the same statistic), so 1/3 for two seeds a side.
"""

from __future__ import annotations

from math import comb
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from interp.analyses.base import RunRef
from records.manifest import Manifest, differences, differs_only_in_seed
from trainers.training.runs import list_runs


@dataclass(frozen=True)
class SideNull:
    """One side's (output or input) overlaps at one layer and module, every pair of runs."""

    between: float  # mean overlap of the cross-configuration pairs (SeedNull.between_pairs)
    within: float  # mean overlap of the seed-to-seed pairs (SeedNull.within_pairs)
    between_pairs: list[float]  # in the order of SeedNull.between_pairs
    within_pairs: list[float]  # in the order of SeedNull.within_pairs
    p: float  # exact permutation p-value of within - between (one-sided: between below seed noise)


@dataclass(frozen=True)
class OverlapNull:
    k: int  # dimensions compared for every pair: min(--k, every run's rank bound and numerical rank here)
    output: SideNull
    input: SideNull


@dataclass(frozen=True)
class SeedNull:
    """Which runs make the null; the per-module numbers are in each Overlap's `seed_null`."""

    groups: list[list[str]]  # [A and its other seeds, B and its other seeds]; the named run first
    seeds: list[list[int | None]]  # their train.seed
    between_pairs: list[list[str]]
    within_pairs: list[list[str]]
    splits: int  # C(m + n, m): the splits the permutation test enumerates
    p_floor: float  # the smallest p-value these group sizes allow


def seed_siblings(runs_dir: Path, ref: RunRef) -> tuple[list[RunRef], list[str]]:
    """Other seeds of `ref`'s configuration under `runs_dir` (by seed), and notes on near misses (runs of its preset)."""
    manifest = ref.run.manifest
    found, notes = [], []
    for run in list_runs(Path(runs_dir)):
        if run.name == ref.name:
            continue
        if differs_only_in_seed(manifest, run.manifest):
            if run.finished:
                found.append(RunRef(run.name, run, ref.base))
            else:
                notes.append(f"{run.name} (another seed of {ref.name}'s configuration) has not finished; not used as a seed")
            continue
        differs = [d for d in manifest_differences(manifest, run.manifest) if d != "train.seed"]
        if not differs:
            notes.append(f"{run.name} is {ref.name}'s configuration with the same seed; not used as a seed")
        elif manifest.preset and run.manifest.preset == manifest.preset:
            notes.append(f"{run.name} shares preset {manifest.preset!r} with {ref.name} but differs in {', '.join(differs)}, "
                         "not only in train.seed; not used as a seed")
    return sorted(found, key=lambda r: (seed_of(r) is None, seed_of(r) or 0, r.name)), notes


def seed_of(ref: RunRef) -> int | None:
    return ref.run.manifest.seed if ref.run is not None else None


def manifest_differences(a: Manifest, b: Manifest) -> list[str]:
    """What differs between two runs' configurations and seeds: 'method.<field>', 'base.weights_sha256', 'data.<split>', 'train.<field>'."""
    return [d.field for d in differences(a, b)]


def pairs(sizes: tuple[int, int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(between, within) pairs of run indices; runs 0..m-1 are A's, m..m+n-1 are B's."""
    m, n = sizes
    group = [0] * m + [1] * n
    every = list(combinations(range(m + n), 2))
    return [(i, j) for i, j in every if group[i] != group[j]], [(i, j) for i, j in every if group[i] == group[j]]


def p_floor(sizes: tuple[int, int]) -> float:
    m, n = sizes
    return (2 if m == n else 1) / comb(m + n, m)


def side_null(similarity: np.ndarray, sizes: tuple[int, int]) -> SideNull:
    """similarity: (m + n, m + n) symmetric overlaps of every pair of runs (A's first)."""
    m, n = sizes
    if max(m, n) < 2:
        raise ValueError(f"a seed null needs two seeds of one configuration, got groups of {m} and {n}")
    between, within = pairs(sizes)
    upper = np.triu_indices(m + n, 1)
    values = similarity[upper]  # (pairs,), in the order of combinations(range(m + n), 2)

    def statistic(members: tuple[int, ...]) -> float:
        inside = np.isin(upper[0], members) == np.isin(upper[1], members)
        return float(values[inside].mean() - values[~inside].mean())

    observed = statistic(tuple(range(m)))
    splits = [statistic(c) for c in combinations(range(m + n), m)]
    p = sum(s >= observed - 1e-12 for s in splits) / len(splits)
    b = [float(similarity[i, j]) for i, j in between]
    w = [float(similarity[i, j]) for i, j in within]
    return SideNull(float(np.mean(b)), float(np.mean(w)), b, w, p)


def seed_groups(runs_dir: Path, refs: list[RunRef]) -> tuple[list[list[RunRef]] | None, list[str]]:
    """The other seeds of each of two runs' configurations, or None; and notes that say which, or why there are none."""
    a, b = refs
    none = "the random-subspace overlap k/d is the only reference"
    if a.name == b.name:
        return None, [f"no seed null: {a.name} is compared with itself"]
    (seeds_a, notes_a), (seeds_b, notes_b) = seed_siblings(runs_dir, a), seed_siblings(runs_dir, b)
    if b.name in {r.name for r in seeds_a}:
        return None, [f"{a.name} and {b.name} are seeds of one configuration: their overlap is itself a seed-to-seed "
                      f"overlap; there is no between-configuration difference to test"]
    notes = notes_a + [n for n in notes_b if n not in notes_a]
    if not seeds_a and not seeds_b:
        return None, [f"no seed null: no other seed of {a.name}'s or {b.name}'s configuration in the runs directory (a finished run "
                      f"that differs only in train.seed, as `interp study` trains them: <preset>-s<seed>); "
                      f"{none}"] + notes
    sizes = (1 + len(seeds_a), 1 + len(seeds_b))
    said = "; ".join(f"{r.name} with {', '.join(s.name for s in seeds) or 'no other seed'}" for r, seeds in ((a, seeds_a), (b, seeds_b)))
    return [seeds_a, seeds_b], [
        f"seed null from {said}: `between` is the mean overlap over the {sizes[0] * sizes[1]} cross-configuration pairs, "
        f"`within` over the {len(pairs(sizes)[1])} seed-to-seed pairs; p is an exact permutation test over the "
        f"{comb(sum(sizes), sizes[0])} splits of the {sum(sizes)} runs (smallest possible p: {p_floor(sizes):.3g})"] + notes
