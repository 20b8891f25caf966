"""Which query and code tokens make a run score a pair high? Integrated gradients on the embeddings.

The score of a pair is the inner product of the two sequence embeddings, pooled the way the run
was trained (cls, pooler or mean; `interp.analyses.ranks.pooling_of`), as in training and in the
MRR. Captum's `LayerIntegratedGradients` attributes it to the output of the word-embedding layer
(the Encoder spec's `embeddings`, e.g. `embeddings.word_embeddings`), and each token's
attribution is summed over the hidden dimension.

Integrated gradients explains f(input) - f(reference): the attributions sum to that difference
(completeness), so the reference decides which question is answered (`attribute_references`):

    others (default)  K other examples of the split (8 unless --others), one path from each, the
                      attributions averaged: they sum to score - the mean score of the K references
    pad               every non-special token the pad token (not neutral: a pad-only pair scores
                      above the gold pair in most examples, a pad-only code far below the mean)

Two modes:

    joint  (default) one path per reference from (reference query, reference code) to (query,
           code); for 'others' an unrelated pair, the query of one other example with the code of
           another. All tokens of both sides sum to score - reference score.
    sides  each side varied with the other held at its real tokens: query tokens sum to score -
           score(reference query, code), for 'others' the mean score of this code for other
           queries; code tokens to score - score(query, reference code), for 'others' the mean
           score of this query against other codes (the competitors among which the MRR ranks the
           gold code). Interactions between the sides are not split between them.

The result records the reference, the examples used, each reference's score, and the mean score of
the same pairs read whole at their own lengths (`uncut_score`), so the effect of cutting them to
the input's length is visible.

All sequences are unpadded and fully attended (attention mask all ones: the pad tokens of a
reference are read, not masked), with the same position ids for input and reference: only the
word embeddings differ, and position and token-type embeddings are held fixed. (The word
embedding is looked up from the ids and handed to the model as `inputs_embeds`; RoBERTa would
otherwise give pad tokens the padding position.) Query and code go through the same embedding
layer in two forward passes; each pass gets its own hook point, a thin wrapper around the shared
embedding (`_Lookup`), so Captum sees a pair of independent layers.

With a baseline run the function attributed is score_RUN - score_BASELINE on the same pair,
each model with its own hook points and its own pooling (their word embeddings are the base's,
unless one of them is full fine-tuning); a token's attribution is the sum over both models.

Captum's convergence delta is the sum of the attributions minus the change of the function
between reference and input (the completeness axiom), averaged here over the K paths; it shrinks
as `steps` grows.
"""

from __future__ import annotations

import hashlib
import tokenize
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from interp.analyses.attribute_references import (DEFAULT_OTHERS, DEFAULT_REFERENCE, REFERENCES, OtherPair, Side, read_side,
                                                  references)
from interp.analyses.base import resolve_runs
from interp.analyses.checks import at_least, at_most
from interp.analyses.inputs import find_example
from interp.analyses.ranks import base_pooling, load_model, max_len_of, pooling_of, resolve_data
from interp.analyses.running import Prepared
from trainers.devices import DEFAULT_PRECISION, autocast, check_precision
from trainers.encoders import DEFAULT_POOLING, check_pooling
from records.errors import InterpError

MODES = ("joint", "sides")
MAX_STEPS = 10_000  # integration points per path: far past where the convergence delta stops shrinking


@dataclass(frozen=True)
class TokenAttribution:
    position: int
    token: str  # the tokenizer's token ('Ġreturn')
    text: str  # the token decoded ('return' with its leading space)
    special: bool  # [CLS]/<s>, [SEP]/</s>: kept in the reference, attribution exactly 0
    attribution: float


@dataclass(frozen=True)
class PathResult:
    """One side's integrated-gradients paths (one per reference) and their completeness check."""

    varies: str  # 'both', 'query' or 'code': which side goes from its reference to its tokens
    reference_score: float  # the function at the paths' start, averaged over the references
    score: float  # the function at the input
    attribution_sum: float  # sum of the attributions of the tokens that vary
    convergence_delta: float  # attribution_sum - (score - reference_score), from Captum (mean over paths)
    reference_scores: list[float] = field(default_factory=list)  # the function at each reference
    uncut_score: float | None = None  # others: the mean function on the same pairs read whole, at their own lengths


@dataclass(frozen=True)
class AttributeResult:
    run: str
    baseline: str | None  # with a baseline run the function is score_run - score_baseline
    function: str
    mode: str
    steps: int
    example: int | None  # idx of the example, or None for --query/--code
    query: str
    code: str
    score: float  # the function on (query, code)
    run_score: float  # score_run on (query, code)
    baseline_score: float | None
    query_tokens: list[TokenAttribution]
    code_tokens: list[TokenAttribution]
    paths: list[PathResult]
    reference: str  # 'others' or 'pad' (a result written before it was recorded used 'pad')
    others: list[OtherPair]  # the examples of the 'others' references, path after path
    pooling: str  # the run's pooling (interp.analyses.ranks.pooling_of)
    baseline_pooling: str | None  # the baseline's; 'base' takes the run's
    notes: list[str] = field(default_factory=list)


class _Lookup(nn.Module):
    """A hook point around a shared embedding layer: one per side and model."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.embedding = embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)  # (batch, seq, hidden)


class _Scorer:
    """One model's query and code hook points, and its score with the pooling it was trained with."""

    def __init__(self, encoder, model: nn.Module, pooling: str = DEFAULT_POOLING, precision: str = DEFAULT_PRECISION):
        from trainers.methods.apply import transformers_model

        self.encoder, self.model, self.pooling = encoder, model.eval(), check_pooling(pooling)
        self.precision = check_precision(precision)
        embedding = transformers_model(model).get_submodule(encoder.spec.embeddings)
        self.query, self.code = _Lookup(embedding), _Lookup(embedding)

    def embed(self, lookup: _Lookup, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids)  # unpadded: every position is read

        def from_embeddings(input_ids, attention_mask):  # Encoder.embed pools; the model reads embeddings
            return self.model(inputs_embeds=input_ids, attention_mask=attention_mask)

        return self.encoder.embed(lookup(ids), mask, model=from_embeddings, pooling=self.pooling)  # (batch, hidden)

    def score(self, query_ids: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
        """(batch,) float32 scores; the forward passes at `precision` (the embedding lookups, so the attributions, stay float32)."""
        with autocast(self.precision, query_ids.device):
            query, code = self.embed(self.query, query_ids), self.embed(self.code, code_ids)  # (batch, hidden) each
        return (query.float() * code.float()).sum(-1)  # (batch,)


class Attribution:
    """Bound to a run's model (and optionally a baseline run's); one `compute(examples, query=..., code=...)`."""

    kind: ClassVar[str] = "attribute"

    def __init__(self, encoder, model: nn.Module, *, baseline: tuple | None = None, max_len: int = 256,
                 pooling: str = DEFAULT_POOLING, baseline_pooling: str | None = None, precision: str = DEFAULT_PRECISION):
        if encoder.tokenizer is None:
            raise InterpError(f"the encoder at {encoder.source} has no tokenizer")
        self.encoder, self.tokenizer, self.max_len = encoder, encoder.tokenizer, max_len
        self.scorers = [_Scorer(encoder, model, pooling, precision)]
        if baseline is not None:
            self.scorers.append(_Scorer(*baseline, baseline_pooling or pooling, precision))
        if self.tokenizer.pad_token_id is None:
            raise InterpError("the tokenizer has no pad token, which the reference input is made of")

    def forward(self, query_ids: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
        """The attributed function: score_run, or score_run - score_baseline. (batch,)"""
        run = self.scorers[0].score(query_ids, code_ids)
        return run if len(self.scorers) == 1 else run - self.scorers[1].score(query_ids, code_ids)

    def _uncut(self, pairs: list[OtherPair], pool: list, q: Side, c: Side) -> float:
        """The mean function on the reference pairs read whole, each side at its own length."""
        by_idx = {e.idx: e for e in pool}

        def ids(idx: int | None, own: Side, text) -> torch.Tensor:
            return torch.tensor([own.ids if idx is None else read_side(self.tokenizer, text(by_idx[idx]), self.max_len).ids])  # (1, seq)

        with torch.no_grad():
            values = [float(self.forward(ids(p.query, q, lambda e: e.query), ids(p.code, c, lambda e: e.code_text))[0]) for p in pairs]
        return sum(values) / len(values)

    def compute(self, data: Sequence | None = None, *, query: str, code: str, steps: int = 50, mode: str = "joint",
                example: int | None = None, reference: str = DEFAULT_REFERENCE, count: int = DEFAULT_OTHERS,
                names: tuple[str, str | None] = ("run", None)) -> AttributeResult:
        """`data`: the examples the 'others' reference draws from, e.g. the split (`example` is left out of them);
        None with the 'pad' reference."""
        others = list(data) if data is not None else None
        from captum.attr import LayerIntegratedGradients

        if mode not in MODES:
            raise InterpError(f"mode should be one of {', '.join(MODES)}, got {mode!r}")
        if reference not in REFERENCES:
            raise InterpError(f"--reference should be one of {', '.join(REFERENCES)}, got {reference!r}")
        if steps < 2:
            raise InterpError(f"--steps should be at least 2, got {steps}")
        if reference == "others" and count < 1:
            raise InterpError(f"--others should be at least 1, got {count}")
        if reference == "others" and not others:
            raise InterpError("--reference others needs the examples to take references from (a split, or --data FILE)")
        qs, cs = read_side(self.tokenizer, query, self.max_len), read_side(self.tokenizer, code, self.max_len)
        q, c = torch.tensor([qs.ids]), torch.tensor([cs.ids])  # (1, seq) each
        paths, pairs = references(self.tokenizer, reference, qs, cs, mode=mode, pool=others or [], count=count,
                                  exclude=example, max_len=self.max_len)
        per_side: dict[str, torch.Tensor] = {}
        results = []
        for varies, (q_ref, c_ref) in paths.items():
            k = max(len(q_ref), len(c_ref))
            sides = ("query", "code") if varies == "both" else (varies,)
            layers = [getattr(s, side) for side in sides for s in self.scorers]  # side-major: q of each model, then c
            with warnings.catch_warnings():  # "Multiple layers provided": ours are independent hook points
                warnings.filterwarnings("ignore", message="Multiple layers provided")
                lig = LayerIntegratedGradients(self.forward, layers if len(layers) > 1 else layers[0])
                attributions, delta = lig.attribute(inputs=(q.expand(k, -1), c.expand(k, -1)), baselines=(q_ref, c_ref),
                                                    n_steps=steps, internal_batch_size=max(16, k),
                                                    return_convergence_delta=True)  # each (k, seq, hidden); delta (k,)
            attributions = attributions if isinstance(attributions, list) else [attributions]
            per_model = len(self.scorers)
            for i, side in enumerate(sides):
                chunk = attributions[i * per_model:(i + 1) * per_model]
                per_side[side] = sum(a.detach().sum(-1).mean(0) for a in chunk)  # (seq,): mean over the k paths
            with torch.no_grad():
                at_input, at_reference = float(self.forward(q, c)[0]), self.forward(q_ref, c_ref).tolist()  # (k,)
            total = float(sum(per_side[s].sum() for s in sides))
            used = [p for p in pairs if (varies == "both") or (getattr(p, varies) is not None)]
            results.append(PathResult(varies, sum(at_reference) / len(at_reference), at_input, total, float(delta.mean()),
                                      at_reference, self._uncut(used, others, qs, cs) if used else None))
        with torch.no_grad():
            run_score = float(self.scorers[0].score(q, c)[0])
            baseline_score = float(self.scorers[1].score(q, c)[0]) if len(self.scorers) > 1 else None
        run, baseline = names
        return AttributeResult(
            run=run, baseline=baseline, function="score" if baseline is None else f"score_{run} - score_{baseline}",
            mode=mode, steps=steps, example=example, query=query, code=code, score=results[0].score,
            run_score=run_score, baseline_score=baseline_score,
            query_tokens=self._tokens(qs, per_side["query"]), code_tokens=self._tokens(cs, per_side["code"]),
            paths=results, reference=reference, others=pairs, pooling=self.scorers[0].pooling,
            baseline_pooling=self.scorers[1].pooling if len(self.scorers) > 1 else None,
            notes=_notes(reference, results, pairs, count),
        )

    @classmethod
    def prepare(cls, *, runs_dir: Path, name: str, example: int | None = None, query: str | None = None,
                code_file: Path | None = None, baseline: str | None = None, split: str = "test",
                data_file: Path | None = None, steps: int = 50, mode: str = "joint",
                reference: str = DEFAULT_REFERENCE, others: int = DEFAULT_OTHERS,
                precision: str = DEFAULT_PRECISION, foreign=None) -> Prepared:
        """One pair's score (or score difference) to its tokens: runs/analyses/attribute/<name>.json; nothing loaded.

        The 'others' reference draws from the examples of --split (or --data), the ones --example picks from.
        """
        from trainers.data.text import docstring_tokens

        if (example is None) == (query is None and code_file is None):
            raise InterpError("give either --example IDX, or --query TEXT with --code FILE")
        if example is None and (query is None or code_file is None):
            raise InterpError("--query and --code go together")
        if mode not in MODES:
            raise InterpError(f"--mode should be one of {', '.join(MODES)}, got {mode!r}")
        if reference not in REFERENCES:
            raise InterpError(f"--reference should be one of {', '.join(REFERENCES)}, got {reference!r}")
        at_least("--steps", steps, 2)
        at_most("--steps", steps, MAX_STEPS, "Gauss-Legendre points per path; 50 already give a small convergence delta")
        at_least("--others", others, 1)
        check_precision(precision)
        if baseline == name:
            raise InterpError(f"--baseline {baseline} is the run itself; the score difference would be zero")
        refs = resolve_runs(Path(runs_dir), [name] + ([baseline] if baseline is not None else []), foreign=foreign)
        if reference == "others" and data_file is None and all(r.is_base for r in refs):
            raise InterpError("--reference others takes its references from a split: with only 'base', give --data FILE "
                              "(or --reference pad)")
        data = resolve_data(refs, split=split, data_file=data_file) if example is not None or reference == "others" else None
        if example is not None:
            chosen = find_example(data.examples, example, where=data.file)
            query_text, code_text, label = chosen.query, chosen.code_text, f"example{example}"
            data_inputs = data.describe()
        else:
            query_text, code_text = " ".join(docstring_tokens(query)), read_code(code_file)
            digest = hashlib.sha256(f"{query_text}\n{code_text}".encode()).hexdigest()[:10]
            if not query_text:
                raise InterpError("--query is empty")
            label = f"pair-{digest}"
            data_inputs = {"query": query, "code_file": str(Path(code_file).resolve())} | ({"others": data.describe()} if data else {})
        trained = [r for r in refs if not r.is_base]
        poolings = [pooling_of(r, base_pooling(refs)) for r in refs]  # each as trained; the base as the run beside it
        held: dict[str, int] = {}

        def bind() -> Attribution:
            encoder, model = load_model(refs[0])
            other = load_model(refs[1]) if baseline is not None else None
            held["max_len"] = max_len_of(trained[0] if trained else refs[0], encoder)  # the run's truncation, also for the base
            return cls(encoder, model, baseline=other, max_len=held["max_len"], pooling=poolings[0],
                       baseline_pooling=poolings[1] if baseline is not None else None, precision=precision)

        def inputs(result: AttributeResult) -> dict:
            return {"runs": [r.fingerprint() for r in refs], "data": data_inputs, "steps": steps, "mode": mode,
                    "max_len": held["max_len"], "reference": reference, "others": others if reference == "others" else None,
                    "pooling": poolings, "precision": precision}

        stem = (name + (f"-vs-{baseline}" if baseline is not None else "") + f".{label}" + ("" if mode == "joint" else f".{mode}")
                + ("" if reference == DEFAULT_REFERENCE else f".{reference}"))
        options = {"query": query_text, "code": code_text, "steps": steps, "mode": mode, "example": example,
                   "reference": reference, "count": others, "names": (name, baseline)}
        return Prepared(name=stem, bind=bind, data=data.examples if reference == "others" else None, options=options,
                        inputs=inputs)


    def _tokens(self, side: Side, values: torch.Tensor) -> list[TokenAttribution]:
        tokens = self.tokenizer.convert_ids_to_tokens(side.ids)
        return [TokenAttribution(i, t, self.tokenizer.decode([x]), s, float(v))
                for i, (x, t, s, v) in enumerate(zip(side.ids, tokens, side.special, values.tolist()))]


def _notes(reference: str, paths: list[PathResult], pairs: list[OtherPair], count: int) -> list[str]:
    notes = []
    for p in paths:
        if p.reference_score > p.score:
            notes.append(f"varying {p.varies}: the reference scores above the input ({p.reference_score:.4f} > {p.score:.4f}), "
                         "so the attributions sum to a negative change" + (" (the pad reference is not neutral)" if reference == "pad" else ""))
    if reference == "others":
        per_path = len(pairs) // len(paths)
        if per_path < count:
            notes.append(f"only {per_path} other examples could be used as references (--others {count})")
        padded = sum(p.padded for p in pairs)
        if padded:
            notes.append(f"{padded} of the {len(pairs)} references are shorter than the input and were filled with the pad token")
    return notes


def read_code(path: Path) -> str:
    """The text the model reads for a code file: its Python tokens joined by spaces, as in the data."""
    from trainers.data.text import code_tokens

    path = Path(path)
    if not path.is_file():  # a FIFO would never finish reading
        raise InterpError(f"--code {path}: not a regular file")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InterpError(f"{path}: cannot read the code file ({exc})") from None
    try:
        tokens = code_tokens(source)
    except (tokenize.TokenError, SyntaxError) as exc:
        raise InterpError(f"{path}: not Python source that tokenizes ({exc})") from None
    if not tokens:
        raise InterpError(f"{path}: the code file is empty")
    return " ".join(tokens)
