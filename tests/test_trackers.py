"""`interp train --log-with`: the curves also go to accelerate's trackers, offline, into runs/NAME/logs.

TensorBoard's event files are read back with TensorBoard's own reader (EventAccumulator): the tags,
the steps and the values, which must be the run's curves.json; the learning rate is hand-computed
from the schedule. The logs survive the run directory's swaps (each new best delta) and --resume
appends to them. A tracker that is unknown, or whose package is missing, is refused before anything
is written.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import trainers.training.loop as loop
from helpers import check_refused, invoke
from trainers import methods
from records.errors import InterpError
from trainers.training.loop import EVAL_TAGS, STEP_TAGS, TRACKED_PROJECT, TrainConfig
from trainers.training.runs import read_manifest
from trainers.training.train import RunSpec, train_run

pytest.importorskip("tensorboard")

LORA = {"method": "lora", "r": 2}
# 16 pairs in batches of 4: steps 1-4, evaluated (and the best delta swapped in) after steps 2 and 4; no warmup
# (int(0.1 * 4) = 0 steps), so step k is taken at lr * (4 - (k - 1)) / 4.
SETTINGS = {"epochs": 1, "batch_size": 4, "max_len": 32, "evals_per_epoch": 2, "max_steps": 4, "lr": 5e-2, "seed": 3}
LEARNING_RATES = [5e-2, 3.75e-2, 2.5e-2, 1.25e-2]


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way out treats it as a failure to report."""


def train(runs_dir: Path, data: Path, base: Path, name: str, *, resume: bool = False, **settings) -> dict:
    spec = RunSpec(name=name, method=methods.method_from_dict(LORA), data_dir=data, base=str(base), train_limit=16, eval_limit=8)
    return train_run(spec, TrainConfig(**SETTINGS | settings), runs_dir=runs_dir, resume=resume, progress=False)


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard logs, by tag: (step, value), as TensorBoard shows them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / TRACKED_PROJECT), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """What the logs must hold: the run's curves.json, and the hand-computed learning rates."""
    curves = json.loads((run / "curves.json").read_text())
    steps = range(1, len(curves["loss"]) + 1)
    return {
        "train/loss": list(zip(steps, curves["loss"])),
        "train/learning_rate": list(zip(steps, LEARNING_RATES)),
        "train/grad_norm": list(zip(steps, curves["grad_norm"])),
        "valid/mrr": [(v["step"], v["mrr"]) for v in curves["valid"]],
    }


def assert_logged(run: Path) -> None:
    got, want = scalars(run), expected_scalars(run)
    assert sorted(got) == sorted(STEP_TAGS + EVAL_TAGS)
    for tag, points in want.items():
        assert [step for step, _ in got[tag]] == [step for step, _ in points], tag
        for (_, value), (_, expected) in zip(got[tag], points):
            assert value == pytest.approx(expected, rel=1e-5, abs=1e-6), tag  # event files hold float32


def test_tensorboard_logs_the_curves_into_the_run(tmp_path, mined_data, tiny_roberta_dir):
    manifest = train(tmp_path, mined_data, tiny_roberta_dir, "tb", log_with="tensorboard")
    run = tmp_path / "tb"
    assert manifest["train"]["log_with"] == "tensorboard" and read_manifest(run)["train"]["log_with"] == "tensorboard"
    assert len(list((run / "logs" / TRACKED_PROJECT).glob("events.out.tfevents.*"))) == 1
    assert_logged(run)  # steps 1-2 were logged before the swap of step 2's best delta, and are still there
    assert not list(run.rglob(".*")), "no temporary file or directory left in the run"


def test_no_tracker_writes_no_logs(tmp_path, mined_data, tiny_roberta_dir):
    manifest = train(tmp_path, mined_data, tiny_roberta_dir, "plain")
    assert manifest["train"]["log_with"] == "none" and not (tmp_path / "plain" / "logs").exists()


def test_resume_appends_to_the_logs(tmp_path, mined_data, tiny_roberta_dir, monkeypatch):
    """Killed at step 4 (after step 3 was logged, the last state being step 2's), then resumed: one curve, steps 1-4,
    the resumed values, and both event files kept."""
    reference = train(tmp_path / "ref", mined_data, tiny_roberta_dir, "r", log_with="tensorboard")
    runs = tmp_path / "runs"
    calls, real_step = [], loop._step

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Killed()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "_step", step)
    with pytest.raises(Killed):
        train(runs, mined_data, tiny_roberta_dir, "r", log_with="tensorboard")
    monkeypatch.undo()
    assert [s for s, _ in scalars(runs / "r")["train/loss"]] == [1, 2, 3]
    cli = invoke(["train", "--name", "r", "--resume", "--data", mined_data, "--base", tiny_roberta_dir, "--runs-dir", runs,
                  "--method", "lora", "--r", "2", "--epochs", "1", "--batch-size", "4", "--max-len", "32", "--evals-per-epoch", "2",
                  "--max-steps", "4", "--lr", "5e-2", "--seed", "3", "--train-limit", "16", "--eval-limit", "8", "--device", "cpu",
                  "--no-progress"])  # no --log-with: the run's own
    assert cli.exit_code == 0, cli.stderr + cli.stdout
    run = runs / "r"
    assert read_manifest(run)["train"]["log_with"] == "tensorboard"
    assert read_manifest(run)["metrics"] == reference["metrics"]
    assert len(list((run / "logs" / TRACKED_PROJECT).glob("events.out.tfevents.*"))) == 2
    assert_logged(run)
    assert scalars(run) == scalars(tmp_path / "ref" / "r"), "the resumed logs read as the uninterrupted run's"


def test_an_older_manifest_without_log_with_still_loads():
    old = {k: v for k, v in TrainConfig().__dict__.items() if k != "log_with"}
    assert TrainConfig.from_dict(old).log_with == "none"


@pytest.mark.parametrize("name, message", [
    ("tensorbord", "unknown tracker 'tensorbord'"),
    ("all", "unknown tracker 'all'"),
])
def test_check_tracker_refuses(name, message):
    with pytest.raises(InterpError, match=message):
        loop.check_tracker(name)


def test_a_tracker_whose_package_is_missing_is_refused(monkeypatch):
    monkeypatch.setitem(loop.TRACKERS, "tensorboard", "no_such_package_here")
    with pytest.raises(InterpError, match=r"needs the package 'no_such_package_here'.*pip install no_such_package_here"):
        loop.check_tracker("tensorboard")


def _train_args(world, name: str, *extra) -> list:
    return ["train", "--name", name, "--data", world.data, "--base", world.base, "--runs-dir", world.runs, "--method", "lora",
            "--r", "2", "--batch-size", "4", "--max-len", "32", "--train-limit", "16", "--eval-limit", "8", "--device", "cpu",
            "--no-progress", *extra]


@pytest.mark.parametrize("extra, names", [
    (["--log-with", "tensorbord"], ["--log-with tensorbord", "unknown tracker"]),
    (["--log-with", "TensorBoard"], ["--log-with TensorBoard"]),
    (["--log-with", ""], ["--log-with"]),
])
def test_cli_refuses_a_bad_tracker(cli_world, extra, names):
    check_refused(_train_args(cli_world, "new-run", *extra), names, watched=cli_world.root)


def test_resume_refuses_when_the_runs_own_tracker_is_missing(tmp_path, mined_data, tiny_roberta_dir, monkeypatch):
    train(tmp_path, mined_data, tiny_roberta_dir, "tb", log_with="tensorboard")
    monkeypatch.setitem(loop.TRACKERS, "tensorboard", "no_such_package_here")
    args = ["train", "--name", "tb", "--resume", "--data", mined_data, "--base", tiny_roberta_dir, "--runs-dir", tmp_path, "--method", "lora",
            "--r", "2", "--batch-size", "4", "--max-len", "32", "--train-limit", "16", "--eval-limit", "8", "--device", "cpu", "--no-progress"]
    check_refused(args, ["--resume", "'tb'", "tensorboard", "--log-with none", "no_such_package_here"], watched=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_cli_refuses_a_tracker_whose_package_is_missing(cli_world):
    check_refused(_train_args(cli_world, "new-run", "--log-with", "wandb"), ["--log-with wandb", "pip install wandb"], watched=cli_world.root)


def test_study_refuses_a_bad_tracker(cli_world):
    check_refused(["study", "rq4", "--seeds", "1", "--data", cli_world.data, "--base", cli_world.base, "--runs-dir", cli_world.runs,
                   "--scale", "demo", "--device", "cpu", "--log-with", "tb"], ["--log-with tb"], watched=cli_world.root)


def test_a_study_logs_its_runs_and_a_tracker_is_not_a_setting(tmp_path, mined_data, tiny_roberta_dir):
    """`interp study --log-with tensorboard` logs every run it trains; studied again with no tracker, the runs are the same
    runs (skipped, not refused as made with other settings), since a tracker changes no number."""
    from interp.study import Grid, Scale, Table, run_study

    grid = Grid("tiny", "", (Table("t1", "", ("lora32",)),))
    scale = Scale("tiny", tuple((k, v) for k, v in SETTINGS.items() if k != "seed"), train_limit=16, eval_limit=8)
    kwargs = dict(grid=grid, seeds=(3,), scale=scale, data_dir=mined_data, runs_dir=tmp_path, base=str(tiny_roberta_dir), device="cpu",
                  progress=False, log=lambda line: None)
    first = run_study(**kwargs, log_with="tensorboard")
    assert [o.status for o in first.outcomes] == ["trained"]
    run = tmp_path / "lora32-s3"
    assert read_manifest(run)["train"]["log_with"] == "tensorboard"
    assert [step for step, _ in scalars(run)["train/loss"]] == [1, 2, 3, 4]
    again = run_study(**kwargs)
    assert [o.status for o in again.outcomes] == ["skipped"]
