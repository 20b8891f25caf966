"""Analyses of trained deltas and the `interp` command line.

The Python API (interp/api.py), for models in memory (a notebook's PeftModel, a plain encoder, or a run):

    interp.attn_diff(model_a, model_b, data)    interp.cka(model_a, model_b, data)
    interp.ablate(model, data, layers="5-6")     interp.attribute(model, query, code)
    interp.qualitative(model_a, model_b, data)   interp.load_split(data_dir, "test")

Each returns an `interp.Analysed`: the typed result, `.save(runs_dir)` and `.figure()` / `.figures()`.
Imported on first use, so `import interp` loads neither torch nor transformers.
"""

from __future__ import annotations

_API = {"attn_diff": "interp.api", "cka": "interp.api", "ablate": "interp.api", "attribute": "interp.api",
        "qualitative": "interp.api", "Analysed": "interp.api", "load_split": "trainers.data", "read_split": "trainers.data",
        "Example": "trainers.data"}

__all__ = ["Analysed", "Example", "ablate", "attn_diff", "attribute", "cka", "load_split", "qualitative", "read_split"]


def __getattr__(name: str) -> object:  # no typing import: `import interp` stays at the cost of this file
    if name not in _API:
        raise AttributeError(f"module 'interp' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
