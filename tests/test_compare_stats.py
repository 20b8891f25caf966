"""The statistics behind `interp compare` (interp/analyses/stats.py), on hand-computable cases.

Sign-flip and relabelling permutation tests against every pattern enumerated and against scipy,
the paired BCa and the hierarchical bootstrap intervals, Wilcoxon's signed-rank test and Holm's
adjustment. Plain arrays: no run directory, no model.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from interp.analyses.stats import hierarchical_interval, holm, paired_bca_interval, relabel_test, sign_flip_test, wilcoxon_paired


# -- statistics helpers: hand-computable cases ---------------------------------------------------

def _brute_sign_flip_p(d) -> float:
    """Every sign pattern enumerated; scipy's two-sided p: twice the smaller tail share, at most 1."""
    d = np.asarray(d, dtype=float)
    observed = d.sum()
    null = np.array([np.dot(signs, d) for signs in itertools.product((1, -1), repeat=d.size)])
    tol = 1e-9
    return min(1.0, 2 * min((null <= observed + tol).mean(), (null >= observed - tol).mean()))


@pytest.mark.parametrize("d, p, patterns", [
    # |sum| = 13/8; flipping 1, 1/2 or 1/4 lowers it to 3/8, 5/8, 9/8: only (+,+,+,+-) and their mirrors reach it
    ([1, 1 / 2, 1 / 4, -1 / 8], 4 / 16, 16),
    ([1, 1, 1, 1], 2 / 16, 16),            # all plus and all minus
    ([2, 1, 1, -1], 8 / 16, 16),           # 2 + e2 + e3 - e4 >= 3 for 4 of the 8 patterns with e1 = +
    ([1, -1, 1, -1], 16 / 16, 16),         # observed mean 0: every pattern is as extreme
    ([1 / 2, 0, 0, 1 / 2], 2 / 4, 4),      # zeros cannot change sign: the 4 patterns of the two halves
    ([0, 0, 1 / 4, 0], 2 / 2, 2),          # one difference: +1/4 and -1/4, p = 1
])
def test_sign_flip_exact_hand_cases(d, p, patterns):
    got = sign_flip_test(d, resamples=10_000, seed=0)
    assert got.p == pytest.approx(p) == pytest.approx(_brute_sign_flip_p(d))
    assert (got.exact, got.resamples, got.seed, got.alternative, got.test) == (True, patterns, None, "two-sided", "sign-flip")
    assert got.observed == pytest.approx(np.mean(d)) and got.min_p == pytest.approx(2 / patterns)


def test_sign_flip_monte_carlo_is_seeded_and_near_exact():
    d = np.random.default_rng(3).normal(0.05, 0.3, size=14)  # 16,384 patterns: more than 5,000 resamples
    exact = _brute_sign_flip_p(d)
    got = sign_flip_test(d, resamples=5_000, seed=7)
    assert (got.exact, got.resamples, got.seed) == (False, 5_000, 7)
    assert got == sign_flip_test(d, resamples=5_000, seed=7) != sign_flip_test(d, resamples=5_000, seed=8)
    assert got.p == pytest.approx(exact, abs=0.03) and got.min_p == pytest.approx(2 / 5_001)
    assert sign_flip_test(d, resamples=2 ** 14, seed=7).p == pytest.approx(exact)  # enough resamples: enumerated


def test_sign_flip_all_zero_is_p_one():
    got = sign_flip_test([0.0, 0.0, 0.0], resamples=100, seed=0)
    assert (got.p, got.observed, got.exact) == (1.0, 0.0, True)


def test_relabel_hand_case():
    # run MRRs a = (0.5, 0.6), b = (0.7, 0.8): the 6 ways to pick b's two runs give
    # +0.2, +0.1, 0, 0, -0.1, -0.2; the observed +0.2 is the largest: one-sided 1/6, two-sided 2/6
    got = relabel_test([0.5, 0.6], [0.7, 0.8], resamples=10_000, seed=0)
    assert (got.p, got.min_p, got.resamples, got.exact, got.test) == (pytest.approx(1 / 3), pytest.approx(1 / 3), 6, True, "relabel")
    assert got.observed == pytest.approx(0.2)
    assert relabel_test([0.5, 0.6, 0.55], [0.7, 0.8, 0.75], resamples=10_000, seed=0).p == pytest.approx(2 / 20)
    # one run against two: 3 splits, the single run is the best one, the worst, or in between
    assert [relabel_test([m], [0.4, 0.6], resamples=100, seed=0).p for m in (0.7, 0.5, 0.3)] == pytest.approx([2 / 3, 1.0, 2 / 3])


@pytest.mark.parametrize("resamples", [10_000, 50])  # 3,432 splits: enumerated, then 50 random ones
def test_relabel_equals_scipy(resamples):
    a, b = np.array([0.41, 0.45, 0.38, 0.5, 0.44, 0.47, 0.4]), np.array([0.52, 0.43, 0.55, 0.49, 0.51, 0.46, 0.6])
    got = relabel_test(a, b, resamples=resamples, seed=3)
    want = scipy.stats.permutation_test((a, b), lambda x, y, axis: y.mean(axis=axis) - x.mean(axis=axis), vectorized=True,
                                        permutation_type="independent", n_resamples=resamples, rng=np.random.default_rng(3))
    assert got.observed == pytest.approx(float(want.statistic)) and got.exact == (resamples > 3432)
    if got.exact:
        assert (got.p, got.resamples) == (pytest.approx(float(want.pvalue)), 3432)
    else:  # the same definition of p over different random splits
        assert (got.resamples, got.seed, got.min_p) == (50, 3, pytest.approx(2 / 51)) and got.p == pytest.approx(float(want.pvalue), abs=0.1)


def test_bca_interval_is_scipys_paired_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=300), rng.uniform(size=300) + 0.05
    got = paired_bca_interval(a, b, resamples=2000, seed=5)
    want = scipy.stats.bootstrap((a, b), lambda x, y, axis: np.mean(y - x, axis=axis), paired=True, vectorized=True,
                                 n_resamples=2000, method="BCa", rng=np.random.default_rng(5)).confidence_interval
    assert (got.low, got.high) == pytest.approx((want.low, want.high))
    assert (got.method, got.resamples, got.seed, got.level) == ("bca", 2000, 5, 0.95)
    se = (b - a).std(ddof=1) / np.sqrt(a.size)  # the normal interval, which BCa should be close to
    assert (got.low, got.high) == pytest.approx(((b - a).mean() - 1.96 * se, (b - a).mean() + 1.96 * se), abs=0.2 * se)


@pytest.mark.parametrize("a, b, value", [([0.5], [0.75], 0.25), ([1, 1, 1], [0.5, 0.5, 0.5], -0.5), ([0.2, 0.4], [0.2, 0.4], 0.0)])
def test_constant_differences_give_a_point_interval(a, b, value):
    for got in (paired_bca_interval(a, b, resamples=100, seed=0),
                hierarchical_interval(np.array([a, a]), np.array([b]), resamples=100, seed=0)):
        assert (got.low, got.high, got.method, got.resamples) == (pytest.approx(value), pytest.approx(value), "constant", 0)


def test_hierarchical_interval_holds_the_seed_spread():
    # two seeds a side; each seed is its configuration plus a seed offset shared by every query,
    # so the seed-to-seed spread (0.1 apart) dwarfs the query noise of the seed-averaged difference
    rng = np.random.default_rng(2)
    base = rng.uniform(0.2, 0.8, size=400)
    a = np.stack([base + 0.05, base - 0.05]) + rng.normal(0, 0.02, size=(2, 400))
    b = np.stack([base + 0.07, base - 0.03]) + rng.normal(0, 0.02, size=(2, 400))
    hier = hierarchical_interval(a, b, resamples=4000, seed=0)
    queries = paired_bca_interval(a.mean(0), b.mean(0), resamples=4000, seed=0)
    assert hier.method == "hierarchical-percentile" and hier.low < 0.02 < hier.high
    assert hier.high - hier.low > 5 * (queries.high - queries.low)


@pytest.mark.parametrize("d", [[0.0, 0.5, 0.75, -0.5], [1.0, -0.25, 0.5, 0.5, 0.1, -0.1, 0.3], list(np.linspace(-1, 2, 40))])
def test_wilcoxon_equals_scipy(d):
    got = wilcoxon_paired(d)
    want = scipy.stats.wilcoxon(d)
    assert (got.statistic, got.p) == pytest.approx((float(want.statistic), float(want.pvalue)))
    assert got.nonzero == sum(1 for x in d if x != 0) and not got.identical


def test_wilcoxon_all_zero_is_identical():
    got = wilcoxon_paired([0.0, 0.0, 0.0])
    assert (got.identical, got.statistic, got.p, got.nonzero) == (True, 0.0, 1.0, 0)


@pytest.mark.parametrize("p, adjusted", [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),        # 3*0.01, max(2*0.03, .03), max(1*0.04, .06)
    ([0.5, None, 0.2], [0.5, None, 0.4]),
    ([0.9, 0.8], [1.0, 1.0]),
])
def test_holm(p, adjusted):
    assert holm(p) == pytest.approx(adjusted)
