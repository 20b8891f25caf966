"""Training runs end to end on real mined data: checkpoints, manifests, resume, failure, eval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainers import methods
from trainers.data import read_split
from trainers.errors import InterpError
from trainers.training.loop import TrainConfig
from trainers.training.runs import find_run
from trainers.training.scoring import evaluate_run, write_predictions
from trainers.training.train import RunSpec, train_run


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
    assert manifest["method"]["scaling"] == 4.0 and manifest["train"]["seed"] == 7
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


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, data_dir, tiny_roberta_dir):
    with pytest.raises(InterpError, match="loss is (nan|inf)"):
        run(tmp_path, data_dir, tiny_roberta_dir, lr=1e30, max_steps=6)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "loss is" in manifest["error"]


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
    assert a == pytest.approx(b, abs=1e-6)
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
