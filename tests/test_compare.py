"""`interp compare`: paired tests on reciprocal rank, over run directories written by hand.

A run directory here is exactly what the analysis reads: a manifest.json (base hash, preset,
seed, test data fingerprint) and a ranks.json with hand-chosen ranks over a small real
AdvTest-format test file. No model is loaded: the ranks are read, never computed.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import typer
from typer.testing import CliRunner

from helpers import json_close
from interp.analyses.compare import Compare, GroupSpec, group_runs, load_rank_table, run_compare
from interp.analyses.base import resolve_runs
from interp.analyses.stats import bootstrap_mean_ci, holm, wilcoxon_paired
from trainers.data import fingerprint, read_split
from trainers.encoders import default_base_dir
from trainers.errors import InterpError
from trainers.training.splits import split_fingerprint

GOLDEN = Path(__file__).parent / "golden"
BASE_SHA = "5" * 64


# -- run directories, by hand ------------------------------------------------------------------

def _code_tokens(code: str) -> list[str]:
    """Python tokens without layout, comments, or the docstring (a string right after the def's ':')."""
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    out: list[str] = []
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type in layout or (t.type == tokenize.STRING and out[-1:] == [":"] and ":" not in out[:-1]):
            continue
        out.append(t.string)
    return out


def write_split(path: Path, functions: list[tuple[str, str]], first_idx: int = 100) -> Path:
    """An AdvTest-format jsonl: one line per (docstring, code), idx counting from `first_idx`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, (doc, code) in enumerate(functions):
            record = {"repo": "python/cpython", "path": "Lib/x.py", "func_name": f"f{i}", "original_string": code,
                      "language": "python", "code": code, "code_tokens": _code_tokens(code), "docstring": doc,
                      "docstring_tokens": re.findall(r"\w+|[^\w\s]+", doc), "url": f"https://example.org/{i}", "idx": first_idx + i}
            f.write(json.dumps(record) + "\n")
    return path


def make_run(runs_dir: Path, name: str, ranks: list[int], data_file: Path, *, preset: str | None = None, seed: int = 123456,
             max_len: int = 256, test_fingerprint: str | None = None) -> Path:
    """A finished run directory with the manifest keys the analyses read and a ranks.json."""
    examples = read_split(data_file)
    assert len(ranks) == len(examples), "one rank per test example"
    fp = test_fingerprint or split_fingerprint(fingerprint(data_file), examples)
    rr = [1 / r for r in ranks]
    manifest = {
        "name": name, "status": "finished", "preset": preset, "method": {"method": "lora"},
        "train": {"seed": seed, "max_len": max_len},
        "base": {"source": str(default_base_dir()), "weights_sha256": BASE_SHA},
        "data": {"test": {"file": str(data_file.resolve()), "fingerprint": fp, "pairs": len(examples), "used": len(examples)}},
        "metrics": {"test_mrr": sum(rr) / len(rr), "valid_mrr": 0.0, "best_step": 1},
    }
    path = runs_dir / name
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "ranks.json").write_text(json.dumps({"split": "test", "fingerprint": fp, "ranks": {str(e.idx): r for e, r in zip(examples, ranks)}}))
    return path


def check_golden(path: Path, golden: Path) -> None:
    """The saved result equals the golden one, floats to 1e-9; versions and inputs (tmp paths) ignored.

    UPDATE_GOLDEN=1 rewrites the golden file instead.
    """
    got = json.loads(path.read_text())
    got = {k: got[k] for k in ("kind", "name", "result")}
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert json_close(got, json.loads(golden.read_text()), 1e-9, 1e-12), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


FUNCTIONS = [(f"Return {n} doubled.", f"def f(x):\n    return {n} * 2\n") for n in ("one", "two", "three", "four", "five", "six")]


@pytest.fixture
def data_file(tmp_path) -> Path:
    return write_split(tmp_path / "data" / "test.jsonl", FUNCTIONS)


# -- statistics helpers: hand-computable cases ---------------------------------------------------

@pytest.mark.parametrize("d, low, high", [
    ([0.25], 0.25, 0.25),                 # one query: every resample is that query
    ([0.5, 0.5, 0.5], 0.5, 0.5),          # constant differences
    ([0.0, 0.0, 0.0, 0.0], 0.0, 0.0),     # identical runs
    ([0.0, 1.0], 0.0, 1.0),               # resample means are 0, 1/2, 1 with prob 1/4, 1/2, 1/4
])
def test_bootstrap_interval_hand_cases(d, low, high):
    assert bootstrap_mean_ci(d, resamples=4000, seed=0) == pytest.approx((low, high))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = np.random.default_rng(1).normal(0.1, 0.3, size=500)
    a, b = bootstrap_mean_ci(d, resamples=2000, seed=7), bootstrap_mean_ci(d, resamples=2000, seed=7)
    assert a == b
    assert a != bootstrap_mean_ci(d, resamples=2000, seed=8)
    assert a[0] < d.mean() < a[1]
    se = d.std(ddof=1) / np.sqrt(d.size)  # the normal interval, which the bootstrap should be close to
    assert a == pytest.approx((d.mean() - 1.96 * se, d.mean() + 1.96 * se), abs=0.2 * se)


@pytest.mark.parametrize("d", [[0.0, 0.5, 0.75, -0.5], [1.0, -0.25, 0.5, 0.5, 0.1, -0.1, 0.3], list(np.linspace(-1, 2, 40))])
def test_wilcoxon_equals_scipy(d):
    got = wilcoxon_paired(d)
    want = scipy.stats.wilcoxon(d)
    assert (got.statistic, got.p) == pytest.approx((float(want.statistic), float(want.pvalue)))
    assert got.nonzero == sum(1 for x in d if x != 0) and not got.identical


def test_wilcoxon_all_zero_is_identical():
    got = wilcoxon_paired([0.0, 0.0, 0.0])
    assert (got.identical, got.statistic, got.p, got.nonzero) == (True, 0.0, 1.0, 0)


@pytest.mark.parametrize("p, adjusted", [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),        # 3*0.01, max(2*0.03, .03), max(1*0.04, .06)
    ([0.5, None, 0.2], [0.5, None, 0.4]),
    ([0.9, 0.8], [1.0, 1.0]),
])
def test_holm(p, adjusted):
    assert holm(p) == pytest.approx(adjusted)


# -- the analysis ----------------------------------------------------------------------------

def test_hand_computed_pair():
    # RR a = [1, 1/2, 1/4, 1], b = [1, 1, 1, 1/2]; d = b - a = [0, 1/2, 3/4, -1/2]
    result = Compare({"a": np.array([1, 2, 4, 1]), "b": np.array([1, 1, 1, 2])},
                     [GroupSpec("a", ["a"], [1]), GroupSpec("b", ["b"], [1])]).compute(bootstrap=500, seed=0)
    (pair,) = result.pairs
    assert pair.difference == pytest.approx(0.1875)
    assert (pair.b_better, pair.a_better, pair.same) == (2, 1, 1)
    assert pair.wilcoxon.statistic == 1.5  # |d| ranks 1.5, 3, 1.5: W+ = 4.5, W- = 1.5
    assert pair.wilcoxon.p == pytest.approx(scipy.stats.wilcoxon([0.5, 0.75, -0.5]).pvalue)
    assert -0.5 <= pair.ci_low <= pair.difference <= pair.ci_high <= 0.75
    assert [g.mrr for g in result.groups] == pytest.approx([0.6875, 0.875])
    assert [g.top1 for g in result.groups] == [0.5, 0.75]


def test_same_ranks_give_zero_difference(tmp_path, data_file):
    for name in ("x", "y"):
        make_run(tmp_path / "runs", name, [1, 3, 1, 2, 7, 1], data_file)
    result, _ = run_compare(runs_dir=tmp_path / "runs", names=["x", "y"], bootstrap=200, progress=False)
    (pair,) = result.pairs
    assert (pair.difference, pair.ci_low, pair.ci_high) == (0.0, 0.0, 0.0)
    assert (pair.wilcoxon.p, pair.wilcoxon.identical, pair.same) == (1.0, True, 6)


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


def test_seeds_alone_are_compared_with_each_other(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "s1", [1, 1, 1, 1, 1, 1], data_file, preset="lora64", seed=1)
    make_run(runs, "s2", [1, 1, 1, 1, 1, 2], data_file, preset="lora64", seed=2)
    result, path = run_compare(runs_dir=runs, names=["s1", "s2"], bootstrap=100, progress=False)
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
        run_compare(runs_dir=runs, names=["a", "b"], progress=False)


@pytest.mark.parametrize("names, message", [(["a"], "at least two"), (["a", "a"], "named twice"), (["a", "c"], "unknown run 'c'")])
def test_refuses_bad_names(tmp_path, data_file, names, message):
    make_run(tmp_path / "runs", "a", [1] * 6, data_file)
    with pytest.raises(InterpError, match=message):
        run_compare(runs_dir=tmp_path / "runs", names=names, progress=False)


def test_golden(tmp_path, data_file):
    runs = tmp_path / "runs"
    make_run(runs, "lora256", [1, 4, 2, 1, 9, 3], data_file, preset="lora256", seed=123456)
    make_run(runs, "lora256-s2", [1, 3, 1, 2, 6, 3], data_file, preset="lora256", seed=654321)
    make_run(runs, "loFF", [1, 1, 2, 1, 2, 1], data_file, preset="loFF", seed=123456)
    result, path = run_compare(runs_dir=runs, names=["lora256", "lora256-s2", "loFF"], bootstrap=1000, seed=0, progress=False)
    assert path == runs / "analyses" / "compare" / "lora256-vs-loFF.json"
    saved = json.loads(path.read_text())
    assert [r["name"] for r in saved["inputs"]["runs"]] == ["lora256", "lora256-s2", "loFF"]
    assert saved["inputs"]["data"]["fingerprint"] == json.loads((runs / "loFF" / "manifest.json").read_text())["data"]["test"]["fingerprint"]
    check_golden(path, GOLDEN / "compare.json")


def test_command(tmp_path, data_file):
    from interp.commands import stats

    runs = tmp_path / "runs"
    make_run(runs, "a", [1, 2, 3, 1, 1, 1], data_file)
    make_run(runs, "b", [1, 1, 1, 1, 2, 1], data_file)
    app = typer.Typer()
    app.command()(stats.compare)
    out = CliRunner().invoke(app, ["a", "b", "--runs-dir", str(runs), "--bootstrap", "100", "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "b - a: +0.1111" in out.output and "compare/a-vs-b.json" in out.output
