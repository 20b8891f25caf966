"""Linear CKA (interp/analyses/cka.py): the estimators against hand computations and the Gram-matrix
formulas, its invariances, batched sums against one-shot ones, and the analysis over tiny real models
(a tiny random RoBERTa, every method applied, trained tiny LoRA runs and their seeds)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from helpers import GOLDEN, MAX_LEN, _rounded, json_close, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from interp.analyses.attn_diff import BoundRun
from interp.analyses.cka import CKA, GramStats, linear_cka, result_name, seed_null
from interp.analyses.running import run_analysis
from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.methods.apply import delta_parameters
from records.errors import InterpError
from trainers.training.runs import find_run
from trainers.training.scoring import load_run_model

ESTIMATORS = ("biased", "unbiased")


# -- the estimators on small matrices -----------------------------------------------------------------


def gram_cka(x, y, estimator: str) -> float:
    """The plain Gram-matrix formulas: tr(K H L H) (biased), Song et al. (2012) Eq. 5 (unbiased)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)

    def hsic(k, l):
        if estimator == "biased":
            h = np.eye(n) - np.ones((n, n)) / n
            return np.trace(k @ h @ l @ h) / (n - 1) ** 2
        k, l, one = k - np.diag(np.diag(k)), l - np.diag(np.diag(l)), np.ones(n)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


X42 = [[1, 0], [-1, 0], [0, 1], [0, -1]]
Y43 = [[1, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0]]
# By hand: both centred; X^T X = diag(2, 2), Y^T Y = diag(2, 0, 0), X^T Y = [[2, 0, 0], [0, 0, 0]]:
# ||X^T Y||^2 / (||X^T X|| ||Y^T Y||) = 4 / (sqrt(8) * 2) = 1 / sqrt(2).
HAND = [
    pytest.param(X42, Y43, 1 / math.sqrt(2), id="centred 4x2 vs 4x3"),
    pytest.param(np.add(X42, 3), np.add(Y43, [1, 2, 5]), 1 / math.sqrt(2), id="shifted: centring is part of CKA"),
    pytest.param([[1, 2], [3, 4], [5, 6], [7, 8]], [[2, 4, 6], [6, 8, 10], [10, 12, 14], [14, 16, 18]], 1.0, id="rank one, same order"),
]


@pytest.mark.parametrize("x, y, expected", HAND)
def test_biased_cka_matches_the_hand_computation(x, y, expected):
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    assert gram_cka(x, y, "biased") == pytest.approx(expected, rel=1e-12)


INTEGERS = [
    pytest.param([[1, 2], [0, 3], [4, 1], [2, 2]], [[1, 0, 2], [3, 1, 0], [0, 2, 2], [1, 1, 5]], id="4x2 vs 4x3"),
    pytest.param([[3, 1], [1, 4], [1, 5], [9, 2], [6, 5]], [[2, 7, 1], [8, 2, 8], [1, 8, 2], [8, 4, 5], [9, 0, 4]], id="5x2 vs 5x3"),
    pytest.param(np.arange(24).reshape(6, 4) % 7, np.arange(12).reshape(6, 2) ** 2 % 5, id="6x4 vs 6x2"),
]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("x, y", INTEGERS)
def test_both_estimators_equal_the_gram_matrix_formulas(x, y, estimator):
    assert linear_cka(x, y, estimator=estimator) == pytest.approx(gram_cka(x, y, estimator), rel=1e-9, abs=1e-12)


def _random(n: int, p: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, p)) + np.arange(p)  # off-centre on purpose


def _orthogonal(p: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q


X, Y = _random(40, 6, 0), _random(40, 5, 1) + _random(40, 6, 0)[:, :5]  # related, not equal
TRANSFORMS = [
    pytest.param(lambda a: a @ _orthogonal(a.shape[1], 7), id="orthogonal"),
    pytest.param(lambda a: 3.5 * a, id="isotropic scaling"),
    pytest.param(lambda a: -0.01 * a @ _orthogonal(a.shape[1], 8) + 100, id="rotation, scaling and shift"),
]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("which", ["x", "y"])
def test_cka_does_not_change_under_orthogonal_transforms_and_isotropic_scaling(transform, which, estimator):
    before = linear_cka(X, Y, estimator=estimator)
    after = linear_cka(transform(X), Y, estimator=estimator) if which == "x" else linear_cka(X, transform(Y), estimator=estimator)
    assert 0.05 < before < 0.95 and after == pytest.approx(before, rel=1e-7)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("x", [X, Y, _random(8, 3, 2)], ids=["40x6", "40x5", "8x3"])
def test_cka_of_a_representation_with_itself_is_one(x, estimator):
    assert linear_cka(x, x, estimator=estimator) == pytest.approx(1.0, rel=1e-12)


def test_anisotropic_scaling_does_change_cka():
    """The invariance above is not vacuous: stretching one feature changes the value."""
    stretched = X * np.array([10.0, 1, 1, 1, 1, 1])
    assert abs(linear_cka(stretched, Y) - linear_cka(X, Y)) > 0.01


# -- batched sums equal one-shot sums --------------------------------------------------------------------


STACK_X = torch.as_tensor(np.stack([_random(30, 4, s) for s in range(3)]))  # (3 layers, 30 samples, 4)
STACK_Y = torch.as_tensor(np.stack([_random(30, 5, s) + _random(30, 5, 9) for s in range(3, 5)]))  # (2 layers, 30, 5)
SPLITS = [[30], [1] * 30, [7, 7, 7, 9], [2, 13, 1, 14], [29, 1]]


def _sums(splits: list[int], *, full: bool) -> GramStats:
    y = STACK_Y if full else STACK_X.flip(0)
    stats = GramStats(3, 4, y.shape[0], y.shape[2], full=full)
    start = 0
    for size in splits:
        stats.add(STACK_X[:, start : start + size], y[:, start : start + size])
        start += size
    assert stats.n == 30
    return stats


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("full", [True, False], ids=["every layer pair", "same layer"])
@pytest.mark.parametrize("splits", SPLITS[1:], ids=lambda s: "+".join(map(str, s)) if len(s) < 6 else "30 x 1")
def test_batched_sums_give_the_one_shot_hsic(splits, full, estimator):
    once, batched = _sums([30], full=full).hsic(estimator), _sums(splits, full=full).hsic(estimator)
    assert torch.allclose(batched, once, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_layer_pair_block_is_the_hsic_of_that_pair(estimator):
    hsic = _sums([7, 7, 7, 9], full=True).hsic(estimator)  # (3, 2)
    assert hsic.shape == (3, 2)
    for k in range(3):
        for l in range(2):
            one = GramStats(1, 4, 1, 5, full=False)
            one.add(STACK_X[k : k + 1], STACK_Y[l : l + 1])
            assert float(hsic[k, l]) == pytest.approx(float(one.hsic(estimator)[0]), rel=1e-10)


# -- the seed-noise null on hand-made CKA -----------------------------------------------------------------


RUNS_A, RUNS_B = ["a1", "a2"], ["b1", "b2"]


def _table(between: float, within: float, layers: int = 3) -> dict:
    """Every pair of a1, a2, b1, b2: CKA `within` inside a side, `between` across; layer 0 undefined."""
    runs = RUNS_A + RUNS_B
    return {(r, s): [None] + [within if (r[0] == s[0]) else between] * (layers - 1)
            for i, r in enumerate(runs) for s in runs[i + 1 :]}


def test_the_null_marks_configurations_further_apart_than_seeds_at_the_floor():
    null = seed_null(RUNS_A, RUNS_B, {"query": _table(0.6, 0.9), "code": _table(0.9, 0.9)})
    assert (null.runs_a, null.runs_b, null.labellings, null.exact, null.tested) == (2, 2, 6, True, 4)
    assert null.floor == pytest.approx(1 / 3) and "no layer can be marked" in null.note
    q = null.sides["query"]
    assert q.between == [None, pytest.approx(0.6), pytest.approx(0.6)] and q.within == [None, pytest.approx(0.9), pytest.approx(0.9)]
    assert q.excess == [None, pytest.approx(0.3), pytest.approx(0.3)]
    assert q.p == [None, pytest.approx(1 / 3), pytest.approx(1 / 3)] and q.marked == []  # the observed split is the most extreme of 3
    assert null.sides["code"].p == [None, 1.0, 1.0]  # no difference: every relabelling ties


def test_the_null_reads_pairs_in_either_order_and_refuses_what_it_cannot_test():
    table = {(s, r): v for (r, s), v in _table(0.5, 0.8).items()}
    assert seed_null(RUNS_A, RUNS_B, {"code": table}).sides["code"].p[1] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="two or more runs a side"):
        seed_null(["a1"], RUNS_B, {"code": _table(0.5, 0.8)})
    missing = dict(_table(0.5, 0.8))
    del missing[("a1", "b2")]
    with pytest.raises(ValueError, match="no CKA of runs 'a1' and 'b2'"):
        seed_null(RUNS_A, RUNS_B, {"code": missing})


# -- the analysis over tiny real models -----------------------------------------------------------------


@pytest.fixture(scope="module")
def examples(mined_data):
    return load_split(mined_data, "test")[:20]


@pytest.fixture(scope="module")
def base(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    return BoundRun("base", encoder, encoder.model)


def _cka(a, b, examples, **options):
    a, b = (list(s) if isinstance(s, (list, tuple)) else [s] for s in (a, b))
    return CKA(a=a, b=b, labels=(a[0].name, b[0].name), max_len=MAX_LEN, device="cpu").compute(examples, **({"batch_size": 8} | options))


def _floats(values) -> np.ndarray:
    """A list (of lists) of CKA values as an array, None as nan."""
    return np.array([_floats(v) if isinstance(v, list) else (np.nan if v is None else v) for v in values], dtype=float)


def _numbers(values) -> list[float]:
    return [v for row in values for v in (row if isinstance(row, list) else [row]) if v is not None]


@pytest.mark.parametrize("tokens, constant", [("cls", [0]), ("all", [])])
def test_a_model_against_itself_is_one_on_the_diagonal(base, examples, tokens, constant):
    result = _cka(base, base, examples, tokens=tokens)
    assert result.layer_names == ["embeddings", "1", "2", "3", "4"] and result.depth == 4
    for side in ("query", "code"):
        s = result.stats[side]
        assert s.constant_a == s.constant_b == constant  # with cls the embeddings' [CLS] state is the same for every example
        assert len(s.matrix) == 5 and all(len(row) == 5 for row in s.matrix)
        assert [v is None for v in s.diagonal] == [layer in constant for layer in range(5)]
        assert _numbers(s.diagonal) == pytest.approx([1.0] * (5 - len(constant)), abs=1e-9)
        assert np.allclose(_floats([s.matrix[k][k] for k in range(5)]), _floats(s.diagonal), rtol=1e-12, equal_nan=True)
        assert np.allclose(_floats(s.matrix), _floats(s.matrix).T, equal_nan=True)
    assert result.seed_null is None and result.null_note.startswith("no seed-noise null")


def test_all_tokens_masks_padding(base, examples):
    """One text a batch has no padding; eight queries of different lengths a batch have plenty: same samples, same CKA."""
    padded, alone = (_cka(base, base, examples, tokens="all", sides=("query",), batch_size=k) for k in (8, 1))
    lengths = [len(base.encoder.tokenize([e.query], MAX_LEN)["input_ids"][0]) for e in examples]
    assert len(set(lengths)) > 3  # the batches of eight do carry padding
    assert padded.stats["query"].samples == alone.stats["query"].samples == sum(lengths)
    assert np.allclose(_floats(padded.stats["query"].matrix), _floats(alone.stats["query"].matrix), rtol=1e-6)


METHODS = [
    pytest.param({"method": "lora", "r": 4}, id="lora"),
    pytest.param({"method": "prefix", "length": 3}, id="prefix"),
    pytest.param({"method": "adapter", "r": 4, "placement": "ffn"}, id="adapter"),
    pytest.param({"method": "ia3"}, id="ia3"),
    pytest.param({"method": "full"}, id="full"),
]


@pytest.mark.parametrize("config", METHODS)
def test_every_method_gives_hidden_states_to_compare(base, examples, tiny_roberta_dir, config):
    """output_hidden_states works through every method's model (a prefix changes keys and values, not positions)."""
    encoder = load_encoder(tiny_roberta_dir)
    model = methods.apply_method(encoder, methods.method_from_dict(config))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in delta_parameters(model).values():  # move the delta off its (often identity) start
            p.add_(0.5 * torch.randn_like(p))
    result = _cka(base, BoundRun(config["method"], encoder, model), examples[:8], sides=("query",))
    s = result.stats["query"]
    assert s.samples == 8 and len(s.matrix) == 5 and s.diagonal[0] is None
    assert all(-1e-9 <= v <= 1 + 1e-9 for v in _numbers(s.matrix))
    assert min(_numbers(s.diagonal)) < 0.999  # the delta changed some layer


@pytest.fixture(scope="module")
def cka_runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir):
    """LoRA r=8 in layers 3-4 of the tiny RoBERTa: seeds 1 and 2; in layer 2 only: seeds 1 and 2."""
    runs = tmp_path_factory.mktemp("cka-runs")
    for name, layers, seed in (("l34-s1", "3-4", 1), ("l34-s2", "3-4", 2), ("l2-s1", "2", 1), ("l2-s2", "2", 2)):
        train_tiny(runs, mined_data, tiny_roberta_dir, name, methods.method_from_dict({"method": "lora", "r": 8, "layers": layers}),
                   seed=seed)
    return runs


@pytest.fixture(scope="module")
def tiny_runs(cka_runs_dir):
    bound = {}
    for name in ("l34-s1", "l34-s2", "l2-s1", "l2-s2"):
        encoder, model = load_run_model(find_run(cka_runs_dir, name))
        bound[name] = BoundRun(name, encoder, model)
    return bound


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_a_trained_lora_run_against_the_base(base, examples, tiny_runs, estimator):
    result = _cka(base, tiny_runs["l34-s1"], examples, estimator=estimator)
    assert (result.a, result.b, result.matrix_runs, result.estimator) == ("base", "l34-s1", ["base", "l34-s1"], estimator)
    for side in ("query", "code"):
        s = result.stats[side]
        assert len(s.matrix) == 5 and all(len(row) == 5 for row in s.matrix)
        if estimator == "biased":
            assert all(-1e-9 <= v <= 1 + 1e-9 for v in _numbers(s.matrix))
        assert s.diagonal[0] is None and s.diagonal[1:3] == pytest.approx([1.0, 1.0], abs=1e-9)  # below the delta: untouched
        assert max(s.diagonal[3:]) < 0.9999  # layers 3-4 carry the delta
        assert s.pair_cka == {"base | l34-s1": s.diagonal}
        layer, value = result.lowest(side)
        assert layer in (3, 4) and value == min(s.diagonal[3:])
    assert result.summary().startswith(f"CKA base vs l34-s1 per layer (cls, {estimator}, 20 examples): query lowest ")


def test_memory_is_that_of_the_sums_whatever_the_number_of_examples(base, examples, tiny_runs):
    few, many = (_cka(base, tiny_runs["l2-s1"], examples[:k], sides=("code",)) for k in (6, 20))
    layers, hidden, f64 = 5, 32, 8
    same = layers * (2 * hidden + 2 + hidden * hidden + 1 + 2 * hidden)  # sx, sy, a, b, xy, ab, xb, ya
    every = 2 * layers * hidden + 2 * layers + (layers * hidden) ** 2 + layers**2 * (1 + 2 * hidden)
    assert few.accumulator_bytes == many.accumulator_bytes == f64 * (3 * same + every)  # base, run, the pair; the matrix


def test_two_seeds_a_side_give_the_null_and_one_seed_says_there_is_none(examples, tiny_runs):
    a, b = [tiny_runs["l2-s1"], tiny_runs["l2-s2"]], [tiny_runs["l34-s1"], tiny_runs["l34-s2"]]
    result = _cka(a, b, examples)
    null = result.seed_null
    assert result.null_note is None and (null.runs_a, null.runs_b, null.labellings, null.exact) == (2, 2, 6, True)
    assert null.floor == pytest.approx(1 / 3) and null.tested == 2 * 4  # sides x layers 1-4 (the embeddings' [CLS] is constant)
    for side in ("query", "code"):
        s, n = result.stats[side], null.sides[side]
        assert len(s.pair_cka) == 6 and n.p[0] is None and all(0 <= p <= 1 for p in n.p[1:])
        assert n.between[0] is None and n.between[1:] == pytest.approx(s.diagonal[1:], abs=1e-12)  # the curve is the null's between
        assert n.between[1] == pytest.approx(1.0, abs=1e-9) and n.p[1] == 1.0  # layer 1: below every delta
        assert s.matrix[2][2] == pytest.approx(s.pair_cka["l2-s1 | l34-s1"][2], rel=1e-12)  # the matrix is of the first run of each side
    single = _cka(tiny_runs["l2-s1"], b, examples, sides=("code",))
    assert single.seed_null is None and single.null_note == "no seed-noise null: side A (l2-s1) is one run (a null needs two or more seeds of one configuration on each side)"
    assert single.stats["code"].diagonal[1:] == pytest.approx(np.mean([single.stats["code"].pair_cka[f"l2-s1 | {r}"][1:] for r in ("l34-s1", "l34-s2")], axis=0))


def test_the_result_is_plain_json(base, examples, tiny_runs):
    result = _cka([tiny_runs["l2-s1"], tiny_runs["l2-s2"]], [tiny_runs["l34-s1"], tiny_runs["l34-s2"]], examples[:8], sides=("query",))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["stats"]["query"]["diagonal"][0] is None and data["seed_null"]["sides"]["query"]["p"][0] is None
    assert set(data["definitions"]) >= {"cka", "biased", "layers", "matrix", "diagonal", "seed_null", "p"}


BAD = [
    pytest.param({"tokens": "mean"}, "--tokens should be one of cls, all, got 'mean'", id="tokens"),
    pytest.param({"estimator": "debiased"}, "--estimator should be one of biased, unbiased", id="estimator"),
    pytest.param({"sides": ("docstring",)}, "--side should be query, code or both, got docstring", id="side"),
    pytest.param({"sides": ()}, "--side should be query, code or both, got nothing", id="no side"),
    pytest.param({"batch_size": 0}, "--batch-size should be at least 1, got 0", id="batch size"),
    pytest.param({"examples": 1}, "CKA needs at least 2 examples with the biased estimator, got 1", id="one example"),
    pytest.param({"examples": 3, "estimator": "unbiased"}, "at least 4 examples with the unbiased estimator, got 3", id="three unbiased"),
]


@pytest.mark.parametrize("options, message", BAD)
def test_bad_options_are_refused_before_any_forward_pass(base, examples, options, message):
    options = dict(options)
    chosen = examples[: options.pop("examples", len(examples))]
    with pytest.raises(InterpError, match=message.replace("(", r"\(")):
        CKA(a=[base], b=[base], device="cpu").compute(chosen, **options)


def test_a_seed_group_needs_distinct_runs(base, tiny_runs):
    with pytest.raises(InterpError, match="every run must be named once"):
        CKA(a=[tiny_runs["l2-s1"], tiny_runs["l2-s1"]], b=[base], device="cpu")


# -- through the one face: run_analysis resolves, loads, computes and saves ------------------------------


@pytest.mark.parametrize("kw, expected", [
    ({}, "a-vs-b"),
    ({"seeds": True, "label": ".n8", "side": "query"}, "a-vs-b.seeds.n8.query"),
    ({"label": ".valid", "tokens": "all", "estimator": "unbiased"}, "a-vs-b.valid.all.unbiased"),
])
def test_result_names(kw, expected):
    assert result_name("a", "b", **({"seeds": False, "label": "", "side": "both", "tokens": "cls", "estimator": "biased"} | kw)) == expected


def test_run_analysis_saves_the_golden_result(cka_runs_dir):
    """Two seeds a side over 8 test queries, through `run_analysis`; the saved result against tests/golden/cka.json
    (rounded to 6 digits, timings left out; UPDATE_GOLDEN=1 rewrites it). The report's tests render this file."""
    result, path = run_analysis(CKA, runs_dir=cka_runs_dir, a="l2-s1,l2-s2", b="l34-s1,l34-s2", limit=8, side="query",
                                device="cpu", progress=False)
    assert path == cka_runs_dir / "analyses" / "cka" / f"{result.a}-vs-{result.b}.seeds.n8.query.json"
    saved = json.loads(path.read_text())
    assert saved["kind"] == "cka" and saved["result"]["seed_null"]["runs_a"] == 2
    inputs = saved["inputs"]
    assert (inputs["runs_a"], inputs["runs_b"], inputs["tokens"], inputs["estimator"], inputs["max_len"], inputs["precision"]) == (
        ["l2-s1", "l2-s2"], ["l34-s1", "l34-s2"], "cls", "biased", MAX_LEN, "fp32")
    assert inputs["data"]["examples"] == 8 and len(inputs["runs"]) == 4
    got = _rounded({k: saved[k] for k in ("kind", "name", "result")})
    for volatile in ("seconds", "examples_per_second"):
        got["result"].pop(volatile)
    golden = GOLDEN / "cka.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert json_close(got, json.loads(golden.read_text()), 1e-4, 1e-5), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


def test_prepare_refuses_before_any_model_loads(cka_runs_dir):
    """Bad options and an unknown run are refused by `prepare`; nothing is bound, nothing written."""
    for kw, message in (({"tokens": "mean"}, "--tokens"), ({"limit": 1}, "at least 2 examples"), ({"b": "l99"}, "'l99'"),
                        ({"batch_size": 0}, "--batch-size should be at least 1, got 0")):
        with pytest.raises(InterpError, match=message):
            CKA.prepare(runs_dir=cka_runs_dir, **({"a": "l2-s1", "b": "l34-s1"} | kw))
    assert not (cka_runs_dir / "analyses" / "cka" / "l2-s1-vs-l34-s1.json").exists()
