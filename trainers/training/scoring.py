"""Re-evaluate a finished run on any AdvTest-format file, and write CodeXGLUE predictions.

A run is scored with the pooling it was trained with and, unless told otherwise, ranked under
the tie rule it was trained with (runs from before the rule was recorded: "optimistic"), so
re-evaluating it on its own test split gives its recorded test MRR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers import methods
from trainers.data import load_split, read_split
from trainers.devices import DEFAULT_PRECISION, torch_device
from trainers.encoders import DEFAULT_POOLING, Encoder, check_pooling, load_encoder
from records.errors import InterpError
from records.io import atomic_open
from trainers.training.evaluate import DEFAULT_TIE_RULE, Evaluation, check_tie_rule, evaluate, top_k
from trainers.training.runs import RunInfo
from trainers.training.splits import tokenize_examples

DEFAULT_TOP_K = 1000  # CodeXGLUE's evaluator counts a query as missed when its gold is not in the list


def load_run_model(run: RunInfo, base: str | None = None) -> tuple[Encoder, torch.nn.Module]:
    """The run's base encoder (checked against the hash in its manifest) with its best delta applied."""
    recorded = run.manifest.base
    encoder = load_encoder(base if base is not None else recorded["source"])
    if encoder.weights_hash != run.manifest.weights_sha256:
        raise InterpError(
            f"run {run.name!r} was trained on base {run.manifest.weights_sha256[:12]} ({recorded['source']}), "
            f"but {encoder.source} has weights {encoder.weights_hash[:12]}"
        )
    return encoder, methods.load_delta(encoder, run.path)


@dataclass(frozen=True)
class RunEvaluation:
    file: Path
    evaluation: Evaluation
    urls: list[str]
    idx: list
    pooling: str  # how the embeddings were pooled (the run's own)
    ties: str  # the tie rule of the ranks, the MRR and the predictions' order


def evaluate_examples(encoder: Encoder, model: torch.nn.Module, examples: list, *, max_len: int, pooling: str = DEFAULT_POOLING,
                      ties: str = DEFAULT_TIE_RULE, batch_size: int = 64, device: str = "auto", progress: bool = True,
                      precision: str = DEFAULT_PRECISION) -> Evaluation:
    """MRR of `model` (a delta on `encoder`, or the bare base) over `examples`, embedded by `pooling` at `precision`, ranked under `ties`."""
    check_pooling(pooling)
    check_tie_rule(ties)
    target = torch_device(device)
    model.to(target).eval()
    tok = tokenize_examples(encoder, examples, max_len)
    embed = lambda ids, mask: encoder.embed(ids, mask, model=model, pooling=pooling)  # noqa: E731
    return evaluate(embed, tok, batch_size=batch_size, device=target, progress=progress, ties=ties, precision=precision)


def run_data_dir(run: RunInfo) -> Path:
    """The data directory the run was trained on."""
    return Path(run.manifest.data["test"]["file"]).parent


def evaluate_run(run: RunInfo, *, data_file: Path | None = None, data_dir: Path | None = None, split: str = "test",
                 max_len: int | None = None, ties: str | None = None, batch_size: int = 64, device: str = "auto",
                 progress: bool = True, precision: str = DEFAULT_PRECISION) -> RunEvaluation:
    """MRR of the run's best delta on `data_file`, or on `split` of `data_dir` (default: the run's data).

    Embedded with the run's pooling; ranked under `ties`, by default the rule the run was trained with.
    """
    trained = run.train_config
    ties = check_tie_rule(ties) if ties is not None else trained.ties
    encoder, model = load_run_model(run)
    if data_file is not None:
        examples, file = read_split(data_file), Path(data_file)
    else:
        data_dir = Path(data_dir or run_data_dir(run))
        examples, file = load_split(data_dir, split), data_dir / f"{split}.jsonl"
    result = evaluate_examples(encoder, model, examples, max_len=max_len or trained.max_len, pooling=trained.pooling, ties=ties,
                               batch_size=batch_size, device=device, progress=progress, precision=precision)
    return RunEvaluation(file, result, [e.url for e in examples], [e.idx for e in examples], trained.pooling, ties)


def write_predictions(result: RunEvaluation, out: Path, k: int = DEFAULT_TOP_K) -> None:
    """One {"url": ..., "answers": [idx, ...]} line per query, best first (CodeXGLUE's format).

    CodeXGLUE's evaluator scores a query 1 / (position of the first occurrence of its gold idx
    in "answers"), 0 when it is absent. Codes with equal scores are listed in a fixed order that
    follows `result.ties` (see `top_k`), so the evaluator's MRR on this file equals ours
    whenever every gold code is among the top k.
    """
    if k < 1:
        raise InterpError(f"--top-k should be at least 1, got {k}")
    best = top_k(result.evaluation.query_emb, result.evaluation.code_emb, k, ties=result.ties)
    with atomic_open(out) as f:
        for url, row in zip(result.urls, best.tolist()):
            f.write(json.dumps({"url": url, "answers": [result.idx[i] for i in row]}) + "\n")
