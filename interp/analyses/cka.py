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

On several processes (trainers.parallel) each side's batches, cut as on one process, are dealt
out in turn, each process sums its own, and the sums are added. Every process shifts by the
same vector, the mean of the first batch of the whole split (a process that is not dealt it
computes that batch once more): sums shifted by different vectors would not add up.

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

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from tqdm.auto import tqdm

from interp.analyses.attn_diff import SIDES, BoundRun, sides_of, text_batches
from interp.analyses.cka_stats import ESTIMATORS, CKANullSide, CKASeedNull, GramStats, _cka, _mean, _none, linear_cka, seed_null  # noqa: F401 (re-exported)
from interp.analyses.checks import at_least
from interp.analyses.inputs import data_label
from interp.analyses.ranks import load_model, max_len_of, pooling_of, resolve_data
from interp.analyses.running import Prepared
from interp.analyses.seeds import ALPHA, null_note, resolve_sides, run_pairs
from trainers.devices import DEFAULT_PRECISION, autocast, check_device, check_precision, torch_device
from trainers.encoders import DEFAULT_POOLING
from trainers.parallel import deal, is_main, reduce_sum
from records.errors import InterpError

TOKENS = ("cls", "all")
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

    def shift_by(self, states: list[torch.Tensor]) -> None:
        """Each run's shift: the mean of the first CHUNK samples of `states` (per run, (layers, samples, hidden)), which
        `add` takes from the first batch it sees unless this was called first."""
        self.shift = [s[:, :CHUNK].double().mean(1, keepdim=True) for s in states]

    def add(self, states: list[torch.Tensor], examples: int) -> None:
        """states: per run, (layers, samples, hidden) float32 for the same samples."""
        self.examples += examples
        if self.shift[0] is None:
            self.shift_by(states)
        for start in range(0, states[0].shape[1], CHUNK):
            xs = [s[:, start : start + CHUNK].double() - self.shift[r] for r, s in enumerate(states)]  # (layers, chunk, hidden)
            for r, x in enumerate(xs):
                self.own[r].add(x, x)
            for (i, j), stats in self.pairs.items():
                stats.add(xs[i], xs[j])
            i, j = self.matrix_pair
            self.matrix.add(xs[i], xs[j])

    def reduce(self) -> None:
        """Every sum added up over the processes (trainers.parallel; nothing changes on one process)."""
        for stats in [*self.own, *self.pairs.values(), self.matrix]:
            stats.reduce()
        count = torch.tensor([float(self.examples)], dtype=torch.float64, device=self.matrix.sx.device)
        self.examples = int(reduce_sum(count).item())

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
                batch_size: int = 32, device: str = "auto", precision: str = DEFAULT_PRECISION, progress: bool = True,
                foreign=None) -> Prepared:
        """Sides `a` and `b` (run names, comma lists of one configuration's seeds, or presets with `seeds`) and the data;
        every option checked, nothing loaded."""
        sides = sides_of(side)
        check_device(device)
        at_least("--limit", limit, 1)
        check_options(sides=sides, tokens=tokens, estimator=estimator, batch_size=batch_size, precision=precision)
        side_a, side_b, refs = resolve_sides(Path(runs_dir), a, b, seeds=seeds, foreign=foreign)
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

    def _batch_states(self, runs: Sequence[BoundRun], texts: list[str], tokens: str, precision: str) -> list[torch.Tensor]:
        """Per run, (layers, samples, hidden) float32 states of one batch of texts, forward passes at `precision`."""
        batch = {k: v.to(self.device) for k, v in self.encoder.tokenize(texts, self.max_len).items()}
        with autocast(precision, self.device):
            return [self._states(run, batch, tokens).float() for run in runs]

    @torch.no_grad()
    def compute(self, examples: Sequence, *, sides: Sequence[str] = SIDES, tokens: str = "cls", estimator: str = "biased",
                batch_size: int = 32, progress: bool = False, precision: str = DEFAULT_PRECISION) -> CKAResult:
        """CKA of every layer pair over `examples` (query/code pairs, e.g. a split's), per side. See the module docstring.
        The forward passes run at `precision` (trainers.devices.autocast); the sums are float64 either way. On several
        processes each sums its share of a side's batches (the module docstring); `seconds` is this process's."""
        check_options(sides=sides, tokens=tokens, estimator=estimator, batch_size=batch_size, precision=precision,
                      examples=len(examples))
        runs, m, n = [*self.a, *self.b], len(self.a), len(self.b)
        names = [r.name for r in runs]
        between = [(i, m + j) for i in range(m) for j in range(n)]
        pairs = run_pairs(m + n) if m > 1 and n > 1 else between  # every pair for the null, else the m x n across
        start, out, nbytes = time.perf_counter(), {}, 0
        plan = {side: [texts for _, texts in text_batches(examples, (side,), batch_size)] for side in sides}  # one process's order
        parts = {side: deal(len(batches)) for side, batches in plan.items()}  # this process's batches of each side
        bar = tqdm(total=sum(len(plan[side][b]) for side, part in parts.items() for b in part), desc="cka",
                   unit="seq", disable=not progress or not is_main(), leave=False)
        for side in sides:
            sums = _SideSums(len(runs), self.depth + 1, self.hidden, pairs, (0, m), self.device)
            batches, part = plan[side], parts[side]
            if 0 not in part:  # the same shift as every other process: the first batch of the whole split
                sums.shift_by(self._batch_states(runs, batches[0], tokens, precision))
            for texts in (batches[b] for b in part):
                sums.add(self._batch_states(runs, texts, tokens, precision), len(texts))
                bar.update(len(texts))
            sums.reduce()
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
