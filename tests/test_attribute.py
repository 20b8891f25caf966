"""`interp attribute`: integrated gradients of a pair's score on the word embeddings.

The checks are the axioms and the reference: completeness (the attributions sum to the score
minus the reference score, within Captum's reported convergence delta, which is small at the
default steps), special tokens kept in the reference get exactly zero, the score is the one the
MRR uses (with the run's pooling), and the default reference ('others') is neutral: its score
is the mean score of real other pairs, below the gold pair's in most real examples, where the
pad-only reference is not. On a tiny LoRA run trained two steps, and on the real MiniLM.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from interp.analyses.attribute import DEFAULT_OTHERS, Attribution, read_code
from interp.analyses.attribute_references import read_side, references
from interp.analyses.running import run_analysis
from helpers import GOLDEN, check_golden, command_app, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from trainers.data import load_split
from records.errors import InterpError
from trainers.methods import LoraConfig
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

STEPS = 16  # where the test is not about convergence
DEFAULT_STEPS = 50  # the command's default


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("attribute-runs")
    train_tiny(out, mined_data, tiny_roberta_dir, "lora", LoraConfig(r=4))
    spec = RunSpec(name="lora-mean", method=LoraConfig(r=4), data_dir=mined_data, base=str(tiny_roberta_dir), train_limit=16, eval_limit=12)
    train_run(spec, TrainConfig(epochs=1, batch_size=4, max_len=32, evals_per_epoch=1, max_steps=2, lr=5e-2, seed=3, pooling="mean"),
              runs_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def test_split(mined_data) -> list:
    return load_split(mined_data, "test")


@pytest.fixture(scope="module")
def example(test_split):
    return test_split[0]


def check_completeness(result, *, relative: float = 1e-2) -> None:
    """Per path: sum of attributions = score - reference score + delta; delta small; specials exactly 0."""
    for p in result.paths:
        change = p.score - p.reference_score
        assert p.attribution_sum - change == pytest.approx(p.convergence_delta, abs=1e-5)
        assert abs(p.convergence_delta) <= 1e-4 + relative * abs(change)
        assert p.reference_score == pytest.approx(statistics.fmean(p.reference_scores), abs=1e-6)
    for t in result.query_tokens + result.code_tokens:
        if t.special:
            assert t.attribution == 0.0
    query_sum, code_sum = sum(t.attribution for t in result.query_tokens), sum(t.attribution for t in result.code_tokens)
    if result.mode == "joint":
        assert query_sum + code_sum == pytest.approx(result.paths[0].attribution_sum, abs=1e-6)
    else:
        assert [p.varies for p in result.paths] == ["query", "code"]
        assert (query_sum, code_sum) == pytest.approx((result.paths[0].attribution_sum, result.paths[1].attribution_sum), abs=1e-6)


def check_references(result, count: int, example: int | None) -> None:
    """'others': `count` paths per side from other examples (joint: a query and a code of different ones); pad: one."""
    per_path = [len(p.reference_scores) for p in result.paths]
    if result.reference == "pad":
        assert per_path == [1] * len(result.paths) and result.others == [] and all(p.uncut_score is None for p in result.paths)
        return
    assert per_path == [count] * len(result.paths) and len(result.others) == count * len(result.paths)
    for pair in result.others:
        assert example is None or example not in (pair.query, pair.code)
        if result.mode == "joint":
            assert None not in (pair.query, pair.code) and pair.query != pair.code
    if result.mode == "sides":
        assert [p.code is None for p in result.others] == [True] * count + [False] * count


@pytest.fixture(scope="module")
def bound(runs_dir) -> dict:
    """The run alone, and the run against the base (score_lora - score_base), each loaded once."""
    from interp.analyses.base import resolve_runs
    from interp.analyses.ranks import load_model

    run, base = resolve_runs(runs_dir, ["lora", "base"])
    encoder, model = load_model(run)
    return {None: Attribution(encoder, model, max_len=32), "base": Attribution(encoder, model, baseline=load_model(base), max_len=32),
            "encoder": encoder, "model": model}


@pytest.mark.parametrize("reference", ["others", "pad"])
@pytest.mark.parametrize("mode", ["joint", "sides"])
@pytest.mark.parametrize("baseline", [None, "base"])
def test_completeness(bound, test_split, example, mode, reference, baseline):
    """At the default steps, on the tiny RoBERTa: every mode x reference, the run alone and against the base."""
    result = bound[baseline].compute(test_split, query=example.query, code=example.code_text, steps=DEFAULT_STEPS, mode=mode,
                                     reference=reference, example=example.idx, names=("lora", baseline))
    check_completeness(result)
    check_references(result, DEFAULT_OTHERS, example.idx)
    assert result.reference == reference and result.pooling == "cls"
    assert result.query_tokens[0].special and result.query_tokens[-1].special and result.query_tokens[0].token == "<s>"
    if baseline is None:
        assert result.score == result.run_score and result.function == "score" and result.baseline_score is None
    else:
        assert result.score == pytest.approx(result.run_score - result.baseline_score, abs=1e-5)
        assert result.function == "score_lora - score_base" and result.baseline_score != result.run_score


@pytest.mark.parametrize("reference", ["others", "pad"])
@pytest.mark.parametrize("mode", ["joint", "sides"])
def test_real_encoder_converges_at_the_default_steps(minilm, test_split, mode, reference):
    """MiniLM at the default steps; 3 references instead of 8 to keep the test short (each path converges alone)."""
    attribution = Attribution(minilm, minilm.model, max_len=64)
    result = attribution.compute(test_split if reference == "others" else None, query="Return the larger of two numbers .",
                                 code="def f ( a , b ) : return max ( a , b )",
                                 steps=DEFAULT_STEPS, mode=mode, reference=reference, count=3)
    check_completeness(result, relative=1e-3)
    check_references(result, 3, None)
    assert [t.token for t in result.query_tokens if t.special] == ["[CLS]", "[SEP]"]


def test_others_reference_is_neutral_on_real_examples(minilm, test_split):
    """The default reference scores below the gold pair in most real examples (MiniLM, 8 mined test pairs), and
    near the mean score of unrelated pairs of the split; the pad-only pair scores far above it, and above the gold.

    Measured: 5 of the 8 below the gold pair (no neutral level can do better here: in the other 3 the
    query scores the gold code below its mean over the other codes), the pad pair in none.
    """
    attribution = Attribution(minilm, minilm.model, max_len=64)
    with torch.no_grad():
        q = minilm.embed(**minilm.tokenize([e.query for e in test_split], max_len=64))
        c = minilm.embed(**minilm.tokenize([e.code_text for e in test_split], max_len=64))
    scores, n = q @ c.T, len(test_split)
    unrelated = float((scores.sum() - scores.diag().sum()) / (n * (n - 1)))
    below, level = {"others": 0, "pad": 0}, {"others": [], "pad": []}
    for e in test_split[:8]:
        query, code = read_side(minilm.tokenizer, e.query, 64), read_side(minilm.tokenizer, e.code_text, 64)
        for reference in below:  # the references `compute` starts from (completeness is tested above), scored without integrating
            paths, _ = references(minilm.tokenizer, reference, query, code, mode="joint", pool=test_split, count=DEFAULT_OTHERS,
                                  exclude=e.idx, max_len=64)
            with torch.no_grad():
                score = float(attribution.forward(torch.tensor([query.ids]), torch.tensor([code.ids]))[0])
                reference_score = float(attribution.forward(*paths["both"]).mean())
            below[reference] += reference_score < score
            level[reference].append(reference_score)
    assert below["others"] > 4 and below["pad"] < below["others"], below
    off = {reference: abs(statistics.fmean(values) - unrelated) for reference, values in level.items()}
    assert off["others"] < off["pad"] / 5, (off, unrelated)


def test_uncut_score_is_the_mrr_score_of_the_reference_pairs(minilm, test_split, example):
    """Sides mode, code side: the references read whole score what the MRR scores this query against those codes."""
    attribution = Attribution(minilm, minilm.model, max_len=64)
    result = attribution.compute(test_split, query=example.query, code=example.code_text, steps=2, mode="sides",
                                 example=example.idx, count=4)
    codes = {e.idx: e.code_text for e in test_split}
    chosen = [codes[p.code] for p in result.others if p.code is not None]
    with torch.no_grad():  # the padded-batch path of training and evaluation
        q = minilm.embed(**minilm.tokenize([example.query], max_len=64))[0]
        c = minilm.embed(**minilm.tokenize(chosen, max_len=64))
    assert result.paths[1].varies == "code" and result.paths[1].uncut_score == pytest.approx(float((c @ q).mean()), rel=1e-4)
    assert example.code_text not in chosen


def _pair(idx: int, query: str, code: str):
    from trainers.data.schema import Example

    return Example(idx=idx, url=f"u{idx}", docstring_tokens=tuple(query.split()), code_tokens=tuple(code.split()))


@pytest.mark.parametrize("mode", ["joint", "sides"])
def test_which_others_become_references(minilm, mode):
    """Longer others first (cut), then the longest shorter one (pad-filled); the example itself and a token-identical
    twin are skipped; special tokens stay in place; joint pairs never take query and code from one example."""
    tokenizer = minilm.tokenizer
    code, query = "def f ( a ) : return a + 1", "add one to a number"
    pool = [_pair(0, query, code),  # the example itself
            _pair(1, "sort the list of numbers in place now", "y"),
            _pair(2, "x", code),  # its code is the input's: a twin on the code side
            _pair(3, "parse the header", "def g ( b , c ) : return b * c - 1"),
            _pair(4, "open a file", "z = 2")]
    q, c = read_side(tokenizer, query, 64), read_side(tokenizer, code, 64)
    paths, pairs = references(tokenizer, "others", q, c, mode=mode, pool=pool, count=3, exclude=0, max_len=64)
    codes = [p.code for p in pairs if p.code is not None]
    queries = [p.query for p in pairs if p.query is not None]
    assert codes == [3, 4, 1]  # 3 is long enough (cut); then the longest shorter one, 'z = 2' before 'y'
    assert 2 not in codes and 0 not in codes + queries
    assert queries[0] == 1  # the only query at least as long as the input's
    if mode == "joint":
        assert all(p.query != p.code for p in pairs) and len(pairs) == 3
    q_ref, c_ref = paths["both"] if mode == "joint" else (paths["query"][0], paths["code"][1])
    assert q_ref.shape == (3, len(q.ids)) and c_ref.shape == (3, len(c.ids))
    for row, side in ((q_ref, q), (c_ref, c)):
        assert (row[:, 0] == side.ids[0]).all() and (row[:, -1] == side.ids[-1]).all()  # [CLS] ... [SEP] kept
    assert c_ref[0, 1:-1].tolist() == read_side(tokenizer, pool[3].code_text, 64).content[:len(c.content)]  # cut
    z = read_side(tokenizer, "z = 2", 64).content
    assert c_ref[1, 1:-1].tolist() == z + [tokenizer.pad_token_id] * (len(c.content) - len(z))  # filled with pad
    assert [p.padded for p in pairs if p.code is not None][:2] == [False, True]


def test_example_golden(runs_dir, example):
    result, path = run_analysis(Attribution, runs_dir=runs_dir, name="lora", example=example.idx, steps=STEPS)
    assert result.query == example.query and result.code == example.code_text and result.example == example.idx
    assert path.name == f"lora.example{example.idx}.json" and result.reference == "others"
    check_golden(path, GOLDEN / "attribute.json")


def test_score_is_the_inner_product_the_mrr_uses(bound, example):
    encoder, model = bound["encoder"], bound["model"]
    result = bound[None].compute(query=example.query, code=example.code_text, steps=4, reference="pad")
    with torch.no_grad():  # the padded-batch path of training and evaluation
        q = encoder.embed(**encoder.tokenize([example.query, "x"], max_len=32), model=model)[0]
        c = encoder.embed(**encoder.tokenize([example.code_text], max_len=32), model=model)[0]
    assert result.run_score == pytest.approx(float(q @ c), rel=1e-5)
    assert len(result.code_tokens) == len(encoder.tokenize([example.code_text], max_len=32)["input_ids"][0])


def test_the_runs_pooling_is_used(runs_dir, example):
    """A run trained with mean pooling is scored with it; the base beside it takes the run's pooling."""
    from interp.analyses.base import resolve_runs
    from interp.analyses.ranks import load_model

    result, _ = run_analysis(Attribution, runs_dir=runs_dir, name="lora-mean", example=example.idx, steps=4, baseline="base", reference="pad")
    assert (result.pooling, result.baseline_pooling) == ("mean", "mean")
    check_completeness(result)
    (run,) = resolve_runs(runs_dir, ["lora-mean"])
    encoder, model = load_model(run)
    with torch.no_grad():
        q = encoder.embed(**encoder.tokenize([example.query], max_len=32), model=model, pooling="mean")[0]
        c = encoder.embed(**encoder.tokenize([example.code_text], max_len=32), model=model, pooling="mean")[0]
    assert result.run_score == pytest.approx(float(q @ c), rel=1e-5)
    assert result.run_score != pytest.approx(run_analysis(Attribution, runs_dir=runs_dir, name="lora", example=example.idx, steps=2,
                                                           reference="pad")[0].run_score, rel=1e-3)


def test_query_and_code_file(runs_dir, tmp_path):
    code = tmp_path / "double.py"
    code.write_text('def double(x):\n    """Twice x."""\n    return x * 2  # doubled\n')
    assert read_code(code) == 'def double ( x ) : """Twice x.""" return x * 2'
    result, path = run_analysis(Attribution, runs_dir=runs_dir, name="lora", query="Return x, doubled.", code_file=code, steps=4, baseline="base")
    assert result.query == "Return x , doubled ." and result.example is None and result.reference == "others"
    assert path.name.startswith("lora-vs-base.pair-") and result.function == "score_lora - score_base"
    check_completeness(result)
    check_references(result, DEFAULT_OTHERS, None)


@pytest.mark.parametrize("kwargs, message", [
    ({"example": 10**9}, r"--example 1000000000 is not in .*test.jsonl \(\d+ examples, idx \d+\.\.\d+\)"),
    ({}, "either --example IDX, or --query TEXT with --code FILE"),
    ({"example": 0, "query": "x"}, "either --example IDX, or --query TEXT with --code FILE"),
    ({"query": "Return x."}, "--query and --code go together"),
    ({"name": "lroa", "example": 0}, "unknown run 'lroa'; did you mean 'lora'"),
    ({"example": 0, "baseline": "lora"}, "is the run itself"),
    ({"example": 0, "steps": 1}, "--steps should be at least 2"),
    ({"example": 0, "mode": "both"}, "--mode should be one of joint, sides"),
    ({"example": 0, "reference": "zero"}, "--reference should be one of others, pad"),
    ({"example": 0, "others": 0}, "--others should be at least 1"),
    ({"name": "base", "example": 0}, "--reference others takes its references from a split: with only 'base', give --data FILE"),
])
def test_refusals(runs_dir, kwargs, message):
    with pytest.raises(InterpError, match=message):
        run_analysis(Attribution, runs_dir=runs_dir, **({"name": "lora"} | kwargs))


def test_code_file_that_is_not_python(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(:\n    return """unterminated\n')
    with pytest.raises(InterpError, match="bad.py: not Python source that tokenizes"):
        read_code(bad)


def test_command_and_report(runs_dir, example, tmp_path):
    from reports.site import build_report

    out = CliRunner().invoke(command_app(), ["attribute", "lora", "--example", str(example.idx), "--steps", "8",
                                             "--mode", "sides", "--others", "3", "--runs-dir", str(runs_dir)])
    assert out.exit_code == 0, out.output
    assert "varying query: reference score" in out.output and "varying code: reference score" in out.output
    assert "(mean of 3:" in out.output and "convergence delta" in out.output and "reference others" in out.output
    assert f"lora.example{example.idx}.sides.json" in out.output
    pad = CliRunner().invoke(command_app(), ["attribute", "lora", "--example", str(example.idx), "--steps", "4",
                                             "--reference", "pad", "--runs-dir", str(runs_dir)])
    assert pad.exit_code == 0 and f"lora.example{example.idx}.pad.json" in pad.output and "reference pad" in pad.output
    bad = CliRunner().invoke(command_app(), ["attribute", "lora", "--example", "-5", "--runs-dir", str(runs_dir)])
    assert bad.exit_code == 2 and "--example -5 is not in" in bad.output

    build_report(runs_dir=runs_dir, out=tmp_path / "report")
    sides = (tmp_path / "report" / "attribute" / f"lora.example{example.idx}.sides.html").read_text(encoding="utf-8")
    assert "<b>others</b>: for the query side, other queries with this code" in sides and "(mean of 3," in sides
    assert "the same pairs read whole" in sides and "varying code" in sides
    page = (tmp_path / "report" / "attribute" / f"lora.example{example.idx}.pad.html").read_text(encoding="utf-8")
    assert "<b>pad</b>: every non-special token replaced by the pad token" in page and "reference score <b>" in page
