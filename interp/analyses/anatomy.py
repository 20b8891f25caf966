"""What did a delta change, in which layer, and how many directions does it use? From the weights.

For every encoder layer and every module the delta touches, one matrix is analysed. A linear
map is always written as the matrix M that acts on a column vector, y = M x: (d_out, d_in),
nn.Linear's weight layout. So for every method the LEFT singular vectors live in the space of
the module's OUTPUT and the RIGHT ones in the space of its INPUT (`sides` says so per matrix):

    lora      dW = scale * B @ A (d_out x d_in), what merging adds to the query / value weight;
              peft's lora_A (r x d_in) and lora_B (d_out x r) act on a row vector as x A^T B^T,
              so A's rows span the input side and B's columns the output side. `scale` is the
              factor the module applies (peft's `scaling`, LoraConfig.scale)
    adapter   the bottleneck acts on a row vector h: h + ReLU(h W_down + b_down) W_up + b_up, with
              W_down = bottleneck_down.weight^T (d x r) and W_up = bottleneck_up.weight^T (r x d).
              Its linear part h W_down W_up, written as M h, is M = (W_down W_up)^T =
              bottleneck_up.weight @ bottleneck_down.weight: input side = span of W_down's
              columns (what h is read along), output side = span of W_up's rows (what is added).
              The norms of W_down and W_up themselves are given as `factors`
    prefix    the change from initialisation, P_k - P_k0 and P_v - P_v0 (length x d; left: prefix
              positions, right: the key / value space). The prefix method saves P_k0, P_v0 with
              the delta; a checkpoint saved before it did has none, and then P_k, P_v are
              analysed raw, labelled "(raw: no initial values stored)", with a note
    full      W_run - W_base of every nn.Linear (d_out x d_in as stored) that changed; an
              nn.Embedding's table (num x d, looked up as one_hot @ E) is transposed to (d x num).
              Biases' change goes in `factors`; LayerNorm parameters are not analysed; weights
              outside the layers have layer None

Each matrix gets its Frobenius norm, its spectral norm, the top `top` singular values divided
by the largest (`spectrum`; multiply by `spectral_norm` for the values), and its effective rank
(Roy & Vetterli 2007): with p_i = s_i / sum_j s_j over all singular values s_i (those under
max(shape) * eps * the largest count as zero, in `spectrum` too),
erank = exp(-sum_i p_i log p_i). It is 1 for a rank-1 matrix, k for k equal singular values,
and at most the rank; it is 0 for a zero matrix (an untrained LoRA, whose B starts at zero).
With `vectors` > 0, the top singular vectors are kept too, keyed by side ("input", "output",
or "position" and "key" / "value"); each pair's sign makes the largest entry of its right
vector positive.

With two runs, matching matrices (same layer and module; lora and full updates of one weight
match each other, adapter products match adapter products; prefixes are not compared) get the
overlap of their top-k singular subspaces, k = min(8, r_a, r_b), where r is the rank bound (the
LoRA or adapter r) and also the numerical rank (directions of zero singular values are
arbitrary, so they are never compared): the principal angles between the top-k output-side
singular vectors of the two, and between the top-k input-side ones
(scipy.linalg.subspace_angles); `output` / `input` is the mean cos^2 of those angles, 1 for
the same subspace and 0 for orthogonal ones.

Two references say what an overlap is worth. The random-subspace baseline: two independent
uniformly random k-dimensional subspaces of R^d have an expected mean cos^2 of exactly k/d
(E trace(P_a P_b) = k^2/d), given as `*_random`; it costs nothing and is always there. The
seed null (anatomy_null.py): when other seeds of the runs' configurations are found, the
overlap between the configurations is set against the overlap of two seeds of one
configuration, with a permutation p-value; without them, a note says that no seed null is
available. This is how the study's reading of Fig. 7.2 (lora64 and lora256 learn nearly the
same attention) can be checked on the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import comb
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from interp.analyses.anatomy_null import OverlapNull, SeedNull, p_floor, pairs, seed_groups, seed_of, side_null
from interp.analyses.base import resolve_runs
from interp.analyses.checks import at_least
from interp.analyses.ranks import load_model
from interp.analyses.running import Prepared
from records.errors import InterpError
from trainers.methods.protocol import frobenius

TOP = 32  # singular values kept in `spectrum`
OVERLAP_K = 8  # dimensions of the compared singular subspaces (at most)


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
    matrix: str  # what was analysed: 'scale*B@A', '(W_down@W_up)^T', 'P_k-P_k0', 'P_v-P_v0', 'W_run-W_base', '(W_run-W_base)^T'
    shape: list[int]  # (rows, columns): (d_out, d_in) for a linear map, (length, d) for a prefix
    sides: dict[str, str]  # what the left / right singular vectors live in: {"left": "output", "right": "input"}
    rank_bound: int  # the most the rank can be: min(r, d) for LoRA and adapters, min(length, d) for a prefix, min(shape) for full
    frobenius: float
    spectral_norm: float
    effective_rank: float
    spectrum: list[float]  # top singular values / the largest (0.0 below the numerical-rank floor)
    factors: dict[str, float] = field(default_factory=dict)  # norms of the factors (A, B, W_down, W_up, bias, P, P_init) and LoRA's scale
    vectors: dict[str, list[list[float]]] = field(default_factory=dict)  # side name -> top singular vectors (with --vectors)


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
    output: float | None  # mean cos^2 of the principal angles between the top-k output-side singular subspaces (None: a zero update)
    input: float | None  # ... between the top-k input-side singular subspaces
    output_random: float  # k / d_out: the expected `output` of two random k-dim subspaces
    input_random: float  # k / d_in
    output_angles: list[float]  # principal angles, degrees, smallest first
    input_angles: list[float]
    seed_null: OverlapNull | None = None  # between- against within-configuration overlap (None: no seeds, or a zero update)


@dataclass(frozen=True)
class AnatomyResult:
    runs: list[RunAnatomy]
    overlaps: list[Overlap]  # empty for a single run
    top: int
    k: int
    seed_null: SeedNull | None = None  # the runs the seed null comes from; None: no null available (see notes)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Matrix:
    """A matrix found in a model, before it is summarised."""

    layer: int | None
    module: str
    kind: str
    matrix: str
    value: torch.Tensor | None  # float64, (rows, columns); dropped once summarised
    rank_bound: int
    factors: dict[str, float]
    sides: dict[str, str]
    family: str | None  # which matrices of two runs may be compared (the method says; None: never)
    svd: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # top-k U (rows, k), all S, top-k Vh (k, columns)
    shape: tuple[int, int] = (0, 0)

    @property
    def place(self) -> tuple:
        return self.layer, self.module, self.family


def find_matrices(encoder, model) -> tuple[list[_Matrix], list[str]]:
    """The delta's matrices in `model` (from `load_delta` on `encoder`), layer by layer, and notes.

    Which matrices are the delta is the method's to say (its tuner's `delta_matrices`)."""
    from trainers.methods.apply import tuner_of

    root = encoder.spec.layers + "."

    def where(name: str) -> tuple[int | None, str]:
        if name.startswith(root):
            layer, _, rest = name[len(root):].partition(".")
            return int(layer) + 1, rest
        return None, name

    matrices = tuner_of(model).delta_matrices(model)
    found = [_Matrix(*where(m.module), m.kind, m.label, m.value, m.rank_bound, m.factors, m.sides, m.family) for m in matrices]
    if not found:
        raise InterpError("this model carries no delta that anatomy knows (LoRA, adapters, prefix or full)")
    raw = dict.fromkeys(f"layer {where(m.module)[0]}" for m in matrices if m.raw)
    notes = [f"the checkpoint holds no initial prefix values (saved before they were kept) in {', '.join(raw)}: "
             "P_k and P_v are analysed raw there, not as their change from initialisation"] if raw else []
    return found, notes


def _summary(m: _Matrix, top: int, k: int, vectors: int) -> MatrixStats:
    """Norms and spectrum of `m`; keeps its top-k singular vectors (and all values) in `m.svd` for overlaps."""
    u, s, vh = torch.linalg.svd(m.value, full_matrices=False)  # (rows, q), (q,), (q, columns)
    s = s.numpy()
    largest = float(s[0]) if s.size else 0.0
    floor = largest * max(m.value.shape) * np.finfo(np.float64).eps  # below it a singular value is numerically zero
    s = np.where(s > floor, s, 0.0)
    u, vh = u.numpy(), vh.numpy()
    m.svd, m.shape = (u[:, :k], s, vh[:k]), tuple(m.value.shape)
    spectrum = [float(x / largest) if x > 0 else 0.0 for x in s[:top]]
    kept = {}
    if vectors:
        n = min(vectors, int((s > 0).sum()))
        sign = np.sign(vh[np.arange(n), np.abs(vh[:n]).argmax(axis=1)])  # (n,): the largest entry of each right vector positive
        kept = {m.sides["left"]: (u[:, :n] * sign).T.tolist(), m.sides["right"]: (vh[:n] * sign[:, None]).tolist()}
    stats = MatrixStats(m.layer, m.module, m.kind, m.matrix, list(m.value.shape), dict(m.sides), m.rank_bound, frobenius(m.value), largest,
                        effective_rank(s), spectrum, m.factors, kept)
    m.value = None  # the SVD is all that overlaps need
    return stats


@dataclass(frozen=True)
class DeltaModel:
    """A run's model as anatomy reads it."""

    name: str
    method: str  # the method config's one-line description
    encoder: object
    model: torch.nn.Module
    seed: int | None = None


def check_options(*, top: int = TOP, k: int = OVERLAP_K, vectors: int = 0) -> None:
    at_least("--top", top, 1)
    at_least("--k", k, 1)
    at_least("--vectors", vectors, 0)


class Anatomy:
    """Bound to one or two runs' models (the same run twice compares it with itself); one `compute(...)`.

    `seeds`: with two runs, the other seeds of each one's configuration (lists, maybe empty),
    from which the seed null of the overlaps is drawn. `notes`: said before the result's own (why
    there is no seed null).
    """

    kind: ClassVar[str] = "anatomy"

    def __init__(self, runs: list[DeltaModel], seeds: list[list[DeltaModel]] | None = None, notes: list[str] | None = None):
        if not 1 <= len(runs) <= 2:
            raise InterpError(f"anatomy takes one or two runs, got {len(runs)}")
        if seeds is not None and (len(runs) != 2 or len(seeds) != 2):
            raise InterpError("a seed null needs two runs and, for each, a list of its other seeds")
        self.runs, self.seeds, self.notes = runs, seeds, list(notes or [])

    def compute(self, data: None = None, *, top: int = TOP, k: int = OVERLAP_K, vectors: int = 0) -> AnatomyResult:
        """From the weights alone: `data` is None (anatomy reads no examples)."""
        if data is not None:
            raise InterpError("anatomy reads the weights only; it takes no examples")
        check_options(top=top, k=k, vectors=vectors)
        runs, found, notes = [], [], list(self.notes)
        for run in self.runs:
            matrices, said = find_matrices(run.encoder, run.model)
            notes += [f"{run.name}: {n}" for n in said]
            runs.append(RunAnatomy(run.name, run.method, run.encoder.num_layers, run.encoder.hidden_size,
                                   [_summary(m, top, k, vectors) for m in matrices]))
            found.append(matrices)
        if len(found) == 1:
            return AnatomyResult(runs, [], top, k, None, notes)
        a, b = found
        by_place = {m.place: m for m in b}
        overlaps = []
        for x in a:
            y = by_place.get(x.place) if x.place[2] else None
            if y is not None and x.shape == y.shape:
                overlaps.append(_overlap(x, y, min(k, x.rank_bound, y.rank_bound, _numerical_rank(x), _numerical_rank(y))))
        names = [r.name for r in self.runs]
        if not overlaps:
            notes.append(f"{names[0]} and {names[1]} change no weight in common that can be compared (LoRA / full updates, adapters)")
        zero = [f"layer {o.layer} {o.module}" for o in overlaps if o.output is None]
        if zero:
            notes.append(f"no overlap where an update is zero: {', '.join(zero)}")
        null = None
        if self.seeds is not None and overlaps:
            null, overlaps = self._seed_null(found, overlaps, top, k, notes)
        return AnatomyResult(runs, overlaps, top, k, null, notes)

    def _seed_null(self, found, overlaps: list[Overlap], top: int, k: int, notes: list[str]) -> tuple[SeedNull | None, list[Overlap]]:
        """Each overlap with the overlaps of every pair of runs of both configurations (named runs first)."""
        groups = [[run, *seeds] for run, seeds in zip(self.runs, self.seeds)]
        sizes = (len(groups[0]), len(groups[1]))
        if max(sizes) < 2:
            return None, overlaps
        every = []  # per run, A's then B's: its matrices by place
        for named, group in zip(found, groups):
            every.append({m.place: m for m in named})
            for run in group[1:]:
                matrices, _ = find_matrices(run.encoder, run.model)
                for m in matrices:
                    _summary(m, top, k, 0)
                every.append({m.place: m for m in matrices})
        out, missing = [], []
        family_of = {m.kind: m.family for matrices in found for m in matrices}
        for o in overlaps:
            family = family_of[o.kinds[0]], family_of[o.kinds[1]]
            here = [places.get((o.layer, o.module, family[i >= sizes[0]])) for i, places in enumerate(every)]
            if any(m is None or m.shape != here[0].shape for m in here):
                missing.append(f"layer {o.layer} {o.module}")
                out.append(o)
                continue
            common = min([k] + [m.rank_bound for m in here] + [_numerical_rank(m) for m in here])
            out.append(o if common == 0 else replace(o, seed_null=_overlap_null(here, common, sizes)))
        if missing:
            notes.append(f"no seed null where a seed lacks the matrix: {', '.join(missing)}")
        names = [n for g in groups for n in (r.name for r in g)]
        between, within = pairs(sizes)
        return SeedNull([[r.name for r in g] for g in groups], [[r.seed for r in g] for g in groups],
                        [[names[i], names[j]] for i, j in between], [[names[i], names[j]] for i, j in within],
                        comb(sum(sizes), sizes[0]), p_floor(sizes)), out

    @classmethod
    def prepare(cls, *, runs_dir: Path, names: list[str], top: int = TOP, k: int = OVERLAP_K, vectors: int = 0,
                seed_null: bool = True, foreign=None) -> Prepared:
        """One run, or two with the overlap of their updates: runs/analyses/anatomy/<A>[-vs-<B>].json; nothing loaded.

        With two runs and `seed_null`, the other seeds of each run's configuration found under
        `runs_dir` (anatomy_null.seed_siblings) give the overlaps their seed-to-seed null.
        """
        from trainers import methods

        if not 1 <= len(names) <= 2:
            raise InterpError(f"anatomy takes one or two runs, got {len(names)}")
        check_options(top=top, k=k, vectors=vectors)
        refs = resolve_runs(Path(runs_dir), names, foreign=foreign)
        for ref in refs:
            if ref.is_base:
                raise InterpError("'base' carries no delta to dissect; name trained runs")
        siblings, notes = None, []
        if len(refs) == 2:
            siblings, notes = seed_groups(Path(runs_dir), refs) if seed_null else (None, [
                "no seed null: not asked for (--no-seed-null); the random-subspace overlap k/d is the only reference"])

        def bind() -> Anatomy:
            loaded: dict[str, DeltaModel] = {}

            def load(ref) -> DeltaModel:
                if ref.name not in loaded:  # the same run twice is compared with itself
                    encoder, model = load_model(ref)
                    loaded[ref.name] = DeltaModel(ref.name, methods.read_method(ref.run.path).describe(), encoder, model, seed_of(ref))
                return loaded[ref.name]

            runs = [load(ref) for ref in refs]
            return cls(runs, None if siblings is None else [[load(r) for r in group] for group in siblings], notes)

        inputs = {"runs": [r.fingerprint() for r in refs], "top": top, "k": k, "vectors": vectors, "seed_null": seed_null,
                  "seeds": None if siblings is None else [[r.fingerprint() for r in group] for group in siblings]}
        return Prepared(name="-vs-".join(names), bind=bind, options={"top": top, "k": k, "vectors": vectors}, inputs=inputs)


def _overlap_null(matrices: list[_Matrix], k: int, sizes: tuple[int, int]) -> OverlapNull:
    """The output- and input-side overlaps of every pair of `matrices` (A's seeds, then B's), tested."""
    sides = {}
    for side, basis in (("output", lambda m: m.svd[0][:, :k]), ("input", lambda m: m.svd[2][:k].T)):
        similarity = np.eye(len(matrices))  # (runs, runs)
        for i, j in zip(*np.triu_indices(len(matrices), 1)):
            similarity[i, j] = similarity[j, i] = subspace_overlap(basis(matrices[i]), basis(matrices[j]))[0]
        sides[side] = side_null(similarity, sizes)
    return OverlapNull(k, sides["output"], sides["input"])


def _numerical_rank(m: _Matrix) -> int:
    return int((m.svd[1] > 0).sum())  # values under the floor were set to zero in _summary


def _overlap(x: _Matrix, y: _Matrix, k: int) -> Overlap:
    (ux, _, vhx), (uy, _, vhy) = x.svd, y.svd
    d_out, d_in = x.shape
    if k == 0:  # a zero update has no singular directions
        return Overlap(x.layer, x.module, [x.kind, y.kind], k, None, None, k / d_out, k / d_in, [], [])
    output, output_angles = subspace_overlap(ux[:, :k], uy[:, :k])
    input_, input_angles = subspace_overlap(vhx[:k].T, vhy[:k].T)
    return Overlap(x.layer, x.module, [x.kind, y.kind], k, output, input_, k / d_out, k / d_in, output_angles, input_angles)
