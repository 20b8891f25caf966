"""`interp anatomy`'s seed null: subspace overlaps against seed-to-seed overlaps (interp/analyses/anatomy_null.py).

The permutation null on constructed overlap matrices, whose p-values and floors can be counted
by hand; then tiny LoRA runs with two seeds each (and one run of the same preset at another
learning rate, which is not a seed), through the command and the report. The deltas' own
numbers: tests/test_anatomy.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from interp.analyses.anatomy import Anatomy, subspace_overlap
from interp.analyses.anatomy_null import p_floor, side_null
from interp.analyses.running import run_analysis
from helpers import command_app, single_thread  # noqa: F401 (single_thread: autouse)
from trainers.methods import LoraConfig
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

SCALE = 4.0  # LoraConfig's default alpha, the factor applied to B @ A


# -- the permutation null, on constructed overlaps ---------------------------------------------------

def _similarity(sizes, within: float, between: float) -> np.ndarray:
    group = [0] * sizes[0] + [1] * sizes[1]
    sim = np.array([[within if gi == gj else between for gj in group] for gi in group])
    np.fill_diagonal(sim, 1.0)
    return sim


@pytest.mark.parametrize("sizes, within, between, p", [
    ((2, 2), 0.9, 0.3, 1 / 3),    # configurations far apart; 2 seeds a side cannot give less than 1/3
    ((3, 3), 0.9, 0.3, 0.1),      # 2 of the 20 splits (the observed and its mirror)
    ((2, 1), 0.9, 0.3, 1 / 3),    # seeds on one side only
    ((3, 2), 0.9, 0.3, 0.1),      # 1 of 10
    ((2, 2), 0.5, 0.5, 1.0),      # no difference at all
    ((2, 2), 0.3, 0.9, 1.0),      # configurations closer than seeds: nothing beyond seed noise
])
def test_side_null(sizes, within, between, p):
    null = side_null(_similarity(sizes, within, between), sizes)
    m, n = sizes
    assert (null.between, null.within, null.p) == pytest.approx((between, within, p))
    assert len(null.between_pairs) == m * n and len(null.within_pairs) == math.comb(m, 2) + math.comb(n, 2)
    assert p >= p_floor(sizes) - 1e-12


def test_side_null_counts_each_pair_once():
    sim = _similarity((2, 2), 0.9, 0.3)
    sim[0, 2] = sim[2, 0] = 0.7  # one cross pair closer
    null = side_null(sim, (2, 2))
    assert null.between_pairs == pytest.approx([0.7, 0.3, 0.3, 0.3]) and null.between == pytest.approx(0.4)


@pytest.mark.parametrize("sizes, floor", [((2, 2), 1 / 3), ((3, 3), 0.1), ((2, 1), 1 / 3), ((4, 2), 1 / 15)])
def test_p_floor(sizes, floor):
    assert p_floor(sizes) == pytest.approx(floor)


def test_a_null_needs_two_seeds_of_one_configuration():
    with pytest.raises(ValueError, match="two seeds"):
        side_null(np.eye(2), (1, 1))


# -- the seed null on tiny runs with two seeds each ---------------------------------------------------

SEED_RUNS = {"lo2": LoraConfig(r=2), "lo4": LoraConfig(r=4)}


def train_seed(runs_dir: Path, data_dir: Path, base: Path, preset: str, seed: int, lr: float = 5e-2) -> str:
    name = f"{preset}-s{seed}" + ("" if lr == 5e-2 else "-lr")
    spec = RunSpec(name=name, method=SEED_RUNS[preset], data_dir=data_dir, base=str(base), preset=preset, train_limit=16, eval_limit=12)
    train_run(spec, TrainConfig(epochs=1, batch_size=4, max_len=32, evals_per_epoch=1, max_steps=2, lr=lr, seed=seed),
              runs_dir=runs_dir, progress=False)
    return name


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    out = tmp_path_factory.mktemp("anatomy-seeds")
    for preset in SEED_RUNS:
        for seed in (1, 2):
            train_seed(out, mined_data, tiny_roberta_dir, preset, seed)
    train_seed(out, mined_data, tiny_roberta_dir, "lo2", 3, lr=1e-2)  # same preset, another lr: not a seed
    return out


def _update(run: Path, place: str) -> np.ndarray:
    saved = load_file(run / "adapter_model.safetensors")
    return (SCALE * saved[f"base_model.model.{place}.lora_B.weight"].double() @ saved[f"base_model.model.{place}.lora_A.weight"].double()).numpy()


def test_the_seed_null_sets_the_overlap_against_seed_to_seed_overlap(seed_runs):
    out = CliRunner().invoke(command_app(), ["anatomy", "lo2-s1", "lo4-s1", "--runs-dir", str(seed_runs)])
    assert out.exit_code == 0, out.output
    assert "seed null from lo2-s1 with lo2-s2; lo4-s1 with lo4-s2" in out.output and "smallest possible p: 0.333" in out.output
    assert "lo2-s3-lr shares preset 'lo2' with lo2-s1 but differs in train.lr, not only in train.seed; not used as a seed" in out.output
    result = json.loads((seed_runs / "analyses" / "anatomy" / "lo2-s1-vs-lo4-s1.json").read_text())["result"]
    null = result["seed_null"]
    assert null["groups"] == [["lo2-s1", "lo2-s2"], ["lo4-s1", "lo4-s2"]] and null["seeds"] == [[1, 2], [1, 2]]
    assert null["between_pairs"] == [["lo2-s1", "lo4-s1"], ["lo2-s1", "lo4-s2"], ["lo2-s2", "lo4-s1"], ["lo2-s2", "lo4-s2"]]
    assert null["within_pairs"] == [["lo2-s1", "lo2-s2"], ["lo4-s1", "lo4-s2"]]
    assert (null["splits"], null["p_floor"]) == (6, pytest.approx(1 / 3))
    assert len(result["overlaps"]) == 8
    for o in result["overlaps"]:
        n = o["seed_null"]
        assert n["k"] == o["k"] == 2  # r = 2 caps both
        assert n["output"]["between_pairs"][0] == pytest.approx(o["output"]) and n["input"]["between_pairs"][0] == pytest.approx(o["input"])
        assert n["output"]["p"] in (pytest.approx(1 / 3), pytest.approx(2 / 3), 1.0)
    # one seed-to-seed value recomputed from the saved factors
    place = "encoder.layer.2.attention.self.value"
    svd = [np.linalg.svd(_update(seed_runs / name, place)) for name in ("lo4-s1", "lo4-s2")]
    expected = subspace_overlap(svd[0][2][:2].T, svd[1][2][:2].T)[0]  # input side: right singular vectors
    (o,) = [o for o in result["overlaps"] if (o["layer"], o["module"]) == (3, "attention.self.value")]
    assert o["seed_null"]["input"]["within_pairs"][1] == pytest.approx(expected)


def test_the_report_shows_the_seed_null_and_its_floor(seed_runs, tmp_path):
    from reports.site import build_report

    run_analysis(Anatomy, runs_dir=seed_runs, names=["lo2-s1", "lo4-s1"])
    build_report(runs_dir=seed_runs, out=tmp_path / "site")
    page = (tmp_path / "site" / "anatomy" / "lo2-s1-vs-lo4-s1.html").read_text()
    assert "Seed-noise null" in page and "the smallest possible p is 0.333: no module can be marked" in page
    assert page.count("<td>attention.self.") == 8 and 'class="significant"' not in page  # p >= 1/3 everywhere


@pytest.mark.parametrize("names, options, says", [
    (["lo2-s1", "lo2-s2"], [], "lo2-s1 and lo2-s2 are seeds of one configuration"),
    (["lo2-s1", "lo4-s1"], ["--no-seed-null"], "no seed null: not asked for (--no-seed-null)"),
    (["lo2-s3-lr", "lo4-s1"], [], "seed null from lo2-s3-lr with no other seed; lo4-s1 with lo4-s2"),
])
def test_when_there_is_a_null_and_when_not(seed_runs, names, options, says):
    out = CliRunner().invoke(command_app(), ["anatomy", *names, *options, "--runs-dir", str(seed_runs)])
    assert out.exit_code == 0, out.output
    assert says in " ".join(out.output.split())
    result = json.loads((seed_runs / "analyses" / "anatomy" / f"{names[0]}-vs-{names[1]}.json").read_text())["result"]
    assert (result["seed_null"] is not None) == says.startswith("seed null from")
