"""The typed result of `interp attn-diff` (interp/analyses/attn_diff.py), the definitions it carries, and its
seed-noise null assembled from the runs' pairwise distances (`seed_null`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from interp.analyses.seeds import (ALPHA, EXACT_LIMIT, MONTE_CARLO, PERMUTATION_SEED, SeedNullBase, benjamini_hochberg,
                                   permutation_test, run_pairs)

Grid = list[list[float]]  # [layer][head]
MIN_TOKEN_COUNT = 5
FULL_CAP = 128
FULL_DECIMALS = 5

DEFINITIONS = {  # carried in the result, so a report can say what it shows without this module
    "difference": "d = B - A, the [CLS] attention row of a run of side B minus that of a run of side A, over the real tokens",
    "pairs": "with seed groups, every statistic of A against B is the mean over the m x n pairs (a run of A, a run of B); "
             "per-run statistics (content mass, outside mass, entropy) are means over a side's runs",
    "total_variation": "mean over examples of the total variation TV = 1/2 sum |d| over the real tokens plus "
                       "one cell for the mass on a prefix; in [0, 1], the share of the attention mass that moved; does not "
                       "depend on the sequence length (the mean over tokens of |d| is 2 TV / length, so it is not reported)",
    "js_divergence": "mean Jensen-Shannon divergence, base 2, in [0, 1], between the same two distributions (tokens plus "
                     "the prefix cell)",
    "mean_total_variation": "total_variation averaged over every layer and head: one length-invariant number per side",
    "max_abs_difference": "max over examples, pairs and tokens of |d|",
    "signed_content_difference": "mean over examples of the sum of d over content (non-special) tokens: "
                                 "mass moved onto content tokens (> 0) or off them (< 0)",
    "content_mass": "mean over examples of the attention mass on content tokens",
    "outside_mass": "mean mass on a prefix: 1 - the sum over the real tokens (0 without a prefix)",
    "entropy": "mean Shannon entropy in bits of the row renormalised over the real tokens; change = H(B) - H(A)",
    "tokens": "content tokens at token_layer pooled by token text; per occurrence in a sequence of L real tokens the "
              "head-averaged |d| and d, and both times L (the change relative to uniform attention 1/L; without a prefix its "
              "mean over a row's tokens is 2 TV); ranked by the mean relative |d|, so short sequences do not dominate; tokens seen "
              f"fewer than {MIN_TOKEN_COUNT} times ignored",
    "seed_null": "both sides seed groups (m and n runs differing only in the seed): per side, layer and head, D(r, r') = "
                 "mean over examples of TV between runs r and r'; between = mean D over the m x n pairs across sides, "
                 "within = mean D over the seed-to-seed pairs of both sides (pooled); the statistic is between - within",
    "p": "permutation p-value: the share of the C(m+n, m) relabellings of the runs into groups of m and n (observed one "
         f"included; exact up to {EXACT_LIMIT:,} relabellings, else {MONTE_CARLO:,} random ones and (1 + hits) / (1 + draws)) "
         "whose between - within is at least the observed one. It tests the null that the runs are exchangeable: that the "
         "configuration changes this head's [CLS] attention no more than a new seed does. The unit is the run, not the "
         "example; the smallest possible p is `floor`",
    "q": f"Benjamini-Hochberg adjusted p across every side x layer x head tested (one family); a head is marked when "
         f"q <= {ALPHA} (false discovery rate {ALPHA})",
    "ratio": "between / within (None where within is 0)",
    "pair_total_variation": "D of every pair of runs, 'run | run': the numbers the permutation test relabels",
    "example": f"heads x tokens [CLS] rows of the first run of each side at the example's layer, and their TV per head; "
               f"full attention [layer][head][query][key] over at most the first {FULL_CAP} tokens, rounded to "
               f"{FULL_DECIMALS} decimals",
    "indices": "arrays are [layer][head] from 0; `layer`, `token_layer` and printed L/H labels count from 1",
}


@dataclass(frozen=True)
class SideStats:
    """Per layer x head statistics over every example of one side (see the definitions)."""

    examples: int
    tokens: int  # real tokens seen, special tokens included
    pairs: int  # A x B pairs of runs each statistic is averaged over
    mean_total_variation: float  # over every layer and head
    mean_js_divergence: float
    total_variation: Grid
    js_divergence: Grid
    max_abs_difference: Grid
    signed_content_difference: Grid
    content_mass_a: Grid
    content_mass_b: Grid
    outside_mass_a: Grid
    outside_mass_b: Grid
    entropy_a: Grid
    entropy_b: Grid
    entropy_change: Grid


@dataclass(frozen=True)
class TokenChange:
    token: str
    count: int  # occurrences over the side's examples
    mean_relative_change: float  # mean over occurrences of L x the head-averaged |B - A| (the ranking)
    mean_relative_signed_change: float  # mean of L x the head-averaged B - A
    mean_abs_change: float  # mean of the head-averaged |B - A|, in attention mass (length-dependent)
    mean_signed_change: float  # mean of the head-averaged B - A


@dataclass(frozen=True)
class ExampleSide:
    tokens: list[str]
    cls_a: Grid  # [head][token] at the example's layer
    cls_b: Grid
    difference: Grid  # B - A, [head][token]: the study's Fig. 7.1 / 7.2
    total_variation: list[float]  # [head]
    mean_total_variation: float
    max_abs_difference: float
    full_tokens: int  # tokens of the sequence; full_a / full_b cover min(full_tokens, the cap)
    full_a: list[list[Grid]]  # [layer][head][query][key], rounded
    full_b: list[list[Grid]]


@dataclass(frozen=True)
class ExampleAttention:
    idx: int | str
    query: str
    code: str
    layer: int  # 1-based
    runs: list[str]  # the run of side A and the run of side B shown
    sides: dict[str, ExampleSide]


@dataclass(frozen=True)
class HeadRank:
    layer: int  # 1-based
    head: int  # 1-based
    value: float


@dataclass(frozen=True)
class HeadNull:
    layer: int  # 1-based
    head: int  # 1-based
    between: float
    within: float
    p: float
    q: float


@dataclass(frozen=True)
class SeedNullSide:
    between: Grid
    within: Grid
    excess: Grid  # between - within: the statistic
    ratio: list[list[float | None]]
    p: Grid
    q: Grid
    marked: list[HeadNull]  # q <= alpha, smallest q first
    pair_total_variation: dict[str, Grid]


@dataclass(frozen=True)
class SeedNull(SeedNullBase):
    """attn-diff's seed-noise null: the common fields (seeds.SeedNullBase), then per side its layer x head grids."""

    sides: dict[str, SeedNullSide]


def seed_null(distances: dict[str, np.ndarray], names: list[str], m: int) -> SeedNull:
    """The null from every side's (pairs, layers, heads) D over `run_pairs(len(names))`, side A's m runs first:
    per side the permutation test, Benjamini-Hochberg across every side x layer x head, the heads marked."""
    n = len(names) - m
    tests = {side: permutation_test(d, m, n) for side, d in distances.items()}
    q_all = benjamini_hochberg(np.stack([t.p for t in tests.values()]))  # (sides, layers, heads): one family
    out = {}
    for (side, t), q in zip(tests.items(), q_all):
        ratio = np.where(t.within > 0, t.between / np.where(t.within > 0, t.within, 1), np.nan)
        marked = [HeadNull(li + 1, hi + 1, float(t.between[li, hi]), float(t.within[li, hi]), float(t.p[li, hi]), float(q[li, hi]))
                  for li, hi in zip(*np.nonzero(q <= ALPHA))]
        out[side] = SeedNullSide(
            between=t.between.tolist(), within=t.within.tolist(), excess=(t.between - t.within).tolist(),
            ratio=[[None if math.isnan(v) else float(v) for v in row] for row in ratio], p=t.p.tolist(), q=q.tolist(),
            marked=sorted(marked, key=lambda h: (h.q, -(h.between - h.within))),
            pair_total_variation={f"{names[i]} | {names[j]}": d.tolist() for (i, j), d in zip(run_pairs(m + n), distances[side])},
        )
    return SeedNull.of(next(iter(tests.values())), m=m, n=n, statistic="between - within total variation",
                       cells="side x layer x head", tested=sum(len(s.p) * len(s.p[0]) for s in out.values()),
                       seed=PERMUTATION_SEED, sides=out)


@dataclass(frozen=True)
class AttnDiffResult:
    a: str  # side A's label: its run, or its seed group's preset
    b: str
    runs_a: list[str]
    runs_b: list[str]
    sides: list[str]
    examples: int
    layers: int
    heads: int
    max_len: int
    stats: dict[str, SideStats]
    token_layer: int  # 1-based
    min_token_count: int
    tokens: dict[str, list[TokenChange]]
    example: ExampleAttention
    seed_null: SeedNull | None
    null_note: str | None  # why there is no seed-noise null
    seconds: float
    examples_per_second: float
    definitions: dict[str, str]

    def top_heads(self, side: str, stat: str = "total_variation", k: int = 5) -> list[HeadRank]:
        grid = getattr(self.stats[side], stat)
        cells = [HeadRank(li + 1, hi + 1, v) for li, row in enumerate(grid) for hi, v in enumerate(row)]
        return sorted(cells, key=lambda c: -abs(c.value))[:k]
