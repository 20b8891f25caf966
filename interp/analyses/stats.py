"""Statistics shared by the example-level analyses (`qualitative`, `compare`).

Plain functions over numpy vectors, each returning a small frozen dataclass that serialises to
JSON. Undefined values (a test on an empty group) are `None`, never NaN: the result files are
strict JSON.

- `summary`: count, mean, median of one attribute.
- `mann_whitney`: two independent groups (scipy's `mannwhitneyu`, two-sided), with the
  rank-biserial effect size.
- `wilcoxon_paired`: paired samples (scipy's `wilcoxon`, two-sided, zero differences dropped
  as in Wilcoxon's original test); all-zero differences are reported as identical, p = 1.
- `bootstrap_mean_ci`: percentile bootstrap of a mean over paired differences, seeded and
  vectorised.
- `holm`: Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

BOOTSTRAP_CHUNK_CELLS = 20_000_000  # resample indices drawn at once (160 MB of int64), whatever the split's size


def _float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Summary:
    count: int
    mean: float | None
    median: float | None


def summary(values: Sequence[float]) -> Summary:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return Summary(0, None, None)
    return Summary(int(values.size), float(values.mean()), float(np.median(values)))


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann-Whitney U test of `a` against `b`.

    `u` is scipy's statistic, U of `a`: the number of pairs (x in a, y in b) with x > y, ties
    counting one half. `effect` is the rank-biserial correlation 2U/(n_a n_b) - 1, in [-1, 1]:
    positive when `a` tends to be larger. All `None` when either group is empty.
    """

    n_a: int
    n_b: int
    u: float | None
    p: float | None
    effect: float | None


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return MannWhitney(int(a.size), int(b.size), None, None, None)
    res = sps.mannwhitneyu(a, b, alternative="two-sided")
    u = float(res.statistic)
    return MannWhitney(int(a.size), int(b.size), u, _float(res.pvalue), 2.0 * u / (a.size * b.size) - 1.0)


@dataclass(frozen=True)
class Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of paired differences.

    Zero differences are dropped before ranking (scipy's default `zero_method="wilcox"`);
    `nonzero` says how many pairs were left. When every difference is zero the samples are
    identical: `identical` is true, the statistic 0 and p = 1.
    """

    n: int
    nonzero: int
    statistic: float
    p: float
    identical: bool


def wilcoxon_paired(differences: Sequence[float]) -> Wilcoxon:
    d = np.asarray(differences, dtype=float)
    nonzero = int(np.count_nonzero(d))
    if nonzero == 0:
        return Wilcoxon(int(d.size), 0, 0.0, 1.0, True)
    res = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return Wilcoxon(int(d.size), nonzero, float(res.statistic), float(res.pvalue), False)


def bootstrap_mean_ci(differences: Sequence[float], *, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(`differences`), resampling pairs with replacement.

    numpy's `default_rng(seed)` draws `resamples` x n indices, a block of rows at a time so that
    memory stays bounded; the block size is fixed, so the interval depends only on the inputs.
    """
    if resamples < 1:
        raise ValueError(f"`resamples` should be at least 1, got {resamples}.")
    if not 0 < level < 1:
        raise ValueError(f"`level` should be in (0, 1), got {level}.")
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("`differences` is empty.")
    rng = np.random.default_rng(seed)
    rows = max(1, BOOTSTRAP_CHUNK_CELLS // d.size)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        index = rng.integers(0, d.size, size=(stop - start, d.size))  # (rows, n)
        means[start:stop] = d[index].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values, in the input order; `None` entries stay `None` and do not count."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out
