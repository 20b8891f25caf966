"""records.layers: the one writer of 1-based layer ranges, read back by --layers' parser."""

from __future__ import annotations

import pytest

from records.layers import indices_span, layer_span
from trainers.methods.base import parse_layers


@pytest.mark.parametrize("numbers, sep, empty, text", [
    ([9, 10, 11, 12], ",", "", "9-12"),
    ([1, 3, 5, 6], ",", "", "1,3,5-6"),
    ([6, 5, 5, 1, 3], ",", "", "1,3,5-6"),  # unsorted, repeated
    ([4], ",", "", "4"),
    ([], ",", "none", "none"),
    ([], ", ", "", ""),
    ([2, 3, 7], ", ", "", "2-3, 7"),
    ([1, 2, 4, 5, 7], ",", "", "1-2,4-5,7"),
])
def test_layer_span(numbers, sep, empty, text):
    assert layer_span(numbers, sep=sep, empty=empty) == text


@pytest.mark.parametrize("indices, text", [((8, 9, 10, 11), "9-12"), ((0, 2, 4, 5), "1,3,5-6"), ((3,), "4"), ((), "none"),
                                           (range(3), "1-3")])
def test_indices_span(indices, text):
    assert indices_span(indices) == text


@pytest.mark.parametrize("indices", [(0,), (0, 1, 2, 3, 4, 5), (0, 2, 4, 5), (1, 3, 5), (5,), (0, 5)])
def test_what_it_writes_parse_layers_reads_back(indices):
    assert parse_layers(indices_span(indices), depth=6) == indices
