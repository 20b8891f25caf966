"""Training runs end to end on real mined data: checkpoints, manifests, resume, failure, eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import math
import re
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from interp.cli import app
from trainers import methods
from trainers.data import read_split
from records.errors import InterpError
from trainers.training.loop import TrainConfig
from trainers.training.runs import find_run
from trainers.training.scoring import evaluate_run, write_predictions
from trainers.training.train import RunSpec, train_run
from helpers import flat_metrics


@pytest.fixture
def data_dir(mined_data) -> Path:
    return mined_data


def tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig(**({"epochs": 1, "batch_size": 4, "max_len": 32, "evals_per_epoch": 3, "max_steps": 9, "lr": 1e-3, "seed": 7} | kw))


def run(tmp_path, data_dir, base, preset="lora64", name="r", **cfg) -> dict:
    spec = RunSpec(name=name, method=methods.get_preset(preset), data_dir=data_dir, preset=preset, base=str(base), eval_limit=24, train_limit=200)
    return train_run(spec, tiny_cfg(**cfg), runs_dir=tmp_path, progress=False)


def test_run_writes_delta_manifest_curves_and_ranks(tmp_path, data_dir, tiny_roberta_dir):
    manifest = run(tmp_path, data_dir, tiny_roberta_dir)
    path = tmp_path / "r"
    assert manifest["status"] == "finished"
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json", "curves.json", "ranks.json"} <= {p.name for p in path.iterdir()}
    assert not (path / "state").exists()
    curves = json.loads((path / "curves.json").read_text())
    assert len(curves["loss"]) == 9 and [v["step"] for v in curves["valid"]] == [3, 6, 9]
    best = max(curves["valid"], key=lambda v: v["mrr"])
    assert manifest["metrics"]["valid_mrr"] == best["mrr"] and manifest["metrics"]["best_step"] == best["step"]
    ranks = json.loads((path / "ranks.json").read_text())["ranks"]
    assert len(ranks) == 24 and all(1 <= r <= 24 for r in ranks.values())
    assert manifest["metrics"]["test_mrr"] == pytest.approx(sum(1 / r for r in ranks.values()) / 24)
    assert manifest["base"]["family"] == "roberta" and len(manifest["base"]["weights_sha256"]) == 64
    assert manifest["method"]["scale"] == 4.0 and manifest["train"]["seed"] == 7
    assert {k: manifest["train"][k] for k in ("pooling", "ties")} == {"pooling": "cls", "ties": "codexglue"}
    assert {k: json.loads((path / "ranks.json").read_text())[k] for k in ("pooling", "ties")} == {"pooling": "cls", "ties": "codexglue"}
    assert {"torch", "transformers", "peft"} <= manifest["versions"].keys()


def test_eval_reproduces_test_mrr_and_writes_codexglue_predictions(tmp_path, data_dir, tiny_roberta_dir):
    manifest = run(tmp_path, data_dir, tiny_roberta_dir, preset="adapter-ffn64")
    subset = tmp_path / "test24.jsonl"
    ranked = json.loads((tmp_path / "r" / "ranks.json").read_text())["ranks"]
    lines = [line for line in (data_dir / "test.jsonl").read_text().splitlines() if str(json.loads(line)["idx"]) in ranked]
    subset.write_text("\n".join(lines) + "\n")
    result = evaluate_run(find_run(tmp_path, "r"), data_file=subset, progress=False)
    assert result.evaluation.mrr == pytest.approx(manifest["metrics"]["test_mrr"], abs=1e-6)
    write_predictions(result, tmp_path / "pred.jsonl", k=5)
    preds = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    gold = {e.url: e.idx for e in read_split(subset)}
    assert [p["url"] for p in preds] == list(gold) and all(len(p["answers"]) == 5 for p in preds)
    # CodeXGLUE's evaluator: reciprocal rank of the gold idx within the answers, 0 when absent.
    rr = [1 / (p["answers"].index(gold[p["url"]]) + 1) if gold[p["url"]] in p["answers"] else 0 for p in preds]
    ours = [1 / r if r <= 5 else 0 for r in result.evaluation.ranks.tolist()]
    assert rr == pytest.approx(ours)


def test_existing_run_is_refused_without_resume(tmp_path, data_dir, tiny_roberta_dir):
    run(tmp_path, data_dir, tiny_roberta_dir)
    before = (tmp_path / "r" / "manifest.json").read_bytes()
    with pytest.raises(InterpError, match="already exists"):
        run(tmp_path, data_dir, tiny_roberta_dir)
    with pytest.raises(InterpError, match="already finished"):
        spec = RunSpec(name="r", method=methods.get_preset("lora64"), data_dir=data_dir, base=str(tiny_roberta_dir), eval_limit=24, train_limit=200)
        train_run(spec, tiny_cfg(), runs_dir=tmp_path, resume=True, progress=False)
    assert (tmp_path / "r" / "manifest.json").read_bytes() == before


def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(path).values())


@pytest.mark.parametrize("case, cfg, message, kept_step", [
    # evaluating every 2 steps: the loss of step 2 is already NaN
    ("loss", {"lr": 1e30, "max_steps": 6}, r"step 2: the loss is (nan|inf); stopping\. Last good checkpoint kept: none yet", None),
    # evaluating every step, after a warmup whose first step has lr 0: step 1 is kept, step 2's embeddings are not finite
    ("evaluation", {"lr": 1e30, "max_steps": 4, "warmup_frac": 0.5, "evals_per_epoch": 50},
     r"step 2: .* values of the query embeddings are not finite .*Last good checkpoint kept: step 1, valid MRR", 1),
])
def test_a_diverging_run_stops_and_keeps_only_a_finite_checkpoint(tmp_path, data_dir, tiny_roberta_dir, case, cfg, message, kept_step):
    with pytest.raises(InterpError, match=message):
        run(tmp_path, data_dir, tiny_roberta_dir, **cfg)
    path = tmp_path / "r"
    if kept_step is None:  # nothing was saved: nothing is left (the name can be used again)
        assert not path.exists()
        return
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and re.search(message, manifest["error"]) and "metrics" not in manifest
    assert not (path / "ranks.json").exists()
    state = json.loads((path / "state" / "trainer_state.json").read_text())
    assert state["best_step"] == kept_step and [v["step"] for v in state["valid"]] == [1]  # the diverged step is not recorded
    assert all(math.isfinite(v["mrr"]) and v["mrr"] < 1.0 for v in state["valid"])  # no MRR 1.0 from ties of NaN
    for kept in ("adapter_model.safetensors", "state/delta.safetensors", "state/best.safetensors"):
        assert _all_finite(path / kept), kept


def test_a_non_finite_delta_is_never_saved(tmp_path, tiny_roberta_dir):
    from trainers.encoders import load_encoder
    from trainers.training.evaluate import NonFiniteError
    from trainers.training.loop import TrainerState, make_optimizer
    from trainers.training.train import RunCheckpoints

    encoder = load_encoder(str(tiny_roberta_dir))
    config = methods.get_preset("lora64")
    model = methods.apply_method(encoder, config)
    checkpoints = RunCheckpoints(tmp_path / "r", model, config)
    checkpoints.save_best(1, 0.5)
    good = (tmp_path / "r" / "adapter_model.safetensors").read_bytes()
    weight = next(p for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        weight.view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 2: the delta has non-finite weights: \S*lora\S* \(1 of"):
        checkpoints.save_best(2, 0.6)
    optimizer, scheduler = make_optimizer(model, tiny_cfg(), 10)
    with pytest.raises(NonFiniteError, match="step 3: the delta has non-finite weights"):
        checkpoints.save_state(TrainerState(step=3), optimizer, scheduler)
    assert (tmp_path / "r" / "adapter_model.safetensors").read_bytes() == good and not (tmp_path / "r" / "state").exists()
    assert _all_finite(tmp_path / "r" / "adapter_model.safetensors")


# -- settings: numbers, recorded choices, old manifests -------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("lr", math.inf), ("lr", math.nan), ("lr", -math.inf), ("warmup_frac", math.nan), ("adam_eps", math.inf),
    ("weight_decay", math.nan), ("max_grad_norm", math.inf), ("lr", "1e-5"), ("epochs", 1.5), ("batch_size", True),
    ("adam_eps", 0.0), ("max_grad_norm", -1.0), ("weight_decay", -0.1), ("pooling", "max"), ("ties", "pessimistic"),
    ("batching", "sorted"),
])
def test_train_config_refuses_bad_numbers_and_choices(field, value):
    with pytest.raises(InterpError, match=field if field not in ("pooling", "ties") else {"pooling": "pooling", "ties": "tie rule"}[field]):
        TrainConfig(**{field: value})


OLD_TRAIN = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "warmup_frac": 0.1, "adam_eps": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0,
             "seed": 7, "evals_per_epoch": 3, "max_steps": 9, "max_len": 32, "eval_batch_size": 64}


@pytest.mark.parametrize("recorded, pooling, batching, ties", [
    (OLD_TRAIN | {"bucket": True}, "cls", "bucketed", "optimistic"),  # what every run before these fields did
    (OLD_TRAIN | {"bucket": False}, "cls", "codexglue", "optimistic"),  # the CodeXGLUE-style loop of the benchmark
    (OLD_TRAIN, "cls", "bucketed", "optimistic"),
    (OLD_TRAIN | {"pooling": "pooler", "batching": "random", "ties": "codexglue"}, "pooler", "random", "codexglue"),
])
def test_old_manifests_read_with_the_choices_they_were_trained_with(recorded, pooling, batching, ties):
    cfg = TrainConfig.from_dict(recorded)
    assert (cfg.pooling, cfg.batching, cfg.ties) == (pooling, batching, ties)
    assert (cfg.lr, cfg.max_steps, cfg.seed) == (1e-3, 9, 7)
    assert TrainConfig.from_dict(asdict(cfg)) == cfg


def _make_old(path: Path) -> dict:
    """Rewrite a finished run's manifest and ranks.json as the toolkit wrote them before pooling, batching and ties were recorded."""
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["train"]["batching"] == "bucketed" and manifest["train"]["ties"] == "optimistic"
    manifest["train"] = {k: v for k, v in manifest["train"].items() if k not in ("pooling", "batching", "ties")} | {"bucket": True}
    (path / "manifest.json").write_text(json.dumps(manifest))
    ranks = json.loads((path / "ranks.json").read_text())
    (path / "ranks.json").write_text(json.dumps({k: v for k, v in ranks.items() if k not in ("ties", "pooling")}))
    return manifest


@pytest.fixture
def old_run(tmp_path, data_dir, tiny_roberta_dir) -> Path:
    """A run trained as before (bucketed batches, optimistic ties, [CLS]) and recorded as before."""
    run(tmp_path, data_dir, tiny_roberta_dir, batching="bucketed", ties="optimistic")
    _make_old(tmp_path / "r")
    return tmp_path / "r"


def _test_subset(tmp_path: Path, data_dir: Path, run_path: Path) -> Path:
    """The test examples a run was tested on, as a jsonl file."""
    ranked = json.loads((run_path / "ranks.json").read_text())["ranks"]
    lines = [line for line in (data_dir / "test.jsonl").read_text().splitlines() if str(json.loads(line)["idx"]) in ranked]
    subset = tmp_path / "test-subset.jsonl"
    subset.write_text("\n".join(lines) + "\n")
    return subset


def test_an_old_run_is_evaluated_as_it_was_trained(old_run, tmp_path, data_dir):
    recorded = json.loads((old_run / "manifest.json").read_text())["metrics"]["test_mrr"]
    subset = _test_subset(tmp_path, data_dir, old_run)
    info = find_run(tmp_path, "r")
    assert (info.train_config.pooling, info.train_config.batching, info.train_config.ties) == ("cls", "bucketed", "optimistic")
    as_trained = evaluate_run(info, data_file=subset, progress=False)
    assert (as_trained.ties, as_trained.pooling) == ("optimistic", "cls")
    assert as_trained.evaluation.mrr == pytest.approx(recorded, abs=1e-6)
    strict = evaluate_run(info, data_file=subset, ties="codexglue", progress=False)
    assert strict.ties == "codexglue" and strict.evaluation.mrr <= as_trained.evaluation.mrr
    assert (strict.evaluation.ranks >= as_trained.evaluation.ranks).all()

    result = CliRunner().invoke(app, ["eval", "r", "--data", str(subset), "--runs-dir", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"MRR {recorded:.4f} over 24 queries (ties optimistic, as trained; pooling cls; fp32)" in result.output
    result = CliRunner().invoke(app, ["eval", "r", "--data", str(subset), "--ties", "codexglue", "--runs-dir", str(tmp_path),
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0 and "(ties codexglue; pooling cls; fp32)" in result.output
    listing = CliRunner().invoke(app, ["runs", "--runs-dir", str(tmp_path)]).output
    assert re.search(r"^r .* cls\s+optimistic\s+", listing, re.M), listing


def test_an_old_run_resumes_with_the_choices_it_was_trained_with(old_run, tmp_path, data_dir, tiny_roberta_dir):
    from trainers.training.train import train_config

    done = json.loads((old_run / "manifest.json").read_text())
    (old_run / "manifest.json").write_text(json.dumps({k: v for k, v in done.items() if k != "metrics"} | {"status": "running"}))
    numbers = {k: v for k, v in OLD_TRAIN.items()}
    with pytest.raises(InterpError, match="pooling 'cls' there, 'mean' now"):
        cfg = train_config(old_run, **numbers, pooling="mean")
        train_run(RunSpec(name="r", method=methods.get_preset("lora64"), data_dir=data_dir, preset="lora64", base=str(tiny_roberta_dir),
                          eval_limit=24, train_limit=200), cfg, runs_dir=tmp_path, resume=True, progress=False)
    cfg = train_config(old_run, **numbers)
    assert (cfg.pooling, cfg.batching, cfg.ties) == ("cls", "bucketed", "optimistic")
    assert (train_config(None, **numbers).batching, train_config(None, **numbers).ties) == ("random", "codexglue")  # a new run
    spec = RunSpec(name="r", method=methods.get_preset("lora64"), data_dir=data_dir, preset="lora64", base=str(tiny_roberta_dir),
                   eval_limit=24, train_limit=200)
    again = train_run(spec, cfg, runs_dir=tmp_path, resume=True, progress=False)
    assert again["status"] == "finished" and flat_metrics(again["metrics"]) == pytest.approx(flat_metrics(done["metrics"]), abs=1e-6)
    assert {k: again["train"][k] for k in ("pooling", "batching", "ties")} == {"pooling": "cls", "batching": "bucketed", "ties": "optimistic"}


def test_pooling_is_trained_recorded_and_evaluated(tmp_path, data_dir, tiny_roberta_dir):
    manifest = run(tmp_path, data_dir, tiny_roberta_dir, pooling="mean")
    assert (manifest["train"]["pooling"], manifest["train"]["ties"]) == ("mean", "codexglue")
    saved = json.loads((tmp_path / "r" / "ranks.json").read_text())
    assert (saved["pooling"], saved["ties"]) == ("mean", "codexglue")
    result = evaluate_run(find_run(tmp_path, "r"), data_file=_test_subset(tmp_path, data_dir, tmp_path / "r"), progress=False)
    assert result.pooling == "mean" and result.evaluation.mrr == pytest.approx(manifest["metrics"]["test_mrr"], abs=1e-6)


@pytest.mark.parametrize("args, line", [
    (["train", "--name", "x", "--preset", "lora64", "--pooling", "foo"], "error: --pooling foo: should be one of cls, pooler, mean"),
    (["train", "--name", "x", "--preset", "lora64", "--ties", "foo"], "error: --ties foo: should be one of codexglue, optimistic"),
    (["train", "--name", "x", "--preset", "lora64", "--batching", "foo"], "error: --batching foo: should be one of random, bucketed, codexglue"),
    (["train", "--name", "x", "--preset", "lora64", "--lr", "inf"], "error: --lr inf: should be a finite number"),
    (["train", "--name", "x", "--preset", "lora64", "--lr", "nan"], "error: --lr nan: should be a finite number"),
    (["train", "--name", "x", "--preset", "lora64", "--warmup-frac", "-inf"], "error: --warmup-frac -inf: should be a finite number"),
    (["train", "--name", "x", "--method", "lora", "--alpha", "nan"], "error: --alpha nan: should be a finite number"),
    (["eval", "r", "--ties", "foo"], "error: --ties foo: should be one of codexglue, optimistic"),
])
def test_cli_bad_settings_get_one_error_line(tmp_path, args, line):
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert [text for text in result.output.splitlines() if text.strip()] == [line]
    assert not any(tmp_path.iterdir())


def _train_cmd(runs_dir: Path, data_dir: Path, base: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "interp", "train", "--name", "k", "--preset", "adapter-h64", "--data", str(data_dir),
            "--base", str(base), "--runs-dir", str(runs_dir), "--epochs", "6", "--batch-size", "4", "--max-len", "32",
            "--max-steps", "300", "--evals-per-epoch", "2", "--lr", "1e-3", "--seed", "5", "--train-limit", "200",
            "--eval-limit", "8", "--no-progress", *extra]


def test_resume_after_kill_ends_like_an_uninterrupted_run(tmp_path, data_dir, tiny_roberta_dir):
    base = tiny_roberta_dir
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    whole = tmp_path / "whole"
    subprocess.run(_train_cmd(whole, data_dir, base), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, data_dir, base), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "k" / "state" / "trainer_state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["step"] >= 50:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert json.loads((killed / "k" / "manifest.json").read_text())["status"] == "running"
    subprocess.run(_train_cmd(killed, data_dir, base, "--resume"), check=True, env=env, capture_output=True)

    a = json.loads((whole / "k" / "manifest.json").read_text())["metrics"]
    b = json.loads((killed / "k" / "manifest.json").read_text())["metrics"]
    assert flat_metrics(a) == pytest.approx(flat_metrics(b), abs=1e-6)
    ca = json.loads((whole / "k" / "curves.json").read_text())
    cb = json.loads((killed / "k" / "curves.json").read_text())
    assert ca["loss"] == pytest.approx(cb["loss"], abs=1e-5)
    assert [v["mrr"] for v in ca["valid"]] == pytest.approx([v["mrr"] for v in cb["valid"]], abs=1e-6)


def test_runs_listing_skips_the_data_directory(tmp_path, data_dir, tiny_roberta_dir):
    import shutil

    from trainers.training.runs import list_runs

    shutil.copytree(data_dir, tmp_path / "data")
    run(tmp_path, data_dir, tiny_roberta_dir)
    assert [r.name for r in list_runs(tmp_path)] == ["r"]


def test_resume_of_a_run_that_does_not_exist_is_refused(cli_world):
    """`--resume` names a run to continue: one that is not there is one error line naming it (not a fresh start), nothing written."""
    from helpers import check_refused

    args = ["train", "--name", "lroa", "--resume", "--data", cli_world.data, "--base", cli_world.base, "--runs-dir", cli_world.runs,
            "--method", "lora", "--r", "4", "--batch-size", "4", "--max-len", "32", "--train-limit", "16", "--eval-limit", "8",
            "--device", "cpu", "--no-progress"]
    check_refused(args, ["--resume", "'lroa'", "did you mean 'lora'?", str(cli_world.runs)], watched=cli_world.root)
