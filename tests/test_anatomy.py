"""`interp anatomy`: norms, spectra, effective ranks and subspace overlaps of deltas, from weights.

Hand-checkable cases: the helpers on tiny matrices; a trained loFF-style union (LoRA r=2 +
Adapter-FFN r=2) checked against scaling * B @ A and W_down, W_up computed from its saved file;
and two copies of that run with hand-set weights, whose every number follows from the
construction (the golden case). Full fine-tuning and prefixes are bound directly, with a known
change written into the weights.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from interp.analyses.anatomy import Anatomy, DeltaModel, effective_rank, run_anatomy, subspace_overlap
from test_ablate import GOLDEN, check_golden, command_app, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from trainers.encoders import load_encoder
from trainers.errors import InterpError
from trainers.methods import AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig, apply_method

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

UNION = UnionConfig(parts=(LoraConfig(r=2), AdapterConfig(r=2, placement="ffn")))
SCALING = 4.0  # LoraConfig's default alpha, which peft applies as lora_alpha / r
HIDDEN = 32
E = torch.eye(HIDDEN)


# -- the helpers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("singular_values, expected", [
    ([3.0], 1.0),                                          # rank 1
    ([5.0, 0.0, 0.0], 1.0),                                # rank 1 padded with zeros
    ([1.0, 1.0, 1.0, 1.0], 4.0),                           # k equal values: k
    ([2.0, 1.0], math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))),  # 1.8899
    ([0.0, 0.0], 0.0),                                     # a zero matrix (untrained LoRA)
])
def test_effective_rank(singular_values, expected):
    assert effective_rank(np.array(singular_values)) == pytest.approx(expected)


def test_effective_rank_of_a_hand_made_rank_one_update():
    u, v = torch.randn(HIDDEN, 1, dtype=torch.float64), torch.randn(1, HIDDEN, dtype=torch.float64)
    s = torch.linalg.svdvals(u @ v).numpy()
    assert effective_rank(s) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("a, b, overlap", [
    (E[:, :2], E[:, :2], 1.0),                             # the same plane
    (E[:, :2], E[:, [1, 0]] * -3, 1.0),                    # the same plane, other basis
    (E[:, :2], E[:, 2:4], 0.0),                            # orthogonal planes
    (E[:, :2], E[:, [0, 2]], 0.5),                         # angles 0 and 90 degrees
    (E[:, :1], (E[:, 0] + E[:, 1])[:, None], 0.5),         # 45 degrees
])
def test_subspace_overlap(a, b, overlap):
    assert subspace_overlap(a.numpy(), b.numpy())[0] == pytest.approx(overlap)


def test_random_subspaces_overlap_about_k_over_d():
    rng = np.random.default_rng(0)
    k, d = 4, 64
    draws = [subspace_overlap(rng.normal(size=(d, k)), rng.normal(size=(d, k)))[0] for _ in range(200)]
    assert np.mean(draws) == pytest.approx(k / d, rel=0.15)


# -- a trained run, checked by hand against its saved file ------------------------------------------

@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("anatomy-runs")
    train_tiny(out, mined_data, tiny_roberta_dir, "union", UNION)
    return out


def _by_place(result, run: int = 0) -> dict:
    return {(m.layer, m.module, m.kind): m for m in result.runs[run].matrices}


def test_union_matrices_equal_the_saved_factors(runs_dir):
    result, _ = run_anatomy(runs_dir=runs_dir, names=["union"])
    found = _by_place(result)
    assert len(found) == 4 * 3  # per layer: LoRA on query and value, an adapter after the FFN
    saved = load_file(runs_dir / "union" / "adapter_model.safetensors")
    for layer in range(4):
        prefix = f"base_model.model.encoder.layer.{layer}."
        for target in ("attention.self.query", "attention.self.value"):
            a, b = saved[prefix + target + ".lora_A.weight"].double(), saved[prefix + target + ".lora_B.weight"].double()
            update = SCALING * b @ a  # (out, in), what merging adds to the weight
            s = np.linalg.svd(update.numpy(), compute_uv=False)
            m = found[(layer + 1, target, "lora")]
            assert m.shape == [HIDDEN, HIDDEN] and m.rank_bound == 2 and m.matrix == "scaling*B@A"
            assert m.frobenius == pytest.approx(float(np.linalg.norm(update.numpy())))
            assert m.spectral_norm == pytest.approx(s[0]) and m.spectrum == pytest.approx(list(s / s[0]), abs=1e-12)
            assert m.factors == pytest.approx({"A": float(a.norm()), "B": float(b.norm()), "scaling": SCALING})
        down = saved[prefix + "output.dense.bottleneck_down.weight"].double().T  # W_down (d, r)
        up = saved[prefix + "output.dense.bottleneck_up.weight"].double().T  # W_up (r, d)
        m = found[(layer + 1, "output.dense", "adapter")]
        assert m.frobenius == pytest.approx(float((down @ up).norm()))
        assert m.factors == pytest.approx({"W_down": float(down.norm()), "W_up": float(up.norm())})


def test_a_run_overlaps_itself_fully(runs_dir):
    result, path = run_anatomy(runs_dir=runs_dir, names=["union", "union"])
    assert path.name == "union-vs-union.json" and len(result.overlaps) == 12
    for o in result.overlaps:
        assert (o.left, o.right) == pytest.approx((1.0, 1.0))
        # r = 2; an adapter unit that ReLU kept silent in training has an all-zero W_up row: rank 1
        assert o.k == 2 if o.kinds == ["lora", "lora"] else o.k in (1, 2)
        assert (o.left_random, o.right_random) == (o.k / HIDDEN, o.k / HIDDEN)
        assert max(o.left_angles + o.right_angles) < 1e-3  # degrees


# -- hand-set weights: the golden case ----------------------------------------------------------------

def _hand_set(runs_dir: Path, name: str, second_input: int) -> None:
    """Copy the union run and write known factors into it.

    LoRA in layer l: A's rows e_0, e_{second_input}; B's columns 2l e_0 and l e_1, so
    dW = scaling * (2l e_0 e_0^T + l e_1 e_{second_input}^T): singular values 8l and 4l.
    Adapter: W_down's columns e_0, e_1 and W_up's rows 3 e_5, 0, so W_down W_up = 3 e_0 e_5^T.
    """
    shutil.copytree(runs_dir / "union", runs_dir / name)
    path = runs_dir / name / "adapter_model.safetensors"
    state = load_file(path)
    for key, value in state.items():
        layer = int(key.split("encoder.layer.")[1].split(".")[0]) + 1
        new = torch.zeros_like(value)
        if key.endswith("lora_A.weight"):
            new[0, 0], new[1, second_input] = 1.0, 1.0
        elif key.endswith("lora_B.weight"):
            new[0, 0], new[1, 1] = 2.0 * layer, 1.0 * layer
        elif key.endswith("bottleneck_down.weight"):  # (r, d) = W_down^T
            new[0, 0], new[1, 1] = 1.0, 1.0
        elif key.endswith("bottleneck_up.weight"):  # (d, r) = W_up^T
            new[5, 0] = 3.0
        state[key] = new
    save_file(state, path)


def test_hand_set_runs_golden(runs_dir):
    _hand_set(runs_dir, "hand-a", second_input=1)
    _hand_set(runs_dir, "hand-b", second_input=2)
    out = CliRunner().invoke(command_app(), ["anatomy", "hand-a", "hand-b", "--runs-dir", str(runs_dir)])
    assert out.exit_code == 0, out.output
    assert "overlap of top singular subspaces" in out.output and "hand-a-vs-hand-b.json" in out.output
    saved = json.loads((runs_dir / "analyses" / "anatomy" / "hand-a-vs-hand-b.json").read_text())["result"]
    for m in saved["runs"][0]["matrices"]:
        if m["kind"] == "lora":
            layer = m["layer"]
            assert m["frobenius"] == pytest.approx(SCALING * layer * math.sqrt(5))
            assert m["spectral_norm"] == pytest.approx(SCALING * 2 * layer)
            assert m["spectrum"][:2] == pytest.approx([1.0, 0.5]) and m["spectrum"][2:] == pytest.approx([0.0] * 30, abs=1e-12)
            assert m["effective_rank"] == pytest.approx(1.8899, abs=1e-4)
        else:
            assert (m["frobenius"], m["effective_rank"]) == pytest.approx((3.0, 1.0))
            assert m["factors"] == pytest.approx({"W_down": math.sqrt(2), "W_up": 3.0})
    for o in saved["overlaps"]:
        if o["kinds"] == ["lora", "lora"]:  # same output directions; inputs share e_0 but not e_1 / e_2
            assert (o["k"], o["left"], o["right"]) == (2, pytest.approx(1.0), pytest.approx(0.5))
            assert o["right_angles"] == pytest.approx([0.0, 90.0], abs=1e-6)
        else:  # a rank-1 product: only its one direction is compared
            assert (o["k"], o["left"], o["right"]) == (1, pytest.approx(1.0), pytest.approx(1.0))
    check_golden(runs_dir / "analyses" / "anatomy" / "hand-a-vs-hand-b.json", GOLDEN / "anatomy.json")


# -- full fine-tuning and prefixes, bound directly ---------------------------------------------------

def test_full_reports_exactly_the_weights_that_changed(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, FullConfig())
    u, v = torch.arange(HIDDEN, dtype=torch.float32) / HIDDEN, torch.ones(HIDDEN)
    with torch.no_grad():
        query = encoder.module(1, "query")
        query.weight += torch.outer(u, v)  # a rank-1 change in layer 2 only
        query.bias += 0.5
    (run,) = Anatomy([DeltaModel("full", "full fine-tuning", encoder, model)]).compute().runs
    (m,) = run.matrices
    assert (m.layer, m.module, m.kind, m.matrix) == (2, "attention.self.query", "full", "W_run-W_base")
    assert m.frobenius == pytest.approx(float(u.norm() * v.norm()), rel=1e-5)
    assert m.effective_rank == pytest.approx(1.0, abs=1e-4) and m.rank_bound == HIDDEN
    assert m.factors["bias"] == pytest.approx(0.5 * math.sqrt(HIDDEN), rel=1e-5)


def test_prefix_reports_keys_and_values_per_layer(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, PrefixConfig(length=3, init="normal", layers="2-3"))
    (run,) = Anatomy([DeltaModel("prefix", "prefix", encoder, model)]).compute(top=2).runs
    assert [(m.layer, m.kind) for m in run.matrices] == [(2, "prefix_key"), (2, "prefix_value"), (3, "prefix_key"), (3, "prefix_value")]
    layer = encoder.module(1, "self_attention").prefix
    assert run.matrices[0].module == "attention.self" and run.matrices[0].shape == [3, HIDDEN]
    assert run.matrices[0].frobenius == pytest.approx(float(layer.kv_prefix_key["default"].detach().double().norm()))
    assert len(run.matrices[0].spectrum) == 2 and run.matrices[0].rank_bound == 3


# -- refusals -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("names, message", [
    (["base"], "'base' carries no delta"),
    (["unoin"], "unknown run 'unoin'; did you mean 'union'"),
    (["union", "union", "union"], "one or two runs, got 3"),
    ([], "one or two runs, got 0"),
])
def test_refusals(runs_dir, names, message):
    with pytest.raises(InterpError, match=message):
        run_anatomy(runs_dir=runs_dir, names=names)
