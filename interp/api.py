"""The analyses on models in memory, for a notebook: no run written to disk, the typed result back.

    import interp
    result = interp.attn_diff(model_a, model_b, [(query, code), ...])
    result.stats["code"].total_variation   # [layer][head], as in AttnDiffResult
    result.save("runs")                     # runs/analyses/attn-diff/<name>.json, what `interp attn-diff` writes
    result.figure()                         # a plotly go.Figure: the first figure the report draws for it

Each function binds the models as the command's `prepare` would and calls the analysis' own
`compute` (interp/analyses/running.py): the numbers are those of the command line on the same
models and data. A model is any of

    a peft.PeftModel    over a BERT/RoBERTa-family encoder (an AutoModel), any peft method; its active adapter
    an encoder          a plain transformers AutoModel (BertModel, RobertaModel, ...): a base or a fully fine-tuned one
    a run name or path  a run under `runs_dir`, a peft adapter directory or a model directory (trainers.foreign)

and a side of attn_diff or cka may be a list of models, the seeds of one configuration (the seed-noise
null). The tokenizer is `tokenizer`, else each model's own (from its `name_or_path`); both sides must
read the same tokens. `data` is a list of (query, code) pairs, of dicts with "query" and "code", of
the project's `Example`s (`interp.load_split(dir, "test")`), or the path of a split's .jsonl. A text
is read as the project's data reads it: its whitespace-separated tokens joined by single spaces.

Options left at None take what a run records (its pooling, max_len, tie rule) for a run, and the
project's defaults for a model in memory (pooling cls, max_len 256 within the tokenizer's limit,
the CodeXGLUE tie rule). The models are put in eval mode for the analysis (training mode comes back
afterwards) and moved to `device` ("auto": CUDA when there is one). A result's inputs record where
each model came from: for one in memory its class, its peft config, and the sha256 of its trainable
weights (the adapter's for a PeftModel, every weight for a plain encoder).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from interp.analyses.ablate import Ablation, _parse, settings_label
from interp.analyses.attn_diff import AttnDiff, result_name, sides_of
from interp.analyses.attribute import Attribution
from interp.analyses.base import result_payload, save_result, write_result
from interp.analyses.cka import CKA
from interp.analyses.cka import result_name as cka_result_name
from interp.analyses.qualitative import Qualitative
from interp.memory import (
    Model,
    bind_pair,
    bind_side,
    examples_of,
    max_len_for,
    training_kept,
)
from records.errors import InterpError
from trainers.devices import DEFAULT_PRECISION
from trainers.methods.apply import applied_method
from trainers.training.evaluate import DEFAULT_TIE_RULE

R = TypeVar("R")


@dataclass(frozen=True)
class Analysed(Generic[R]):
    """An analysis' typed result (`result`, e.g. an AttnDiffResult; its fields read through as attributes), with what
    it was computed from (`inputs`) and the name it is saved under."""

    kind: str  # 'attn-diff', 'cka', 'ablate', 'attribute', 'qualitative': the folder under runs/analyses/
    name: str
    result: R
    inputs: dict

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("kind", "name", "result", "inputs"):
            raise AttributeError(attr)
        return getattr(self.result, attr)

    def __repr__(self) -> str:
        return f"<interp {self.kind} result {self.name!r}: {type(self.result).__name__}>"

    def to_dict(self) -> dict:
        """What `save` writes: {"kind", "name", "inputs", "result", "versions", "code_version"}, plain JSON."""
        return result_payload(self.kind, self.name, self.result, self.inputs)

    def save(self, target: str | os.PathLike = "runs") -> Path:
        """Write the result as the command line does, atomically; the path written.

        `target`: a runs directory (runs/analyses/<kind>/<name>.json there, where `interp report --runs-dir` finds
        it), or a path ending in .json. InterpError, nothing written, where that path holds anything but an earlier
        result of this kind."""
        target = Path(target)
        if target.suffix == ".json":
            return write_result(target, self.kind, self.name, self.result, self.inputs)
        return save_result(target, self.kind, self.name, self.result, self.inputs)

    def figures(self) -> dict:
        """div id -> plotly `go.Figure`: every figure the report's pages draw for this result, in their order."""
        from reports import figures
        from reports.kinds import KINDS

        saved = json.loads(json.dumps(self.to_dict()))
        with figures.collected() as drawn:
            KINDS[self.kind].pages(saved)
        return drawn

    def figure(self, which: str | None = None):
        """One of `figures()`: the one of div id `which`, else the first (e.g. attn-diff's total-variation heatmaps)."""
        drawn = self.figures()
        if not drawn:
            raise InterpError(f"the report draws no figure for this {self.kind} result")
        if which is None:
            return next(iter(drawn.values()))
        if which not in drawn:
            raise InterpError(f"no figure {which!r}; this result has {', '.join(drawn)}")
        return drawn[which]


# -- the analyses ---------------------------------------------------------------------------------


def attn_diff(model_a: Model | Sequence[Model], model_b: Model | Sequence[Model], data: Any, *, tokenizer=None,
              pooling: str | None = None, max_len: int | None = None, labels: tuple[str, str] | None = None,
              side: str = "both", example: int | None = None, layer: int | None = None, batch_size: int = 32,
              device: str = "auto", precision: str = DEFAULT_PRECISION, name: str | None = None,
              runs_dir: str | os.PathLike = "runs", progress: bool = False) -> Analysed:
    """Where B moves the [CLS] attention relative to A, head by head (interp/analyses/attn_diff.py says every number).

    Returns an `Analysed` AttnDiffResult: `stats[side]` per side ('query', 'code') holds [layer][head] grids (layers and
    heads from 0 in the arrays) of total variation and Jensen-Shannon divergence (in [0, 1], shares of the attention
    mass), signed content difference (attention mass), entropies (bits); `example` one example's heads x tokens
    difference at `layer` (1-based; default the last) for bertviz: the example of idx `example` (for pairs and dicts
    without an idx, its position in `data`; default the first). With a list of models on both sides (seeds), a
    seed-noise null per head (`seed_null`)."""
    examples, described = examples_of(data)
    a, b, labels = bind_pair(model_a, model_b, labels=labels, tokenizer=tokenizer, pooling=pooling, runs_dir=runs_dir)
    length = max_len_for([*a, *b], max_len)
    with training_kept([*a, *b]):
        analysis = AttnDiff(a=[x.run for x in a], b=[x.run for x in b], labels=labels, max_len=length, device=device)
        result = analysis.compute(examples, sides=sides_of(side), example=example, layer=layer, batch_size=batch_size,
                                  progress=progress, precision=precision)
    inputs = {"runs": [x.record for x in [*a, *b]], "runs_a": result.runs_a, "runs_b": result.runs_b,
              "pooling": {x.run.name: x.run.pooling for x in [*a, *b]}, "data": described, "side": side, "max_len": length,
              "example": result.example.idx, "layer": result.example.layer, "precision": precision}
    seeds = len(a) > 1 or len(b) > 1
    return Analysed("attn-diff", name or result_name(labels[0], labels[1], side=side, seeds=seeds), result, inputs)


def cka(model_a: Model | Sequence[Model], model_b: Model | Sequence[Model], data: Any, *, tokenizer=None,
        max_len: int | None = None, labels: tuple[str, str] | None = None, side: str = "both", tokens: str = "cls",
        estimator: str = "biased", batch_size: int = 32, device: str = "auto", precision: str = DEFAULT_PRECISION,
        name: str | None = None, runs_dir: str | os.PathLike = "runs", progress: bool = False) -> Analysed:
    """Linear CKA between the two sides' hidden states, every layer against every layer (interp/analyses/cka.py).

    Returns an `Analysed` CKAResult: `stats[side].matrix` is (depth + 1) x (depth + 1), index 0 the embeddings' output,
    k the output of encoder layer k; `stats[side].diagonal` the CKA at the same layer (unitless, 1 = the same
    representation up to rotation and scale; None where a layer does not vary). `tokens`: 'cls' (one sample per
    example) or 'all' (one per real token). Needs 2 examples or more (4 with estimator='unbiased')."""
    examples, described = examples_of(data)
    a, b, labels = bind_pair(model_a, model_b, labels=labels, tokenizer=tokenizer, runs_dir=runs_dir)
    length = max_len_for([*a, *b], max_len)
    with training_kept([*a, *b]):
        analysis = CKA(a=[x.run for x in a], b=[x.run for x in b], labels=labels, max_len=length, device=device)
        result = analysis.compute(examples, sides=sides_of(side), tokens=tokens, estimator=estimator, batch_size=batch_size,
                                  progress=progress, precision=precision)
    inputs = {"runs": [x.record for x in [*a, *b]], "runs_a": result.runs_a, "runs_b": result.runs_b, "data": described,
              "side": side, "tokens": tokens, "estimator": estimator, "max_len": length, "precision": precision}
    seeds = len(a) > 1 or len(b) > 1
    return Analysed("cka", name or cka_result_name(labels[0], labels[1], seeds=seeds, label="", side=side, tokens=tokens,
                                                   estimator=estimator), result, inputs)


def ablate(model: Model, data: Any, *, layers: str | Sequence[int] | None = None, mode: str = "drop", sweep: bool = False,
           tokenizer=None, pooling: str | None = None, max_len: int | None = None, ties: str | None = None,
           label: str | None = None, batch_size: int = 64, device: str = "auto", precision: str = DEFAULT_PRECISION,
           name: str | None = None, runs_dir: str | os.PathLike = "runs", progress: bool = False) -> Analysed:
    """The MRR over `data` (each query against every code of `data`) with the delta switched off in some layers
    (interp/analyses/ablate.py). `layers`: 1-based, a spec such as '5-6' or a list [5, 6]; `mode`: 'drop' them or
    'keep' only them; `sweep`: every single layer and the top / bottom blocks too.

    Returns an `Analysed` AblateResult: `intact_mrr` (nothing off), `base_mrr` (every layer off), per setting its
    `mrr`, `change` and `retained` (the share of the delta's gain kept); MRRs in [0, 1]."""
    examples, described = examples_of(data)
    (bound,) = bind_side(model, label or "model", argument="model", tokenizer=tokenizer, pooling=pooling, runs_dir=runs_dir)
    config = applied_method(bound.run.model)
    if config is None:
        raise InterpError("model: a plain encoder carries no delta to switch off; pass a PeftModel (or a run)")
    depth = bound.run.encoder.num_layers
    spec = layers if layers is None or isinstance(layers, str) else ",".join(str(int(i)) for i in layers)
    chosen = _parse(spec, depth)
    analysis = Ablation(bound.run.encoder, bound.run.model, name=bound.run.name, config=config,
                        max_len=max_len_for([bound], max_len), pooling=bound.run.pooling,
                        ties=ties or bound.ties or DEFAULT_TIE_RULE,
                        batch_size=batch_size, device=device, progress=progress, precision=precision)
    with training_kept([bound]):
        result = analysis.compute(examples, layers=chosen, mode=mode, sweep=sweep)
    inputs = {"run": bound.record, "data": described, "layers": spec, "mode": mode, "sweep": sweep, "precision": precision,
              "max_len": analysis.max_len}
    return Analysed("ablate", name or f"{bound.run.name}.{settings_label(chosen, mode, sweep)}", result, inputs)


def attribute(model: Model, query: str, code: str, *, data: Any = None, baseline: Model | None = None, tokenizer=None,
              pooling: str | None = None, max_len: int | None = None, steps: int = 50, mode: str = "joint",
              reference: str | None = None, others: int = 8, labels: tuple[str, str] | None = None,
              precision: str = DEFAULT_PRECISION, name: str | None = None, runs_dir: str | os.PathLike = "runs") -> Analysed:
    """Integrated gradients of the pair's score (the inner product of the pooled embeddings; with `baseline`, the
    difference of the two models' scores) over its query and code tokens (interp/analyses/attribute.py).

    `reference`: 'others' (pairs of `data`, the default when data is given; the pair itself, if among them, left out)
    or 'pad' (the default without).
    Returns an `Analysed` AttributeResult: `query_tokens` / `code_tokens`, each token's attribution in units of
    the score; they sum to score - reference score up to `paths[i].convergence_delta`."""
    for what, text in (("query", query), ("code", code)):
        if not isinstance(text, str) or not text.split():
            raise InterpError(f"{what}: a non-empty string, got {text!r:.60}")
    pool, described = examples_of(data) if data is not None else (None, None)
    reference = reference or ("others" if data is not None else "pad")
    options = {"tokenizer": tokenizer, "pooling": pooling, "runs_dir": runs_dir}
    if baseline is None:
        run, against = bind_side(model, (labels or ("model",))[0], argument="model", **options), []
    else:
        run, against, _ = bind_pair(model, baseline, labels=labels, defaults=("model", "baseline"), **options)
    both = [*run, *against]
    length = max_len_for(both, max_len)
    first = run[0].run
    query, code = " ".join(query.split()), " ".join(code.split())
    example = next((e.idx for e in pool or [] if (e.query, e.code_text) == (query, code)), None)  # not its own reference
    with training_kept(both):
        analysis = Attribution(first.encoder, first.model, baseline=(against[0].run.encoder, against[0].run.model) if against
                               else None, max_len=length, pooling=first.pooling,
                               baseline_pooling=against[0].run.pooling if against else None, precision=precision)
        result = analysis.compute(pool, query=query, code=code, steps=steps, mode=mode, example=example, reference=reference,
                                  count=others, names=(first.name, against[0].run.name if against else None))
    digest = hashlib.sha256(f"{query}\n{code}".encode()).hexdigest()[:10]
    pair = {"query": query, "code": code} | ({"others": described} if described else {})
    inputs = {"runs": [x.record for x in both], "data": pair, "steps": steps, "mode": mode, "max_len": length,
              "reference": reference, "others": others if reference == "others" else None,
              "pooling": [x.run.pooling for x in both], "precision": precision}
    stem = first.name + (f"-vs-{against[0].run.name}" if against else "") + f".pair-{digest}"
    return Analysed("attribute", name or stem, result, inputs)


def qualitative(model_a: Model, model_b: Model, data: Any, *, tokenizer=None, pooling: str | None = None,
                max_len: int | None = None, ties: str | None = None, labels: tuple[str, str] | None = None, samples: int = 3,
                seed: int = 0, batch_size: int = 64, device: str = "auto", precision: str = DEFAULT_PRECISION,
                name: str | None = None, runs_dir: str | os.PathLike = "runs", progress: bool = False) -> Analysed:
    """Which queries each model ranks first (interp/analyses/qualitative.py): A is the baseline, B the candidate.

    Each model ranks every code of `data` for every query. Returns an `Analysed` QualitativeResult: `per_run` (correct,
    wrong, MRR), `sets` (easy, hard, fixed, regressed, both_correct, both_wrong) with token statistics (counts of
    tokenizer tokens) and samples, `tests` (Mann-Whitney U with Holm's adjustment)."""
    from trainers.training.scoring import evaluate_examples

    examples, described = examples_of(data)
    a, b, labels = bind_pair(model_a, model_b, labels=labels, tokenizer=tokenizer, pooling=pooling, runs_dir=runs_dir)
    both = [*a, *b]
    if len(both) != 2:
        raise InterpError("qualitative compares one model with one model; give no lists")
    length = max_len_for(both, max_len)
    rule = ties or next((x.ties for x in both if x.ties is not None), DEFAULT_TIE_RULE)
    with training_kept(both):
        ranks = {x.run.name: evaluate_examples(x.run.encoder, x.run.model, examples, max_len=length, pooling=x.run.pooling,
                                               ties=rule, batch_size=batch_size, device=device, progress=progress,
                                               precision=precision).ranks.tolist() for x in both}
    names = [x.run.name for x in both]
    analysis = Qualitative(ranks, examples, both[0].run.encoder.tokenizer, runs=names, baseline=names[0], candidate=names[1],
                           max_len=length, ties=rule)
    result = analysis.compute(samples=samples, seed=seed)
    inputs = {"runs": [x.record for x in both], "data": described, "max_len": length, "ties": rule,
              "pooling": {x.run.name: x.run.pooling for x in both}, "samples": samples, "precision": precision}
    return Analysed("qualitative", name or f"{names[0]}-vs-{names[1]}", result, inputs)
