"""Layer numbers as text: the one writer of 1-based layer ranges (the study counts layers from 1).

    layer_span([9, 10, 11, 12])              -> '9-12'
    layer_span([1, 3, 5, 6])                 -> '1,3,5-6'
    layer_span([], empty="none")             -> 'none'
    layer_span([2, 3, 7], sep=", ")          -> '2-3, 7'     (the report's tables)

What it writes with the default separator is a layer spec that `--layers` reads back
(`trainers.methods.base.parse_layers`, which returns 0-based indices). Torch-free, so the report
writes layer ranges the way the commands print them.
"""

from __future__ import annotations

from collections.abc import Iterable


def layer_span(numbers: Iterable[int], *, sep: str = ",", empty: str = "") -> str:
    """Sorted, de-duplicated 1-based `numbers` with runs of consecutive layers written `first-last`."""
    ordered, parts, i = sorted(set(numbers)), [], 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return sep.join(parts) or empty


def indices_span(indices: Iterable[int], *, empty: str = "none") -> str:
    """0-based layer `indices` (as modules and results hold them) as a 1-based span: (8, 9, 10, 11) -> '9-12'."""
    return layer_span((i + 1 for i in indices), empty=empty)
