"""Data parallel on 2 CPU processes (gloo), through accelerate: the same run as on 1 process.

The base is the tiny random RoBERTa with dropout switched off: with dropout, each process
draws its own masks and the runs agree only in distribution. Without it, 2 processes on the
same global batches must give the loss and the gradient norm of 1 process at every step
(the gradient norm catches a wrong scaling, which AdamW would hide from the loss), within
float32 reduction-order noise: rtol 1e-4 (measured: about 1e-6 on the loss, 1e-5 on the norm).
Two launches of 2 processes (killed, resumed), about 10 s each on 2 cores, mostly importing torch.
Random batches are encoded in micro-batches: one more pair of processes (spawned, gloo, float64)
checks that slices cut differently still make equal numbers of DDP calls and give one pass's gradient.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from typer.testing import CliRunner

from trainers import methods
from records.errors import InterpError
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.training.batching import Tokenized, embed_side, epoch_order, iterate_batches, make_batch, micro_batches, shard
from trainers.training.distributed import gather_codes
from trainers.training.loop import TrainConfig, contrastive_loss
from trainers.training.splits import tokenize_examples
from trainers.training.runs import find_run
from trainers.training.scoring import evaluate_run
from trainers.training.train import RunSpec, train_run

RTOL = 1e-4  # 1 vs 2 processes: the same sums in another order, in float32
STEPS, EVERY = 40, 10  # 20 steps an epoch (160 pairs / 8), 2 evaluations an epoch
TRAIN = {"name": "dp", "preset": "lora64", "batch_size": 8, "epochs": 2, "evals_per_epoch": 2, "max_steps": STEPS,
         "max_len": 32, "lr": 1e-3, "seed": 11, "train_limit": 160, "eval_limit": 21}  # 21: unequal evaluation shards


@pytest.fixture(scope="module")
def base(tiny_roberta_dir, tmp_path_factory) -> Path:
    """The tiny RoBERTa with dropout off (same weights, so the same weights hash)."""
    path = tmp_path_factory.mktemp("tiny-roberta-no-dropout")
    shutil.copytree(tiny_roberta_dir, path, dirs_exist_ok=True)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
    return path


def spec_cfg(data: Path, base: Path, **kw) -> tuple[RunSpec, TrainConfig]:
    t = TRAIN | kw
    spec = RunSpec(name=t["name"], method=methods.get_preset(t["preset"]), data_dir=data, preset=t["preset"], base=str(base),
                   train_limit=t["train_limit"], eval_limit=t["eval_limit"])
    cfg = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], seed=t["seed"], evals_per_epoch=t["evals_per_epoch"],
                      max_steps=t["max_steps"], max_len=t["max_len"])
    return spec, cfg


def cli_args(runs_dir: Path, data: Path, base: Path, *extra: str) -> list[str]:
    t = TRAIN
    return ["train", "--name", t["name"], "--preset", t["preset"], "--data", str(data), "--base", str(base), "--runs-dir", str(runs_dir),
            "--batch-size", str(t["batch_size"]), "--epochs", str(t["epochs"]), "--evals-per-epoch", str(t["evals_per_epoch"]),
            "--max-steps", str(t["max_steps"]), "--max-len", str(t["max_len"]), "--lr", str(t["lr"]), "--seed", str(t["seed"]),
            "--train-limit", str(t["train_limit"]), "--eval-limit", str(t["eval_limit"]), "--no-progress", *extra]


def read(run: Path, name: str) -> dict:
    return json.loads((run / name).read_text())


@pytest.fixture(scope="module")
def one_and_two(mined_data, base, tmp_path_factory) -> tuple[Path, Path]:
    """The same run on 1 process (in this one) and on 2 (`interp train --num-processes 2`), the
    latter killed after its first saved state and resumed (one launch fewer than a separate
    uninterrupted run: the tests stay short)."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    spec, cfg = spec_cfg(mined_data, base)
    train_run(spec, cfg, runs_dir=one, device="cpu", progress=False)

    command = [sys.executable, "-m", "interp", *cli_args(two, mined_data, base, "--num-processes", "2", "--device", "cpu")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = two / "dp" / "state" / "trainer_state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["step"] >= EVERY:
            # torchrun starts each training process in a session of its own: kill the whole tree.
            tree = psutil.Process(proc.pid)
            for p in [*tree.children(recursive=True), tree]:
                p.kill()
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert read(two / "dp", "manifest.json")["status"] == "running"
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("dp: best valid MRR") == 1  # the main process reports, once
    return one / "dp", two / "dp"


def test_two_processes_give_the_loss_and_gradients_of_one(one_and_two):
    """Killed and resumed on 2 processes, the curve is the one of an uninterrupted single process.

    Valid MRRs are not compared across process counts: the tiny random model scores nearly
    every code alike (near ties), so float noise in the weights reorders codes. The evaluation
    itself is checked exactly below.
    """
    one, two = one_and_two
    a, b = read(one, "curves.json"), read(two, "curves.json")
    assert len(a["loss"]) == len(b["loss"]) == STEPS
    assert b["loss"] == pytest.approx(a["loss"], rel=RTOL)
    assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=RTOL)
    assert a["loss"][0] != a["loss"][-1]  # it trained
    assert [v["step"] for v in b["valid"]] == [v["step"] for v in a["valid"]] == list(range(EVERY, STEPS + 1, EVERY))
    assert read(one, "manifest.json")["num_processes"] == 1 and read(two, "manifest.json")["num_processes"] == 2
    assert read(two, "manifest.json")["train"]["batch_size"] == 8  # the global batch
    assert read(two, "manifest.json")["status"] == "finished" and not (two / "state").exists()


def test_two_process_metrics_count_every_example_once(one_and_two, mined_data, tmp_path):
    """The sharded test evaluation equals one process re-scoring the saved best delta, rank for rank."""
    _, two = one_and_two
    ranks = read(two, "ranks.json")["ranks"]
    assert len(ranks) == TRAIN["eval_limit"]
    subset = tmp_path / "test.jsonl"
    lines = [line for line in (mined_data / "test.jsonl").read_text().splitlines() if str(json.loads(line)["idx"]) in ranks]
    subset.write_text("\n".join(lines) + "\n")
    again = evaluate_run(find_run(two.parent, "dp"), data_file=subset, device="cpu", progress=False)
    assert [ranks[str(json.loads(line)["idx"])] for line in lines] == again.evaluation.ranks.tolist()
    assert read(two, "manifest.json")["metrics"]["test_mrr"] == pytest.approx(again.evaluation.mrr, abs=1e-9)
    best = max(read(two, "curves.json")["valid"], key=lambda v: v["mrr"])
    assert read(two, "manifest.json")["metrics"]["valid_mrr"] == best["mrr"]


def _micro_batch_worker(rank: int, world: int, port: int, base: str, tok: Tokenized, index: list[int], out: str) -> None:
    """One of `world` gloo processes: its slice of the random batch `index`, micro-batched, under DDP."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    encoder, model = float64_model(base)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    batch = make_batch(tok, index, "random", rank=rank, world=world, call_cost=MICRO_CALL_COST)
    embed = lambda ids, mask: encoder.embed(ids, mask, model=ddp)  # noqa: E731
    query, code = embed_side(embed, batch.query), embed_side(embed, batch.code)  # (b, H) each
    loss = contrastive_loss(query, gather_codes(code), offset=rank * len(query))
    loss.backward()  # DDP averages the gradients over the processes
    if rank == 0:
        torch.save({n: p.grad for n, p in model.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


MICRO_CALL_COST = 8  # small: the slices are cut into several micro-batches


def float64_model(base: str):
    """The dropout-free tiny RoBERTa, every weight trained, in float64 (exact enough to compare sums in another order)."""
    encoder = load_encoder(base)
    model = methods.apply_method(encoder, methods.FullConfig()).double()
    model.eval()  # dropout is off in the config already; eval() keeps it so
    return encoder, model


def test_micro_batches_on_two_processes_give_the_gradient_of_one_pass(base, mined_data, tmp_path):
    """Two gloo processes whose slices would be cut into different numbers of micro-batches make the same
    number of forward calls (DDP hangs otherwise: every call is a collective) and together give the
    gradient of one process encoding the whole batch in one padded pass."""
    import socket

    import torch.multiprocessing as mp

    tok = tokenize_examples(load_encoder(str(base)), load_split(mined_data, "train"), 128)
    natural = lambda index: [len(micro_batches([len(tok.code_ids[i]) for i in shard(index, r, 2)], MICRO_CALL_COST)) for r in range(2)]  # noqa: E731
    index = next(b for b in epoch_order(tok, 8, seed=0, epoch=0) if len(set(natural(b))) > 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "grads.pt"
    context = mp.start_processes(_micro_batch_worker, args=(2, port, str(base), tok, index, str(out)), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.time() + 180
    while not context.join(timeout=1):
        if time.time() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the two processes did not finish: unequal numbers of forward calls under DDP?")
    two = torch.load(out, weights_only=True)

    encoder, model = float64_model(str(base))
    batch = make_batch(tok, index, "bucketed")  # the same pairs, one pass per side
    assert len(batch.code.parts) == 1
    embed = lambda ids, mask: encoder.embed(ids, mask, model=model)  # noqa: E731
    contrastive_loss(embed_side(embed, batch.query), embed_side(embed, batch.code)).backward()
    one = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert one.keys() == two.keys() and len(one) > 20
    scale = max(g.abs().max().item() for g in one.values())
    for name, grad in one.items():
        torch.testing.assert_close(two[name], grad, rtol=0, atol=1e-9 * scale, msg=name)


def test_each_process_takes_its_slice_of_the_same_global_batches():
    tok = Tokenized([[0, 5]] * 40, [[0] + [7] * (1 + i % 9) for i in range(40)], pad_id=1)
    batches = epoch_order(tok, 8, seed=3, epoch=0)
    alone = [b.index for b in iterate_batches(tok, batches)]
    shares = [[b.index for b in iterate_batches(tok, batches, start=1, rank=r, world=4)] for r in range(4)]
    assert [sum((s[i] for s in shares), []) for i in range(len(alone) - 1)] == alone[1:]
    assert all(len(index) == 2 for s in shares for index in s)


@pytest.mark.parametrize(
    "kwargs, env, message",
    [
        ({"batch_size": 6, "num_processes": 4}, {}, r"--batch-size 6 is the global batch and does not split evenly over 4 processes \(--num-processes 4\)"),
        ({"batch_size": 8, "num_processes": 0}, {}, r"--num-processes should be at least 1, got 0"),
        ({"batch_size": 8, "num_processes": 3}, {"WORLD_SIZE": "2", "RANK": "0"}, r"--num-processes 3, but this process was launched as one of 2"),
        ({"batch_size": 8, "num_processes": None}, {"WORLD_SIZE": "3", "RANK": "0"}, r"--batch-size 8 .* over 3 processes"),
        ({"batch_size": 8, "num_processes": None}, {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}, r"accelerate launch started a single process"),
        pytest.param({"batch_size": 8, "num_processes": 2, "device": "cuda"}, {}, r"--device cuda: no CUDA device",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
        ({"batch_size": 8, "num_processes": 2, "device": "tpu"}, {}, r"--device should be auto, cpu or cuda, got 'tpu'"),
    ],
)
def test_bad_process_settings_are_refused_before_anything_starts(kwargs, env, message, tmp_path, monkeypatch, mined_data):
    for name in ("WORLD_SIZE", "RANK", "ACCELERATE_USE_CPU", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec, cfg = spec_cfg(mined_data, Path("unused"), batch_size=kwargs["batch_size"])
    with pytest.raises(InterpError, match=message):
        train_run(spec, cfg, runs_dir=tmp_path, device=kwargs.get("device", "cpu"), progress=False, num_processes=kwargs["num_processes"])
    assert not any(tmp_path.iterdir())


def test_resume_on_another_number_of_processes_is_refused(one_and_two, mined_data, base, tmp_path):
    one, _ = one_and_two
    shutil.copytree(one, tmp_path / "dp")
    manifest = read(tmp_path / "dp", "manifest.json")
    (tmp_path / "dp" / "manifest.json").write_text(json.dumps(manifest | {"status": "running", "num_processes": 2}))
    spec, cfg = spec_cfg(mined_data, base)
    with pytest.raises(InterpError, match="started on 2 processes; resume it with --num-processes 2, not 1"):
        train_run(spec, cfg, runs_dir=tmp_path, device="cpu", resume=True, progress=False, num_processes=1)


def test_cli_names_the_option_and_exits_2(tmp_path, mined_data, base):
    from interp.cli import app

    result = CliRunner().invoke(app, cli_args(tmp_path, mined_data, base, "--num-processes", "2", "--batch-size", "5"))
    assert result.exit_code == 2
    assert "error: --batch-size 5 is the global batch" in result.output and "--num-processes 2" in result.output
    assert not any(tmp_path.iterdir())
