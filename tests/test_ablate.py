"""`interp ablate`: switching a delta off per layer at inference, on tiny trained runs.

Runs are the tiny random RoBERTa (4 layers, hidden 32) trained two steps with `train_run` on
the mined stdlib pairs; ablations score a fixed sample of 12 test queries. The anchors are
exact: every layer dropped is the base model, every layer kept is the run itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import EXAMPLES, GOLDEN, MAX_LEN, check_golden, command_app, single_thread, train_tiny  # noqa: F401 (single_thread: autouse)
from interp.analyses.ablate import Ablation
from interp.analyses.running import run_analysis
from trainers import methods
from trainers.encoders import load_encoder
from records.errors import InterpError
from trainers.methods import AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig
from trainers.training.runs import find_run
from trainers.training.scoring import evaluate_examples, load_run_model

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

CASES = {
    "lora": LoraConfig(r=4),
    "adapter": AdapterConfig(r=4, placement="both", layers="3-4"),  # no delta in layers 1-2
    "prefix": PrefixConfig(length=2),
    "union": UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=4, placement="ffn"))),
    "full": FullConfig(),  # dropping every layer also restores the embeddings
}


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("ablate-runs")
    for name, config in CASES.items():
        train_tiny(out, mined_data, tiny_roberta_dir, name, config)
    return out


@pytest.fixture(scope="module")
def data(runs_dir):
    from interp.analyses.base import resolve_runs
    from interp.analyses.ranks import resolve_data

    return resolve_data(resolve_runs(runs_dir, ["lora"]), limit=EXAMPLES)  # the runs' own test sample


@pytest.fixture(scope="module")
def base_mrr(data, tiny_roberta_dir) -> float:
    """The bare base model's MRR on the same 12 queries, loaded and scored on its own."""
    encoder = load_encoder(tiny_roberta_dir)
    return evaluate_examples(encoder, encoder.model, data.examples, max_len=MAX_LEN, progress=False).mrr


@pytest.fixture(scope="module")
def bound(runs_dir, data) -> dict[str, Ablation]:
    """Each run's model, loaded once (scores are cached per examples and switched-off set)."""
    out = {}
    for name in CASES:
        encoder, model = load_run_model(find_run(runs_dir, name))
        out[name] = Ablation(encoder, model, name=name, config=methods.read_method(runs_dir / name), max_len=MAX_LEN)
    return out


# -- the anchors, for every method -------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_drop_every_layer_is_the_base_and_keep_every_layer_is_the_run(runs_dir, bound, data, base_mrr, name):
    manifest = json.loads((runs_dir / name / "manifest.json").read_text())
    dropped = bound[name].compute(data.examples, layers=(0, 1, 2, 3), mode="drop")
    kept = bound[name].compute(data.examples, layers=(0, 1, 2, 3), mode="keep")
    assert dropped.settings[0].mrr == base_mrr == dropped.base_mrr
    assert dropped.settings[0].active == [] and dropped.settings[0].retained == pytest.approx(0.0)
    assert kept.settings[0].mrr == kept.intact_mrr == pytest.approx(manifest["metrics"]["test_mrr"], abs=1e-9)
    assert kept.settings[0].active == [1, 2, 3, 4] and kept.settings[0].change == 0.0
    assert dropped.intact_mrr != dropped.base_mrr, "the trained delta should change the MRR"


@pytest.mark.parametrize("layers, mode, active", [
    ((2, 3), "drop", [1, 2]),
    ((2, 3), "keep", [3, 4]),
    ((3,), "keep", [4]),
    ((0, 2), "drop", [2, 4]),
])
def test_drop_and_keep_are_complements(bound, data, layers, mode, active):
    ablation = bound["union"]
    result = ablation.compute(data.examples, layers=layers, mode=mode)
    assert result.settings[0].active == active and result.delta_layers == [1, 2, 3, 4]
    other = ablation.compute(data.examples, layers=tuple(i - 1 for i in active), mode="keep")
    assert other.settings[0].mrr == result.settings[0].mrr
    assert result.settings[0].change == result.settings[0].mrr - result.intact_mrr


def test_sweep_curve_has_one_point_per_layer_and_consistent_blocks(runs_dir):
    result, path = run_analysis(Ablation, runs_dir=runs_dir, name="lora", sweep=True, limit=EXAMPLES, progress=False)
    assert [p.layer for p in result.curve] == [1, 2, 3, 4] and all(p.has_delta for p in result.curve)
    groups = [s.group for s in result.settings]
    assert groups.count("drop one") == groups.count("keep one") == groups.count("keep top") == groups.count("keep bottom") == 4
    by_label = {s.label: s for s in result.settings}
    assert by_label["keep top 4 (1-4)"].mrr == by_label["keep bottom 4 (1-4)"].mrr == result.intact_mrr
    assert by_label["keep top 3 (2-4)"].mrr == by_label["drop 1"].mrr  # the same layers switched off
    assert by_label["keep bottom 1 (1)"].mrr == result.curve[0].keep_mrr
    for p in result.curve:
        assert p.drop_loss == pytest.approx(result.intact_mrr - by_label[f"drop {p.layer}"].mrr)
        assert p.keep_gain == pytest.approx(by_label[f"keep {p.layer}"].mrr - result.base_mrr)
    # 2 anchors + 4 drop-one + 4 keep-one; of the blocks only top 2 and bottom 2 switch off new sets
    assert result.evaluations == 12
    assert path.name == "lora.sweep.n12.json"
    check_golden(path, GOLDEN / "ablate.json")


@pytest.mark.parametrize("pooling, ties", [("mean", "optimistic"), ("pooler", "codexglue")])
def test_ablation_scores_with_the_runs_pooling_and_tie_rule(tmp_path, mined_data, tiny_roberta_dir, pooling, ties):
    train_tiny(tmp_path, mined_data, tiny_roberta_dir, "r", LoraConfig(r=4), pooling=pooling, ties=ties)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    result, path = run_analysis(Ablation, runs_dir=tmp_path, name="r", layers="4", limit=EXAMPLES, progress=False)
    assert (result.pooling, result.ties) == (pooling, ties)
    assert json.loads(path.read_text())["result"]["pooling"] == pooling
    assert result.intact_mrr == pytest.approx(manifest["metrics"]["test_mrr"], abs=1e-9)  # the run's own MRR, as trained


def test_a_layer_without_delta_changes_nothing(bound, data):
    result = bound["adapter"].compute(data.examples, layers=(0, 1), mode="drop", sweep=True)
    assert result.delta_layers == [3, 4] and result.settings[0].mrr == result.intact_mrr
    assert [p.has_delta for p in result.curve] == [False, False, True, True]
    assert [p.drop_loss for p in result.curve[:2]] == [0.0, 0.0] and [p.keep_gain for p in result.curve[:2]] == [0.0, 0.0]


# -- helpers and refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"name": "lora", "layers": "9-12"}, r"layers 9-12: the encoder has 4 layers \(1-4\)"),
    ({"name": "lora", "layers": "0"}, "counts from 1.*The encoder has 4 layers"),
    ({"name": "lora", "layers": "2", "mode": "both"}, "--mode should be one of drop, keep"),
    ({"name": "lora"}, "--layers.*--sweep"),
    ({"name": "lroa", "layers": "2"}, "unknown run 'lroa'; did you mean 'lora'"),
    ({"name": "base", "layers": "2"}, "'base' carries no delta"),
    ({"name": "lora", "layers": "2", "limit": 0}, "--limit should be at least 1"),
])
def test_refusals(runs_dir, kwargs, message):
    with pytest.raises(InterpError, match=message):
        run_analysis(Ablation, runs_dir=runs_dir, progress=False, **kwargs)


def test_command_prints_summary_and_path_and_refuses_with_status_2(runs_dir):
    runner = CliRunner()
    ok = runner.invoke(command_app(), ["ablate", "prefix", "--layers", "4", "--mode", "keep", "--limit", "12",
                                       "--runs-dir", str(runs_dir), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "intact MRR" in ok.output and "keep 4" in ok.output and "prefix.keep4.n12.json" in ok.output
    bad = runner.invoke(command_app(), ["ablate", "prefix", "--layers", "9-12", "--runs-dir", str(runs_dir)])
    assert bad.exit_code == 2 and "the encoder has 4 layers" in bad.output
