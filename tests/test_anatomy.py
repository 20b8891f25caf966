"""`interp anatomy`: norms, spectra, effective ranks and subspace overlaps of deltas, from weights.

Hand-checkable cases: the helpers on tiny matrices; rank-1 deltas with known input and output
vectors for each linear method, whose reported input-side vector must be the one the module's
own forward reads along; a trained loFF-style union (LoRA r=2 + Adapter-FFN r=2) checked
against scale * B @ A and W_down, W_up computed from its saved file; two copies of that run with
hand-set weights, whose every number follows from the construction (the golden case); and a
trained prefix, whose update is its change from the initial values saved with it. The seed
null: tests/test_anatomy_null.py.
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

from interp.analyses.anatomy import Anatomy, DeltaModel, effective_rank, subspace_overlap
from interp.analyses.running import run_analysis
from helpers import GOLDEN, check_golden, command_app, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from trainers.encoders import load_encoder
from records.errors import InterpError
from trainers.methods import AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig, apply_method

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

UNION = UnionConfig(parts=(LoraConfig(r=2), AdapterConfig(r=2, placement="ffn")))
SCALE = 4.0  # LoraConfig's default alpha, the factor applied to B @ A
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


# -- which side is the input: rank-1 deltas with known vectors --------------------------------------

def _unit(x: torch.Tensor) -> np.ndarray:
    return (x / x.norm()).double().numpy()


def _lora(encoder, a, b):
    """A rank-1 LoRA in layer 2's query, reading along a and writing along b; the module's own delta."""
    m = encoder.module(1, "query")
    lora_a, lora_b = m.lora_A["default"], m.lora_B["default"]
    lora_a.weight.zero_(), lora_b.weight.zero_()
    lora_a.weight[0], lora_b.weight[:, 0] = a, b  # (r, d_in) row, (d_out, r) column
    return (2, "attention.self.query"), lambda x: lora_b(lora_a(x)) * m.scaling["default"]


def _adapter(encoder, a, b):
    """A rank-1 bottleneck after layer 2's FFN: W_down's column a, W_up's row b, no biases."""
    m = encoder.module(1, "ffn_output")
    down, up = m.bottleneck_down["default"], m.bottleneck_up["default"]
    for t in (down.weight, down.bias, up.weight, up.bias):
        t.zero_()
    down.weight[0], up.weight[:, 0] = a, b  # bottleneck_down.weight = W_down^T (r, d), bottleneck_up.weight = W_up^T (d, r)
    return (2, "output.dense"), lambda h: up(torch.relu(down(h)))


def _embedding(encoder, a, b):
    """Full fine-tuning that moved token 5's embedding by b: its input side is token 5's one-hot, a is ignored."""
    table = encoder.model.embeddings.word_embeddings.weight  # (vocab, d)
    before = table.detach().clone()
    table[5] += b
    return (None, "embeddings.word_embeddings"), lambda one_hot: one_hot @ (table - before)


@pytest.mark.parametrize("config, build", [(LoraConfig(r=2), _lora), (AdapterConfig(r=2, placement="ffn"), _adapter),
                                           (FullConfig(), _embedding)], ids=["lora", "adapter", "full-embedding"])
def test_the_input_side_is_what_the_module_reads(config, build, tiny_roberta_dir):
    """The reported input-side vector is the direction the delta responds to; the output side is what it adds."""
    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, config)
    a, b = torch.linspace(0.2, 1.0, HIDDEN) * torch.tensor([1.0, -1.0] * (HIDDEN // 2)), torch.cos(torch.arange(HIDDEN) * 0.7)
    a[-1] = 3.0  # its largest entry positive: the sign the report gives
    with torch.no_grad():
        place, delta = build(encoder, a, b)
    (run,) = Anatomy([DeltaModel("hand", "hand", encoder, model)]).compute(vectors=1).runs
    (m,) = [m for m in run.matrices if (m.layer, m.module) == place]
    assert m.sides == {"left": "output", "right": "input"} and m.effective_rank == pytest.approx(1.0, abs=1e-6)
    reads, writes = np.array(m.vectors["input"][0]), np.array(m.vectors["output"][0])
    if config.method == "full":
        a = torch.zeros(encoder.config.vocab_size)
        a[5] = 1.0
        assert m.matrix == "(W_run-W_base)^T" and m.shape == [HIDDEN, encoder.config.vocab_size]
    np.testing.assert_allclose(reads, _unit(a), atol=1e-6)
    np.testing.assert_allclose(np.abs(writes), np.abs(_unit(b)), atol=1e-6)
    with torch.no_grad():  # the module's own computation: along `reads` it writes along `writes`; across it, nothing
        out = delta(torch.tensor(reads, dtype=torch.float32))
        across = torch.randn(len(reads))
        across -= (across @ torch.tensor(reads, dtype=torch.float32)) * torch.tensor(reads, dtype=torch.float32)
        silent = delta(across)
    assert abs(float(_unit(out) @ writes)) == pytest.approx(1.0, abs=1e-5)
    assert float(silent.norm()) < 1e-4 * float(out.norm())


# -- a trained run, checked by hand against its saved file ------------------------------------------

@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("anatomy-runs")
    train_tiny(out, mined_data, tiny_roberta_dir, "union", UNION)
    train_tiny(out, mined_data, tiny_roberta_dir, "prefix", PrefixConfig(length=2))
    return out


def _by_place(result, run: int = 0) -> dict:
    return {(m.layer, m.module, m.kind): m for m in result.runs[run].matrices}


def test_union_matrices_equal_the_saved_factors(runs_dir):
    result, _ = run_analysis(Anatomy, runs_dir=runs_dir, names=["union"])
    found = _by_place(result)
    assert len(found) == 4 * 3  # per layer: LoRA on query and value, an adapter after the FFN
    saved = load_file(runs_dir / "union" / "adapter_model.safetensors")
    for layer in range(4):
        prefix = f"base_model.model.encoder.layer.{layer}."
        for target in ("attention.self.query", "attention.self.value"):
            a, b = saved[prefix + target + ".union_lora_A.weight"].double(), saved[prefix + target + ".union_lora_B.weight"].double()
            update = SCALE * b @ a  # (out, in), what merging adds to the weight
            s = np.linalg.svd(update.numpy(), compute_uv=False)
            m = found[(layer + 1, target, "lora")]
            assert m.shape == [HIDDEN, HIDDEN] and m.rank_bound == 2 and m.matrix == "scale*B@A"
            assert m.frobenius == pytest.approx(float(np.linalg.norm(update.numpy())))
            assert m.spectral_norm == pytest.approx(s[0]) and m.spectrum == pytest.approx(list(s / s[0]), abs=1e-12)
            assert m.factors == pytest.approx({"A": float(a.norm()), "B": float(b.norm()), "scale": SCALE})
        down = saved[prefix + "output.dense.union_bottleneck_down.weight"].double()  # W_down^T (r, d)
        up = saved[prefix + "output.dense.union_bottleneck_up.weight"].double()  # W_up^T (d, r)
        m = found[(layer + 1, "output.dense", "adapter")]
        assert m.matrix == "(W_down@W_up)^T" and m.sides == {"left": "output", "right": "input"}
        assert m.frobenius == pytest.approx(float((down.T @ up.T).norm()))
        assert m.factors == pytest.approx({"W_down": float(down.norm()), "W_up": float(up.norm())})


def test_a_run_overlaps_itself_fully(runs_dir):
    result, path = run_analysis(Anatomy, runs_dir=runs_dir, names=["union", "union"])
    assert path.name == "union-vs-union.json" and len(result.overlaps) == 12
    assert result.seed_null is None and "no seed null: union is compared with itself" in result.notes
    for o in result.overlaps:
        assert (o.output, o.input) == pytest.approx((1.0, 1.0))
        # r = 2; an adapter unit that ReLU kept silent in training has an all-zero W_up row: rank 1
        assert o.k == 2 if o.kinds == ["lora", "lora"] else o.k in (1, 2)
        assert (o.output_random, o.input_random) == (o.k / HIDDEN, o.k / HIDDEN)
        assert max(o.output_angles + o.input_angles) < 1e-3  # degrees


# -- hand-set weights: the golden case ----------------------------------------------------------------

def _hand_set(runs_dir: Path, name: str, second_input: int, adapter_input: int) -> None:
    """Copy the union run and write known factors into it.

    LoRA in layer l: A's rows e_0, e_{second_input}; B's columns 2l e_0 and l e_1, so
    dW = scale * (2l e_0 e_0^T + l e_1 e_{second_input}^T): singular values 8l and 4l.
    Adapter: W_down's columns e_{adapter_input}, e_1 and W_up's rows 3 e_5, 0, so
    h W_down W_up = 3 h_{adapter_input} e_5^T: it reads e_{adapter_input} and writes e_5.
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
            new[0, adapter_input], new[1, 1] = 1.0, 1.0
        elif key.endswith("bottleneck_up.weight"):  # (d, r) = W_up^T
            new[5, 0] = 3.0
        state[key] = new
    save_file(state, path)


def test_hand_set_runs_golden(runs_dir):
    _hand_set(runs_dir, "hand-a", second_input=1, adapter_input=0)
    _hand_set(runs_dir, "hand-b", second_input=2, adapter_input=2)
    out = CliRunner().invoke(command_app(), ["anatomy", "hand-a", "hand-b", "--runs-dir", str(runs_dir)])
    assert out.exit_code == 0, out.output
    assert "overlap of the top-k singular subspaces" in out.output and "hand-a-vs-hand-b.json" in out.output
    assert "no seed null: no other seed of hand-a's or hand-b's configuration" in out.output
    saved = json.loads((runs_dir / "analyses" / "anatomy" / "hand-a-vs-hand-b.json").read_text())["result"]
    for m in saved["runs"][0]["matrices"]:
        if m["kind"] == "lora":
            layer = m["layer"]
            assert m["frobenius"] == pytest.approx(SCALE * layer * math.sqrt(5))
            assert m["spectral_norm"] == pytest.approx(SCALE * 2 * layer)
            assert m["spectrum"][:2] == pytest.approx([1.0, 0.5]) and m["spectrum"][2:] == pytest.approx([0.0] * 30, abs=1e-12)
            assert m["effective_rank"] == pytest.approx(1.8899, abs=1e-4)
        else:
            assert (m["frobenius"], m["effective_rank"]) == pytest.approx((3.0, 1.0))
            assert m["factors"] == pytest.approx({"W_down": math.sqrt(2), "W_up": 3.0})
    for o in saved["overlaps"]:
        if o["kinds"] == ["lora", "lora"]:  # same output directions; inputs share e_0 but not e_1 / e_2
            assert (o["k"], o["output"], o["input"]) == (2, pytest.approx(1.0), pytest.approx(0.5))
            assert o["input_angles"] == pytest.approx([0.0, 90.0], abs=1e-6)
        else:  # a rank-1 product writing e_5 in both, reading e_0 in one and e_2 in the other
            assert (o["k"], o["output"], o["input"]) == (1, pytest.approx(1.0), pytest.approx(0.0, abs=1e-12))
        assert o["seed_null"] is None
    check_golden(runs_dir / "analyses" / "anatomy" / "hand-a-vs-hand-b.json", GOLDEN / "anatomy.json")
    # the top singular vectors: the LoRA reads e_0 and writes e_0 (its larger value); hand-b's adapter reads e_2, writes e_5
    for m in run_analysis(Anatomy, runs_dir=runs_dir, names=["hand-b"], top=2, vectors=1)[0].runs[0].matrices:
        reads, writes = (E[0], E[0]) if m.kind == "lora" else (E[2], E[5])
        assert m.vectors == {"input": [pytest.approx(reads.tolist())], "output": [pytest.approx(writes.tolist())]}


# -- prefixes: the change from the saved initial values ----------------------------------------------

def test_a_trained_prefix_is_read_as_its_change_from_initialisation(runs_dir):
    saved = load_file(runs_dir / "prefix" / "adapter_model.safetensors")
    result, _ = run_analysis(Anatomy, runs_dir=runs_dir, names=["prefix"])
    found = _by_place(result)
    assert len(found) == 4 * 2 and not result.notes
    for layer in range(4):
        key = f"base_model.model.encoder.layer.{layer}.attention.self.prefix.kv_prefix_"
        for kind, side, label in (("prefix_key", "key", "P_k-P_k0"), ("prefix_value", "value", "P_v-P_v0")):
            trained, initial = saved[key + side].double(), saved[key + "init_" + side].double()
            assert not torch.equal(trained, initial)  # two steps at a high learning rate moved it
            m = found[(layer + 1, "attention.self", kind)]
            assert m.matrix == label and m.shape == [2, HIDDEN] and m.sides == {"left": "position", "right": side}
            assert m.frobenius == pytest.approx(float((trained - initial).norm()))
            assert m.factors == pytest.approx({"P": float(trained.norm()), "P_init": float(initial.norm())})


def test_a_prefix_saved_without_initial_values_is_read_raw_and_says_so(runs_dir):
    shutil.copytree(runs_dir / "prefix", runs_dir / "prefix-old")
    path = runs_dir / "prefix-old" / "adapter_model.safetensors"
    saved = load_file(path)
    save_file({k: v for k, v in saved.items() if "kv_prefix_init_" not in k}, path, metadata={"format": "pt"})
    result, _ = run_analysis(Anatomy, runs_dir=runs_dir, names=["prefix-old"])
    (note,) = result.notes
    assert "holds no initial prefix values" in note and "analysed raw" in note
    m = _by_place(result)[(1, "attention.self", "prefix_key")]
    assert m.matrix == "P_k (raw: no initial values stored)" and m.factors == pytest.approx({"P": m.frobenius})
    assert m.frobenius == pytest.approx(float(saved["base_model.model.encoder.layer.0.attention.self.prefix.kv_prefix_key"].double().norm()))


# -- full fine-tuning, bound directly ----------------------------------------------------------------

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


# -- refusals -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("names, message", [
    (["base"], "'base' carries no delta"),
    (["unoin"], "unknown run 'unoin'; did you mean 'union'"),
    (["union", "union", "union"], "one or two runs, got 3"),
    ([], "one or two runs, got 0"),
])
def test_refusals(runs_dir, names, message):
    with pytest.raises(InterpError, match=message):
        run_analysis(Anatomy, runs_dir=runs_dir, names=names)
