"""What did a delta change, in which layer, and how many directions does it use? From the weights.

For every encoder layer and every module the delta touches, one matrix is analysed:

    lora      the effective weight update  dW = scaling * B @ A  (d_out x d_in; peft's lora_B,
              lora_A), i.e. what merging would add to the query / value weight
    adapter   W_down @ W_up (d x d): the bottleneck h -> ReLU(h W_down + b_down) W_up + b_up with
              its two projections composed directly (what it would add without the ReLU and the
              biases); the norms of W_down and W_up themselves are given as `factors`
    prefix    P_k and P_v (length x d), each its own matrix
    full      W_run - W_base for every weight matrix that changed (biases' change in `factors`;
              LayerNorm parameters are not analysed); weights outside the layers have layer None

Each matrix gets its Frobenius norm, its spectral norm, the top `top` singular values divided
by the largest (`spectrum`; multiply by `spectral_norm` for the values), and its effective rank
(Roy & Vetterli 2007): with p_i = s_i / sum_j s_j over all singular values s_i (those under
max(shape) * eps * the largest count as zero, in `spectrum` too),
erank = exp(-sum_i p_i log p_i). It is 1 for a rank-1 matrix, k for k equal singular values,
and at most the rank; it is 0 for a zero matrix (an untrained LoRA, whose B starts at zero).

With two runs, matching matrices (same layer and module; lora and full updates of one weight
match each other, adapter products match adapter products; prefixes are not compared) get the
overlap of their top-k singular subspaces, k = min(8, r_a, r_b), where r is the rank bound (the
LoRA or adapter r) and also the numerical rank (singular values above max(shape) * eps * the
largest; directions of zero singular values are arbitrary, so they are never compared): the principal
angles between the top-k left (output-side) singular vectors of the two, and between the top-k
right (input-side) ones (scipy.linalg.subspace_angles); `left` / `right` is the mean cos^2 of
those angles, 1 for the same subspace and 0 for orthogonal ones. Two random k-dimensional
subspaces of R^d have an expected mean cos^2 of k/d, given as `*_random` for reference. This is
how the study's reading of Fig. 7.2 (lora64 and lora256 learn nearly the same attention) can be
checked on the weights: high overlap far above k/d means the same directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from interp.analyses.base import resolve_runs, save_result
from interp.analyses.ranks import load_model
from trainers.errors import InterpError

TOP = 32  # singular values kept in `spectrum`
OVERLAP_K = 8  # dimensions of the compared singular subspaces (at most)
_LINEAR_KINDS = {"lora": "update", "full": "update", "adapter": "adapter"}  # which kinds can be compared


def effective_rank(singular_values: np.ndarray) -> float:
    """exp of the entropy of the singular values normalised to sum 1 (Roy & Vetterli 2007); 0 for a zero matrix."""
    s = np.asarray(singular_values, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def subspace_overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, list[float]]:
    """Mean cos^2 of the principal angles between span(a) and span(b) (columns), and the angles in degrees."""
    from scipy.linalg import subspace_angles

    angles = subspace_angles(a, b)
    return float(np.mean(np.cos(angles) ** 2)), [float(np.degrees(x)) for x in sorted(angles)]


@dataclass(frozen=True)
class MatrixStats:
    layer: int | None  # 1-based encoder layer; None outside the layers (full: embeddings, pooler)
    module: str  # path inside the layer ('attention.self.query'), or in the model outside the layers
    kind: str  # 'lora', 'adapter', 'prefix_key', 'prefix_value', 'full'
    matrix: str  # what was analysed: 'scaling*B@A', 'W_down@W_up', 'P_k', 'P_v', 'W_run-W_base'
    shape: list[int]
    rank_bound: int  # the most the rank can be: min(r, d) for LoRA and adapters, min(length, d) for a prefix, min(shape) for full
    frobenius: float
    spectral_norm: float
    effective_rank: float
    spectrum: list[float]  # top singular values / the largest (0.0 below the numerical-rank floor)
    factors: dict[str, float] = field(default_factory=dict)  # norms of the factors (A, B, W_down, W_up, bias, scaling)


@dataclass(frozen=True)
class RunAnatomy:
    name: str
    method: str
    depth: int
    hidden: int
    matrices: list[MatrixStats]


@dataclass(frozen=True)
class Overlap:
    layer: int | None
    module: str
    kinds: list[str]  # the two runs' kinds
    k: int  # dimensions compared: min(--k, both rank bounds, both numerical ranks)
    left: float | None  # mean cos^2 of the principal angles between the top-k left singular subspaces (None: a zero update)
    right: float | None  # ... between the top-k right singular subspaces
    left_random: float  # k / d_out: the expected `left` of two random subspaces
    right_random: float  # k / d_in
    left_angles: list[float]  # principal angles, degrees, smallest first
    right_angles: list[float]


@dataclass(frozen=True)
class AnatomyResult:
    runs: list[RunAnatomy]
    overlaps: list[Overlap]  # empty for a single run
    top: int
    k: int
    notes: list[str] = field(default_factory=list)


@dataclass
class _Matrix:
    """A matrix found in a model, before it is summarised."""

    layer: int | None
    module: str
    kind: str
    matrix: str
    value: torch.Tensor  # float64
    rank_bound: int
    factors: dict[str, float]
    svd: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # top-k U (d_out, k), all S, top-k Vh (k, d_in)


def _fro(t: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(t.detach().double()) if t.dim() == 2 else torch.linalg.vector_norm(t.detach().double()))


def find_matrices(encoder, model) -> list[_Matrix]:
    """The delta's matrices in `model` (from `load_delta` on `encoder`), layer by layer."""
    from peft.tuners.lora import LoraLayer

    from trainers.methods.adapter.layer import BottleneckLayer
    from trainers.methods.apply import full_state, transformers_model
    from trainers.methods.prefix.layer import PrefixLayer

    base = transformers_model(model)
    root = encoder.spec.layers + "."

    def where(name: str) -> tuple[int | None, str]:
        if name.startswith(root):
            layer, _, rest = name[len(root):].partition(".")
            return int(layer) + 1, rest
        return None, name

    found: list[_Matrix] = []
    state = full_state(model)
    if state is not None:
        tuned = dict(base.named_parameters())
        for name, before in state[1].items():
            if not name.endswith(".weight") or before.dim() != 2:
                continue
            delta = tuned[name].detach().double().cpu() - before.double()
            if not delta.any():
                continue
            module = name[: -len(".weight")]
            bias = tuned.get(module + ".bias")
            factors = {} if bias is None else {"bias": _fro(bias.detach().double().cpu() - state[1][module + ".bias"].double())}
            found.append(_Matrix(*where(module), "full", "W_run-W_base", delta, min(delta.shape), factors))
        return found
    for name, m in base.named_modules():
        if isinstance(m, LoraLayer):
            for adapter in m.lora_A:
                a, b = m.lora_A[adapter].weight.detach().double().cpu(), m.lora_B[adapter].weight.detach().double().cpu()
                scaling = float(m.scaling[adapter])
                found.append(_Matrix(*where(name), "lora", "scaling*B@A", scaling * b @ a, min(a.shape[0], b.shape[0], a.shape[1]),
                                     {"A": _fro(a), "B": _fro(b), "scaling": scaling}))
        elif isinstance(m, BottleneckLayer):
            for adapter in m.bottleneck_down:
                down = m.bottleneck_down[adapter].weight.detach().double().cpu().T  # W_down (d, r)
                up = m.bottleneck_up[adapter].weight.detach().double().cpu().T  # W_up (r, d)
                found.append(_Matrix(*where(name), "adapter", "W_down@W_up", down @ up, min(down.shape),
                                     {"W_down": _fro(down), "W_up": _fro(up)}))
        elif isinstance(m, PrefixLayer):
            layer, module = where(name.rsplit(".", 1)[0])  # the self-attention module that holds it
            for adapter in m.kv_prefix_key:
                for kind, label, store in (("prefix_key", "P_k", m.kv_prefix_key), ("prefix_value", "P_v", m.kv_prefix_value)):
                    p = store[adapter].detach().double().cpu()  # (length, d)
                    found.append(_Matrix(layer, module, kind, label, p, min(p.shape), {}))
    if not found:
        raise InterpError("this model carries no delta that anatomy knows (LoRA, adapters, prefix or full)")
    return found


def _summary(m: _Matrix, top: int, k: int) -> MatrixStats:
    """Norms and spectrum of `m`; keeps its top-k singular vectors (and all values) in `m.svd` for overlaps."""
    u, s, vh = torch.linalg.svd(m.value, full_matrices=False)
    s = s.numpy()
    largest = float(s[0]) if s.size else 0.0
    floor = largest * max(m.value.shape) * np.finfo(np.float64).eps  # below it a singular value is numerically zero
    s = np.where(s > floor, s, 0.0)
    m.svd = (u[:, :k].numpy(), s, vh[:k].numpy())
    spectrum = [float(x / largest) if x > 0 else 0.0 for x in s[:top]]
    return MatrixStats(m.layer, m.module, m.kind, m.matrix, list(m.value.shape), m.rank_bound, _fro(m.value), largest,
                       effective_rank(s), spectrum, m.factors)


@dataclass(frozen=True)
class DeltaModel:
    """A run's model as anatomy reads it."""

    name: str
    method: str  # the method config's one-line description
    encoder: object
    model: torch.nn.Module


class Anatomy:
    """Bound to one or two runs' models (the same run twice compares it with itself); one `compute(...)`."""

    def __init__(self, runs: list[DeltaModel]):
        if not 1 <= len(runs) <= 2:
            raise InterpError(f"anatomy takes one or two runs, got {len(runs)}")
        self.runs = runs

    def compute(self, *, top: int = TOP, k: int = OVERLAP_K) -> AnatomyResult:
        if top < 1 or k < 1:
            raise InterpError(f"--top and --k should be at least 1, got {top} and {k}")
        runs, found = [], []
        for run in self.runs:
            matrices = find_matrices(run.encoder, run.model)
            stats = [_summary(m, top, k) for m in matrices]
            found.append(matrices)
            runs.append(RunAnatomy(run.name, run.method, run.encoder.num_layers, run.encoder.hidden_size, stats))
        overlaps, notes = [], []
        if len(found) == 2:
            a, b = found
            by_place = {(m.layer, m.module, _LINEAR_KINDS.get(m.kind)): m for m in b}
            for x in a:
                family = _LINEAR_KINDS.get(x.kind)
                y = by_place.get((x.layer, x.module, family)) if family else None
                if y is not None and x.value.shape == y.value.shape:
                    overlaps.append(_overlap(x, y, min(k, x.rank_bound, y.rank_bound, _numerical_rank(x), _numerical_rank(y))))
            names = [r.name for r in self.runs]
            if not overlaps:
                notes.append(f"{names[0]} and {names[1]} change no weight in common that can be compared (LoRA / full updates, adapters)")
            zero = [f"layer {o.layer} {o.module}" for o in overlaps if o.left is None]
            if zero:
                notes.append(f"no overlap where an update is zero: {', '.join(zero)}")
        return AnatomyResult(runs, overlaps, top, k, notes)


def _numerical_rank(m: _Matrix) -> int:
    return int((m.svd[1] > 0).sum())  # values under the floor were set to zero in _summary


def _overlap(x: _Matrix, y: _Matrix, k: int) -> Overlap:
    (ux, _, vhx), (uy, _, vhy) = x.svd, y.svd
    d_out, d_in = x.value.shape
    if k == 0:  # a zero update has no singular directions
        return Overlap(x.layer, x.module, [x.kind, y.kind], k, None, None, k / d_out, k / d_in, [], [])
    left, left_angles = subspace_overlap(ux[:, :k], uy[:, :k])
    right, right_angles = subspace_overlap(vhx[:k].T, vhy[:k].T)
    return Overlap(x.layer, x.module, [x.kind, y.kind], k, left, right, k / d_out, k / d_in, left_angles, right_angles)


def run_anatomy(*, runs_dir: Path, names: list[str], top: int = TOP, k: int = OVERLAP_K) -> tuple[AnatomyResult, Path]:
    """Anatomy of one run, or of two with the overlap of their updates; saves runs/analyses/anatomy/<A>[-vs-<B>].json."""
    from trainers import methods

    if not 1 <= len(names) <= 2:
        raise InterpError(f"anatomy takes one or two runs, got {len(names)}")
    refs = resolve_runs(Path(runs_dir), names)
    for ref in refs:
        if ref.is_base:
            raise InterpError("'base' carries no delta to dissect; name trained runs")
    loaded: dict[str, DeltaModel] = {}
    for ref in refs:
        if ref.name not in loaded:  # the same run twice is compared with itself
            encoder, model = load_model(ref)
            loaded[ref.name] = DeltaModel(ref.name, methods.read_method(ref.run.path).describe(), encoder, model)
    result = Anatomy([loaded[ref.name] for ref in refs]).compute(top=top, k=k)
    inputs = {"runs": [r.fingerprint() for r in refs], "top": top, "k": k}
    return result, save_result(Path(runs_dir), "anatomy", "-vs-".join(names), result, inputs)
