"""Linear CKA's arithmetic, apart from models: Gram statistics accumulated batch by batch in float64,
CKA from them (biased or unbiased HSIC), and the seed-noise null over already-computed CKA.

`interp/analyses/cka.py` binds the runs, feeds hidden states in and assembles the result; its
docstring gives the definitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interp.analyses.seeds import ALPHA, PERMUTATION_SEED, SeedNullBase, benjamini_hochberg, permutation_test, run_pairs
from trainers.parallel import reduce_sum

ESTIMATORS = ("biased", "unbiased")  # HSIC estimators

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

    def reduce(self) -> None:
        """Every sum (and n) summed over the processes (trainers.parallel; nothing changes on one process). The sums
        add up only when every process shifted its samples by the same vector before `add`."""
        for t in (self.sx, self.sy, self.a, self.b, self.xy, self.ab, self.xb, self.ya):
            reduce_sum(t)
        self.n = int(reduce_sum(torch.tensor([float(self.n)], dtype=torch.float64, device=self.sx.device)).item())

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
class CKASeedNull(SeedNullBase):
    """CKA's seed-noise null: the common fields (seeds.SeedNullBase), then per side its per-layer lists."""

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
    return CKASeedNull.of(next(iter(tests.values())), m=m, n=n,
                          statistic="within - between CKA at the same layer (mean 1 - CKA across sides minus within)",
                          cells="side x layer", tested=int(len(q_all)), seed=seed, sides=out)


# -- the analysis ------------------------------------------------------------------------------
