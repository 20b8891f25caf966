"""Models and data in memory, bound as the analyses bind runs (the Python API, interp/api.py, says what each may be).

`bind` turns a model into what an analysis' constructor takes (a `BoundRun`: its `Encoder`, the model to call, its
pooling) and the record of where it came from that a result's inputs keep; `examples_of` turns data into `Example`s
and their record. Nothing here computes an analysis.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.analyses.attn_diff import BoundRun
from interp.analyses.base import BASE, resolve_runs
from interp.analyses.ranks import load_model, max_len_of, pooling_of
from records.errors import InterpError
from trainers.data import Example, fingerprint, read_split
from trainers.encoders import DEFAULT_POOLING, FAMILIES, Encoder, check_pooling
from trainers.methods.apply import APPLIED, applied_method, transformers_model
from trainers.training.splits import split_fingerprint

Model = Any  # a peft.PeftModel, a transformers encoder, or a run name / path
DEFAULT_MAX_LEN = 256


# -- data -----------------------------------------------------------------------------------------


def examples_of(data: Any) -> tuple[list[Example], dict]:
    """(examples, their record for a result's inputs) of `data` (see the module docstring); InterpError if unusable."""
    if isinstance(data, (str, os.PathLike)):
        file = Path(data)
        if not file.is_file():
            raise InterpError(f"data {file}: {'not a file' if file.exists() else 'no such file'} (a split's .jsonl)")
        examples = read_split(file)
        if not examples:
            raise InterpError(f"data {file}: no examples")
        return examples, {"file": str(file.resolve()), "fingerprint": split_fingerprint(fingerprint(file), examples),
                          "examples": len(examples)}
    if isinstance(data, (dict, bytes)) or not isinstance(data, Sequence):
        raise InterpError(f"data: a list of (query, code) pairs, dicts or Examples, or a .jsonl path; got {type(data).__name__}")
    examples = [_example(item, i) for i, item in enumerate(data)]
    if not examples:
        raise InterpError("data: no examples (an empty list)")
    seen: dict[int, int] = {}
    for i, e in enumerate(examples):
        if isinstance(e.idx, bool) or not isinstance(e.idx, int):
            raise InterpError(f"data[{i}]: idx should be a whole number, got {e.idx!r}")
        if e.idx in seen:
            raise InterpError(f"data[{i}]: idx {e.idx} is already that of data[{seen[e.idx]}]; an example's idx names it")
        seen[e.idx] = i
    digest = hashlib.sha256(json.dumps([[e.idx, e.query, e.code_text] for e in examples]).encode()).hexdigest()
    return examples, {"file": "in memory", "fingerprint": digest, "examples": len(examples)}


def _example(item: Any, i: int) -> Example:
    if isinstance(item, Example):
        return item
    if isinstance(item, dict):
        if not {"query", "code"} <= set(item):
            raise InterpError(f"data[{i}]: a dict needs 'query' and 'code', got keys {sorted(item)}")
        query, code, idx = item["query"], item["code"], item.get("idx", i)
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        (query, code), idx = item, i
    else:
        raise InterpError(f"data[{i}]: a (query, code) pair, a dict with 'query' and 'code', or an Example; got {item!r:.60}")
    if not isinstance(query, str) or not isinstance(code, str) or not query.split() or not code.split():
        raise InterpError(f"data[{i}]: query and code should be non-empty strings")
    return Example(idx=idx, url="", docstring_tokens=tuple(query.split()), code_tokens=tuple(code.split()), code=code,
                   docstring=query)


# -- models ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """A model bound for an analysis, with what a run would record about it."""

    run: BoundRun
    record: dict  # its identity in the result's inputs
    max_len: int | None  # a run's own; None for a model in memory
    ties: str | None  # a run's tie rule; None for a model in memory


def bind(model: Model, *, name: str, tokenizer=None, pooling: str | None = None, runs_dir: str | os.PathLike = "runs",
         argument: str = "model") -> Bound:
    """`model` as an analysis binds it: its encoder (the transformers model and the tokenizer), the model to call, its pooling."""
    if pooling is not None:
        check_pooling(pooling)
    if isinstance(model, (str, os.PathLike)):
        (ref,) = resolve_runs(Path(runs_dir), [str(model)])
        encoder, loaded = load_model(ref)
        if tokenizer is not None:
            _check_tokenizer(tokenizer, encoder.model, argument)
            encoder.tokenizer = tokenizer
        return Bound(BoundRun(ref.name if name is None else name, encoder, loaded, pooling or pooling_of(ref)), ref.fingerprint(),
                     max_len_of(ref) if ref.run is not None else None, ref.run.train_config.ties if ref.run is not None else None)
    if not isinstance(model, nn.Module):
        raise InterpError(f"{argument}: a PeftModel, a transformers encoder, or a run name or path; got {type(model).__name__}")
    inner = transformers_model(model)  # a PeftModel's transformers model, its delta injected in place
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    spec = FAMILIES.get(model_type)
    if spec is None:
        raise InterpError(f"{argument}: {type(inner).__name__} is not a BERT/RoBERTa-family encoder (model type {model_type!r}; "
                          f"supported: {', '.join(sorted(FAMILIES))})")
    if getattr(inner, "base_model", inner) is not inner:
        raise InterpError(f"{argument}: {type(inner).__name__} is a model with a task head; pass its encoder "
                          f"(.{inner.base_model_prefix}), or wrap the AutoModel itself with peft")
    tokenizer = tokenizer if tokenizer is not None else _own_tokenizer(inner, argument)
    _check_tokenizer(tokenizer, inner, argument)
    peft_config = None
    if hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None)):
        from peft import get_peft_model_state_dict

        from trainers.foreign import PeftAdapterConfig

        adapter = model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]
        peft_config = json.loads(json.dumps(model.peft_config[adapter].to_dict(), default=_plain))
        if applied_method(model) is None:  # what ablation asks to switch the delta off per layer
            setattr(inner, APPLIED, PeftAdapterConfig.of(peft_config))
        trainable, what = get_peft_model_state_dict(model, adapter_name=adapter), "the adapter's weights"
    else:
        trainable, what = inner.state_dict(), "every weight"
    source = str(getattr(inner, "name_or_path", "") or "")
    encoder = Encoder(model=inner, tokenizer=tokenizer, spec=spec, source=source or "in memory", name=name)
    record = {"name": name, "from": "memory", "class": type(model).__name__, "encoder_class": type(inner).__name__,
              "name_or_path": source, "peft_config": peft_config, "trainable": what,
              "trainable_sha256": weights_sha256(trainable),
              "parameters": sum(p.numel() for p in model.parameters())}
    return Bound(BoundRun(name, encoder, model, pooling or DEFAULT_POOLING), record, None, None)


def weights_sha256(state: dict) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order (as `Encoder.weights_hash`)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value, key=str)
    return str(value)


def _own_tokenizer(inner: nn.Module, argument: str):
    from transformers import AutoTokenizer

    from trainers.encoders import hub_reachable

    source = getattr(inner, "name_or_path", "") or ""
    if not source:
        raise InterpError(f"{argument}: the model does not say where it was loaded from (name_or_path); pass tokenizer=")
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir() or not hub_reachable())
    except (OSError, ValueError) as exc:
        raise InterpError(f"{argument}: no tokenizer at its name_or_path {source!r} ({str(exc).splitlines()[0][:120]}); "
                          "pass tokenizer=") from None


def _check_tokenizer(tokenizer, inner: nn.Module, argument: str) -> None:
    if not callable(tokenizer) or not hasattr(tokenizer, "get_vocab"):
        raise InterpError(f"tokenizer: a transformers tokenizer, got {type(tokenizer).__name__}")
    size = inner.config.vocab_size
    if len(tokenizer) > size:
        raise InterpError(f"{argument}: the tokenizer has {len(tokenizer)} tokens, the model's embeddings {size}: "
                          "not this model's tokenizer")


def bind_side(models: Model | Sequence[Model], label: str, *, argument: str, **options: Any) -> list[Bound]:
    """One side of a comparison: a model, or a list of models (the seeds of one configuration). A model in memory is
    named `label` (`label.1`, `label.2`, ... in a list); a run keeps its name."""
    group = list(models) if isinstance(models, (list, tuple)) else [models]
    if not group:
        raise InterpError(f"{argument}: an empty list of models")
    bound = []
    for i, m in enumerate(group):
        name = None if isinstance(m, (str, os.PathLike)) else label if len(group) == 1 else f"{label}.{i + 1}"
        bound.append(bind(m, name=name, argument=argument if len(group) == 1 else f"{argument}[{i}]", **options))
    return bound


def side_label(models: Model | Sequence[Model], given: str | None, default: str) -> str:
    """A side's label: the one given, else a lone run's name, else `default`."""
    if given is not None:
        return given
    return str(models) if isinstance(models, (str, os.PathLike)) else default


def bind_pair(model_a, model_b, *, labels: tuple[str, str] | None, defaults: tuple[str, str] = ("A", "B"),
              **options: Any) -> tuple[list[Bound], list[Bound], tuple[str, str]]:
    """Both sides bound, and their labels; InterpError where one model in memory stands on both sides (or twice)."""
    labels = labels or (None, None)
    if len(labels) != 2:
        raise InterpError(f"labels: two labels, one a side, got {labels!r}")
    chosen = (side_label(model_a, labels[0], defaults[0]), side_label(model_b, labels[1], defaults[1]))
    a = bind_side(model_a, chosen[0], argument="model_a", **options)
    b = bind_side(model_b, chosen[1], argument="model_b", **options)
    seen: dict[int, str] = {}
    for x in [*a, *b]:
        inner = id(transformers_model(x.run.model))
        if inner in seen:
            raise InterpError(f"{seen[inner]!r} and {x.run.name!r} are one model in memory (peft wraps its base in place); "
                              "load the second one separately to compare them")
        seen[inner] = x.run.name
    names = [x.run.name for x in [*a, *b]]
    if len(set(names)) != len(names):
        raise InterpError(f"two models are named alike ({', '.join(names)}); give labels=")
    if options.get("pooling") is None:  # 'base' is read with the pooling of what it is compared with, as the commands do
        a, b = _base_pooled(a, [*a, *b]), _base_pooled(b, [*a, *b])
    return a, b, chosen


def _base_pooled(side: list[Bound], everything: list[Bound]) -> list[Bound]:
    """`side` with the run 'base' (if there) given the pooling of the other models; InterpError if theirs differ."""
    if not any(x.run.name == BASE for x in side):
        return side
    used = {x.run.name: x.run.pooling for x in everything if x.run.name != BASE}
    if len(set(used.values())) > 1:
        listed = ", ".join(f"{name} ({pooling})" for name, pooling in used.items())
        raise InterpError(f"'base' is read with the pooling of the models beside it, but they differ: {listed}; give pooling=")
    if not used:
        return side
    pooling = next(iter(used.values()))
    return [replace(x, run=replace(x.run, pooling=pooling)) if x.run.name == BASE else x for x in side]


def max_len_for(bound: Sequence[Bound], max_len: int | None) -> int:
    """`max_len` if given, else the runs' own (the longest), else the default within the tokenizer's limit."""
    if max_len is not None:
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise InterpError(f"max_len should be a whole number of tokens >= 1, got {max_len!r}")
        return max_len
    own = [b.max_len for b in bound if b.max_len is not None]
    return max(own) if own else min(DEFAULT_MAX_LEN, bound[0].run.encoder.tokenizer.model_max_length)


@contextlib.contextmanager
def training_kept(bound: Sequence[Bound]) -> Iterator[None]:
    """The analyses put the models in eval mode; each model's training flags come back afterwards."""
    modes = [(m, m.training) for b in bound for m in b.run.model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
