"""A delta's tensors on disk: reading a safetensors file, checking its keys against the method's, and the name a
layer's child is saved under."""

from __future__ import annotations

from pathlib import Path

import torch

from records.errors import InterpError

METHOD_FILE = "method.json"  # beside every delta: the method config that `load_delta` rebuilds it from


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of `path`; a missing or corrupted file is an InterpError naming it."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise InterpError(f"{path}: not found")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises SafetensorError, OSError, ...: all mean "unreadable"
        raise InterpError(f"{path}: corrupted or unreadable safetensors file ({exc})") from exc


def check_keys(path: Path, expected: set[str], found: set[str], allow_missing: set[str] = frozenset()) -> None:
    """InterpError naming `path` and the first missing or unexpected keys, unless `found` is `expected`
    (less any of `allow_missing`)."""
    missing, extra = sorted(expected - found - allow_missing), sorted(found - expected)
    if missing or extra:
        said = [f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []
        said += [f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else []
        raise InterpError(f"{path}: does not match the method in {METHOD_FILE}: {'; '.join(said)}")


def registered_name(layer: torch.nn.Module, attr: str) -> str:
    """The name under which `layer` registers its child `layer.<attr>`: `attr` itself, or a union's
    prefixed name for it (`union_kv_prefix_init_key`), which is what state dicts and files say."""
    child = getattr(layer, attr)
    return next((name for name, module in layer._modules.items() if module is child), attr)
