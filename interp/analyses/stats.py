"""Statistics shared by the example-level analyses (`qualitative`, `compare`).

Plain functions over numpy vectors, each returning a small frozen dataclass that serialises to
JSON and says what its number is. Undefined values (a test on an empty group) are `None`, never
NaN: the result files are strict JSON.

- `summary`: count, mean, median of one attribute (`records.summaries.summarize`).
- `mann_whitney`: two independent groups (scipy's `mannwhitneyu`, two-sided), with the
  probability of superiority it tests and the rank-biserial effect size.
- `wilcoxon_paired`: paired samples (scipy's `wilcoxon`, two-sided, zero differences dropped
  as in Wilcoxon's original test); all-zero differences are reported as identical, p = 1. It
  tests a shift of the median (the pseudo-median) of the differences, not their mean.
- `sign_flip_test`: paired randomisation test of the mean difference (scipy's
  `permutation_test`, `permutation_type="samples"`: every difference's sign flipped at random).
- `relabel_test`: randomisation test of a difference of group means between two groups of runs
  (the runs' labels reassigned between the groups; p defined as scipy's `permutation_test` with
  `permutation_type="independent"` defines it, computed here as scipy needs two runs a group).
- `paired_bca_interval`: BCa bootstrap interval of a mean difference over pairs
  (`scipy.stats.bootstrap`, `paired=True`).
- `hierarchical_interval`: percentile bootstrap interval of a difference of seed-averaged means
  that resamples the seeds of each side as well as the queries.
- `holm`: Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy import stats as sps

from records.summaries import summarize

CHUNK_CELLS = 4_000_000  # resampled values held at once (32 MB of float64), whatever the split's size
ALTERNATIVE = "two-sided"


def _float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Summary:
    count: int
    mean: float | None
    median: float | None


def summary(values: Sequence[float]) -> Summary:
    s = summarize(np.asarray(values, dtype=float).tolist())
    return Summary(s.n, s.mean, s.median)


@dataclass(frozen=True)
class MannWhitney:
    """Two-sided Mann-Whitney U test of `a` against `b`.

    It tests stochastic equality, P(x > y) + P(x = y) / 2 = 1/2 for x from `a` and y from `b`,
    not equal means or medians: `superiority` is that probability as estimated, U / (n_a n_b).
    `u` is scipy's statistic, U of `a`: the number of pairs (x in a, y in b) with x > y, ties
    counting one half. `effect` is the rank-biserial correlation 2U/(n_a n_b) - 1, in [-1, 1]:
    positive when `a` tends to be larger. `p` is scipy's (exact for small samples without ties,
    else the normal approximation with tie and continuity corrections). All `None` when either
    group is empty.
    """

    n_a: int
    n_b: int
    u: float | None
    p: float | None
    superiority: float | None
    effect: float | None


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        return MannWhitney(int(a.size), int(b.size), None, None, None, None)
    res = sps.mannwhitneyu(a, b, alternative=ALTERNATIVE)
    u = float(res.statistic)
    share = u / (a.size * b.size)
    return MannWhitney(int(a.size), int(b.size), u, _float(res.pvalue), share, 2.0 * share - 1.0)


@dataclass(frozen=True)
class Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of paired differences: a median shift, not the mean.

    Its null is that the differences are symmetric about zero, and it reacts to their
    pseudo-median (the median of pairwise averages): many small gains outweigh a few large
    losses even when the mean difference is negative. Zero differences are dropped before
    ranking (scipy's default `zero_method="wilcox"`); `nonzero` says how many pairs were left.
    When every difference is zero the samples are identical: `identical` is true, the statistic
    0 and p = 1.
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
    res = sps.wilcoxon(d, zero_method="wilcox", alternative=ALTERNATIVE)
    return Wilcoxon(int(d.size), nonzero, float(res.statistic), float(res.pvalue), False)


# -- tests of a mean difference, and its interval -------------------------------------------


@dataclass(frozen=True)
class RandomisationTest:
    """A randomisation test of a difference of means, and what it did.

    `test` is "sign-flip" (each pair's difference keeps or flips its sign) or "relabel" (runs
    reassigned between the two sides, group sizes kept). `observed` is the statistic on the
    data. p is scipy's two-sided p: twice the smaller one-sided share of the null distribution
    at least as extreme as `observed`, at most 1. With `exact`, every sign pattern or
    relabelling was enumerated (`resamples` of them) and no seed is used; otherwise `resamples`
    random ones were drawn with numpy's `default_rng(seed)` and one is added to both counts
    (Phipson and Smyth's p, never 0). `min_p` is the smallest p this test can give here.
    """

    test: str
    statistic: str
    observed: float
    alternative: str
    p: float
    exact: bool
    resamples: int
    seed: int | None
    min_p: float


def _two_sided(null: np.ndarray, observed: float, exact: bool) -> float:
    """scipy's `permutation_test` p: twice the smaller one-sided share, Monte Carlo counts + 1, at most 1."""
    gamma = abs(observed) * 100 * np.finfo(float).eps  # numerically distinct, theoretically equal values
    adjust = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + adjust) / (null.size + adjust)
    greater = (np.count_nonzero(null >= observed - gamma) + adjust) / (null.size + adjust)
    return float(min(1.0, 2 * min(less, greater)))


def _min_p(exact: bool, drawn: int) -> float:
    return min(1.0, 2.0 / drawn if exact else 2.0 / (drawn + 1))


def sign_flip_test(differences: Sequence[float], *, resamples: int, seed: int) -> RandomisationTest:
    """Paired sign-flip test of mean(`differences`) = 0, exact when 2^(nonzero pairs) <= `resamples`.

    Its null: each pair's two values are exchangeable, so every difference is as likely to have
    the other sign. scipy's `permutation_test` (`permutation_type="samples"`) draws or enumerates
    the sign patterns. Zero differences cannot change sign; they are left out of the patterns but
    still divide the statistic, which stays the mean over all pairs.
    """
    if resamples < 1:
        raise ValueError(f"`resamples` should be at least 1, got {resamples}.")
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("`differences` is empty.")
    nonzero = d[d != 0]
    name = "mean paired difference"
    if nonzero.size == 0:
        return RandomisationTest("sign-flip", name, 0.0, ALTERNATIVE, 1.0, True, 1, None, 1.0)
    n = d.size
    exact = 2 ** int(nonzero.size) <= resamples
    if nonzero.size == 1:  # scipy needs two: the two patterns are +d and -d, so p = 1
        observed = float(nonzero[0] / n)
        null = np.array([observed, -observed])
        return RandomisationTest("sign-flip", name, observed, ALTERNATIVE, _two_sided(null, observed, True), True, 2, None, 1.0)
    res = sps.permutation_test((nonzero,), lambda x, axis: x.sum(axis=axis) / n, permutation_type="samples", vectorized=True,
                               n_resamples=resamples, batch=max(1, CHUNK_CELLS // (2 * nonzero.size)),
                               alternative=ALTERNATIVE, rng=np.random.default_rng(seed))
    drawn = int(res.null_distribution.size)
    return RandomisationTest("sign-flip", name, float(res.statistic), ALTERNATIVE, float(res.pvalue), exact, drawn,
                             None if exact else seed, _min_p(exact, drawn))


def relabel_test(a: Sequence[float], b: Sequence[float], *, resamples: int, seed: int) -> RandomisationTest:
    """Randomisation test of mean(b) - mean(a) over units (runs) reassigned between `a` and `b`.

    Exact when the C(n_a + n_b, n_b) splits into groups of the same sizes number at most
    `resamples`, else `resamples` random permutations (numpy's `default_rng(seed)`); p as
    scipy's `permutation_test` with `permutation_type="independent"` gives it (which needs two
    units a group, so it is computed here). Its null: the units of both groups are exchangeable
    (here: the runs of both sides are seeds of one configuration).
    """
    if resamples < 1:
        raise ValueError(f"`resamples` should be at least 1, got {resamples}.")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"both groups need a unit, got {a.size} and {b.size}.")
    units = np.concatenate([a, b])  # (n_a + n_b,)
    total, m = units.size, b.size
    exact = math.comb(total, m) <= resamples
    if exact:
        in_b = np.zeros((math.comb(total, m), total), dtype=bool)  # (splits, units)
        for row, chosen in enumerate(combinations(range(total), m)):
            in_b[row, list(chosen)] = True
    else:
        order = np.random.default_rng(seed).permuted(np.tile(np.arange(total), (resamples, 1)), axis=1)  # (resamples, units)
        in_b = order < m  # the units placed in b's positions: any m of them, uniformly
    null = (in_b * units).sum(axis=1) / m - (~in_b * units).sum(axis=1) / (total - m)
    observed = float(b.mean() - a.mean())
    drawn = int(null.size)
    return RandomisationTest("relabel", "difference of group means", observed, ALTERNATIVE, _two_sided(null, observed, exact),
                             exact, drawn, None if exact else seed, _min_p(exact, drawn))


@dataclass(frozen=True)
class Interval:
    """An interval of a difference and how it was computed.

    `method`: "bca" (scipy's BCa bootstrap over pairs), "hierarchical-percentile" (percentile
    bootstrap over seeds and queries, see `hierarchical_interval`), "percentile" (BCa undefined
    on these data: scipy's percentile interval instead), or "constant" (every resample would
    give the same value: the interval is that value, nothing was drawn). `resamples` bootstrap
    replicates were drawn with numpy's `default_rng(seed)`.
    """

    low: float
    high: float
    level: float
    method: str
    resamples: int
    seed: int | None


def _check(resamples: int, level: float) -> None:
    if resamples < 1:
        raise ValueError(f"`resamples` should be at least 1, got {resamples}.")
    if not 0 < level < 1:
        raise ValueError(f"`level` should be in (0, 1), got {level}.")


def paired_bca_interval(a: Sequence[float], b: Sequence[float], *, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """BCa interval of mean(b - a), pairs resampled with replacement (`scipy.stats.bootstrap`, paired)."""
    _check(resamples, level)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"`a` and `b` should be paired non-empty vectors, got shapes {a.shape} and {b.shape}.")
    d = b - a
    if np.all(d == d[0]):
        return Interval(float(d[0]), float(d[0]), level, "constant", 0, None)
    kwargs = dict(paired=True, vectorized=True, n_resamples=resamples, confidence_level=level,
                  batch=max(1, CHUNK_CELLS // (2 * a.size)))
    statistic = lambda x, y, axis: np.mean(y - x, axis=axis)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap((a, b), statistic, method="BCa", rng=np.random.default_rng(seed), **kwargs)
        method = "bca"
        if not np.isfinite([res.confidence_interval.low, res.confidence_interval.high]).all():
            res = sps.bootstrap((a, b), statistic, method="percentile", rng=np.random.default_rng(seed), **kwargs)
            method = "percentile"
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high), level, method, resamples, seed)


def hierarchical_interval(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int, level: float = 0.95) -> Interval:
    """Percentile interval of mean over queries of (seed-mean of `b` - seed-mean of `a`).

    `a` is (seeds_a, n) and `b` (seeds_b, n): one row per run, one column per query, the same
    queries in both. Every replicate draws seeds_a rows of `a` and seeds_b rows of `b` with
    replacement (the seeds of each side), and n query columns with replacement, shared by every
    run (the design is crossed: every run ranks the same queries, so the pairing is kept). The
    spread therefore holds the seed-to-seed variance as well as the query sampling. With few
    seeds the seed part is under-estimated by a factor (seeds - 1) / seeds, as any bootstrap of
    a small sample.
    """
    _check(resamples, level)
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if a.shape[1] != b.shape[1] or a.shape[1] == 0:
        raise ValueError(f"`a` and `b` should cover the same non-empty queries, got shapes {a.shape} and {b.shape}.")
    runs = np.vstack([a, b])  # (seeds_a + seeds_b, n)
    k, n = a.shape[0], a.shape[1]
    d = b[0] - a[0]  # (n,)
    if np.all(a == a[0]) and np.all(b == b[0]) and np.all(d == d[0]):  # every replicate gives the same value
        value = float(b.mean() - a.mean())
        return Interval(value, value, level, "constant", 0, None)
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_CELLS // n)
    values = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        pick_a = rng.integers(0, k, size=(stop - start, k))  # (rows, seeds_a)
        pick_b = rng.integers(k, runs.shape[0], size=(stop - start, runs.shape[0] - k))  # (rows, seeds_b)
        queries = rng.integers(0, n, size=(stop - start, n))  # (rows, n)
        means = np.stack([r[queries].mean(axis=1) for r in runs], axis=1)  # (rows, runs): each run's MRR per replicate
        values[start:stop] = (np.take_along_axis(means, pick_b, axis=1).mean(axis=1)
                              - np.take_along_axis(means, pick_a, axis=1).mean(axis=1))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), level, "hierarchical-percentile", resamples, seed)


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
