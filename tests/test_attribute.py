"""`interp attribute`: integrated gradients of a pair's score on the word embeddings.

The checks are the axioms: completeness (the attributions sum to the function's change from the
reference to the input, within Captum's reported convergence delta, which is small with enough
steps), special tokens kept in the reference get exactly zero, and the score is the one the
MRR uses. On a tiny LoRA run trained two steps, and on the real MiniLM for the step count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.analyses.attribute import Attribution, read_code, run_attribute
from test_ablate import GOLDEN, check_golden, command_app, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from trainers.data import load_split
from trainers.errors import InterpError
from trainers.methods import LoraConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

STEPS = 16


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("attribute-runs")
    train_tiny(out, mined_data, tiny_roberta_dir, "lora", LoraConfig(r=4))
    return out


@pytest.fixture(scope="module")
def example(mined_data):
    return load_split(mined_data, "test")[0]


def check_completeness(result) -> None:
    """Per path: sum of attributions = f(input) - f(reference) + delta; delta small; specials exactly 0."""
    for p in result.paths:
        change = p.score - p.reference_score
        assert p.attribution_sum - change == pytest.approx(p.convergence_delta, abs=1e-5)
        assert abs(p.convergence_delta) <= 1e-4 + 1e-2 * abs(change)
    for t in result.query_tokens + result.code_tokens:
        if t.special:
            assert t.attribution == 0.0
    query_sum, code_sum = sum(t.attribution for t in result.query_tokens), sum(t.attribution for t in result.code_tokens)
    if result.mode == "joint":
        assert query_sum + code_sum == pytest.approx(result.paths[0].attribution_sum, abs=1e-6)
    else:
        assert [p.varies for p in result.paths] == ["query", "code"]
        assert (query_sum, code_sum) == pytest.approx((result.paths[0].attribution_sum, result.paths[1].attribution_sum), abs=1e-6)


@pytest.fixture(scope="module")
def bound(runs_dir) -> dict:
    """The run alone, and the run against the base (score_lora - score_base), each loaded once."""
    from interp.analyses.base import resolve_runs
    from interp.analyses.ranks import load_model

    run, base = resolve_runs(runs_dir, ["lora", "base"])
    encoder, model = load_model(run)
    return {None: Attribution(encoder, model, max_len=32), "base": Attribution(encoder, model, baseline=load_model(base), max_len=32),
            "encoder": encoder, "model": model}


@pytest.mark.parametrize("mode", ["joint", "sides"])
@pytest.mark.parametrize("baseline", [None, "base"])
def test_completeness(bound, example, mode, baseline):
    result = bound[baseline].compute(query=example.query, code=example.code_text, steps=STEPS, mode=mode, names=("lora", baseline))
    check_completeness(result)
    assert result.query_tokens[0].special and result.query_tokens[-1].special and result.query_tokens[0].token == "<s>"
    if baseline is None:
        assert result.score == result.run_score and result.function == "score" and result.baseline_score is None
    else:
        assert result.score == pytest.approx(result.run_score - result.baseline_score, abs=1e-5)
        assert result.function == "score_lora - score_base" and result.baseline_score != result.run_score


def test_example_golden(runs_dir, example):
    result, path = run_attribute(runs_dir=runs_dir, name="lora", example=example.idx, steps=STEPS)
    assert result.query == example.query and result.code == example.code_text and result.example == example.idx
    assert path.name == f"lora.example{example.idx}.json"
    check_golden(path, GOLDEN / "attribute.json")


def test_score_is_the_inner_product_the_mrr_uses(bound, example):
    encoder, model = bound["encoder"], bound["model"]
    result = bound[None].compute(query=example.query, code=example.code_text, steps=4)
    with torch.no_grad():  # the padded-batch path of training and evaluation
        q = encoder.embed(**encoder.tokenize([example.query, "x"], max_len=32), model=model)[0]
        c = encoder.embed(**encoder.tokenize([example.code_text], max_len=32), model=model)[0]
    assert result.run_score == pytest.approx(float(q @ c), rel=1e-5)
    assert len(result.code_tokens) == len(encoder.tokenize([example.code_text], max_len=32)["input_ids"][0])


def test_real_encoder_converges_with_enough_steps(minilm):
    attribution = Attribution(minilm, minilm.model, max_len=64)
    result = attribution.compute(query="Return the larger of two numbers .", code="def f ( a , b ) : return max ( a , b )", steps=32)
    (p,) = result.paths
    assert abs(p.convergence_delta) < 1e-2 * abs(p.score - p.reference_score)
    assert [t.token for t in result.query_tokens if t.special] == ["[CLS]", "[SEP]"]
    check_completeness(result)


def test_query_and_code_file(runs_dir, tmp_path):
    code = tmp_path / "double.py"
    code.write_text('def double(x):\n    """Twice x."""\n    return x * 2  # doubled\n')
    assert read_code(code) == 'def double ( x ) : """Twice x.""" return x * 2'
    result, path = run_attribute(runs_dir=runs_dir, name="lora", query="Return x, doubled.", code_file=code, steps=4, baseline="base")
    assert result.query == "Return x , doubled ." and result.example is None
    assert path.name.startswith("lora-vs-base.pair-") and result.function == "score_lora - score_base"
    check_completeness(result)


@pytest.mark.parametrize("kwargs, message", [
    ({"example": 10**9}, r"--example 1000000000 is not in .*test.jsonl \(\d+ examples, idx \d+\.\.\d+\)"),
    ({}, "either --example IDX, or --query TEXT with --code FILE"),
    ({"example": 0, "query": "x"}, "either --example IDX, or --query TEXT with --code FILE"),
    ({"query": "Return x."}, "--query and --code go together"),
    ({"name": "lroa", "example": 0}, "unknown run 'lroa'; did you mean 'lora'"),
    ({"example": 0, "baseline": "lora"}, "is the run itself"),
    ({"example": 0, "steps": 1}, "--steps should be at least 2"),
    ({"example": 0, "mode": "both"}, "--mode should be one of joint, sides"),
])
def test_refusals(runs_dir, kwargs, message):
    with pytest.raises(InterpError, match=message):
        run_attribute(runs_dir=runs_dir, **({"name": "lora"} | kwargs))


def test_code_file_that_is_not_python(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(:\n    return """unterminated\n')
    with pytest.raises(InterpError, match="bad.py: not Python source that tokenizes"):
        read_code(bad)


def test_command(runs_dir, example):
    out = CliRunner().invoke(command_app(), ["attribute", "lora", "--example", str(example.idx), "--steps", "8",
                                             "--mode", "sides", "--runs-dir", str(runs_dir)])
    assert out.exit_code == 0, out.output
    assert "varying query" in out.output and "varying code" in out.output and "convergence delta" in out.output
    assert f"lora.example{example.idx}.sides.json" in out.output
    bad = CliRunner().invoke(command_app(), ["attribute", "lora", "--example", "-5", "--runs-dir", str(runs_dir)])
    assert bad.exit_code == 2 and "--example -5 is not in" in bad.output
