"""`interp qualitative`: easy/hard and fixed/regressed sets, token statistics, Mann-Whitney tests.

Token counts use the real MiniLM tokenizer (lower-cased WordPiece: 'a', 'b', 'sort' are one
token each), so the small cases below can be counted by hand. Run directories are written by
hand (helpers.make_run): the analysis reads exactly those files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import typer
from typer.testing import CliRunner

from helpers import GOLDEN, check_golden_exact, make_run, write_split
from interp.analyses.compare import BaseScoring
from interp.analyses.qualitative import PAIRS, Qualitative, token_attributes
from interp.analyses.running import run_analysis
from trainers.data import Example, read_split
from trainers.encoders import default_base_dir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_base_dir(), local_files_only=True)


@pytest.mark.parametrize("query, code, max_len, expected", [
    # (query_len, code_len, code_len_full, unique_tokens, repeated_tokens)
    ("sort list", "a b a c a b", 256, (2, 6, 6, 3, 2)),   # a x3, b x2, c x1: 3 types, 2 of them repeated
    ("x", "a a a a", 256, (1, 4, 4, 1, 1)),
    ("open the file", "a b c", 256, (3, 3, 3, 3, 0)),
    ("sort list", "a b a c a b", 5, (2, 3, 6, 2, 1)),       # 5 - [CLS] - [SEP] = 3 tokens read: a b a
    ("a b c d e", "a", 4, (2, 1, 1, 1, 0)),                 # the query is truncated too
])
def test_token_attributes(tokenizer, query, code, max_len, expected):
    got = token_attributes(tokenizer, [query], [code], max_len)
    assert tuple(int(got[k][0]) for k in ("query_len", "code_len", "code_len_full", "unique_tokens", "repeated_tokens")) == expected


def _example(i: int, query: str, code: str) -> Example:
    return Example(idx=i, url=f"u{i}", docstring_tokens=tuple(query.split()), code_tokens=tuple(code.split()), docstring=query, code=code)


HAND = [  # query, code, rank of r1, rank of r2
    ("sort list", "a b a c a b", 1, 1),       # easy, both_correct
    ("open file now", "a a a a", 2, 1),       # fixed
    ("x", "a b c", 1, 4),                     # regressed
    ("read the file", "a b a b", 3, 2),       # hard, both_wrong
    ("write data", "c c d", 5, 6),            # hard, both_wrong
    ("close", "a b c d e", 1, 1),             # easy, both_correct
]


@pytest.fixture
def hand(tokenizer):
    examples = [_example(i, q, c) for i, (q, c, _, _) in enumerate(HAND)]
    ranks = {"r1": [h[2] for h in HAND], "r2": [h[3] for h in HAND]}
    return Qualitative(ranks, examples, tokenizer, runs=["r1", "r2"], baseline="r1", candidate="r2").compute(samples=1)


def test_hand_sets_and_statistics(hand):
    sets = {s.name: s for s in hand.sets}
    assert {n: s.idx for n, s in sets.items()} == {
        "easy": [0, 5], "hard": [3, 4], "fixed": [1], "regressed": [2], "both_correct": [0, 5], "both_wrong": [3, 4]}
    easy, hard = sets["easy"].stats, sets["hard"].stats
    assert (easy["code_len"].mean, easy["code_len"].median, easy["unique_tokens"].mean, easy["repeated_tokens"].mean) == (5.5, 5.5, 4.0, 1.0)
    assert (hard["code_len"].mean, hard["unique_tokens"].mean, hard["repeated_tokens"].mean, hard["query_len"].mean) == (3.5, 2.0, 1.5, 2.5)
    assert sets["fixed"].stats["repeated_tokens"].median == 1.0
    assert {n: (c.correct, c.wrong) for n, c in hand.per_run.items()} == {"r1": (3, 3), "r2": (3, 3)}
    assert hand.per_run["r1"].mrr == pytest.approx((1 + 1 / 2 + 1 + 1 / 3 + 1 / 5 + 1) / 6)


def test_hand_mann_whitney(hand):
    (test,) = [t for t in hand.tests if (t.a, t.b, t.attribute) == ("easy", "hard", "code_len")]
    assert (test.test.u, test.test.superiority, test.test.effect) == (4.0, 1.0, 1.0)  # every easy code is longer than every hard one
    assert test.test.p == pytest.approx(scipy.stats.mannwhitneyu([6, 5], [4, 3], alternative="two-sided").pvalue)
    assert [(t.a, t.b) for t in hand.tests[::5]] == list(PAIRS)  # five attributes per pair, in PAIRS order


def test_without_pair_only_easy_and_hard(tokenizer):
    examples = [_example(i, q, c) for i, (q, c, _, _) in enumerate(HAND)]
    result = Qualitative({"r1": [h[2] for h in HAND]}, examples, tokenizer, runs=["r1"]).compute(samples=0)
    assert [s.name for s in result.sets] == ["easy", "hard"]
    assert [s.idx for s in result.sets] == [[0, 2, 5], [1, 3, 4]]
    assert {(t.a, t.b) for t in result.tests} == {("easy", "hard")}


# -- end to end, over run directories ----------------------------------------------------------

STDLIB = json.loads((GOLDEN / "qualitative-stdlib.json").read_text())  # ten CPython 3.11.7 functions, verbatim
RANKS = {  # hand-chosen; study roles: prefix256 worst, full the baseline, loFF best
    "prefix256": [1, 5, 1, 2, 9, 1, 3, 1, 4, 1],
    "lora256":   [1, 2, 1, 3, 7, 1, 1, 2, 6, 1],
    "full":      [1, 1, 1, 2, 8, 1, 2, 1, 5, 2],
    "loFF":      [1, 1, 1, 4, 3, 1, 2, 1, 1, 1],
}


@pytest.fixture
def runs(tmp_path) -> Path:
    data = write_split(tmp_path / "data" / "test.jsonl", [(f["docstring"], f["code"]) for f in STDLIB], first_idx=261420)
    for name, ranks in RANKS.items():
        make_run(tmp_path / "runs", name, ranks, data, preset=name)
    return tmp_path / "runs"


def _qualitative(runs: Path, samples: int = 2):
    return run_analysis(Qualitative, runs_dir=runs, runs=list(RANKS), baseline="lora256", candidate="loFF", samples=samples, progress=False)


def test_sets_partition_the_split(runs):
    result, _ = _qualitative(runs)
    sets = {s.name: set(s.idx) for s in result.sets}
    every = {e.idx for e in read_split(runs.parent / "data" / "test.jsonl")}
    pair = ("fixed", "regressed", "both_correct", "both_wrong")
    assert set().union(*(sets[n] for n in pair)) == every and sum(len(sets[n]) for n in pair) == len(every)
    assert not sets["easy"] & sets["hard"]
    assert sets["easy"] <= sets["both_correct"] and sets["hard"] <= sets["both_wrong"]  # both runs are among --runs
    assert {n: len(s) for n, s in sets.items()} == {"easy": 3, "hard": 2, "fixed": 3, "regressed": 1, "both_correct": 4, "both_wrong": 2}
    assert {n: c.correct for n, c in result.per_run.items()} == {"prefix256": 5, "lora256": 5, "full": 5, "loFF": 7}


def test_p_values_equal_scipy_on_the_same_vectors(runs, tokenizer):
    result, _ = _qualitative(runs)
    examples = read_split(runs.parent / "data" / "test.jsonl")
    attrs = token_attributes(tokenizer, [e.query for e in examples], [e.code_text for e in examples], 256)
    position = {e.idx: i for i, e in enumerate(examples)}
    members = {s.name: [position[i] for i in s.idx] for s in result.sets}
    for t in result.tests:
        want = scipy.stats.mannwhitneyu(attrs[t.attribute][members[t.a]], attrs[t.attribute][members[t.b]], alternative="two-sided")
        p = None if np.isnan(want.pvalue) else pytest.approx(float(want.pvalue))  # undefined p is stored as null
        assert (t.test.u, t.test.p) == (pytest.approx(float(want.statistic)), p)
        if t.test.u is not None:  # the probability the test is about: P(a > b) + P(a = b) / 2
            a, b = attrs[t.attribute][members[t.a]], attrs[t.attribute][members[t.b]]
            share = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])
            assert (t.test.superiority, t.test.effect) == (pytest.approx(share), pytest.approx(2 * share - 1))


def test_samples_are_verbatim_and_deterministic(runs):
    first, _ = _qualitative(runs, samples=2)
    again, _ = _qualitative(runs, samples=2)
    assert [s.samples for s in first.sets] == [s.samples for s in again.sets]
    by_idx = {261420 + i: f for i, f in enumerate(STDLIB)}
    for s in first.sets:
        assert len(s.samples) == min(2, s.count) and {x.idx for x in s.samples} <= set(s.idx)
        for x in s.samples:
            assert (x.docstring, x.code) == (by_idx[x.idx]["docstring"], by_idx[x.idx]["code"])
            assert x.ranks == {n: RANKS[n][x.idx - 261420] for n in RANKS}


def test_golden(runs):
    _, path = _qualitative(runs)
    assert path == runs / "analyses" / "qualitative" / "prefix256+lora256+full+loFF.lora256-vs-loFF.json"
    saved = json.loads(path.read_text())
    assert [r["name"] for r in saved["inputs"]["runs"]] == list(RANKS) and saved["inputs"]["data"]["examples"] == 10
    check_golden_exact(path, GOLDEN / "qualitative.json")


def test_base_is_scored_and_counted_at_the_runs_length(tmp_path, tiny_roberta_dir):
    from trainers.encoders import load_encoder

    base = {"source": str(tiny_roberta_dir), "weights_sha256": load_encoder(str(tiny_roberta_dir)).weights_hash}
    data = write_split(tmp_path / "data" / "test.jsonl", [(f["docstring"], f["code"]) for f in STDLIB], first_idx=261420)
    make_run(tmp_path / "runs", "a", RANKS["loFF"], data, max_len=16, base=base)
    result, path = run_analysis(Qualitative, runs_dir=tmp_path / "runs", runs=["base", "a"], samples=10, progress=False)
    assert (result.max_len, result.base) == (16, BaseScoring(16, "cls", ["a"]))
    assert json.loads(path.read_text())["result"]["base"] == {"max_len": 16, "pooling": "cls", "taken_from": ["a"]}
    shown = [x.attributes for s in result.sets for x in s.samples]
    assert shown and all(x["code_len"] <= 14 for x in shown)  # 16 - <s> - </s>
    assert any(x["code_len_full"] > 14 for x in shown)


@pytest.mark.parametrize("kwargs, message", [
    ({"baseline": "lora256"}, "both --baseline and --candidate"),
    ({"baseline": "loFF", "candidate": "loFF"}, "two different runs"),
    ({}, "give --runs"),
    ({"runs": ["lora265"]}, "did you mean 'lora256'"),
])
def test_refusals(runs, kwargs, message):
    from records.errors import InterpError

    with pytest.raises(InterpError, match=message):
        run_analysis(Qualitative, runs_dir=runs, progress=False, **kwargs)


def test_command(runs):
    from interp.commands import stats

    app = typer.Typer()
    app.command()(stats.qualitative)
    out = CliRunner().invoke(app, ["--baseline", "lora256", "--candidate", "loFF", "--runs-dir", str(runs), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "lora256: 5 correct, 5 wrong" in out.output and "qualitative/lora256-vs-loFF.json" in out.output
    assert np.isfinite(json.loads((runs / "analyses" / "qualitative" / "lora256-vs-loFF.json").read_text())["result"]["per_run"]["loFF"]["mrr"])
