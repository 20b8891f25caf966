"""Which query and code tokens make a run score a pair high? Integrated gradients on the embeddings.

The score of a pair is the inner product of the two [CLS] vectors, as in training and in the
MRR. Captum's `LayerIntegratedGradients` attributes it to the output of the word-embedding
layer (the Encoder spec's `embeddings`, e.g. `embeddings.word_embeddings`), and each token's
attribution is summed over the hidden dimension.

Reference input: the same sequence with every non-special token replaced by the tokenizer's
pad token ([CLS]/<s> and [SEP]/</s> kept), with the same length, the same attention mask (all
ones: the pad tokens are read, not masked) and the same position ids. Only the word embeddings
differ between input and reference, so special tokens get exactly zero attribution, and
position and token-type embeddings are held fixed. (The word embedding is looked up from the
ids and handed to the model as `inputs_embeds`; RoBERTa would otherwise give pad tokens the
padding position.)

Query and code go through the same embedding layer in two forward passes. Each pass gets its
own hook point, a thin wrapper around the shared embedding (`_Lookup`), so Captum sees a pair
of independent layers. Two modes:

    joint  (default) one path from (reference query, reference code) to (query, code); the
           attributions of all tokens of both sides sum to score - score(reference query,
           reference code), up to Captum's convergence delta
    sides  two paths, each side varied while the other is held at its real tokens: query tokens
           sum to score - score(reference query, code), code tokens to score - score(query,
           reference code); interactions between the sides are not split between them

With a baseline run the function attributed is score_RUN - score_BASELINE on the same pair,
each model with its own hook points (their word embeddings are the base's, unless one of them
is full fine-tuning); a token's attribution is the sum over both models.

Captum's convergence delta is the sum of the attributions minus the change of the function
between reference and input (the completeness axiom); it shrinks as `steps` grows.
"""

from __future__ import annotations

import hashlib
import tokenize
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from interp.analyses.base import resolve_runs, save_result
from interp.analyses.ranks import load_model, max_len_of, resolve_data
from trainers.errors import InterpError

MODES = ("joint", "sides")


@dataclass(frozen=True)
class TokenAttribution:
    position: int
    token: str  # the tokenizer's token ('Ġreturn')
    text: str  # the token decoded ('return' with its leading space)
    special: bool  # [CLS]/<s>, [SEP]/</s>: kept in the reference, attribution exactly 0
    attribution: float


@dataclass(frozen=True)
class PathResult:
    """One integrated-gradients path and its completeness check."""

    varies: str  # 'both', 'query' or 'code': which side goes from its reference to its tokens
    reference_score: float  # the function at the path's start
    score: float  # the function at the input
    attribution_sum: float  # sum of the attributions of the tokens that vary
    convergence_delta: float  # attribution_sum - (score - reference_score), from Captum


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
    notes: list[str] = field(default_factory=list)


class _Lookup(nn.Module):
    """A hook point around a shared embedding layer: one per side and model."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.embedding = embedding

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)  # (batch, seq, hidden)


class _Scorer:
    """One model's query and code hook points, and its [CLS]-to-[CLS] score."""

    def __init__(self, encoder, model: nn.Module):
        from trainers.methods.apply import transformers_model

        self.model = model.eval()
        embedding = transformers_model(model).get_submodule(encoder.spec.embeddings)
        self.query, self.code = _Lookup(embedding), _Lookup(embedding)

    def cls(self, lookup: _Lookup, ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids)  # unpadded: one sequence, repeated along the batch
        out = self.model(inputs_embeds=lookup(ids), attention_mask=mask)
        return out.last_hidden_state[:, 0]  # (batch, hidden)

    def score(self, query_ids: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
        return (self.cls(self.query, query_ids) * self.cls(self.code, code_ids)).sum(-1)  # (batch,)


class Attribution:
    """Bound to a run's model (and optionally a baseline run's); one `compute(...)`."""

    def __init__(self, encoder, model: nn.Module, *, baseline: tuple | None = None, max_len: int = 256):
        if encoder.tokenizer is None:
            raise InterpError(f"the encoder at {encoder.source} has no tokenizer")
        self.encoder, self.tokenizer, self.max_len = encoder, encoder.tokenizer, max_len
        self.scorers = [_Scorer(encoder, model)] + ([_Scorer(*baseline)] if baseline is not None else [])
        if self.tokenizer.pad_token_id is None:
            raise InterpError("the tokenizer has no pad token, which the reference input is made of")

    def forward(self, query_ids: torch.Tensor, code_ids: torch.Tensor) -> torch.Tensor:
        """The attributed function: score_run, or score_run - score_baseline. (batch,)"""
        run = self.scorers[0].score(query_ids, code_ids)
        return run if len(self.scorers) == 1 else run - self.scorers[1].score(query_ids, code_ids)

    def _ids(self, text: str) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        ids = self.tokenizer(text, truncation=True, max_length=self.max_len)["input_ids"]
        special = self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
        reference = [i if s else self.tokenizer.pad_token_id for i, s in zip(ids, special)]
        return torch.tensor([ids]), torch.tensor([reference]), [bool(s) for s in special]  # (1, seq) each

    def compute(self, *, query: str, code: str, steps: int = 50, mode: str = "joint", example: int | None = None,
                names: tuple[str, str | None] = ("run", None)) -> AttributeResult:
        from captum.attr import LayerIntegratedGradients

        if mode not in MODES:
            raise InterpError(f"mode should be one of {', '.join(MODES)}, got {mode!r}")
        if steps < 2:
            raise InterpError(f"--steps should be at least 2, got {steps}")
        (q, q_ref, q_special), (c, c_ref, c_special) = self._ids(query), self._ids(code)
        paths = {"joint": [("both", (q_ref, c_ref))], "sides": [("query", (q_ref, c)), ("code", (q, c_ref))]}[mode]
        per_side: dict[str, torch.Tensor] = {}
        results = []
        for varies, reference in paths:
            sides = ("query", "code") if varies == "both" else (varies,)
            layers = [getattr(s, side) for side in sides for s in self.scorers]  # side-major: q of each model, then c
            with warnings.catch_warnings():  # "Multiple layers provided": ours are independent hook points
                warnings.filterwarnings("ignore", message="Multiple layers provided")
                lig = LayerIntegratedGradients(self.forward, layers if len(layers) > 1 else layers[0])
                attributions, delta = lig.attribute(inputs=(q, c), baselines=reference, n_steps=steps,
                                                    internal_batch_size=min(steps, 16), return_convergence_delta=True)
            attributions = attributions if isinstance(attributions, list) else [attributions]
            per_model = len(self.scorers)
            for i, side in enumerate(sides):
                chunk = attributions[i * per_model:(i + 1) * per_model]  # each (1, seq, hidden)
                per_side[side] = sum(a.detach().sum(-1)[0] for a in chunk)  # (seq,)
            with torch.no_grad():
                at_input, at_reference = float(self.forward(q, c)[0]), float(self.forward(*reference)[0])
            total = float(sum(per_side[s].sum() for s in sides))
            results.append(PathResult(varies, at_reference, at_input, total, float(delta[0])))
        with torch.no_grad():
            run_score = float(self.scorers[0].score(q, c)[0])
            baseline_score = float(self.scorers[1].score(q, c)[0]) if len(self.scorers) > 1 else None
        run, baseline = names
        return AttributeResult(
            run=run, baseline=baseline, function="score" if baseline is None else f"score_{run} - score_{baseline}",
            mode=mode, steps=steps, example=example, query=query, code=code, score=results[0].score,
            run_score=run_score, baseline_score=baseline_score,
            query_tokens=self._tokens(q[0], q_special, per_side["query"]), code_tokens=self._tokens(c[0], c_special, per_side["code"]),
            paths=results,
        )

    def _tokens(self, ids: torch.Tensor, special: list[bool], values: torch.Tensor) -> list[TokenAttribution]:
        ids = ids.tolist()
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        return [TokenAttribution(i, t, self.tokenizer.decode([x]), s, float(v))
                for i, (x, t, s, v) in enumerate(zip(ids, tokens, special, values.tolist()))]


def read_code(path: Path) -> str:
    """The text the model reads for a code file: its Python tokens joined by spaces, as in the data."""
    from trainers.data.text import code_tokens

    path = Path(path)
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


def pick_example(examples: list, idx: int, file: Path):
    """The example with `idx` (its AdvTest idx, not its line number)."""
    for example in examples:
        if example.idx == idx:
            return example
    known = sorted(e.idx for e in examples)
    span = f"{known[0]}..{known[-1]}" if known else "none"
    raise InterpError(f"--example {idx} is not in {file} ({len(known)} examples, idx {span})")


def run_attribute(*, runs_dir: Path, name: str, example: int | None = None, query: str | None = None,
                  code_file: Path | None = None, baseline: str | None = None, split: str = "test",
                  data_file: Path | None = None, steps: int = 50, mode: str = "joint") -> tuple[AttributeResult, Path]:
    """Attribute one pair's score (or score difference) to its tokens; saves runs/analyses/attribute/<name>.json."""
    from trainers.data.text import docstring_tokens

    if (example is None) == (query is None and code_file is None):
        raise InterpError("give either --example IDX, or --query TEXT with --code FILE")
    if example is None and (query is None or code_file is None):
        raise InterpError("--query and --code go together")
    if mode not in MODES:
        raise InterpError(f"--mode should be one of {', '.join(MODES)}, got {mode!r}")
    if steps < 2:
        raise InterpError(f"--steps should be at least 2, got {steps}")
    if baseline == name:
        raise InterpError(f"--baseline {baseline} is the run itself; the score difference would be zero")
    refs = resolve_runs(Path(runs_dir), [name] + ([baseline] if baseline else []))
    if example is not None:
        data = resolve_data(refs, split=split, data_file=data_file)
        chosen = pick_example(data.examples, example, data.file)
        query_text, code_text, label, data_inputs = chosen.query, chosen.code_text, f"example{example}", data.describe()
    else:
        query_text, code_text = " ".join(docstring_tokens(query)), read_code(code_file)
        digest = hashlib.sha256(f"{query_text}\n{code_text}".encode()).hexdigest()[:10]
        if not query_text:
            raise InterpError("--query is empty")
        label, data_inputs = f"pair-{digest}", {"query": query, "code_file": str(Path(code_file).resolve())}
    encoder, model = load_model(refs[0])
    other = load_model(refs[1]) if baseline else None
    max_len = max_len_of(refs[0])  # the run's truncation, also used for the baseline
    result = Attribution(encoder, model, baseline=other, max_len=max_len).compute(
        query=query_text, code=code_text, steps=steps, mode=mode, example=example, names=(name, baseline))
    stem = name + (f"-vs-{baseline}" if baseline else "") + f".{label}" + ("" if mode == "joint" else f".{mode}")
    inputs = {"runs": [r.fingerprint() for r in refs], "data": data_inputs, "steps": steps, "mode": mode, "max_len": max_len}
    return result, save_result(Path(runs_dir), "attribute", stem, result, inputs)
