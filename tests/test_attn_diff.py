"""`interp attn-diff`: [CLS] attention of two runs, over real tiny runs trained a few steps.

The runs are a tiny random RoBERTa (CodeBERT's family, 4 layers x 4 heads) with LoRA on layer 2
only and with a prefix, trained on real mined pairs; the capture is also checked on the real
MiniLM (BERT family).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import json_close
from interp.analyses.attention import attention_implementation, capture_attention
from interp.analyses.attn_diff import STATS, result_name, run_attn_diff
from interp.analyses.base import resolve_runs
from interp.analyses.ranks import load_model
from interp.cli import app
from trainers import methods
from trainers.encoders import load_encoder
from trainers.errors import InterpError
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


def diff(runs: Path, a: str, b: str, **kw):
    return run_attn_diff(runs_dir=runs, a=a, b=b, **({"limit": 12, "progress": False} | kw))


def _all(grid) -> list[float]:
    return [v for row in grid for v in row]


# -- capture -----------------------------------------------------------------------------------

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


def _raise_in_block(encoder, batch):
    raise KeyError("in the block")


def _raise_in_forward(encoder, batch):
    encoder.embed(batch["input_ids"] + 10**6, batch["attention_mask"])  # ids outside the vocabulary


def _raise_in_hook(encoder, batch):
    encoder.set_attention("sdpa")  # no weights come back: the hook refuses
    encoder.embed(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("fail, error", [(_raise_in_block, KeyError), (_raise_in_forward, IndexError), (_raise_in_hook, RuntimeError)])
def test_no_hook_is_left_behind_after_an_exception(tiny_roberta_dir, fail, error):
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS, max_len=32)
    modules = [encoder.module(i, "self_attention") for i in range(encoder.num_layers)]
    with pytest.raises(error):
        with capture_attention(encoder):
            assert all(len(m._forward_hooks) == 1 for m in modules)
            fail(encoder, batch)
    assert all(len(m._forward_hooks) == 0 for m in encoder.model.modules())
    assert attention_implementation(encoder) == "sdpa"


# -- the analysis --------------------------------------------------------------------------------

def test_a_run_against_itself_is_exactly_zero(runs):
    result, _ = diff(runs, "prefix", "prefix")
    for side in ("query", "code"):
        s = result.stats[side]
        for stat in ("mean_abs_difference", "max_abs_difference", "signed_content_difference", "entropy_change", "js_divergence"):
            assert set(_all(getattr(s, stat))) == {0.0}, stat
        assert s.content_mass_a == s.content_mass_b and s.entropy_a == s.entropy_b
        assert all(t.mean_abs_change == 0 and t.mean_signed_change == 0 for t in result.tokens[side])
        assert set(_all(result.example.sides[side].difference)) == {0.0}


def test_lora_on_one_layer_changes_attention_only_from_that_layer_up(lora_diff):
    result, _ = lora_diff
    for side in ("query", "code"):
        s = result.stats[side]
        assert set(s.max_abs_difference[0]) == {0.0} and set(s.js_divergence[0]) == {0.0}  # layer 1: below the delta
        assert set(s.signed_content_difference[0]) == {0.0} and set(s.entropy_change[0]) == {0.0}
        for layer in range(1, 4):  # layers 2-4: the delta's layer and those above it
            assert all(v > 0 for v in s.max_abs_difference[layer]), layer
            assert all(v > 0 for v in s.js_divergence[layer]) and all(v > 0 for v in s.mean_abs_difference[layer])
        assert all(0 <= v <= 1 for v in _all(s.js_divergence))
        assert max(_all(s.outside_mass_a) + _all(s.outside_mass_b)) < 1e-5  # no prefix on either side
        ex = result.example.sides[side]
        assert max(map(abs, ex.difference[0])) > 0  # the example's layer 2 moved too
        assert len(ex.difference) == 4 and len(ex.difference[0]) == len(ex.tokens)
        assert len(ex.full_a) == 4 and len(ex.full_a[0]) == 4 and len(ex.full_a[0][0]) == len(ex.tokens)


def test_prefix_mass_is_reported_outside_the_real_tokens(runs):
    result, _ = diff(runs, "base", "prefix", side="query")
    s = result.stats["query"]
    assert max(_all(s.outside_mass_a)) < 1e-5 and min(_all(s.outside_mass_b)) > 1e-4
    assert result.sides == ["query"] and list(result.stats) == ["query"]


def test_json_is_written_with_fingerprints_and_the_example(runs, lora_diff):
    result, path = lora_diff
    assert path == runs / "analyses" / "attn-diff" / "base-vs-lora2.n12.json"
    saved = json.loads(path.read_text())
    inputs = saved["inputs"]
    assert [r["name"] for r in inputs["runs"]] == ["base", "lora2"]
    assert len(inputs["runs"][1]["delta_sha256"]) == 64 and inputs["runs"][0]["base_sha256"] == inputs["runs"][1]["base_sha256"]
    assert len(inputs["data"]["fingerprint"]) == 64 and inputs["data"]["examples"] == 12
    assert (inputs["side"], inputs["limit"], inputs["layer"]) == ("both", 12, 2)
    r = saved["result"]
    assert set(r["stats"]["code"]) == {"examples", "tokens", *STATS}
    assert r["example"]["layer"] == 2 and r["token_layer"] == 2 and r["example"]["idx"] == result.example.idx
    assert set(r["example"]["sides"]["query"]) >= {"tokens", "cls_a", "cls_b", "difference", "full_a", "full_b", "full_tokens"}
    assert r["examples_per_second"] > 0


@pytest.mark.parametrize("kw, expected", [
    ({}, "a-vs-b"),
    ({"limit": 5}, "a-vs-b.n5"),
    ({"split": "valid"}, "a-vs-b.valid"),
    ({"side": "code"}, "a-vs-b.code"),
    ({"data_file": Path("/x/mine.jsonl"), "limit": 3, "side": "query"}, "a-vs-b.mine.n3.query"),
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
    assert "top heads by mean |B - A|: L" in out.output and "top heads by JS divergence: L" in out.output
    assert out.output.count("L1H") == 0  # layer 1 is untouched by a delta on layer 2
    assert "tokens changed most at layer 4" in out.output
    assert "examples/s" in out.output and "base-vs-lora2.n12.code.json" in out.output


def test_command_reports_a_misspelt_run_in_one_line(runs):
    out = CliRunner().invoke(app, ["attn-diff", "lora3", "prefix", "--runs-dir", str(runs), "--no-progress"])
    assert out.exit_code == 2 and "did you mean 'lora2'" in out.output and "Traceback" not in out.output
