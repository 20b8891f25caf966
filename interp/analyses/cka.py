"""Which layers did a delta change, and do two deltas change the same ones? Linear CKA of hidden states.

Linear centred kernel alignment (Kornblith et al. 2019) compares two representations of the same
samples, X (n, p) and Y (n, q), up to rotation and isotropic scaling of either:

    CKA(X, Y) = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)),   HSIC with the linear kernel K = X X^T

Two estimators of HSIC (`estimator`, recorded with the result):

    biased     (the default; Kornblith's) ||Xc^T Yc||_F^2 / (n - 1)^2 on centred features Xc, Yc:
               tr(K H L H) / (n - 1)^2 computed in feature space. CKA in [0, 1]; inflated when n is
               not much larger than the width (few examples, or tokens of few examples).
    unbiased   Song et al. (2012)'s U-statistic, the "debiased CKA" of Nguyen et al. (2021); needs n >= 4.
               Nearly unbiased for small n, and may fall slightly below 0.

Both are computed from sums accumulated batch by batch in float64, never holding the examples:
per run and layer sum x and sum ||x||^2, and per pair of stacks sum x y^T (every layer pair for the
matrix, the same layer for the curves), sum ||x||^2 ||y||^2, sum x ||y||^2 and sum y ||x||^2 (the
last three only the unbiased estimator reads). Memory is that of the sums: (layers x hidden)^2
floats for the matrix and layers x hidden^2 per run and per pair of runs of a curve
(`accumulator_bytes`), whatever the size of the split. Each run's states are shifted by its first
batch's mean before they are summed (CKA does not change under a shift; the sums then cancel less).

What is compared. A forward pass with `output_hidden_states=True` (no hooks: it works for every
method, a prefix included, since a prefix adds keys and values, not positions) gives, per
example, `layers = depth + 1` hidden states: index 0 is the embeddings' output, index k the output
of encoder layer k (1-based, as the study counts). `tokens="cls"` takes the first token's state
(one sample per example); `tokens="all"` every real token's state, padding masked out (one sample
per token; special tokens included). Query and code sides are tokenized and compared separately.
The embeddings' [CLS] state is the same for every example (a fixed token at a fixed position), so
with `tokens="cls"` layer 0 does not vary and its CKA is undefined: None, listed in `constant_a`
/ `constant_b`, never a number made of rounding noise.

Sides. Side A and side B are each one run (or `base`) or two or more runs that differ only in the
seed (the caller groups them: interp/analyses/seeds.py). `matrix` is layers x layers for the first
run of each side; `diagonal` is, per layer, the mean over the m x n pairs (a run of A, a run of B)
of the CKA at the same layer (= the matrix's diagonal with one run a side).

The seed-noise null (`seed_null`, two or more runs a side): per layer, D(r, r') = 1 - CKA at that
layer for every pair of runs; T = mean D over between-side pairs - mean D over seed-to-seed pairs
(= within CKA - between CKA), with seeds.permutation_test's p over relabellings of the runs and
Benjamini-Hochberg q across every side x layer tested. Without it the result says why
(`null_note`).

Run through the one face (interp/analyses/running.py): `run_analysis(CKA, runs_dir=..., a=..., b=...)`
saves runs/analyses/cka/<A>-vs-<B>[.seeds][.<data>][.<side>][.all][.unbiased].json.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.analyses.attn_diff import BoundRun
from interp.analyses.checks import at_least
from interp.analyses.inputs import data_label
from interp.analyses.ranks import load_model, max_len_of, pooling_of, resolve_data
from interp.analyses.running import Prepared
from interp.analyses.seeds import ALPHA, PERMUTATION_SEED, benjamini_hochberg, null_note, permutation_test, resolve_sides, run_pairs
from trainers.devices import DEFAULT_PRECISION, autocast, check_device, check_precision, torch_device
from trainers.encoders import DEFAULT_POOLING
from records.errors import InterpError

SIDES = ("query", "code")
TOKENS = ("cls", "all")
ESTIMATORS = ("biased", "unbiased")
WINDOW_BATCHES = 16  # batches per length-sorted window: less padding, bounded memory
CHUNK = 2048  # samples converted to float64 at a time (tokens="all" gives thousands per batch)
CONSTANT_RTOL = 1e-5  # a layer whose states' spread is below this share of their norm does not vary

Matrix = list[list[float | None]]  # [layer of A][layer of B], 0 = the embeddings' output

DEFINITIONS = {  # carried in the result, so a report can say what it shows without this module
    "cka": "linear CKA (Kornblith et al. 2019): HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) with the linear kernel, over "
           "the same samples seen by two runs; 1 = the same representation up to rotation and isotropic scaling",
    "biased": "HSIC estimated by ||Xc^T Yc||_F^2 / (n-1)^2 on centred features (= tr(KHLH) / (n-1)^2); CKA in [0, 1], "
              "inflated when the samples are few against the width",
    "unbiased": "HSIC estimated by the U-statistic of Song et al. (2012) (debiased CKA); may fall slightly below 0",
    "layers": "index 0 is the embeddings' output, index k the output of encoder layer k (1-based)",
    "cls": "one sample per example: the hidden state of the first token ([CLS] / <s>); a run's pooling (cls, pooler, "
           "mean) is not applied, the hidden states are compared as they are",
    "all": "one sample per real token (special tokens included, padding masked out)",
    "matrix": "CKA of every layer of side A's first run against every layer of side B's first run",
    "diagonal": "per layer, the mean over the m x n pairs (a run of A, a run of B) of CKA at the same layer",
    "accumulator_bytes": "memory of the float64 sums of one side: fixed by the runs and the encoder's shape, not the examples",
    "constant": "layers whose states do not vary over the samples (with cls, the embeddings' output): CKA undefined, None",
    "seed_null": "both sides two or more runs differing only in the seed: per layer D = 1 - CKA for every pair of runs; "
                 "between = mean CKA over the m x n pairs across sides, within = mean CKA over the seed-to-seed pairs of "
                 "both sides; the statistic is within - between (the mean D across minus within)",
    "p": "permutation p-value over the C(m+n, m) relabellings of the runs (seeds.permutation_test): the share whose "
         "within - between is at least the observed one; the unit is the run; the smallest possible p is `floor`",
    "q": f"Benjamini-Hochberg adjusted p across every side x layer tested; a layer is marked when q <= {ALPHA}",
}


# -- the statistics ------------------------------------------------------------------------------


class GramStats:
    """Running float64 sums for linear CKA between stacks X (lx, n, p) and Y (ly, n, q) of the same n samples.

    `full`: every layer pair (lx x ly blocks of X^T Y), else only the same layer (lx == ly).
    """

    def __init__(self, lx: int, p: int, ly: int, q: int, *, full: bool, device: torch.device | str = "cpu"):
        if not full and lx != ly:
            raise ValueError(f"same-layer sums need as many layers on both sides, got {lx} and {ly}")
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.full, self.n = full, 0
        self.sx, self.sy = zeros(lx, p), zeros(ly, q)  # sum x, sum y
        self.a, self.b = zeros(lx), zeros(ly)  # sum ||x||^2, sum ||y||^2
        if full:
            self.xy = zeros(lx * p, ly * q)  # block (k, l) = sum x_k y_l^T
            self.ab, self.xb, self.ya = zeros(lx, ly), zeros(lx, ly, p), zeros(lx, ly, q)
        else:
            self.xy = zeros(lx, p, q)
            self.ab, self.xb, self.ya = zeros(lx), zeros(lx, p), zeros(lx, q)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.sx, self.sy, self.a, self.b, self.xy, self.ab, self.xb, self.ya))

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x (lx, n, p), y (ly, n, q): float64, row i of both the same sample."""
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"X and Y should hold the same samples, got {x.shape[1]} and {y.shape[1]} rows")
        a, b = x.square().sum(-1), y.square().sum(-1)  # (lx, n), (ly, n): squared norms
        self.n += x.shape[1]
        self.sx += x.sum(1)
        self.sy += y.sum(1)
        self.a += a.sum(1)
        self.b += b.sum(1)
        if self.full:
            (lx, n, p), (ly, _, q) = x.shape, y.shape
            self.xy.addmm_(x.permute(1, 0, 2).reshape(n, lx * p).T, y.permute(1, 0, 2).reshape(n, ly * q))  # (lx p, ly q)
            self.ab += a @ b.T  # (lx, ly)
            self.xb += torch.einsum("knp,ln->klp", x, b)
            self.ya += torch.einsum("lnq,kn->klq", y, a)
        else:
            self.xy.baddbmm_(x.transpose(1, 2), y)  # (l, p, q)
            self.ab += (a * b).sum(1)
            self.xb += torch.einsum("lnp,ln->lp", x, b)
            self.ya += torch.einsum("lnq,ln->lq", y, a)

    def hsic(self, estimator: str = "biased") -> torch.Tensor:
        """HSIC per layer pair: (lx, ly) when full, else (l,)."""
        n, sx, sy = self.n, self.sx, self.sy
        if self.full:
            (lx, p), (ly, q) = sx.shape, sy.shape
            xy = self.xy.view(lx, p, ly, q)
            f = xy.square().sum((1, 3))  # (lx, ly): ||sum x_k y_l^T||_F^2
            quad = torch.einsum("kp,kplq,lq->kl", sx, xy, sy)  # sx_k^T (sum x_k y_l^T) sy_l
            u, v = torch.einsum("kp,klp->kl", sx, self.xb), torch.einsum("lq,klq->kl", sy, self.ya)
            sxx, syy, a, b = sx.square().sum(-1)[:, None], sy.square().sum(-1)[None, :], self.a[:, None], self.b[None, :]
        else:
            f = self.xy.square().sum((1, 2))  # (l,)
            quad = torch.einsum("lp,lpq,lq->l", sx, self.xy, sy)
            u, v = (sx * self.xb).sum(-1), (sy * self.ya).sum(-1)
            sxx, syy, a, b = sx.square().sum(-1), sy.square().sum(-1), self.a, self.b
        if estimator == "biased":  # ||Xc^T Yc||^2 with Xc^T Yc = sum x y^T - sx sy^T / n, expanded
            return (f - 2 * quad / n + sxx * syy / n**2) / (n - 1) ** 2
        if estimator != "unbiased":
            raise ValueError(f"`estimator` should be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
        # K~, L~: the Gram matrices with their diagonals set to 0 (Song et al. 2012, Eq. 5)
        trace = f - self.ab  # tr(K~ L~)
        ones_k, ones_l = sxx - a, syy - b  # 1^T K~ 1, 1^T L~ 1
        cross = quad - u - v + self.ab  # 1^T K~ L~ 1
        return (trace + ones_k * ones_l / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)) / (n * (n - 3))

    def spread(self) -> torch.Tensor:
        """(lx,): the total variance of X per layer, sum over features of the (biased) variance."""
        return (self.a - self.sx.square().sum(-1) / self.n) / self.n


def linear_cka(x, y, *, estimator: str = "biased") -> float:
    """CKA of two (n, p) and (n, q) arrays in one go: the sums over one batch, of the arrays shifted by their means
    (CKA does not change under a shift; the sums then cancel less, as `_SideSums` shifts by a first batch's mean)."""
    x, y = (torch.as_tensor(np.asarray(t), dtype=torch.float64)[None] for t in (x, y))  # (1, n, p), (1, n, q)
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    stats = {k: GramStats(1, s.shape[-1], 1, t.shape[-1], full=False) for k, s, t in (("xy", x, y), ("xx", x, x), ("yy", y, y))}
    for k, s, t in (("xy", x, y), ("xx", x, x), ("yy", y, y)):
        stats[k].add(s, t)
    h = {k: float(s.hsic(estimator)[0]) for k, s in stats.items()}
    return h["xy"] / math.sqrt(h["xx"] * h["yy"])


def _cka(cross: torch.Tensor, own_x: torch.Tensor, own_y: torch.Tensor, defined_x: torch.Tensor,
         defined_y: torch.Tensor) -> list:
    """CKA from HSIC: cross (lx, ly) or (l,), own_* (layers,) HSIC of a run with itself; None where undefined."""
    if cross.dim() == 2:
        own, ok = own_x[:, None] * own_y[None, :], defined_x[:, None] & defined_y[None, :]
    else:
        own, ok = own_x * own_y, defined_x & defined_y
    ok = ok & (own > 0)
    value = cross / own.clamp(min=1e-300).sqrt()
    return _none(torch.where(ok, value, torch.nan).cpu().tolist())


def _none(values):
    if isinstance(values, list):
        return [_none(v) for v in values]
    return None if math.isnan(values) else values


def _mean(rows: list[list[float | None]]) -> list[float | None]:
    """Per layer mean over rows; None where any row is None."""
    return [None if any(v is None for v in col) else float(np.mean(col)) for col in zip(*rows)]


# -- the seed-noise null ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CKANullSide:
    between: list[float | None]  # [layer] mean CKA over the m x n pairs across sides
    within: list[float | None]  # [layer] mean CKA over the seed-to-seed pairs of both sides
    excess: list[float | None]  # within - between: the statistic (mean 1 - CKA across minus within)
    p: list[float | None]  # None where a layer's CKA is undefined
    q: list[float | None]
    marked: list[int]  # layers with q <= alpha (0 = embeddings)


@dataclass(frozen=True)
class CKASeedNull:
    runs_a: int
    runs_b: int
    statistic: str
    labellings: int
    exact: bool
    floor: float  # the smallest p this design can give
    alpha: float
    correction: str
    tested: int  # side x layer cells in the family
    seed: int  # of the Monte Carlo draws (unused when exact)
    note: str | None  # when the floor makes marking impossible
    sides: dict[str, CKANullSide]


def seed_null(runs_a: Sequence[str], runs_b: Sequence[str], pair_cka: Mapping[str, Mapping[tuple[str, str], Sequence[float | None]]],
              *, seed: int = PERMUTATION_SEED) -> CKASeedNull:
    """The seed-noise null from already-computed CKA: pair_cka[side][(run, run')] = per-layer CKA at the same layer.

    Needs every pair of the m + n runs (either order), m, n >= 2 and distinct names. ValueError otherwise.
    """
    m, n = len(runs_a), len(runs_b)
    names = [*runs_a, *runs_b]
    if m < 2 or n < 2:
        raise ValueError(f"a seed-noise null needs two or more runs a side, got {m} and {n}")
    if len(set(names)) != len(names) or not pair_cka:
        raise ValueError(f"a seed-noise null needs distinct runs and at least one side, got {names} and {list(pair_cka)}")
    tests, defined = {}, {}
    for side, table in pair_cka.items():
        rows = []
        for i, j in run_pairs(m + n):
            values = table.get((names[i], names[j]), table.get((names[j], names[i])))
            if values is None:
                raise ValueError(f"side {side}: no CKA of runs {names[i]!r} and {names[j]!r}")
            rows.append([math.nan if v is None else float(v) for v in values])
        d = 1 - np.array(rows, dtype=np.float64)  # (pairs, layers): D = 1 - CKA
        defined[side] = ~np.isnan(d).any(0)  # (layers,)
        tests[side] = permutation_test(d[:, defined[side]], m, n, seed=seed)
    q_all = benjamini_hochberg(np.concatenate([t.p for t in tests.values()]))
    out, start = {}, 0
    for side, t in tests.items():
        k = len(t.p)
        q = q_all[start : start + k]
        start += k
        layers = np.flatnonzero(defined[side])

        def spread(values) -> list[float | None]:
            full: list[float | None] = [None] * len(defined[side])
            for layer, v in zip(layers, values):
                full[layer] = float(v)
            return full

        out[side] = CKANullSide(between=spread(1 - t.between), within=spread(1 - t.within), excess=spread(t.between - t.within),
                                p=spread(t.p), q=spread(q), marked=[int(layer) for layer, v in zip(layers, q) if v <= ALPHA])
    first = next(iter(tests.values()))
    note = None
    if first.floor > ALPHA:
        note = (f"with {m} + {n} runs the smallest p a relabelling can give is {first.floor:.3g}, above {ALPHA}: no layer "
                f"can be marked; 4 seeds a side give 0.029, 5 give 0.0079")
    return CKASeedNull(m, n, "within - between CKA at the same layer (mean 1 - CKA across sides minus within)",
                       first.labellings, first.exact, first.floor, ALPHA, "Benjamini-Hochberg across every side x layer tested",
                       int(len(q_all)), seed, note, out)


# -- the analysis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CKASide:
    examples: int
    samples: int  # rows CKA is computed over: examples (cls) or real tokens (all)
    matrix: Matrix  # [layer of A's first run][layer of B's first run]
    diagonal: list[float | None]  # [layer] mean over the m x n pairs across sides of CKA at the same layer
    constant_a: list[int]  # layers where a run of side A does not vary over the samples (CKA undefined there)
    constant_b: list[int]
    pair_cka: dict[str, list[float | None]]  # 'run | run' -> [layer], every pair of runs computed


@dataclass(frozen=True)
class CKAResult:
    a: str  # side A's label: its run, or its seed group's preset
    b: str
    runs_a: list[str]
    runs_b: list[str]
    matrix_runs: list[str]  # the two runs of `matrix`: the first of each side
    sides: list[str]
    tokens: str  # 'cls' or 'all'
    estimator: str  # 'biased' or 'unbiased'
    depth: int  # encoder layers; the arrays have depth + 1 entries
    layer_names: list[str]  # 'embeddings', '1', ..., str(depth)
    hidden: int
    max_len: int
    examples: int
    stats: dict[str, CKASide]
    seed_null: CKASeedNull | None
    null_note: str | None  # why there is no seed-noise null
    accumulator_bytes: int  # the float64 sums of one side (sides are computed one after the other)
    seconds: float
    examples_per_second: float
    definitions: dict[str, str]

    def to_dict(self) -> dict:
        return asdict(self)

    def lowest(self, side: str) -> tuple[int, float] | None:
        """(layer, CKA) where the diagonal is lowest on `side` (0 = embeddings); None when no layer is defined."""
        cells = [(v, k) for k, v in enumerate(self.stats[side].diagonal) if v is not None]
        return None if not cells else min(cells)[::-1]

    def summary(self) -> str:
        """One line: where each side's representations moved most."""
        parts = []
        for side in self.sides:
            low = self.lowest(side)
            parts.append(f"{side} no layer defined" if low is None else f"{side} lowest {low[1]:.3f} at {self.layer_names[low[0]]}")
        return f"CKA {self.a} vs {self.b} per layer ({self.tokens}, {self.estimator}, {self.examples} examples): " + "; ".join(parts)


class _SideSums:
    """The sums of one side (query or code) for every run, pair of runs, and the matrix pair."""

    def __init__(self, runs: int, layers: int, hidden: int, pairs: list[tuple[int, int]], matrix: tuple[int, int],
                 device: torch.device):
        same = lambda: GramStats(layers, hidden, layers, hidden, full=False, device=device)  # noqa: E731
        self.shift: list[torch.Tensor | None] = [None] * runs  # (layers, 1, hidden) per run: its first batch's mean
        self.own = [same() for _ in range(runs)]
        self.pairs = {pair: same() for pair in pairs}
        self.matrix_pair = matrix
        self.matrix = GramStats(layers, hidden, layers, hidden, full=True, device=device)
        self.examples = 0

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in [*self.own, *self.pairs.values(), self.matrix])

    def add(self, states: list[torch.Tensor], examples: int) -> None:
        """states: per run, (layers, samples, hidden) float32 for the same samples."""
        self.examples += examples
        for start in range(0, states[0].shape[1], CHUNK):
            xs = []
            for r, s in enumerate(states):
                x = s[:, start : start + CHUNK].double()  # (layers, chunk, hidden)
                if self.shift[r] is None:
                    self.shift[r] = x.mean(1, keepdim=True)
                xs.append(x - self.shift[r])
            for r, x in enumerate(xs):
                self.own[r].add(x, x)
            for (i, j), stats in self.pairs.items():
                stats.add(xs[i], xs[j])
            i, j = self.matrix_pair
            self.matrix.add(xs[i], xs[j])

    def constant(self, r: int) -> torch.Tensor:
        """(layers,) True where run r's states do not vary: spread below CONSTANT_RTOL of their norm."""
        own = self.own[r]
        spread = own.spread().clamp(min=0)
        mean = (self.shift[r][:, 0] + own.sx / own.n).square().sum(-1)  # ||mean state||^2
        return spread <= CONSTANT_RTOL**2 * (spread + mean)

    def finish(self, estimator: str, names: list[str], m: int) -> tuple[CKASide, dict[tuple[str, str], list]]:
        own = [s.hsic(estimator) for s in self.own]  # per run, (layers,)
        defined = [~self.constant(r) for r in range(len(self.own))]
        cka = lambda stats, i, j: _cka(stats.hsic(estimator), own[i], own[j], defined[i], defined[j])  # noqa: E731
        pair_cka = {(names[i], names[j]): cka(stats, i, j) for (i, j), stats in self.pairs.items()}
        between = [pair_cka[(names[i], names[j])] for (i, j) in self.pairs if i < m <= j]
        constant = lambda runs: sorted({int(k) for r in runs for k in torch.nonzero(~defined[r]).flatten().tolist()})  # noqa: E731
        side = CKASide(examples=self.examples, samples=self.own[0].n, matrix=cka(self.matrix, *self.matrix_pair),
                       diagonal=_mean(between), constant_a=constant(range(m)), constant_b=constant(range(m, len(names))),
                       pair_cka={f"{a} | {b}": v for (a, b), v in pair_cka.items()})
        return side, pair_cka


def sides_of(side: str) -> tuple[str, ...]:
    """`--side`: query, code or both."""
    if side == "both":
        return SIDES
    if side not in SIDES:
        raise InterpError(f"--side should be query, code or both, got {side!r}")
    return (side,)


def check_options(*, sides: Sequence[str] = SIDES, tokens: str = "cls", estimator: str = "biased", batch_size: int = 32,
                  precision: str = DEFAULT_PRECISION, examples: int | None = None) -> None:
    """compute's options; `prepare` asks the same before any model loads. InterpError naming the option."""
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides:
        raise InterpError(f"--side should be query, code or both, got {', '.join(bad) or 'nothing'}")
    if tokens not in TOKENS:
        raise InterpError(f"--tokens should be one of {', '.join(TOKENS)}, got {tokens!r}")
    if estimator not in ESTIMATORS:
        raise InterpError(f"--estimator should be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    at_least("--batch-size", batch_size, 1)
    check_precision(precision)
    least = 4 if estimator == "unbiased" else 2
    if examples is not None and examples < least:
        raise InterpError(f"CKA needs at least {least} examples with the {estimator} estimator, got {examples}")


def result_name(a: str, b: str, *, seeds: bool, label: str, side: str, tokens: str, estimator: str) -> str:
    """'A-vs-B', '.seeds' when a side is a seed group, the data's label, then any non-default side, tokens, estimator."""
    return (f"{a}-vs-{b}" + (".seeds" if seeds else "") + label + ("" if side == "both" else f".{side}")
            + ("" if tokens == "cls" else f".{tokens}") + ("" if estimator == "biased" else f".{estimator}"))


class CKA:
    """Bound to side A's runs and side B's runs (each one run, `base`, or two or more seeds of one configuration)."""

    kind: ClassVar[str] = "cka"

    @classmethod
    def prepare(cls, *, runs_dir: Path, a: str, b: str, seeds: bool = False, split: str = "test", data_file: Path | None = None,
                limit: int | None = None, side: str = "both", tokens: str = "cls", estimator: str = "biased",
                batch_size: int = 32, device: str = "auto", precision: str = DEFAULT_PRECISION, progress: bool = True) -> Prepared:
        """Sides `a` and `b` (run names, comma lists of one configuration's seeds, or presets with `seeds`) and the data;
        every option checked, nothing loaded."""
        sides = sides_of(side)
        check_device(device)
        at_least("--limit", limit, 1)
        check_options(sides=sides, tokens=tokens, estimator=estimator, batch_size=batch_size, precision=precision)
        side_a, side_b, refs = resolve_sides(Path(runs_dir), a, b, seeds=seeds)
        data = resolve_data(refs, split=split, data_file=data_file, limit=limit)
        check_options(estimator=estimator, examples=len(data.examples))
        trained = [r for r in refs if not r.is_base]
        lengths = [max_len_of(r) for r in trained]  # the runs' own truncation; 'base' follows them
        max_len = max(lengths) if lengths else None  # only 'base': its default, capped by its tokenizer (bind)
        pooled = len(side_a.refs) > 1 or len(side_b.refs) > 1
        name = result_name(side_a.label, side_b.label, seeds=pooled, label=data_label(split, data_file, limit), side=side,
                           tokens=tokens, estimator=estimator)
        pooling = pooling_of(trained[0]) if trained else DEFAULT_POOLING

        def bind() -> CKA:
            bound = [BoundRun(ref.name, *load_model(ref), pooling_of(ref, pooling)) for ref in refs]
            m = len(side_a.refs)
            length = max_len if max_len is not None else max_len_of(refs[0], bound[0].encoder)
            return cls(a=bound[:m], b=bound[m:], labels=(side_a.label, side_b.label), max_len=length, device=device)

        def inputs(result: CKAResult) -> dict:
            return {"runs": [r.fingerprint() for r in refs], "runs_a": side_a.runs, "runs_b": side_b.runs,
                    "seeds_a": side_a.seeds, "seeds_b": side_b.seeds, "seeds_option": seeds, "data": data.describe(),
                    "side": side, "limit": limit, "tokens": tokens, "estimator": estimator, "max_len": result.max_len,
                    "precision": precision}

        options = {"sides": sides, "tokens": tokens, "estimator": estimator, "batch_size": batch_size, "progress": progress,
                   "precision": precision}
        return Prepared(name=name, bind=bind, data=data.examples, options=options, inputs=inputs)

    def __init__(self, *, a: Sequence[BoundRun], b: Sequence[BoundRun], labels: tuple[str, str] = ("A", "B"),
                 max_len: int = 256, device: str = "auto"):
        if not a or not b:
            raise InterpError("cka needs at least one run on each side")
        first = a[0]
        for run in [*a, *b][1:]:
            if run.encoder.tokenizer.get_vocab() != first.encoder.tokenizer.get_vocab():
                raise InterpError(f"runs {first.name!r} and {run.name!r} use different tokenizers; their states cannot be "
                                  "compared sample by sample")
            if (run.encoder.num_layers, run.encoder.hidden_size) != (first.encoder.num_layers, first.encoder.hidden_size):
                raise InterpError(f"runs {first.name!r} and {run.name!r} have differently shaped encoders")
        if (len(a) > 1 or len(b) > 1) and len({r.name for r in [*a, *b]}) != len(a) + len(b):
            raise InterpError("with a seed group every run must be named once: "
                              f"{', '.join(r.name for r in a)} against {', '.join(r.name for r in b)}")
        if max_len < 1:
            raise InterpError(f"max_len should be at least 1, got {max_len}")
        self.device = torch_device(device)
        for run in [*a, *b]:
            run.model.to(self.device).eval()
        self.a, self.b, self.labels, self.max_len = list(a), list(b), labels, max_len
        self.encoder = first.encoder
        self.depth, self.hidden = first.encoder.num_layers, first.encoder.hidden_size

    def _states(self, run: BoundRun, batch: dict[str, torch.Tensor], tokens: str) -> torch.Tensor:
        """(layers, samples, hidden): per example its first token's states (cls), or every real token's (all)."""
        out = run.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        if getattr(out, "hidden_states", None) is None or len(out.hidden_states) != self.depth + 1:
            raise InterpError(f"run {run.name!r}: the model gave no hidden state per layer (output_hidden_states)")
        states = torch.stack(out.hidden_states)  # (layers, batch, len, hidden): 0 = embeddings, k = layer k
        if tokens == "cls":
            return states[:, :, 0]  # (layers, batch, hidden)
        return states[:, batch["attention_mask"].bool()]  # (layers, real tokens, hidden)

    @torch.no_grad()
    def compute(self, examples: Sequence, *, sides: Sequence[str] = SIDES, tokens: str = "cls", estimator: str = "biased",
                batch_size: int = 32, progress: bool = False, precision: str = DEFAULT_PRECISION) -> CKAResult:
        """CKA of every layer pair over `examples` (query/code pairs, e.g. a split's), per side. See the module docstring.
        The forward passes run at `precision` (trainers.devices.autocast); the sums are float64 either way."""
        check_options(sides=sides, tokens=tokens, estimator=estimator, batch_size=batch_size, precision=precision,
                      examples=len(examples))
        runs, m, n = [*self.a, *self.b], len(self.a), len(self.b)
        names = [r.name for r in runs]
        between = [(i, m + j) for i in range(m) for j in range(n)]
        pairs = run_pairs(m + n) if m > 1 and n > 1 else between  # every pair for the null, else the m x n across
        start, out, nbytes = time.perf_counter(), {}, 0
        window = batch_size * WINDOW_BATCHES
        bar = tqdm(total=len(examples) * len(sides), desc="cka", unit="seq", disable=not progress, leave=False)
        for side in sides:
            sums = _SideSums(len(runs), self.depth + 1, self.hidden, pairs, (0, m), self.device)
            for w in range(0, len(examples), window):
                texts = sorted((e.query if side == "query" else e.code_text for e in examples[w : w + window]), key=len)
                for b in range(0, len(texts), batch_size):
                    batch = {k: v.to(self.device) for k, v in self.encoder.tokenize(texts[b : b + batch_size], self.max_len).items()}
                    with autocast(precision, self.device):
                        states = [self._states(run, batch, tokens).float() for run in runs]
                    sums.add(states, len(batch["input_ids"]))
                    bar.update(len(batch["input_ids"]))
            out[side] = sums.finish(estimator, names, m)
            nbytes = max(nbytes, sums.nbytes)
            del sums
        bar.close()
        seconds = time.perf_counter() - start
        null = None
        if m > 1 and n > 1:
            null = seed_null(names[:m], names[m:], {side: pair_cka for side, (_, pair_cka) in out.items()})
        return CKAResult(
            a=self.labels[0], b=self.labels[1], runs_a=names[:m], runs_b=names[m:], matrix_runs=[names[0], names[m]],
            sides=list(sides), tokens=tokens, estimator=estimator, depth=self.depth,
            layer_names=["embeddings", *map(str, range(1, self.depth + 1))], hidden=self.hidden, max_len=self.max_len,
            examples=len(examples), stats={side: s for side, (s, _) in out.items()}, seed_null=null,
            null_note=null_note((self.labels[0], m), (self.labels[1], n)), accumulator_bytes=nbytes, seconds=seconds,
            examples_per_second=len(examples) * len(sides) / max(seconds, 1e-9), definitions=DEFINITIONS,
        )
