"""`interp compare`: paired tests on reciprocal rank, over run directories written by hand.

A run directory here is exactly what the analysis reads: a manifest.json (base hash, preset,
seed, test data fingerprint) and a ranks.json with hand-chosen ranks over a small real
AdvTest-format test file (`helpers.make_run`). No model is loaded: the ranks are read, never
computed. The statistics themselves: tests/test_compare_stats.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import typer
from typer.testing import CliRunner

from helpers import GOLDEN, check_golden_exact, make_run, write_split
from interp.analyses.compare import BaseScoring, Compare, GroupSpec, group_runs, load_rank_table
from interp.analyses.base import resolve_runs
from interp.analyses.running import run_analysis
from trainers.data import read_split
from records.errors import InterpError


FUNCTIONS = [(f"Return {n} doubled.", f"def f(x):\n    return {n} * 2\n") for n in ("one", "two", "three", "four", "five", "six")]


@pytest.fixture
def data_file(tmp_path) -> Path:
    return write_split(tmp_path / "data" / "test.jsonl", FUNCTIONS)


# -- the analysis ----------------------------------------------------------------------------

def _single(*names: str) -> list[GroupSpec]:
    return [GroupSpec(n, [n], [1]) for n in names]


def test_hand_computed_pair():
    # RR a = [1, 1/2, 1/4, 1], b = [1, 1, 1, 1/2]; d = b - a = [0, 1/2, 3/4, -1/2]
    result = Compare({"a": np.array([1, 2, 4, 1]), "b": np.array([1, 1, 1, 2])}, _single("a", "b")).compute(bootstrap=500, seed=0)
    (pair,) = result.pairs
    assert pair.difference == pytest.approx(0.1875)
    assert (pair.b_better, pair.a_better, pair.same) == (2, 1, 1)
    # sign flips of (1/2, 3/4, -1/2): sums 3/4 (observed), 7/4, -3/4, 1/4, and their mirrors; |sum| >= 3/4 for 6 of 8
    assert (pair.test.test, pair.test.p, pair.test.exact, pair.test.resamples) == ("sign-flip", pytest.approx(6 / 8), True, 8)
    assert pair.p_holm == pair.test.p
    assert pair.wilcoxon.statistic == 1.5  # |d| ranks 1.5, 3, 1.5: W+ = 4.5, W- = 1.5
    assert pair.wilcoxon.p == pytest.approx(scipy.stats.wilcoxon([0.5, 0.75, -0.5]).pvalue)
    assert pair.ci.method == "bca" and pair.query_ci is None
    assert -0.5 <= pair.ci.low <= pair.difference <= pair.ci.high <= 0.75
    assert [g.mrr for g in result.groups] == pytest.approx([0.6875, 0.875])
    assert [g.top1 for g in result.groups] == [0.5, 0.75]


def test_mean_and_median_disagree():
    """300 queries gain 1/2 - 1/3, 70 lose 1 - 1/5, 200 tie: the MRR falls, the median shift says it rises."""
    a = np.array([3] * 300 + [1] * 70 + [1] * 200)
    b = np.array([2] * 300 + [5] * 70 + [1] * 200)
    (pair,) = Compare({"a": a, "b": b}, _single("a", "b")).compute(bootstrap=10_000, permutations=10_000, seed=0).pairs
    assert pair.difference == pytest.approx((300 / 6 - 70 * 0.8) / 570)  # -0.0105
    assert pair.test.test == "sign-flip" and not pair.test.exact and pair.test.p > 0.3  # about 0.40: no evidence about the mean
    assert pair.ci.method == "bca" and pair.ci.low < 0 < pair.ci.high  # about [-0.037, 0.013]
    assert pair.ci.low == pytest.approx(-0.035, abs=0.005) and pair.ci.high == pytest.approx(0.014, abs=0.005)
    assert pair.wilcoxon.p < 1e-7  # 1.6e-8: the median shift is "significant", and positive
    assert (pair.b_better, pair.a_better, pair.same) == (300, 70, 200)


def test_pooled_seeds_widen_the_interval_and_test_the_runs(tmp_path):
    # each side: two seeds whose MRRs differ through queries that one seed gets right and the other not
    rng = np.random.default_rng(0)
    n = 300
    common = rng.integers(1, 6, size=n)
    flips = rng.random(n) < 0.3  # queries where the seeds of a side disagree
    ranks = {"a1": np.where(flips, 1, common), "a2": np.where(flips, 10, common),
             "b1": np.where(flips, 1, np.maximum(common - 1, 1)), "b2": np.where(flips, 9, np.maximum(common - 1, 1))}
    groups = [GroupSpec("A", ["a1", "a2"], [1, 2]), GroupSpec("B", ["b1", "b2"], [1, 2])]
    (pair,) = Compare(ranks, groups).compute(bootstrap=4000, permutations=10_000, seed=0).pairs
    assert (pair.test.test, pair.test.exact, pair.test.resamples, pair.test.min_p) == ("relabel", True, 6, pytest.approx(1 / 3))
    assert pair.test.observed == pytest.approx(pair.difference)
    assert pair.ci.method == "hierarchical-percentile" and pair.query_ci.method == "bca"
    assert pair.ci.high - pair.ci.low > 2 * (pair.query_ci.high - pair.query_ci.low)
    assert pair.ci.low < pair.difference < pair.ci.high


def test_same_ranks_give_zero_difference(tmp_path, data_file):
    for name in ("x", "y"):
        make_run(tmp_path / "runs", name, [1, 3, 1, 2, 7, 1], data_file)
    result, _ = run_analysis(Compare, runs_dir=tmp_path / "runs", names=["x", "y"], bootstrap=200, progress=False)
    (pair,) = result.pairs
    assert (pair.difference, pair.ci.low, pair.ci.high, pair.ci.method) == (0.0, 0.0, 0.0, "constant")
    assert (pair.test.p, pair.wilcoxon.p, pair.wilcoxon.identical, pair.same) == (1.0, 1.0, True, 6)


def test_seeds_of_one_preset_are_pooled(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "lora-s1", [1, 1, 1, 1, 1, 1], data_file, preset="lora64", seed=1)  # MRR 1
    make_run(runs, "lora-s2", [2, 2, 2, 2, 2, 2], data_file, preset="lora64", seed=2)  # MRR 1/2
    make_run(runs, "full", [1, 2, 1, 2, 1, 2], data_file, preset="full", seed=1)       # MRR 3/4
    groups, notes = group_runs(resolve_runs(runs, ["full", "lora-s1", "lora-s2"]))
    assert [(g.name, g.runs, g.seeds) for g in groups] == [("full", ["full"], [1]), ("lora64", ["lora-s1", "lora-s2"], [1, 2])]
    table = load_rank_table(runs, ["full", "lora-s1", "lora-s2"], progress=False)
    result = Compare(table.ranks, groups, notes).compute(bootstrap=200)
    lora = result.groups[1]
    assert (lora.mrr, lora.mrr_std) == pytest.approx((0.75, math.sqrt(0.125)))  # std of (1, 1/2), ddof 1
    assert result.groups[0].mrr_std is None
    (pair,) = result.pairs
    # per-query seed-averaged RR of lora64 is 3/4 everywhere; full alternates 1, 1/2
    assert pair.difference == pytest.approx(0.0)
    assert (pair.b_better, pair.a_better) == (3, 3)
    # run MRRs full 3/4 against lora64 (1, 1/2): the 3 splits give 0, +3/8, -3/8; 0 is the middle one
    assert (pair.test.test, pair.test.resamples, pair.test.p) == ("relabel", 3, 1.0)
    # the seeds of lora64 disagree by 1/2 on every query: the hierarchical interval holds that spread
    assert -0.25 <= pair.query_ci.low < pair.query_ci.high <= 0.25
    assert pair.ci.high - pair.ci.low > pair.query_ci.high - pair.query_ci.low and pair.ci.low <= -0.2 and pair.ci.high >= 0.2


def test_seeds_alone_are_compared_with_each_other(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "s1", [1, 1, 1, 1, 1, 1], data_file, preset="lora64", seed=1)
    make_run(runs, "s2", [1, 1, 1, 1, 1, 2], data_file, preset="lora64", seed=2)
    result, path = run_analysis(Compare, runs_dir=runs, names=["s1", "s2"], bootstrap=100, progress=False)
    assert [(g.name, g.seeds) for g in result.groups] == [("s1", [1]), ("s2", [2])] and "seed by seed" in result.notes[0]
    assert result.pairs[0].difference == pytest.approx(-1 / 12) and path.name == "s1-vs-s2.json"


def test_same_preset_and_seed_stay_apart(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "a", [1] * 6, data_file, preset="lora64", seed=1)
    make_run(runs, "b", [2] * 6, data_file, preset="lora64", seed=1)
    groups, notes = group_runs(resolve_runs(runs, ["a", "b"]))
    assert [g.name for g in groups] == ["a", "b"]
    assert "not distinct seeds" in notes[0]


def test_refuses_different_test_data(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "a", [1] * 6, data_file)
    make_run(runs, "b", [1] * 6, data_file, test_fingerprint="f" * 64)
    with pytest.raises(InterpError, match=r"'a' and 'b'.*different test data.*fffffffffff"):
        run_analysis(Compare, runs_dir=runs, names=["a", "b"], progress=False)


@pytest.mark.parametrize("names, message", [(["a"], "at least two"), (["a", "a"], "named twice"), (["a", "c"], "unknown run 'c'")])
def test_refuses_bad_names(tmp_path, data_file, names, message):
    make_run(tmp_path / "runs", "a", [1] * 6, data_file)
    with pytest.raises(InterpError, match=message):
        run_analysis(Compare, runs_dir=tmp_path / "runs", names=names, progress=False)


# -- base: scored as the runs were trained ----------------------------------------------------

STDLIB = json.loads((GOLDEN / "qualitative-stdlib.json").read_text())  # ten CPython functions, longer than 16 tokens


@pytest.fixture(scope="module")
def tiny_base(tiny_roberta_dir) -> dict:
    from trainers.encoders import load_encoder

    return {"source": str(tiny_roberta_dir), "weights_sha256": load_encoder(str(tiny_roberta_dir)).weights_hash}


@pytest.mark.parametrize("pooling, max_len", [("cls", 16), ("mean", 24)])
def test_base_is_scored_at_the_runs_length_and_pooling(tmp_path, tiny_base, pooling, max_len):
    from trainers.encoders import load_encoder
    from trainers.training.scoring import evaluate_examples

    data = write_split(tmp_path / "data" / "test.jsonl", [(f["docstring"], f["code"]) for f in STDLIB])
    make_run(tmp_path / "runs", "a", [1, 2, 1, 3, 1, 1, 2, 1, 4, 1], data, max_len=max_len, pooling=pooling, base=tiny_base)
    result, path = run_analysis(Compare, runs_dir=tmp_path / "runs", names=["base", "a"], bootstrap=100, progress=False)
    assert result.base == BaseScoring(max_len, pooling, ["a"])
    assert json.loads(path.read_text())["result"]["base"] == {"max_len": max_len, "pooling": pooling, "taken_from": ["a"]}
    encoder = load_encoder(tiny_base["source"])
    examples = read_split(data)
    score = lambda n, p: evaluate_examples(encoder, encoder.model, examples, max_len=n, pooling=p, progress=False).ranks  # noqa: E731
    table = load_rank_table(tmp_path / "runs", ["base", "a"], progress=False)
    assert table.ranks["base"].tolist() == score(max_len, pooling).tolist()
    assert table.ranks["base"].tolist() != score(128, pooling).tolist()  # the tokenizer's own limit would give others
    assert result.groups[0].mrr == pytest.approx(float((1 / score(max_len, pooling).double()).mean()))


@pytest.mark.parametrize("second, message", [
    ({"max_len": 32}, r"max_len of the runs beside it, but they differ: a \(16\), b \(32\)"),
    ({"pooling": "mean"}, r"pooling of the runs beside it, but they differ: a \(cls\), b \(mean\)"),
])
def test_base_refuses_runs_trained_differently(tmp_path, data_file, tiny_base, second, message):
    make_run(tmp_path / "runs", "a", [1] * 6, data_file, max_len=16, base=tiny_base)
    make_run(tmp_path / "runs", "b", [1] * 6, data_file, base=tiny_base, **({"max_len": 16} | second))
    with pytest.raises(InterpError, match=message):
        run_analysis(Compare, runs_dir=tmp_path / "runs", names=["base", "a", "b"], progress=False)
    assert len(run_analysis(Compare, runs_dir=tmp_path / "runs", names=["a", "b"], bootstrap=50, progress=False)[0].pairs) == 1  # without base: fine


# -- end to end ----------------------------------------------------------------------------------

def test_golden(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "lora256", [1, 4, 2, 1, 9, 3], data_file, preset="lora256", seed=123456)
    make_run(runs, "lora256-s2", [1, 3, 1, 2, 6, 3], data_file, preset="lora256", seed=654321)
    make_run(runs, "loFF", [1, 1, 2, 1, 2, 1], data_file, preset="loFF", seed=123456)
    make_run(runs, "full", [1, 2, 1, 1, 3, 2], data_file, preset="full", seed=123456)
    result, path = run_analysis(Compare, runs_dir=runs, names=["lora256", "lora256-s2", "loFF", "full"], bootstrap=1000, seed=0, progress=False)
    assert path == runs / "analyses" / "compare" / "lora256-vs-loFF-vs-full.json"
    saved = json.loads(path.read_text())
    assert [r["name"] for r in saved["inputs"]["runs"]] == ["lora256", "lora256-s2", "loFF", "full"]
    assert saved["inputs"]["data"]["fingerprint"] == json.loads((runs / "loFF" / "manifest.json").read_text())["data"]["test"]["fingerprint"]
    assert saved["result"]["definitions"].keys() >= {"difference", "test", "ci", "wilcoxon", "p_holm"}
    tests = {(p["a"], p["b"]): p["test"]["test"] for p in saved["result"]["pairs"]}
    assert tests == {("lora256", "loFF"): "relabel", ("lora256", "full"): "relabel", ("loFF", "full"): "sign-flip"}
    check_golden_exact(path, GOLDEN / "compare.json")


def test_command(tmp_path, data_file):
    from interp.commands import stats

    runs = tmp_path / "runs"
    make_run(runs, "a", [1, 2, 3, 1, 1, 1], data_file)
    make_run(runs, "b", [1, 1, 1, 1, 2, 1], data_file)
    app = typer.Typer()
    app.command()(stats.compare)
    out = CliRunner().invoke(app, ["a", "b", "--runs-dir", str(runs), "--bootstrap", "100", "--no-progress"])
    assert out.exit_code == 0, out.output
    # d = (0, 1/2, 2/3, 0, -1/2, 0): 8 sign patterns, |sum| >= 2/3 for 6 of them
    assert "b - a: MRR +0.1111" in out.output and "p = 0.750 (sign-flip over queries, exact over 8 sign patterns" in out.output
    assert "BCa over queries" in out.output and "median shift (Wilcoxon signed-rank, not the mean)" in out.output
    assert "compare/a-vs-b.json" in out.output
