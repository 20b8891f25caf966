"""`interp attn-diff`: [CLS] attention of two runs, over real tiny runs trained a few steps.

The runs are a tiny random RoBERTa (CodeBERT's family, 4 layers x 4 heads) with LoRA on layer 2
only and with a prefix, trained on real mined pairs; the capture is also checked on the real
MiniLM (BERT family). The distances (total variation, Jensen-Shannon) and the permutation test
are checked on hand-made rows and distances. Seed groups and their null on tiny real runs:
tests/test_attn_diff_seeds.py.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from helpers import attn_diff as diff, flat as _all, json_close
from interp.analyses.attention import (attention_implementation, capture_attention, capture_attention_eager, jensen_shannon,
                                       total_variation)
from interp.analyses.attn_diff import STATS, result_name
from interp.analyses.seeds import benjamini_hochberg, permutation_test, run_pairs
from interp.analyses.base import resolve_runs
from interp.analyses.ranks import load_model
from interp.cli import app
from trainers import methods
from records.errors import InterpError
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run

GOLDEN = Path(__file__).parent / "golden"
TEXTS = ["Return relative path if path is local.", "def f(x):\n    return x * 2", "a"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    """lora2 (LoRA r=8 on layer 2 only) and prefix (l=4), each trained 4 steps."""
    runs_dir = tmp_path_factory.mktemp("attn-runs")
    cfg = TrainConfig(epochs=1, batch_size=4, max_len=32, evals_per_epoch=1, max_steps=4, lr=1e-2, seed=7)
    for name, method in (("lora2", {"method": "lora", "r": 8, "alpha": 4, "layers": "2"}),
                         ("prefix", {"method": "prefix", "length": 4})):
        spec = RunSpec(name=name, method=methods.method_from_dict(method), data_dir=mined_data, base=str(tiny_roberta_dir),
                       train_limit=16, eval_limit=8)
        train_run(spec, cfg, runs_dir=runs_dir, progress=False)
    return runs_dir


@pytest.fixture(scope="module")
def lora_diff(runs):
    """base vs lora2 over 12 examples, both sides, example matrix at layer 2."""
    return diff(runs, "base", "lora2", layer=2)


# -- capture -----------------------------------------------------------------------------------

# Equality with the eager capture over every preset, and that nothing is left behind: tests/test_attention_capture.py.

def test_capture_keeps_cls_rows_of_real_tokens_on_minilm(minilm):
    batch = minilm.tokenize(TEXTS)
    with capture_attention(minilm) as captured:
        minilm.embed(batch["input_ids"], batch["attention_mask"])
    rows = captured.cls_rows()  # (layers, batch, heads, k_len)
    assert rows.shape == (minilm.num_layers, len(TEXTS), minilm.num_heads, batch["input_ids"].shape[1])
    assert torch.allclose(rows.sum(-1), torch.ones(rows.shape[:-1]), atol=1e-5)
    pad = ~batch["attention_mask"].bool()  # (batch, k_len)
    assert rows.permute(1, 3, 0, 2)[pad].abs().max() == 0  # padding columns get nothing
    assert attention_implementation(minilm) == "sdpa"


@pytest.mark.parametrize("name", ["prefix", "lora2"])
def test_trained_runs_capture_what_eager_attention_returns(runs, name):
    encoder, model = load_model(resolve_runs(runs, [name])[0])
    batch = encoder.tokenize(TEXTS, max_len=32)
    got = {}
    for capture in (capture_attention, capture_attention_eager):
        with torch.inference_mode(), capture(encoder, full=True) as got[capture]:
            encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
    new, eager = got[capture_attention], got[capture_attention_eager]
    assert (new.cls_rows() - eager.cls_rows()).abs().max() <= 1e-5
    assert (new.full_weights() - eager.full_weights()).abs().max() <= 1e-5


def test_prefix_rows_have_k_len_columns_and_exclude_the_prefix_mass(runs):
    ref = resolve_runs(runs, ["prefix"])[0]
    encoder, model = load_model(ref)
    batch = encoder.tokenize(TEXTS, max_len=32)
    with capture_attention(encoder, full=True) as captured:
        encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
    rows, full = captured.cls_rows(), captured.full_weights()
    k_len = batch["input_ids"].shape[1]
    assert rows.shape[-1] == k_len and full.shape[-2:] == (k_len, k_len)
    mass = rows.sum(-1)  # (layers, batch, heads)
    assert (mass <= 1 + 1e-6).all() and (mass < 1 - 1e-4).all()  # every layer puts some mass on its prefix
    assert torch.equal(full[:, :, :, 0], rows)


# -- the analysis --------------------------------------------------------------------------------

def test_a_run_against_itself_is_exactly_zero(runs):
    result, _ = diff(runs, "prefix", "prefix")
    for side in ("query", "code"):
        s = result.stats[side]
        for stat in ("total_variation", "max_abs_difference", "signed_content_difference", "entropy_change", "js_divergence"):
            assert set(_all(getattr(s, stat))) == {0.0}, stat
        assert s.mean_total_variation == 0 and s.content_mass_a == s.content_mass_b and s.entropy_a == s.entropy_b
        assert all(t.mean_relative_change == 0 and t.mean_abs_change == 0 and t.mean_signed_change == 0 for t in result.tokens[side])
        assert set(_all(result.example.sides[side].difference)) == {0.0} and result.example.sides[side].mean_total_variation == 0


def test_lora_on_one_layer_changes_attention_only_from_that_layer_up(lora_diff):
    result, _ = lora_diff
    for side in ("query", "code"):
        s = result.stats[side]
        assert set(s.max_abs_difference[0]) == {0.0} and set(s.total_variation[0]) == {0.0}  # layer 1: below the delta
        assert set(s.signed_content_difference[0]) == {0.0} and set(s.entropy_change[0]) == {0.0} and set(s.js_divergence[0]) == {0.0}
        for layer in range(1, 4):  # layers 2-4: the delta's layer and those above it
            assert all(v > 0 for v in s.max_abs_difference[layer]), layer
            assert all(v > 0 for v in s.js_divergence[layer]) and all(v > 0 for v in s.total_variation[layer])
        assert all(0 <= js <= tv <= 1 for js, tv in zip(_all(s.js_divergence), _all(s.total_variation)))
        assert s.mean_total_variation == pytest.approx(float(np.mean(s.total_variation)))
        assert max(_all(s.outside_mass_a) + _all(s.outside_mass_b)) < 1e-5  # no prefix on either side
        ex = result.example.sides[side]
        assert max(map(abs, ex.difference[0])) > 0  # the example's layer 2 moved too
        assert len(ex.difference) == 4 and len(ex.difference[0]) == len(ex.tokens) and len(ex.total_variation) == 4
        assert len(ex.full_a) == 4 and len(ex.full_a[0]) == 4 and len(ex.full_a[0][0]) == len(ex.tokens)


def test_prefix_mass_is_reported_outside_the_real_tokens_and_counts_in_the_total_variation(runs):
    result, _ = diff(runs, "base", "prefix", side="query")
    s = result.stats["query"]
    assert max(_all(s.outside_mass_a)) < 1e-5 and min(_all(s.outside_mass_b)) > 1e-4
    # per example TV >= 1/2 |prefix mass of B - that of A|, so the means too
    assert all(tv >= out / 2 - 1e-9 for tv, out in zip(_all(s.total_variation), _all(s.outside_mass_b)))
    assert result.sides == ["query"] and list(result.stats) == ["query"]


def test_tokens_are_ranked_by_their_change_relative_to_uniform_attention(lora_diff):
    result, _ = lora_diff
    for side in ("query", "code"):
        tokens = result.tokens[side]
        assert tokens and all(t.count >= result.min_token_count for t in tokens)
        ranked = [t.mean_relative_change for t in tokens]
        assert ranked == sorted(ranked, reverse=True)
        # x L (at least 3 real tokens, at most max_len): relative = L x raw for every occurrence
        assert all(3 * t.mean_abs_change <= t.mean_relative_change + 1e-12 <= 32 * t.mean_abs_change + 1e-9 for t in tokens)


def test_json_is_written_with_fingerprints_and_the_example(runs, lora_diff):
    result, path = lora_diff
    assert path == runs / "analyses" / "attn-diff" / "base-vs-lora2.n12.json"
    saved = json.loads(path.read_text())
    inputs = saved["inputs"]
    assert [r["name"] for r in inputs["runs"]] == ["base", "lora2"]
    assert len(inputs["runs"][1]["delta_sha256"]) == 64 and inputs["runs"][0]["base_sha256"] == inputs["runs"][1]["base_sha256"]
    assert len(inputs["data"]["fingerprint"]) == 64 and inputs["data"]["examples"] == 12
    assert (inputs["side"], inputs["limit"], inputs["layer"]) == ("both", 12, 2)
    assert inputs["pooling"] == {"base": "cls", "lora2": "cls"} and (inputs["runs_a"], inputs["runs_b"]) == (["base"], ["lora2"])
    r = saved["result"]
    assert set(r["stats"]["code"]) == {"examples", "tokens", "pairs", "mean_total_variation", "mean_js_divergence", *STATS}
    assert "mean_abs_difference" not in r["stats"]["code"]  # length-dependent: dropped
    assert r["example"]["layer"] == 2 and r["token_layer"] == 2 and r["example"]["idx"] == result.example.idx
    assert r["example"]["runs"] == ["base", "lora2"]
    assert set(r["example"]["sides"]["query"]) >= {"tokens", "cls_a", "cls_b", "difference", "total_variation", "full_a", "full_b", "full_tokens"}
    assert r["seed_null"] is None and r["null_note"].startswith("no seed-noise null: each side is one run")
    assert r["examples_per_second"] > 0


@pytest.mark.parametrize("kw, expected", [
    ({}, "a-vs-b"),
    ({"limit": 5}, "a-vs-b.n5"),
    ({"split": "valid"}, "a-vs-b.valid"),
    ({"side": "code"}, "a-vs-b.code"),
    ({"data_file": Path("/x/mine.jsonl"), "limit": 3, "side": "query"}, "a-vs-b.mine.n3.query"),
    ({"seeds": True, "limit": 3, "side": "code"}, "a-vs-b.seeds.n3.code"),
])
def test_result_names(kw, expected):
    assert result_name("a", "b", **kw) == expected


def test_golden(runs):
    """base vs lora2 on 6 queries, example 532 ('Remove quotes from a string .').

    Stored rounded to 6 decimals and compared to 1e-5 (float noise across machines); timings,
    versions and inputs (tmp paths) are left out. UPDATE_GOLDEN=1 rewrites the file.
    """
    _, path = diff(runs, "base", "lora2", limit=6, side="query", example=532)
    got = _rounded({k: v for k, v in json.loads(path.read_text()).items() if k in ("kind", "name", "result")})
    for volatile in ("seconds", "examples_per_second"):
        got["result"].pop(volatile)
    golden = GOLDEN / "attn_diff.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(_dump(got) + "\n")
    assert json_close(got, json.loads(golden.read_text()), 1e-4, 1e-5), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v) for v in obj]
    return round(obj, 6) if isinstance(obj, float) and math.isfinite(obj) else obj


def _dump(obj, depth: int = 0) -> str:
    """Indented JSON with lists of numbers on one line, so the golden file reads as matrices."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dump(obj[k], depth + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dump(v, depth + 1) for v in obj) + f"\n{pad}]"
    return json.dumps(obj)


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"a": "lora", "b": "base"}, "unknown run 'lora'.*did you mean 'lora2'"),
    ({"a": "base", "b": "prefx"}, "did you mean 'prefix'"),
    ({"example": 987654321}, "--example 987654321"),
    ({"layer": 0}, "--layer 0: the encoder has 4 layers"),
    ({"layer": 5}, "--layer 5: the encoder has 4 layers"),
    ({"side": "docstring"}, "--side should be .* 'docstring'"),
    ({"limit": 0}, "--limit should be at least 1, got 0"),
])
def test_bad_input_names_the_value(runs, kw, message):
    with pytest.raises(InterpError, match=message):
        diff(runs, **({"a": "base", "b": "lora2"} | kw))


# -- the command ---------------------------------------------------------------------------------

def test_command_prints_top_heads_tokens_speed_and_path(runs):
    out = CliRunner().invoke(app, ["attn-diff", "base", "lora2", "--limit", "12", "--runs-dir", str(runs), "--no-progress",
                                   "--side", "code", "--layer", "4"])
    assert out.exit_code == 0, out.output
    assert "top heads by total variation: L" in out.output and "top heads by JS divergence: L" in out.output
    assert "total variation (share of attention mass moved, in [0, 1]), mean over heads" in out.output
    assert out.output.count("L1H") == 0  # layer 1 is untouched by a delta on layer 2
    assert "tokens changed most at layer 4" in out.output
    assert "no seed-noise null: each side is one run" in out.output
    assert "examples/s" in out.output and "base-vs-lora2.n12.code.json" in out.output


def test_command_reports_a_misspelt_run_in_one_line(runs):
    out = CliRunner().invoke(app, ["attn-diff", "lora3", "prefix", "--runs-dir", str(runs), "--no-progress"])
    assert out.exit_code == 2 and "did you mean 'lora2'" in out.output and "Traceback" not in out.output


# -- distances between [CLS] rows (hand-made) ------------------------------------------------------

ROWS = [  # name, row A, row B (a row summing to less than 1 leaves the rest on a prefix), TV, JS (bits)
    ("identical", [0.5, 0.5], [0.5, 0.5], 0.0, 0.0),
    ("disjoint", [1.0, 0.0], [0.0, 1.0], 1.0, 1.0),
    ("half the mass moved", [0.5, 0.5], [1.0, 0.0], 0.5, 1.5 - 0.75 * math.log2(3)),  # = 0.311278
    ("a prefix takes half", [0.5, 0.5], [0.25, 0.25], 0.5, 1.5 - 0.75 * math.log2(3)),
    ("0.1 moved among three", [0.2, 0.3, 0.5], [0.3, 0.3, 0.4], 0.1, None),
    ("both with prefixes", [0.3, 0.3], [0.1, 0.2], 0.3, None),  # 1/2 (0.2 + 0.1 + |0.4 - 0.7|)
]


@pytest.mark.parametrize("name, a, b, tv, js", ROWS, ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("zeros", [0, 1, 7, 250])
def test_total_variation_and_js_are_hand_computable_and_ignore_appended_zero_attention_tokens(name, a, b, tv, js, zeros):
    pa, pb = (torch.tensor(r + [0.0] * zeros, dtype=torch.float64) for r in (a, b))
    assert float(total_variation(pa, pb)) == pytest.approx(tv, abs=1e-12)
    assert float(total_variation(pb, pa)) == pytest.approx(tv, abs=1e-12)
    if js is not None:
        assert float(jensen_shannon(pa, pb)) == pytest.approx(js, abs=1e-12)
    # the statistic TV replaces, the mean over tokens of |B - A|, falls as zero-attention tokens are appended
    mean_abs = float((pb - pa).abs().mean())
    assert mean_abs == pytest.approx(float((torch.tensor(b) - torch.tensor(a)).abs().sum()) / (len(a) + zeros))


@pytest.mark.parametrize("length", [4, 16, 64, 256])
def test_the_same_move_gives_the_same_total_variation_at_every_length(length):
    """0.2 of the mass moves from token 0 to token 1 of a row of `length`: TV 0.2 each time, mean |d| 0.4 / length."""
    a = torch.full((length,), 0.5 / (length - 1), dtype=torch.float64)
    a[0] = 0.5
    b = a.clone()
    b[0] -= 0.2
    b[1] += 0.2
    assert float(total_variation(a, b)) == pytest.approx(0.2, abs=1e-12)
    assert float((b - a).abs().mean()) == pytest.approx(0.4 / length, abs=1e-12)


def test_distances_stay_within_their_bounds_on_random_rows():
    torch.manual_seed(0)
    rows = torch.distributions.Dirichlet(torch.full((20,), 0.3)).sample((2, 2000))  # (2, rows, tokens)
    keep = torch.rand(2, 2000, 1)  # a random share kept on the tokens, the rest on a prefix
    a, b = (rows * keep).double().unbind(0)
    tv, js = total_variation(a, b), jensen_shannon(a, b)
    assert ((tv >= 0) & (tv <= 1)).all() and ((js >= 0) & (js <= 1)).all()
    assert (js <= tv + 1e-12).all()  # JS (bits) <= TV
    assert torch.equal(total_variation(a, a), torch.zeros(2000, dtype=torch.float64))


# -- the permutation test (hand-made distances) ----------------------------------------------------

def _distances(m: int, n: int, between: float, within: float) -> np.ndarray:
    """(pairs,) D over run_pairs(m + n): `between` across the sides, `within` inside a side."""
    side = [0] * m + [1] * n
    return np.array([between if side[i] != side[j] else within for i, j in run_pairs(m + n)])


@pytest.mark.parametrize("m, n, between, within, p, floor, labellings", [
    (2, 2, 0.5, 0.1, 1 / 3, 1 / 3, 6),  # the observed split and its mirror are the most extreme of 6
    (2, 2, 0.3, 0.3, 1.0, 1 / 3, 6),  # nothing between that is not within: every split ties
    (2, 2, 0.1, 0.5, 1.0, 1 / 3, 6),  # closer across than within: not beyond seed noise
    (3, 3, 0.5, 0.1, 0.1, 0.1, 20),
    (4, 4, 0.5, 0.1, 2 / 70, 2 / 70, 70),
    (2, 3, 0.5, 0.1, 0.1, 0.1, 10),  # unequal sides: no mirror
])
def test_permutation_p_values_are_hand_computable(m, n, between, within, p, floor, labellings):
    test = permutation_test(_distances(m, n, between, within), m, n)
    assert float(test.p) == pytest.approx(p) and test.floor == pytest.approx(floor) and test.labellings == labellings
    assert test.exact and float(test.between) == pytest.approx(between) and float(test.within) == pytest.approx(within)


def test_beyond_the_exact_limit_the_p_value_is_monte_carlo_and_never_zero():
    test = permutation_test(_distances(8, 8, 0.5, 0.1), 8, 8)  # C(16, 8) = 12,870 splits
    assert not test.exact and test.labellings == 10_000 and test.floor == 1e-4
    assert 1e-4 <= float(test.p) < 1e-3


def test_benjamini_hochberg_matches_scipy():
    p = np.random.default_rng(1).uniform(size=(2, 4, 4)) ** 3
    assert np.allclose(benjamini_hochberg(p), scipy_stats.false_discovery_control(p.ravel(), method="bh").reshape(p.shape))


def test_on_exchangeable_runs_the_permutation_test_holds_its_level_and_a_per_example_test_does_not():
    """Why the unit is the run. 8 runs of one configuration (4 + 4), 60 heads, 80 examples: each run has
    its own fixed offset (its seed) and examples vary the rows. Under this null the run-label
    permutation test rejects at most its level (2/70 = 0.029 here); a paired t-test over examples
    of between - within TV, which treats examples as the unit, rejects in most heads."""
    rng = np.random.default_rng(0)
    runs, heads, examples, tokens = 8, 60, 80, 12
    logits = rng.normal(size=(1, heads, examples, tokens)) + 0.3 * rng.normal(size=(runs, heads, 1, tokens))
    logits += 0.1 * rng.normal(size=(runs, heads, examples, tokens))
    rows = torch.softmax(torch.tensor(logits), -1)  # (runs, heads, examples, tokens)
    pairs = run_pairs(runs)
    per_example = torch.stack([total_variation(rows[i], rows[j]) for i, j in pairs]).numpy()  # (pairs, heads, examples)
    permutation = permutation_test(per_example.mean(-1), 4, 4)
    cross = np.array([(i < 4) != (j < 4) for i, j in pairs])
    delta = per_example[cross].mean(0) - per_example[~cross].mean(0)  # (heads, examples)
    paired = scipy_stats.ttest_1samp(delta, 0.0, axis=-1).pvalue
    assert (permutation.p <= 0.05).mean() <= 0.1
    assert (paired <= 0.05).mean() >= 0.5
