"""Foreign deltas saved on a model with a task head, and sentence-transformers directories (`trainers.foreign`).

A task model (RobertaForSequenceClassification, BertForMaskedLM, ...) keeps its encoder under
transformers' `base_model_prefix` ("roberta", "bert") beside its head ("classifier", "lm_head",
"cls"). Its `save_pretrained` writes the encoder's keys under that prefix:

    full model   roberta.encoder.layer.0.attention.self.query.weight     classifier.dense.weight
    peft         base_model.model.roberta.encoder.layer.0...lora_A.weight base_model.model.classifier.dense.weight

`encoder_keys` maps such keys to the bare encoder's (the prefix dropped) and names the head's,
which are left out of the delta, its parameter count and its analyses, and listed in the record
(`source.ignored`). Keys without the prefix are the bare encoder's already (AutoModel's
`save_pretrained`, a sentence-transformers directory) and are kept as they are.

A sentence-transformers directory (modules.json, the transformer at the top and its pooling in
1_Pooling/config.json) is a full model directory; its pooling, where it is one the project
computes (cls, mean), is the default for --pooling (`st_pooling`). An older one keeps the
transformer in a subdirectory (0_Transformer): that subdirectory is the model directory, pooled
as its parent's Pooling module says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from records.errors import InterpError

PEFT_WRAPPER = "base_model.model."  # what a PeftModel puts before the wrapped model's keys in adapter_model.safetensors
ST_MODULES, ST_POOLING = "modules.json", "sentence_transformers.models.Pooling"
_ST_MODES = {"cls": "cls", "mean": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean"}


def encoder_keys(keys, prefix: str, *, wrapper: str = "") -> tuple[dict[str, str], list[str]]:
    """({saved key: the bare encoder's key}, [the head's keys, sorted]) of a state dict saved with or without a task head.

    With a head (some key starts with `wrapper + prefix + "."`): those keys lose the prefix, every other key is the head's.
    Without: every key is the encoder's, as it is."""
    keys = list(keys)
    under = f"{wrapper}{prefix}." if prefix else None
    if under is None or not any(k.startswith(under) for k in keys):
        return {k: k for k in keys}, []
    renamed = {k: wrapper + k[len(under):] for k in keys if k.startswith(under)}
    return renamed, sorted(k for k in keys if k not in renamed)


def base_prefix(config_dir: str) -> str:
    """transformers' `base_model_prefix` of the encoder whose config is at `config_dir` (a directory or a cached hub id): the
    attribute a task model keeps it under ("roberta", "bert"); "" where transformers names none."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
        return getattr(MODEL_MAPPING[type(config)], "base_model_prefix", "") or ""
    except (OSError, ValueError, KeyError):
        return ""


def _st_modules(directory: Path, kind: str) -> list[dict]:
    """The modules of `kind` ("Transformer", "Pooling") that directory/modules.json lists with a path ([] where none)."""
    try:
        modules = json.loads((Path(directory) / ST_MODULES).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    return [m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(kind) and isinstance(m.get("path"), str)
            ] if isinstance(modules, list) else []


def st_transformer_dir(directory: Path) -> str | None:
    """The subdirectory an older sentence-transformers directory keeps its transformer in ("0_Transformer"); None otherwise."""
    found = _st_modules(directory, "Transformer")
    return found[0]["path"] if found and found[0]["path"] not in ("", ".") else None


def st_pooling(directory: Path) -> tuple[str, str] | None:
    """(pooling, the file it was read from, relative to `directory`) of a sentence-transformers model whose Pooling module
    pools as the project can (cls, mean): `directory`'s own, or, for the transformer subdirectory of an older layout
    (`st_transformer_dir`), its parent's. None for any other directory; InterpError naming the file for a pooling the
    project does not compute."""
    directory = Path(directory).resolve()
    home = directory
    if not (directory / ST_MODULES).is_file() and st_transformer_dir(directory.parent) == directory.name:
        home = directory.parent
    found = _st_modules(home, "Pooling")
    if not found:
        return None
    file = home / found[0]["path"] / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return None
    modes = [config["pooling_mode"]] if isinstance(config.get("pooling_mode"), str) else [k for k, v in config.items()
                                                                                           if k.startswith("pooling_mode_") and v is True]
    chosen = {_ST_MODES.get(mode) for mode in modes}
    if len(modes) != 1 or None in chosen:
        raise InterpError(f"{file}: pools by {', '.join(modes) or 'nothing'}, which the project does not compute (cls, mean); "
                          "choose one with --pooling")
    return chosen.pop(), os.path.relpath(file, directory)


__all__ = ["PEFT_WRAPPER", "base_prefix", "encoder_keys", "st_pooling", "st_transformer_dir"]
