"""Helpers shared by the test modules (importable as `helpers`; pytest puts tests/ on the path)."""

from __future__ import annotations

import math


def json_close(a, b, rel: float, abs_: float) -> bool:
    """Two JSON values are equal, floats within the given relative / absolute tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b
