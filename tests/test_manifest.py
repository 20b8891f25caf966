"""The one manifest type (records/manifest.py): older manifests read with the values they were
trained with, a round trip that loses nothing, one rule of "differs only in the seed", and
`interp compare` and the report pooling the same runs as seeds."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from helpers import BASE_SHA, make_run, write_split
from records.errors import InterpError
from records.manifest import (UNCOMPARED, Manifest, ManifestError, config_key, described, differences, differs_only_in_seed,
                               group_by_config, settings_differences, upgrade_train)

# A manifest as train_run writes it today (trainers/training/train.py `_manifest`, then finished).
CURRENT = {
    "name": "lora64-s1", "status": "finished", "preset": "lora64",
    "method": {"method": "lora", "r": 64, "alpha": 4.0, "dropout": 0.0, "layers": None, "scaling": "alpha", "lora_alpha": 256.0,
               "scale": 4.0},
    "parameters": {"method": "lora", "trainable": 589824, "share_of_base": 0.0047},
    "base": {"name": "codebert", "source": "/models/codebert", "family": "roberta", "layers": 12, "weights_sha256": "a" * 64},
    "data": {split: {"file": f"/data/{split}.jsonl", "pairs": 10, "used": 10, "fingerprint": c * 64}
             for split, c in (("train", "1"), ("valid", "2"), ("test", "3"))},
    "train": {"epochs": 2, "batch_size": 16, "lr": 1e-5, "warmup_frac": 0.1, "adam_eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0,
              "seed": 1, "evals_per_epoch": 10, "max_steps": None, "max_len": 256, "eval_batch_size": 64, "pooling": "cls",
              "batching": "random", "ties": "codexglue", "precision": "fp32"},
    "device": "cpu", "mixed_precision": "no", "num_processes": 1, "versions": {"torch": "2.4.0"}, "code_version": "abc123",
    "elapsed_s": 12.5, "metrics": {"best_step": 10, "valid_mrr": 0.4, "test_mrr": 0.3, "steps": 20, "evaluations": 2},
}


def changed(**sections) -> dict:
    """CURRENT with `sections` merged in (a dict section merged key by key; None removes a key)."""
    out = copy.deepcopy(CURRENT)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in (out[key] | value).items() if v is not None or k not in value}
        elif value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def without(section: str | None, *keys: str) -> dict:
    out = copy.deepcopy(CURRENT)
    target = out if section is None else out[section]
    for key in keys:
        target.pop(key)
    return out


# -- older manifests -----------------------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (without(None, "num_processes"), {"num_processes": 1}),  # before data parallel training
    (without("train", "pooling", "batching", "ties"), {"train.pooling": "cls", "train.batching": "bucketed", "train.ties": "optimistic"}),
    (changed(train={"pooling": None, "batching": None, "ties": None, "bucket": True}), {"train.batching": "bucketed", "train.bucket": None}),
    (changed(train={"pooling": None, "batching": None, "ties": None, "bucket": False}), {"train.batching": "codexglue", "train.bucket": None}),
    (without("train", "ties"), {"train.ties": "optimistic", "train.pooling": "cls", "train.batching": "random"}),
    (without("train", "precision"), {"train.precision": "fp32"}),  # before bf16 forward passes could be chosen
    (without(None, "metrics", "elapsed_s"), {"metrics": {}, "elapsed_s": None, "finished": True}),  # as a running one reads
    (without(None, "preset", "versions", "code_version"), {"preset": None, "versions": {}, "code_version": None}),
    (CURRENT, {"num_processes": 1, "train.pooling": "cls", "train.batching": "random", "train.ties": "codexglue"}),  # as recorded
])
def test_older_manifests_read_with_the_values_they_were_trained_with(data, expected):
    m = Manifest.from_dict(data)
    for where, value in expected.items():
        if where.startswith("train."):
            assert m.train.get(where[6:]) == value, where
        else:
            assert getattr(m, where) == value, where


def test_an_older_lora_reads_its_numeric_scaling_as_the_rule_alpha():
    old = changed(method={"scaling": 4.0, "lora_alpha": None, "scale": None})  # "scaling" was the factor itself
    assert Manifest.from_dict(old).trained_method == Manifest.from_dict(CURRENT).trained_method
    assert differs_only_in_seed(Manifest.from_dict(old), Manifest.from_dict(changed(train={"seed": 2})))


def test_upgrade_train_is_the_toolkits_own_reading():
    """The torch-free reading agrees with TrainConfig's (trainers/training/loop.py), which training uses."""
    from trainers.training import loop

    for train in (without("train", "pooling", "batching", "ties")["train"] | {"bucket": False}, CURRENT["train"]):
        assert loop.TrainConfig.from_dict(upgrade_train(train)) == loop.TrainConfig.from_dict(train)
    assert loop.UNCOMPARED == UNCOMPARED


# -- the round trip ------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [CURRENT, without(None, "metrics", "elapsed_s") | {"status": "running"},
                                  changed(status="stopped", error="loss is nan at step 3", metrics=None),
                                  CURRENT | {"note": "kept", "schema_later": {"x": [1, 2]}}])
def test_a_manifest_round_trips_whole(data, tmp_path):
    m = Manifest.from_dict(data)
    assert m.to_dict() == data
    m.write(tmp_path)
    assert Manifest.read(tmp_path) == m and json.loads((tmp_path / "manifest.json").read_text()) == data
    assert m.replace(status="finished").to_dict()["status"] == "finished" and m.status == data["status"]  # frozen: a new one


# -- damaged manifests ----------------------------------------------------------------------------

@pytest.mark.parametrize("data, complete, words", [
    ([1], False, "a list, not an object"),
    ({"train": {}}, False, "no 'method'"),
    (without(None, "base"), True, "no 'base'"),
    (changed(method="lora"), False, "'method' is a string"),
    (changed(metrics={"test_mrr": "high"}), False, "metrics.test_mrr is a string, not a number"),
    (changed(data={"test": 3}), False, "data.test is a number, not an object"),
    (changed(num_processes=0), False, "num_processes is 0"),
    (changed(base={"weights_sha256": 7}), True, "base.weights_sha256 is a number, not a string"),
])
def test_a_damaged_manifest_is_named_with_its_key(data, complete, words):
    with pytest.raises(ManifestError, match="^runs/r/manifest.json: damaged run manifest: ") as caught:
        Manifest.from_dict(data, "runs/r/manifest.json", complete=complete)
    assert words in str(caught.value) and isinstance(caught.value, InterpError)


def test_the_reports_lenient_reading_takes_what_it_can_show():
    m = Manifest.from_dict({"method": {"method": "lora"}, "train": {}, "base": {}, "data": {}})
    assert (m.name, m.seed, m.metrics, m.fingerprints) == (None, None, {}, {})


# -- one configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("other, only_seed, fields", [
    (changed(train={"seed": 2}), True, ["train.seed"]),
    (changed(train={"seed": 2, "lr": 2e-5}), False, ["train.lr", "train.seed"]),
    (changed(train={"seed": 2, "pooling": "mean"}), False, ["train.seed", "train.pooling"]),
    (changed(name="copy"), False, []),  # the same run under another name: not another seed
    (changed(train={"seed": 2}, method={"r": 8}), False, ["method.r", "train.seed"]),
    (changed(train={"seed": 2}, preset="lora64-again"), False, ["preset", "train.seed"]),
    (changed(train={"seed": 2}, base={"weights_sha256": "b" * 64}), False, ["base.weights_sha256", "train.seed"]),
    (changed(train={"seed": 2}, data={"valid": {"fingerprint": "9" * 64}}), False, ["data.valid", "train.seed"]),
    # what is not the configuration: name, status, metrics, timings, device, processes, versions, where curves are logged
    (changed(name="lora64-s2", status="running", metrics=None, elapsed_s=None, device="cuda:0", num_processes=2,
             versions={}, train={"seed": 2, "log_with": "tensorboard"}), True, ["train.seed"]),
    # an older manifest of the same settings: the choices it did not record read as trained
    (changed(train={"seed": 2, "pooling": None, "ties": "optimistic", "batching": None, "bucket": True}), False,
     ["train.seed", "train.batching", "train.ties"]),
])
def test_differs_only_in_the_seed(other, only_seed, fields):
    a, b = Manifest.from_dict(CURRENT), Manifest.from_dict(other)
    assert differs_only_in_seed(a, b) is only_seed and differs_only_in_seed(b, a) is only_seed
    assert sorted(d.field for d in differences(a, b)) == sorted(fields)
    assert (config_key(a) == config_key(b)) is (fields in ([], ["train.seed"]))


def test_differences_are_named_for_messages():
    a, b = Manifest.from_dict(CURRENT), Manifest.from_dict(changed(train={"lr": 2e-5}, base={"weights_sha256": "b" * 64}))
    assert settings_differences(a, b) == ["base.weights_sha256 'aaaaaaaaaaaa' vs 'bbbbbbbbbbbb'", "train.lr 1e-05 vs 2e-05"]
    assert described(differences(a, b), here="now") == ["base weights aaaaaaaaaaaa there, bbbbbbbbbbbb now",
                                                       "training settings: lr 1e-05 there, 2e-05 now"]


def test_group_by_config_pools_distinct_seeds_and_keeps_repeated_ones_apart():
    m = lambda **kw: Manifest.from_dict(changed(**kw))  # noqa: E731
    manifests = {"s1": m(train={"seed": 1}), "full": m(preset="full"), "s2": m(train={"seed": 2}), "lr": m(train={"lr": 0.1}),
                 "x": m(preset="x"), "x-copy": m(preset="x", name="x-copy")}
    groups, notes = group_by_config(manifests)
    assert groups == [["s1", "s2"], ["full"], ["lr"], ["x"], ["x-copy"]]
    assert notes == ["runs x, x-copy are one configuration but not distinct seeds; kept apart"]


# -- interp compare and the report pool the same runs ---------------------------------------------

FUNCTIONS = [(f"Return {n} doubled.", f"def f(x):\n    return {n} * 2\n") for n in ("one", "two", "three")]


def _report_groups(runs: Path) -> list[list[str]]:
    from reports.collect import collect

    site = collect(runs)
    assert site.problems == []
    return sorted(sorted(r.name for r in g.runs) for g in site.groups)


def _compare_groups(runs: Path, names: list[str]) -> list[list[str]]:
    from interp.analyses.base import resolve_runs
    from interp.analyses.compare import group_runs

    groups, _ = group_runs(resolve_runs(runs, names))
    return sorted(sorted(g.runs) for g in groups)


def test_compare_and_the_report_pool_the_same_seeds(tmp_path):
    data = write_split(tmp_path / "data" / "test.jsonl", FUNCTIONS)
    runs = tmp_path / "runs"
    for name, preset, seed in (("lora-s1", "lora64", 1), ("lora-s2", "lora64", 2), ("full", "full", 1), ("same-a", "x", 5),
                               ("same-b", "x", 5), ("lr", "lora64", 3), ("free-s1", None, 1), ("free-s2", None, 2)):
        make_run(runs, name, [1, 2, 3], data, preset=preset, seed=seed)
    path = runs / "lr" / "manifest.json"  # lora64's settings but another learning rate: not a seed of it
    path.write_text(json.dumps(json.loads(path.read_text()) | {"train": {"seed": 3, "max_len": 256, "pooling": "cls", "ties": "codexglue",
                                                                         "lr": 0.5}}))
    names = sorted(p.name for p in runs.iterdir())
    expected = [["free-s1", "free-s2"], ["full"], ["lora-s1", "lora-s2"], ["lr"], ["same-a"], ["same-b"]]
    assert _report_groups(runs) == _compare_groups(runs, names) == expected
    assert Manifest.read(runs / "lr").weights_sha256 == BASE_SHA


def test_compare_and_the_report_agree_on_trained_runs(cli_world):
    names = sorted(p.name for p in cli_world.runs.iterdir() if (p / "manifest.json").is_file())
    assert _report_groups(cli_world.runs) == _compare_groups(cli_world.runs, names) == [["adapter"], ["lora"]]
