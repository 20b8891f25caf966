"""`interp attn-diff` with seed groups: the seed-noise null over tiny real runs.

Runs named as `interp study` names them (<preset>-s<seed>): LoRA r=8 on layer 2 of a tiny random
RoBERTa (4 seeds) and on layer 4 (2 seeds), trained a few steps on real mined pairs. The
permutation test itself, on hand-made distances: tests/test_attn_diff.py.
"""

from __future__ import annotations

import json
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import attn_diff as diff, flat as _all
from interp.cli import app
from trainers import methods
from records.errors import InterpError
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run


# -- seed groups on tiny real runs -------------------------------------------------------------------

SEED_GROUPS = {"l2": ("2", (1, 2, 3, 4)), "l4": ("4", (1, 2))}  # preset -> (LoRA layers, seeds)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    """Runs <preset>-s<seed> as `interp study` names them: LoRA r=8 on layer 2 (4 seeds) and on layer 4 (2 seeds)."""
    runs_dir = tmp_path_factory.mktemp("seeded-runs")
    for preset, (layers, seeds) in SEED_GROUPS.items():
        for seed in seeds:
            cfg = TrainConfig(epochs=1, batch_size=4, max_len=32, evals_per_epoch=1, max_steps=4, lr=1e-2, seed=seed)
            method = methods.method_from_dict({"method": "lora", "r": 8, "alpha": 4, "layers": layers})
            spec = RunSpec(name=f"{preset}-s{seed}", method=method, data_dir=mined_data, preset=preset, base=str(tiny_roberta_dir),
                           train_limit=16, eval_limit=8)
            train_run(spec, cfg, runs_dir=runs_dir, progress=False)
    return runs_dir


@pytest.fixture(scope="module")
def across(seeded):
    """l2 (seeds 1, 2) against l4 (seeds 1, 2), both sides, 12 examples."""
    return diff(seeded, "l2-s1,l2-s2", "l4-s1,l4-s2")


def test_two_seeds_a_side_give_a_null_that_cannot_mark_a_head_and_says_so(across):
    result, path = across
    null = result.seed_null
    assert path.name == "l2-vs-l4.seeds.n12.json" and result.null_note is None
    assert (result.a, result.b, result.runs_a, result.runs_b) == ("l2", "l4", ["l2-s1", "l2-s2"], ["l4-s1", "l4-s2"])
    assert (null.runs_a, null.runs_b, null.labellings, null.exact, null.tested) == (2, 2, 6, True, 32)
    assert null.floor == pytest.approx(1 / 3) and "no head can be marked" in null.note
    for side in ("query", "code"):
        s = null.sides[side]
        assert s.marked == [] and min(_all(s.q)) >= 1 / 3 - 1e-12
        assert s.between[0] == [0.0] * 4 and s.within[0] == [0.0] * 4 and s.p[0] == [1.0] * 4  # layer 1: no delta below it
        # layers 2-3: only l2 acts (l4 runs are the base there), so by the triangle inequality the observed split is the
        # most extreme of the three: p = 1/3, the floor
        assert all(p == pytest.approx(1 / 3) for layer in (1, 2) for p in s.p[layer])
        assert all(r >= 1 for layer in (1, 2) for r in s.ratio[layer])


def test_the_headline_is_the_nulls_between_and_both_come_from_the_pair_distances(across):
    result, _ = across
    for side in ("query", "code"):
        s, stats = result.seed_null.sides[side], result.stats[side]
        assert stats.pairs == 4 and np.allclose(stats.total_variation, s.between, rtol=1e-9, atol=1e-15)
        d = s.pair_total_variation
        assert list(d) == [f"{x} | {y}" for x, y in combinations(["l2-s1", "l2-s2", "l4-s1", "l4-s2"], 2)]
        cross = np.mean([d[k] for k in ("l2-s1 | l4-s1", "l2-s1 | l4-s2", "l2-s2 | l4-s1", "l2-s2 | l4-s2")], axis=0)
        inside = np.mean([d["l2-s1 | l2-s2"], d["l4-s1 | l4-s2"]], axis=0)
        assert np.allclose(cross, s.between) and np.allclose(inside, s.within)
        assert np.allclose(s.excess, cross - inside) and np.allclose(d["l4-s1 | l4-s2"][:3], 0)  # l4: layers 1-3 untouched
    assert result.example.runs == ["l2-s1", "l4-s1"]


def test_identical_configurations_give_no_head_beyond_seed_noise(seeded):
    result, _ = diff(seeded, "l2-s1,l2-s2", "l2-s3,l2-s4")
    for side in ("query", "code"):
        s = result.seed_null.sides[side]
        assert s.marked == [] and s.p[0] == [1.0] * 4
        changed = [p for layer in s.p[1:] for p in layer]
        assert max(changed) > 1 / 3 + 1e-9  # unlike l2 vs l4, the observed split is not the most extreme everywhere


def test_seeds_option_takes_every_run_of_each_preset(seeded):
    result, path = diff(seeded, "l2", "l4", seeds=True, side="query", limit=6)
    assert result.runs_a == ["l2-s1", "l2-s2", "l2-s3", "l2-s4"] and result.runs_b == ["l4-s1", "l4-s2"]
    null = result.seed_null
    assert (null.labellings, null.floor, null.tested) == (15, pytest.approx(1 / 15), 16)
    assert path.name == "l2-vs-l4.seeds.n6.query.json"
    assert json.loads(path.read_text())["inputs"]["seeds_a"] == [1, 2, 3, 4]


@pytest.mark.parametrize("a, b, note", [
    ("l2-s1", "l4-s1", "no seed-noise null: each side is one run (a null needs two or more seeds of one configuration on each side)"),
    ("base", "l2-s1,l2-s2", "no seed-noise null: side A (base) is one run"),
    ("l2-s1,l2-s2", "l4-s1", "no seed-noise null: side B (l4-s1) is one run"),
])
def test_without_seeds_on_both_sides_the_result_says_there_is_no_null(seeded, a, b, note):
    result, _ = diff(seeded, a, b, side="query", limit=4)
    assert result.seed_null is None and result.null_note.startswith(note)


def test_command_prints_the_null_and_the_heads_beyond_it(seeded):
    out = CliRunner().invoke(app, ["attn-diff", "l2", "l4", "--seeds", "--limit", "6", "--side", "code", "--runs-dir", str(seeded),
                                   "--no-progress"])
    assert out.exit_code == 0, out.output
    assert "A = l2: 4 runs (l2-s1, l2-s2, l2-s3, l2-s4)" in out.output and "B = l4: 2 runs" in out.output
    assert "seed-noise null: per head, between-side TV against seed-to-seed TV; p over 15 relabellings" in out.output
    assert "smallest possible p 0.0667" in out.output and "Benjamini-Hochberg across 16" in out.output
    assert "heads whose change exceeds seed noise (TV between vs within): none of 16" in out.output
    assert "no seed-noise null" not in out.output


@pytest.fixture
def not_a_seed(seeded):
    """l2-s9: a copy of l2-s2 whose manifest says seed 9 and lr 0.02: preset l2, but not only the seed differs."""
    path = seeded / "l2-s9"
    shutil.copytree(seeded / "l2-s2", path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["name"], manifest["train"]["seed"], manifest["train"]["lr"] = "l2-s9", 9, 0.02
    (path / "manifest.json").write_text(json.dumps(manifest))
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("a, b, kw, message", [
    ("l2-s1,l4-s1", "l4-s2", {}, r"side A: runs 'l2-s1' and 'l4-s1' differ in more than the seed \(preset 'l2' vs 'l4', method.layers"),
    ("l2-s1,l2-s2", "l2-s2,l2-s3", {}, "run 'l2-s2' is on both sides"),
    ("l2-s1,l2-s1", "l4-s1", {}, "run 'l2-s1' is named twice on side A"),
    ("base,l2-s1", "l4-s1,l4-s2", {}, "'base' cannot be in a seed group"),
    ("l2-s1,", "l4-s1", {}, "an empty name in the comma list"),
    ("l3", "l4", {"seeds": True}, "unknown preset 'l3'; did you mean 'l[24]'"),
    ("l2-s1,l2-s5", "l4-s1", {}, "unknown run 'l2-s5'"),
])
def test_bad_seed_groups_are_refused_naming_them(seeded, a, b, kw, message):
    with pytest.raises(InterpError, match=message):
        diff(seeded, a, b, **kw)


def test_a_run_that_differs_in_more_than_the_seed_is_refused(seeded, not_a_seed):
    with pytest.raises(InterpError, match=r"runs 'l2-s1' and 'l2-s9' differ in more than the seed \(train.lr 0.01 vs 0.02\)"):
        diff(seeded, "l2-s1,l2-s9", "l4-s1,l4-s2")


def test_the_report_marks_heads_beyond_seed_noise_or_says_there_is_no_null(seeded, across, tmp_path):
    from reports import build_report

    _, path = across
    saved = json.loads(path.read_text())
    marked = {"layer": 3, "head": 2, "between": 0.02, "within": 0.01, "p": 0.01, "q": 0.03}
    saved["result"]["seed_null"]["sides"]["query"]["marked"] = [marked]  # as a design with more seeds could give
    runs_dir = tmp_path / "runs"
    shutil.copytree(seeded, runs_dir, ignore=shutil.ignore_patterns("analyses"))
    (runs_dir / "analyses" / "attn-diff").mkdir(parents=True)
    (runs_dir / "analyses" / "attn-diff" / path.name).write_text(json.dumps(saved))
    single, _ = diff(runs_dir, "l2-s1", "l4-s1", side="code", limit=4)
    report = build_report(runs_dir=runs_dir, out=tmp_path / "report")
    assert report.problems == []
    page = (tmp_path / "report" / "attn-diff" / path.with_suffix(".html").name).read_text()
    assert "smallest possible p 0.3333" in page and "no head can be marked" in page
    assert '<tr class="significant"><td class="num">3</td><td class="num">2</td>' in page  # the query side's marked head
    assert "No head of the code side changed beyond seed noise" in page and "changed beyond seed noise" in page
    assert "l4-s1</a> (side B)" in page  # the example shows the first run of each group
    page = (tmp_path / "report" / "attn-diff" / "l2-s1-vs-l4-s1.n4.code.html").read_text()
    assert "no seed-noise null: each side is one run" in page and "Against seed noise" not in page
