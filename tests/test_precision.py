"""bf16 (mixed precision) on the CPU: the path a GPU takes, run without one.

Every method trains a few steps under `precision="bf16"` on the tiny random RoBERTa (4 layers,
hidden 32) and the mined stdlib pairs; then its saved delta is reloaded and scored again,
its [CLS] attention captured, its delta ablated and one pair attributed, all at bf16. What an
analysis accumulates must come out float32 (or float64) and finite whatever the precision.

How far bf16 is from fp32 is measured on the LoRA run scored both ways
(`test_bf16_against_fp32`): the tolerances there are derived, not fitted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLES, MAX_LEN, check_refused, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from interp.analyses.ablate import Ablation
from interp.analyses.attention import capture_attention
from interp.analyses.attn_diff import AttnDiff
from interp.analyses.attribute import Attribution
from interp.analyses.base import resolve_runs
from interp.analyses.cka import CKA
from interp.analyses.running import run_analysis
from interp.analyses.ranks import resolve_data
from trainers import methods
from trainers.devices import autocast
from trainers.methods import AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig
from trainers.methods.ia3.config import Ia3Config
from trainers.training.loop import TrainConfig
from trainers.training.runs import find_run
from trainers.training.scoring import evaluate_examples, load_run_model

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

CASES = {
    "lora": LoraConfig(r=4),
    "prefix": PrefixConfig(length=2),
    "adapter": AdapterConfig(r=4, placement="both"),
    "union": UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=4, placement="ffn"))),
    "ia3": Ia3Config(),
    "full": FullConfig(),
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("bf16-runs")
    for name, config in CASES.items():
        train_tiny(out, mined_data, tiny_roberta_dir, name, config, precision="bf16")
    return out


@pytest.fixture(scope="module")
def batch(runs_dir):
    """Four test queries of the runs' sample, tokenized: (4, len) ids and mask."""
    data = resolve_data(resolve_runs(runs_dir, ["lora"]), limit=EXAMPLES)
    encoder, _ = load_run_model(find_run(runs_dir, "lora"))
    tok = encoder.tokenizer([e.query for e in data.examples[:4]], padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


def mrr_of(runs_dir: Path, name: str, precision: str):
    """The Evaluation of run `name` on its own test sample (the runs' --eval-limit), its forward passes at `precision`."""
    run = find_run(runs_dir, name)
    encoder, model = load_run_model(run)
    examples = resolve_data(resolve_runs(runs_dir, [name]), limit=EXAMPLES).examples
    return evaluate_examples(encoder, model, examples, max_len=MAX_LEN, ties=run.train_config.ties, device="cpu", progress=False,
                             precision=precision)


def cls_rows(runs_dir: Path, name: str, batch, precision: str) -> torch.Tensor:
    """(layers, batch, heads, k_len) [CLS] attention rows of run `name`, its forward pass at `precision`."""
    encoder, model = load_run_model(find_run(runs_dir, name))
    model.eval()
    with torch.no_grad(), capture_attention(encoder) as captured, autocast(precision, CPU):
        encoder.embed(*batch, model=model.to(CPU), pooling="cls")
    return captured.cls_rows()


# -- every method at bf16 ------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_bf16_trains_finite_and_reloads_to_the_same_outputs(runs_dir, name):
    run = find_run(runs_dir, name)
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert (manifest["train"]["precision"], manifest["mixed_precision"]) == ("bf16", "bf16")
    curves = json.loads((run.path / "curves.json").read_text())
    assert len(curves["loss"]) == 2 and all(math.isfinite(v) for v in curves["loss"] + curves["grad_norm"])
    _, model = load_run_model(run)
    delta = methods.delta_state(model)
    assert delta and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in delta.values())  # bf16 autocast keeps fp32 weights
    # the reloaded delta, scored at the run's precision on its test sample, gives the test MRR the run recorded
    # while it still held the delta in memory
    again = mrr_of(runs_dir, name, "bf16")
    assert again.mrr == manifest["metrics"]["test_mrr"]
    assert again.query_emb.dtype == torch.float32 and torch.isfinite(again.query_emb).all()


@pytest.mark.parametrize("name", CASES)
def test_bf16_attention_capture_is_an_fp32_distribution(runs_dir, batch, name):
    rows = cls_rows(runs_dir, name, batch, "bf16")  # (layers, batch, heads, k_len)
    assert rows.dtype == torch.float32 and torch.isfinite(rows).all() and rows.shape[:3] == (4, 4, 4)
    mass = rows.sum(-1)  # a prefix's share is outside the real tokens
    assert ((mass <= 1 + 1e-5) & (mass > 0)).all()
    if name != "prefix":
        torch.testing.assert_close(mass, torch.ones_like(mass), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_bf16_ablation_and_attribution_are_finite_and_recorded(runs_dir, name):
    result, path = run_analysis(Ablation, runs_dir=runs_dir, name=name, layers="1", limit=EXAMPLES, device="cpu", progress=False, precision="bf16")
    assert all(math.isfinite(v) and 0 < v <= 1 for v in (result.intact_mrr, result.base_mrr, result.settings[0].mrr))
    assert json.loads(path.read_text())["inputs"]["precision"] == "bf16"
    example = resolve_data(resolve_runs(runs_dir, [name]), limit=EXAMPLES).examples[0]
    result, path = run_analysis(Attribution, runs_dir=runs_dir, name=name, example=example.idx, steps=4, reference="pad", precision="bf16")
    values = [t.attribution for t in result.query_tokens + result.code_tokens]
    assert values and all(isinstance(v, float) and math.isfinite(v) for v in values)
    (p,) = result.paths
    assert all(math.isfinite(v) for v in (p.score, p.reference_score, p.attribution_sum, p.convergence_delta))
    assert json.loads(path.read_text())["inputs"]["precision"] == "bf16"


@pytest.mark.parametrize("name", CASES)
def test_bf16_full_attention_matrices_are_fp32(runs_dir, batch, name):
    """The full matrices (the bertviz example's) come out of a bf16 forward pass computed in float32: their query-0
    row is the [CLS] row to float32 rounding. (With autocast left on in the capture, the scores' matmul and the masked
    softmax ran in bfloat16 and the matrices came out bfloat16.)"""
    encoder, model = load_run_model(find_run(runs_dir, name))
    model.eval()
    with torch.no_grad(), capture_attention(encoder, full=True) as captured, autocast("bf16", CPU):
        encoder.embed(*batch, model=model.to(CPU), pooling="cls")
    full, rows = captured.full_weights(), captured.cls_rows()  # (layers, batch, heads, len, len), (layers, batch, heads, len)
    assert full.dtype == rows.dtype == torch.float32 and torch.isfinite(full).all()
    torch.testing.assert_close(full[..., 0, :], rows, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_bf16_attn_diff_and_cka_record_their_precision(runs_dir, name):
    """attn-diff and CKA of the base against each run at bf16: finite float statistics, the example's full matrices
    included, and the precision in the result's inputs."""
    result, path = run_analysis(AttnDiff, runs_dir=runs_dir, a="base", b=name, limit=EXAMPLES, side="query", precision="bf16", progress=False)
    stats = result.stats["query"]
    assert math.isfinite(stats.mean_total_variation) and 0 <= stats.mean_total_variation <= 1
    example = result.example.sides["query"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in example.full_b[-1][0][0] + example.cls_b[0])
    assert json.loads(path.read_text())["inputs"]["precision"] == "bf16"
    result, path = run_analysis(CKA, runs_dir=runs_dir, a="base", b=name, limit=EXAMPLES, side="query", precision="bf16",
                                progress=False)
    assert all(v is None or -1e-9 <= v <= 1 + 1e-9 for v in result.stats["query"].diagonal)
    assert json.loads(path.read_text())["inputs"]["precision"] == "bf16"


# -- how far bf16 is from fp32 -----------------------------------------------------------------------

def test_bf16_against_fp32(runs_dir, batch):
    """The trained LoRA run, scored at fp32 and at bf16 (an analysis's --precision).

    Attention rows: bf16 keeps 8 significant bits, so each product and sum of the forward pass is
    rounded by up to 2^-9 (0.2%) of its size. A softmax weight w moves by about w * |error of its
    logit|; the logits of this tiny model are O(1) and a 4-layer stack compounds a few such errors,
    so a weight moves by a few times 2^-9 of the largest weight: 0.02 of it (ten roundings) bounds that.
    (Measured: 5.4e-05, against weights of about 1/32; 5.0e-05 on the same LoRA trained at fp32.)
    MRR: the embeddings move by ~0.2-1% as well; a query's rank changes only where two codes'
    scores are closer than that, so on 12 queries at most a few ranks move. One query moving
    from rank r to r+1 changes the MRR by at most (1/1 - 1/2) / 12 = 0.042; 0.1 allows two such moves.
    (Measured: 0.3011 both ways; on the same LoRA trained at fp32, 0.3011 against 0.2872, -0.0139:
    1/6 of one query's reciprocal rank over the 12, e.g. a query moving from rank 2 to 3.)
    """
    fp32, bf16 = (cls_rows(runs_dir, "lora", batch, p) for p in ("fp32", "bf16"))
    row_gap = float((fp32 - bf16).abs().max())
    mrr = {p: mrr_of(runs_dir, "lora", p).mrr for p in ("fp32", "bf16")}
    print(f"bf16 vs fp32: max attention-row difference {row_gap:.2e}; MRR fp32 {mrr['fp32']:.4f} bf16 {mrr['bf16']:.4f} "
          f"(difference {mrr['bf16'] - mrr['fp32']:+.4f})")
    assert 0 < row_gap < 0.02 * float(fp32.max())  # bf16 did change the forward pass, and by no more than its rounding explains
    assert abs(mrr["bf16"] - mrr["fp32"]) <= 0.1


def test_bf16_attn_diff_against_fp32(runs_dir):
    """attn-diff of the base against the LoRA run at fp32 and at bf16, on the runs' 12 test pairs.

    By the triangle inequality a head's TV(A, B) moves by at most TV(A_fp32, A_bf16) + TV(B_fp32, B_bf16), half the
    L1 change of each run's row; with rows moved by ~5e-5 a weight (test_bf16_against_fp32) over at most 32 tokens
    that is ~2e-3 at most. 0.01 allows five times that. (Measured: 9.3e-05, against a mean TV of 0.0148.)
    """
    tv = {}
    for precision in ("fp32", "bf16"):
        result, _ = run_analysis(AttnDiff, runs_dir=runs_dir, a="base", b="lora", limit=EXAMPLES, precision=precision, progress=False)
        tv[precision] = torch.tensor([result.stats[s].total_variation for s in ("query", "code")], dtype=torch.float64)
    gap = float((tv["bf16"] - tv["fp32"]).abs().max())
    print(f"attn-diff base vs lora, bf16 vs fp32: largest change of a head's mean TV {gap:.2e} "
          f"(mean TV fp32 {float(tv['fp32'].mean()):.4f})")
    assert 0 < gap < 0.01


def test_older_manifests_load_as_fp32():
    old = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "pooling": "cls", "ties": "optimistic"}  # written before precision was recorded
    assert TrainConfig.from_dict(old).precision == "fp32"
    from records.manifest import upgrade_train

    assert upgrade_train(old)["precision"] == "fp32"  # so an older run and an fp32 run are the same configuration


# -- the CLI: a bad --precision is one error line, exit status 2, nothing written -------------------

@pytest.mark.parametrize("args", [
    ["train", "--name", "x", "--preset", "lora32"],
    ["eval", "lora"],
    ["study", "rq1"],
    ["ablate", "lora", "--layers", "1"],
    ["attribute", "lora", "--example", "1"],
    ["attn-diff", "base", "lora"],
    ["compare", "lora", "base"],
    ["qualitative", "--runs", "lora"],
])
def test_bad_precision_is_refused(tmp_path, args):
    check_refused([*args, "--precision", "fp16", "--runs-dir", tmp_path], ["--precision fp16", "fp32", "bf16"], watched=tmp_path)
