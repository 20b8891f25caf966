"""Nothing lost, nothing faked: run and study locks, recoverable directory swaps, half-made runs,
damaged manifests and a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import records.io
import trainers.locks
import trainers.training.train as train_module
from helpers import invoke
from trainers import methods
from records.errors import InterpError
from records.io import DiskFullError, atomic_dir, recover_dir
from trainers.locks import LockedError, hold, run_lock_path, study_lock_path
from trainers.training.loop import TrainConfig
from trainers.training.runs import find_run, list_runs, read_manifest
from trainers.training.train import RunSpec, train_run

LORA = {"method": "lora", "r": 2}
# 16 pairs in batches of 4: steps 1-4, evaluated (and checkpointed) after steps 2 and 4
SETTINGS = {"epochs": 1, "batch_size": 4, "max_len": 32, "evals_per_epoch": 2, "max_steps": 4, "lr": 5e-2, "seed": 3}
CLI_SETTINGS = ["--method", "lora", "--r", "2", "--epochs", "1", "--batch-size", "4", "--max-len", "32", "--evals-per-epoch", "2",
                "--max-steps", "4", "--lr", "5e-2", "--seed", "3", "--train-limit", "16", "--eval-limit", "8", "--device", "cpu",
                "--no-progress"]


class Killed(BaseException):
    """Stands for a kill -9: not an Exception, so nothing on the way out treats it as a failure to report."""


def train(runs_dir: Path, data: Path, base: Path, name: str = "r", *, resume: bool = False, **settings) -> dict:
    spec = RunSpec(name=name, method=methods.method_from_dict(LORA), data_dir=data, base=str(base), train_limit=16, eval_limit=8)
    return train_run(spec, TrainConfig(**SETTINGS | settings), runs_dir=runs_dir, resume=resume, progress=False)


def hidden(root: Path) -> list[str]:
    """Hidden files and directories anywhere under `root` (locks, temporary and old directories, journals)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


# -- locks -------------------------------------------------------------------------------------

def test_a_second_train_is_refused_naming_the_holder(tmp_path, mined_data, tiny_roberta_dir):
    """Two real processes: this one holds the run's lock; `interp train --name r` in another is refused."""
    runs = tmp_path / "runs"
    command = [sys.executable, "-c", "from interp.cli import main; main()", "train", "--name", "r", "--data", str(mined_data),
               "--base", str(tiny_roberta_dir), "--runs-dir", str(runs), *CLI_SETTINGS]
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with hold(run_lock_path(runs, "r"), "run 'r'"):
        before = hidden(runs)
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert hidden(runs) == before == [".r.lock", ".r.lock.json"]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: run 'r' in "), result.stderr
    assert f"in use by pid {os.getpid()} on {socket.gethostname()} (" in lines[0] and ", since 20" in lines[0] and "--wait" in lines[0]
    assert not (runs / "r").exists() and not runs.exists()  # the lock's files went with it, and the directory made for it


def test_wait_takes_the_lock_once_the_holder_lets_go(tmp_path, monkeypatch):
    asked = threading.Event()

    class Watched(trainers.locks.FileLock):
        def acquire(self, *args, **kwargs):
            asked.set()
            return super().acquire(*args, **kwargs)

    lock, got = run_lock_path(tmp_path, "r"), []

    def waiter():
        with hold(lock, "run 'r'", wait=True):
            got.append(json.loads(lock.with_name(".r.lock.json").read_text())["pid"])

    with hold(lock, "run 'r'"):
        with pytest.raises(LockedError, match=rf"run 'r' is in use by pid {os.getpid()} "):
            with hold(lock, "run 'r'"):
                pass
        monkeypatch.setattr(trainers.locks, "FileLock", Watched)
        thread = threading.Thread(target=waiter)
        thread.start()
        asked.wait(60)
    thread.join(60)
    assert got == [os.getpid()] and hidden(tmp_path) == []


def test_a_second_study_of_a_grid_is_refused(tmp_path, mined_data, tiny_roberta_dir):
    from interp.study import Grid, Scale, Table, run_study

    grid = Grid("g", "", (Table("t", "", ("lora32",)),))
    with hold(study_lock_path(tmp_path, "g"), "study 'g'"):
        with pytest.raises(LockedError, match=rf"study 'g' in {tmp_path} is in use by pid {os.getpid()} "):
            run_study(grid=grid, seeds=(1,), scale=Scale("tiny", (), 16, 8), data_dir=mined_data, runs_dir=tmp_path,
                      base=str(tiny_roberta_dir), device="cpu", progress=False, log=lambda line: None)
        assert hidden(tmp_path) == ["study/.g.lock", "study/.g.lock.json"] and [p.name for p in tmp_path.iterdir()] == ["study"]


def test_eval_writing_into_a_run_takes_its_lock(tmp_path, cli_world):
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    args = ["eval", "lora", "--runs-dir", runs, "--predictions", runs / "lora" / "predictions.jsonl", "--device", "cpu", "--no-progress"]
    with hold(run_lock_path(runs, "lora"), "run 'lora'"):
        refused = invoke(args)
    assert refused.exit_code == 2 and refused.stderr.startswith(f"error: run 'lora' in {runs} is in use by pid {os.getpid()} ")
    assert not (runs / "lora" / "predictions.jsonl").exists()
    done = invoke(args)
    assert done.exit_code == 0, done.output
    assert (runs / "lora" / "predictions.jsonl").is_file() and hidden(runs) == []


# -- recoverable directory swaps -----------------------------------------------------------------

def _make(root: Path, layout: dict[str, str]) -> None:
    """Paths under root -> 'OLD' / 'NEW' (a directory holding v.txt with that text), 'EMPTY' (a directory) or file text."""
    for rel, what in layout.items():
        path = root / rel
        if what in ("OLD", "NEW", "EMPTY"):
            path.mkdir(parents=True)
            if what != "EMPTY":
                (path / "v.txt").write_text(what)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(what)


JOURNAL = json.dumps({"tmp": ".d.tmpaaaaa.tmp", "old": ".d.oldbbbbb.old"})


@pytest.mark.parametrize("case, layout, done, content", [
    ("killed after the journal, before the renames", {"d": "OLD", ".d.tmpaaaaa.tmp": "NEW", ".d.oldbbbbb.old": "EMPTY", ".d.swap.json": JOURNAL},
     "completed", "NEW"),
    ("killed between the renames", {".d.oldbbbbb.old/d": "OLD", ".d.tmpaaaaa.tmp": "NEW", ".d.swap.json": JOURNAL}, "completed", "NEW"),
    ("killed before the journal was removed", {"d": "NEW", ".d.oldbbbbb.old/d": "OLD", ".d.swap.json": JOURNAL}, None, "NEW"),
    ("killed while the old directory was removed", {"d": "NEW", ".d.oldbbbbb.old/d": "EMPTY"}, None, "NEW"),
    ("killed while the new directory was built", {"d": "OLD", ".d.tmpaaaaa.tmp": "EMPTY"}, None, "OLD"),
    ("new directory gone, old one set aside", {".d.oldbbbbb.old/d": "OLD", ".d.swap.json": JOURNAL}, "rolled back", "OLD"),
    ("a journal cut short", {"d": "OLD", ".d.tmpaaaaa.tmp": "NEW", ".d.swap.json": '{"tmp": ".d.tm'}, None, "OLD"),
    ("an older swap without a journal, killed between the renames", {".d.oldbbbbb.old/d": "OLD", ".d.tmpaaaaa.tmp": "NEW"},
     "rolled back", "OLD"),
])
def test_an_interrupted_swap_is_completed_or_rolled_back(tmp_path, case, layout, done, content):
    _make(tmp_path, layout | {"d.other": "NEW", ".d.other.tmpccccc.tmp": "EMPTY"})  # another directory's swap is not touched
    assert recover_dir(tmp_path / "d") == done
    assert (tmp_path / "d" / "v.txt").read_text() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.other.tmpccccc.tmp", "d", "d.other"]


def _kill_at_second_rename(monkeypatch, target: str):
    """os.replace that does the first rename of `target` away, then dies (and every rename after it)."""
    real, state = os.replace, {"moved": False, "dead": False}

    def replace(src, dst):
        if state["dead"] or (state["moved"] and Path(dst).name == target):
            state["dead"] = True
            raise Killed()
        if Path(src).name == target and Path(dst).parent.name.endswith(".old"):
            state["moved"] = True
        return real(src, dst)

    monkeypatch.setattr(records.io.os, "replace", replace)
    return state


def test_a_fault_between_the_renames_is_recovered_by_the_next_reader(tmp_path, monkeypatch):
    _make(tmp_path, {"d": "OLD"})
    _kill_at_second_rename(monkeypatch, "d")
    with pytest.raises(Killed), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "v.txt").write_text("NEW")
    monkeypatch.undo()
    assert not (tmp_path / "d").exists() and len(list(tmp_path.glob(".d.*.old/d"))) == 1 and (tmp_path / ".d.swap.json").exists()
    assert recover_dir(tmp_path / "d") == "completed" and (tmp_path / "d" / "v.txt").read_text() == "NEW"
    assert hidden(tmp_path) == []


def test_an_error_between_the_renames_puts_the_old_directory_back(tmp_path, monkeypatch):
    _make(tmp_path, {"d": "OLD"})
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "d" and Path(src).name.endswith(".tmp"):
            raise OSError(errno.EIO, "input/output error")
        return real(src, dst)

    monkeypatch.setattr(records.io.os, "replace", replace)
    with pytest.raises(OSError, match="input/output"), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "v.txt").write_text("NEW")
    assert (tmp_path / "d" / "v.txt").read_text() == "OLD" and hidden(tmp_path) == []


def test_runs_lists_no_temporary_directory_and_tidies_what_kills_left(tmp_path, cli_world):
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    # a kill between the renames of lora's checkpoint swap; a kill while adapter's checkpoint and state were written
    (runs / ".lora.oldbbbbb.old").mkdir()
    (runs / "lora").rename(runs / ".lora.oldbbbbb.old" / "lora")
    shutil.copytree(runs / ".lora.oldbbbbb.old" / "lora", runs / ".lora.tmpaaaaa.tmp")
    (runs / ".lora.swap.json").write_text(json.dumps({"tmp": ".lora.tmpaaaaa.tmp", "old": ".lora.oldbbbbb.old"}))
    shutil.copytree(runs / "adapter", runs / ".adapter.tmpccccc.tmp")
    (runs / "adapter" / ".state.tmpddddd.tmp").mkdir()
    (runs / "adapter" / ".state.oldeeeee.old").mkdir()
    (runs / "adapter" / ".manifest.json.fffff.tmp").write_text("{")
    result = invoke(["runs", "--runs-dir", runs])
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["run", "adapter", "lora"]
    assert hidden(runs) == [] and {r.name for r in list_runs(runs)} == {"adapter", "lora"}


def test_a_live_writers_temporary_directory_is_left_alone(tmp_path, cli_world):
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    (runs / ".lora.tmpaaaaa.tmp").mkdir()
    with hold(run_lock_path(runs, "lora"), "run 'lora'"):
        assert [r.name for r in list_runs(runs)] == ["adapter", "lora"] and find_run(runs, "lora").finished
        assert (runs / ".lora.tmpaaaaa.tmp").is_dir()
    assert [r.name for r in list_runs(runs)] == ["adapter", "lora"] and hidden(runs) == []


def test_resume_after_a_kill_in_the_state_swap_continues_the_run(tmp_path, monkeypatch, mined_data, tiny_roberta_dir):
    reference = train(tmp_path / "ref", mined_data, tiny_roberta_dir)
    runs = tmp_path / "runs"
    _kill_at_second_rename(monkeypatch, "state")  # the state of step 4 replacing that of step 2
    with pytest.raises(Killed):
        train(runs, mined_data, tiny_roberta_dir)
    monkeypatch.undo()
    assert not (runs / "r" / "state").exists() and list((runs / "r").glob(".state.*.old/state"))
    loaded, real_load = [], train_module.load_state

    def load_state(path, checkpoints):
        state, optimizer_state = real_load(path, checkpoints)
        loaded.append(state.step)
        return state, optimizer_state

    monkeypatch.setattr(train_module, "load_state", load_state)
    resumed = train(runs, mined_data, tiny_roberta_dir, resume=True)
    assert loaded == [4], "resumed from the state of step 4 that the killed swap had written"
    assert resumed["metrics"] == reference["metrics"]
    for name in ("adapter_model.safetensors", "curves.json", "ranks.json"):
        assert (runs / "r" / name).read_bytes() == (tmp_path / "ref" / "r" / name).read_bytes(), name
    assert hidden(runs) == [] and not (runs / "r" / "state").exists()


# -- half-made runs ------------------------------------------------------------------------------

def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, mined_data, tiny_roberta_dir):
    runs = tmp_path / "runs"
    with pytest.raises(InterpError, match=r"step 2: the loss is (nan|inf)"):
        train(runs, mined_data, tiny_roberta_dir, lr=1e30)
    assert not runs.exists()
    with pytest.raises(InterpError, match="fewer than one batch of 64"):
        train(runs, mined_data, tiny_roberta_dir, batch_size=64)
    assert not runs.exists()
    (runs / "r").mkdir(parents=True)  # what a kill before the first checkpoint leaves
    (runs / "r" / "manifest.json").write_text(json.dumps(read_manifest(_finished(tmp_path, mined_data, tiny_roberta_dir)).to_dict() | {"status": "running"}))
    assert train(runs, mined_data, tiny_roberta_dir)["status"] == "finished"  # retried under its name, without --resume
    assert hidden(runs) == []


def _finished(tmp_path: Path, data: Path, base: Path) -> Path:
    train(tmp_path / "done", data, base, max_steps=2)
    return tmp_path / "done" / "r"


# -- damaged run directories ----------------------------------------------------------------------

@pytest.mark.parametrize("change, words", [
    (lambda m: [], "damaged run manifest: a list, not an object"),
    (lambda m: {k: v for k, v in m.items() if k != "base"}, "no 'base'"),
    (lambda m: {k: v for k, v in m.items() if k != "method"}, "no 'method'"),
    (lambda m: {k: v for k, v in m.items() if k != "train"}, "no 'train'"),
    (lambda m: m | {"method": "lora"}, "'method' is a string"),
    (lambda m: m | {"base": m["base"] | {"weights_sha256": 7}}, "base.weights_sha256 is a number, not a string"),
    (lambda m: m | {"train": m["train"] | {"lr": "fast"}}, "'train': `lr` should be a finite number"),
    (lambda m: m | {"train": m["train"] | {"nonsense": 1}}, "'train': "),
    (lambda m: m | {"metrics": {"test_mrr": [0.5]}}, "metrics.test_mrr is a list, not a number"),
    (lambda m: m | {"status": None}, "'status' is null"),
])
def test_a_damaged_manifest_is_named_with_its_key(tmp_path, cli_world, change, words):
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    file = runs / "lora" / "manifest.json"
    file.write_text(json.dumps(change(json.loads(file.read_text()))))
    with pytest.raises(InterpError) as caught:
        find_run(runs, "lora")
    assert str(caught.value).startswith(f"{file}: ") and words in str(caught.value)
    result = invoke(["runs", "--runs-dir", runs])  # the other run is still listed; the damaged one is named
    assert result.exit_code == 0 and [line.split()[0] for line in result.stdout.splitlines()] == ["run", "adapter"]
    assert result.stderr.splitlines() == [f"warning: skipped a damaged run: {caught.value}"]


@pytest.mark.parametrize("text, words", [("{", ":1: not valid JSON"), ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
                                         (b"\xff\xfe{}", "not UTF-8 text")])
def test_an_unreadable_manifest_is_named(tmp_path, text, words):
    (tmp_path / "r").mkdir()
    file = tmp_path / "r" / "manifest.json"
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InterpError, match=rf"^{file}(:1)?: .*"):
        read_manifest(tmp_path / "r")
    assert list_runs(tmp_path) == []


# -- a full disk ---------------------------------------------------------------------------------

def _disk_full_at(monkeypatch, name: str, occurrence: int = 1) -> None:
    """The atomic writer fails with ENOSPC on the `occurrence`-th write of a file called `name`."""
    real, seen = records.io.atomic_open, []

    def atomic_open(path, *args, **kwargs):
        if Path(path).name == name:
            seen.append(path)
            if len(seen) == occurrence:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(records.io, "atomic_open", atomic_open)


def _cli_train(runs: Path, world, *extra: str):
    return invoke(["train", "--name", "r", "--data", world.data, "--base", world.base, "--runs-dir", runs, *CLI_SETTINGS, *extra])


def test_a_full_disk_at_the_first_checkpoint_keeps_nothing(tmp_path, monkeypatch, cli_world):
    runs = tmp_path / "runs"
    runs.mkdir()
    _disk_full_at(monkeypatch, "method.json")  # written into the best delta's directory
    result = _cli_train(runs, cli_world)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: the disk is full: writing the best delta (step 2) into {runs / 'r'} failed; kept: nothing")
    assert list(runs.iterdir()) == []


def test_a_full_disk_after_a_checkpoint_keeps_it_resumable(tmp_path, monkeypatch, cli_world):
    runs = tmp_path / "runs"
    _disk_full_at(monkeypatch, "trainer_state.json", occurrence=2)  # the state of step 4
    result = _cli_train(runs, cli_world)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: the disk is full: writing the state of step 4 into {runs / 'r' / 'state'} failed; "
                               "kept: the last good checkpoint (step ")
    assert lines[0].endswith("continue with --resume")
    assert hidden(runs) == [] and json.loads((runs / "r" / "state" / "trainer_state.json").read_text())["step"] == 2
    monkeypatch.undo()
    resumed = _cli_train(runs, cli_world, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert read_manifest(runs / "r").metrics["steps"] == 4 and hidden(runs) == []


def test_a_full_disk_stops_a_study_and_says_what_was_kept(tmp_path, monkeypatch, mined_data, tiny_roberta_dir):
    from interp.study import Grid, Scale, Table, run_study

    grid = Grid("g", "", (Table("t", "", ("loFF_9-12",)),))  # does not fit the 4-layer base: fails without training
    _disk_full_at(monkeypatch, "tables.json")
    with pytest.raises(DiskFullError, match=r"the disk is full: writing the tables into .*study/g failed; kept: every run"):
        run_study(grid=grid, seeds=(1,), scale=Scale("tiny", (("max_len", 32),), 16, 8), data_dir=mined_data, runs_dir=tmp_path,
                  base=str(tiny_roberta_dir), device="cpu", progress=False, log=lambda line: None)
    assert hidden(tmp_path) == [] and not (tmp_path / "study" / "g" / "tables.json").exists()
