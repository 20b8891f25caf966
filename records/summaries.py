"""Summaries of a list of numbers: the one helper behind the study's tables (`interp study`), the
report's groups of seeds (`reports.collect`) and the qualitative sets' attribute statistics
(`interp.analyses.stats`). Plain Python: no numpy, no torch, so `reports` imports it.

    summarize(values) -> Summary(n, mean, std, median)
    Summary.mean_std() -> {"mean", "std", "n"}, the JSON of the tables and the report's groups

`mean` is the sum over n and `std` the sample standard deviation (ddof=1), summed in the order
given; `std` is None below two values, `mean` and `median` None with none. Values are read as
floats, so an int median (steps) is written 5.0 as numpy wrote it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None when n < 2
    median: float | None

    def mean_std(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def summarize(values: Iterable[float]) -> Summary:
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    return Summary(n, mean, std, statistics.median(values))
