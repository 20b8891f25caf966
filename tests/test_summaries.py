"""The one summary of a list of numbers (records.summaries): by hand, and as each reader writes it."""

from __future__ import annotations

import math

import pytest

from interp.analyses.stats import Summary as SetStats, summary as set_stats
from reports.collect import group_runs
from records.summaries import Summary, summarize


@pytest.mark.parametrize("values, mean, std, median", [
    ([0.3, 0.5], 0.4, math.sqrt(0.02), 0.4),  # ((0.1)^2 + (0.1)^2) / (2 - 1)
    ([0.1, 0.2, 0.3], 0.2, 0.1, 0.2),  # (0.01 + 0 + 0.01) / 2
    ([3, 1, 2, 10], 4.0, math.sqrt(50 / 3), 2.5),  # ints (steps, token counts) are read as floats
    ([0.25], 0.25, None, 0.25),
    ([], None, None, None),
])
def test_summarize_is_mean_sample_std_and_median(values, mean, std, median):
    got = summarize(values)
    assert got.n == len(values)
    assert got.mean == (None if mean is None else pytest.approx(mean))
    assert got.std == (None if std is None else pytest.approx(std))
    assert got.median == (None if median is None else pytest.approx(median))
    assert all(v is None or type(v) is float for v in (got.mean, got.std, got.median))
    assert got.mean_std() == {"mean": got.mean, "std": got.std, "n": got.n}


def _run(name: str, test_mrr: float):
    from reports.collect import Run
    from records.manifest import Manifest

    manifest = {"preset": "lora", "method": {"method": "lora"}, "train": {"seed": int(name[-1])}, "metrics": {"test_mrr": test_mrr, "best_step": 10}}
    return Run(name, Manifest.from_dict(manifest), None, [])


def test_the_report_and_the_qualitative_sets_write_the_same_numbers():
    values = [0.1, 0.2, 0.7]
    expected = summarize(values)
    [group] = group_runs([_run(f"lora-s{i}", v) for i, v in enumerate(values, 1)])
    assert group.test == expected.mean_std()
    assert group.best_step == Summary(3, 10.0, 0.0, 10.0).mean_std()
    assert set_stats(values) == SetStats(3, expected.mean, expected.median)
