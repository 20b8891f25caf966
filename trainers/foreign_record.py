"""A foreign delta as a run: the manifest `trainers.foreign`'s directory kinds get, so eval, import and every analysis
record what was assumed (module docstring there: base, pooling, max_len, data, ties).

    foreign_manifest(directory, name=..., runs_dir=..., options=...)   the `Manifest` (versions: the caller's)

The base is loaded once per process and files (its description and weights hash); the trainable count is the elements
of the delta's safetensors tensors but a task head's (`trainers.foreign_heads`), which the record lists (`source.ignored`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from records.errors import InterpError
from trainers.foreign import (
    PEFT_CONFIG, PEFT_WEIGHTS, SOURCE, ForeignOptions, delta_kind, foreign_method, read_adapter_config,
)


_BASES: dict[tuple, dict] = {}  # (source, its files' sizes and times) -> encoder.describe() + weights_sha256


def _base_record(base: str) -> dict:
    """What a manifest records of the base (its description and weights hash); loaded once per process."""
    from trainers.encoders import load_encoder, resolve_base

    source, _, local = resolve_base(base)
    stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(source).iterdir() if p.is_file())) if local else ()
    key = (source, stamp)
    if key not in _BASES:
        encoder = load_encoder(base)
        _BASES[key] = encoder.describe() | {"weights_sha256": encoder.weights_hash}
    return _BASES[key]


def _tensor_keys(directory: Path, kind: str) -> list[str]:
    """The tensors' names in the delta's safetensors files (an adapter's, or the whole fine-tuned model's)."""
    from safetensors import safe_open

    keys = []
    for file in [directory / PEFT_WEIGHTS] if kind == "peft" else sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            keys += list(f.keys())
    return keys


def _count(directory: Path, kind: str, leave_out=()) -> int:
    """Tensors' elements in the delta's safetensors files (an adapter's, or the whole fine-tuned model's), but `leave_out`'s."""
    from safetensors import safe_open

    files = [directory / PEFT_WEIGHTS] if kind == "peft" else sorted(directory.glob("*.safetensors"))
    total, leave_out = 0, set(leave_out)
    for file in files:
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                if key in leave_out:
                    continue
                shape = f.get_slice(key).get_shape()
                n = 1
                for s in shape:
                    n *= s
                total += n
    return total


def _split_record(file: Path, *, read: bool) -> dict:
    """A manifest's record of a split the delta is analysed on: the file, and where it can be read (`read`; not the
    large train split), the fingerprint of all its examples, as an analysis of the whole split computes it."""
    from trainers.data import fingerprint, read_split
    from trainers.training.splits import split_fingerprint

    record = {"file": str(file), "fingerprint": None}
    if read and file.is_file():
        try:
            examples = read_split(file)
        except InterpError:  # a damaged split is named by the analysis that reads it
            return record
        record.update(fingerprint=split_fingerprint(fingerprint(file), examples), pairs=len(examples), used=len(examples))
    return record


def foreign_manifest(directory: Path, *, name: str, runs_dir: Path, options: ForeignOptions | None = None, copied: bool = False):
    """The `Manifest` of the delta at `directory` (kind "interp", "peft" or "full"), its missing choices from `options`."""
    from trainers.encoders import read_shape
    from trainers.foreign_heads import PEFT_WRAPPER, base_prefix, encoder_keys, st_pooling
    from records.manifest import Manifest
    from trainers.training.evaluate import DEFAULT_TIE_RULE

    options = options or ForeignOptions()
    directory = Path(directory).expanduser().resolve()
    kind = delta_kind(directory)
    config = foreign_method(directory)
    base, base_from = options.base, "--base"
    if base is None and (directory / PEFT_CONFIG).is_file():
        base, base_from = read_adapter_config(directory).get("base_model_name_or_path"), f"base_model_name_or_path in {PEFT_CONFIG}"
    if not isinstance(base, str) or not base:
        what = "a model directory" if kind == "full" else "its adapter_config.json names no base"
        raise InterpError(f"{directory}: {what}; name the base encoder it was fine-tuned from with --base DIR (every command "
                          "that takes a run takes it: eval, import, attn-diff, cka, ablate, anatomy, ...)")
    try:
        recorded = _base_record(base)
    except InterpError as exc:
        if base_from == "--base":
            raise
        why = str(exc).split(": ", 1)[-1].removesuffix("; give a local model directory")
        raise InterpError(f"{directory}: its base {base!r} ({base_from}) cannot be loaded: {why}; name a local copy "
                          "with --base DIR") from None
    pooled = st_pooling(directory) if kind == "full" and options.pooling is None else None  # a sentence-transformers model's own
    if pooled is not None:
        options = replace(options, pooling=pooled[0])
    settings = options.resolved(runs_dir, read_shape(recorded["source"]).positions)
    head = [] if kind == "interp" else encoder_keys(_tensor_keys(directory, kind), base_prefix(recorded["source"]),
                                                    wrapper=PEFT_WRAPPER if kind == "peft" else "")[1]
    trainable = _count(directory, kind, leave_out=head)
    data = {split: _split_record(Path(settings["data_dir"]) / f"{split}.jsonl", read=split != "train") for split in ("train", "valid", "test")}
    source = {"path": str(directory), "kind": kind, "copied": copied, "base": base, "base_from": base_from} | settings
    source |= ({"pooling_from": pooled[1]} if pooled else {}) | ({"ignored": head} if head else {})  # a task head's keys: left out
    return Manifest(
        name=name, status="finished", preset=None, method=config.to_dict(),
        parameters={"method": config.describe(), "trainable": trainable, "share_of_base": trainable / recorded["parameters"]},
        base=dict(recorded), data=data,
        train={"pooling": settings["pooling"], "max_len": settings["max_len"], "ties": DEFAULT_TIE_RULE, "precision": "fp32"},
        extra={SOURCE: source},  # versions: the caller's (trainers.training.runs, which also builds the RunInfo)
    )


__all__ = ["foreign_manifest"]
