"""Data-parallel training on several processes, started through accelerate's launcher.

A run on N processes trains on the same global batches, in the same order, as a run on one.
Each process embeds its 1/N slice of every batch; `gather_codes` collects the code embeddings
of the whole batch (with autograd), so every query is scored against every code of the global
batch, as the study's objective (Eq. 4.1) needs. The backward of the gather sums, for each
process's codes, the gradients of every process's loss; DDP then averages over the N
processes, so the gradient is that of the mean loss over the global batch: one process's.
Under DDP every forward call is a collective (it broadcasts the buffers), so all processes
must make the same number of calls per step: a random batch's slices are cut into the same
number of micro-batches on every process (`batching.shard_groups`).

`launch` starts N copies of `worker.py` through `accelerate launch --multi_gpu` (torchrun
underneath: NCCL between GPUs, gloo between CPU processes) and waits for them. Only the main
process writes; the others wait for it (see `train.RunCheckpoints`). `run_launcher` is that
launch for any target (the analyses start `-m interp` itself, `interp.commands.launching`): an
InterpError in a launched process comes back through a file as the launching process's one error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from trainers.devices import check_device
from records.errors import InterpError

WORLD_ENV = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
RANK_ENV = ["RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"]


def _int_env(names: list[str], default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def launched_processes() -> int:
    """How many processes the launcher that started this one started; 1 when none did."""
    return _int_env(WORLD_ENV, 1)


def process_rank() -> int:
    """This process's rank among them (0: the main process, the one that writes)."""
    return _int_env(RANK_ENV, 0)


def check_batch_split(batch_size: int, processes: int) -> None:
    """The global batch must split evenly: every process gets the same share of it."""
    if processes < 1:
        raise InterpError(f"--num-processes should be at least 1, got {processes}")
    if batch_size % processes:
        raise InterpError(
            f"--batch-size {batch_size} is the global batch and does not split evenly over {processes} processes "
            f"(--num-processes {processes}); use a multiple of {processes}"
        )


def check_single_launch(command: str = "train") -> None:
    """`accelerate launch --num_processes N` without GPUs starts ONE process (its simple launcher): say so."""
    if launched_processes() == 1 and "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ:
        raise InterpError(
            "accelerate launch started a single process although --num_processes is above 1: without several GPUs, "
            "accelerate starts several processes only with --multi_gpu (torchrun; CPU processes then use gloo). "
            f"Use `accelerate launch --multi_gpu --num_processes N -m interp {command} ...` or `interp {command} --num-processes N ...`"
        )


def gather_codes(code: torch.Tensor) -> torch.Tensor:
    """(b, H) on each of N processes -> (N * b, H), process 0's rows first; differentiable.

    The identity when there is one process.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return code
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated for a private replacement; this one is public and differentiable
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(code), dim=0)


# -- launching --------------------------------------------------------------------------------

def check_processes(num_processes: int, device: str) -> bool:
    """Whether `device` means CUDA here; InterpError for fewer than 1 process, or more than the GPUs (one process each)."""
    if num_processes < 1:
        raise InterpError(f"--num-processes should be at least 1, got {num_processes}")
    use_cuda = check_device(device)
    if use_cuda and num_processes > torch.cuda.device_count():
        raise InterpError(
            f"--num-processes {num_processes}: there are only {torch.cuda.device_count()} CUDA devices here "
            "(one process per GPU); use fewer processes, or --device cpu"
        )
    return use_cuda


ERROR_FILE_ENV = "INTERP_ERROR_FILE"  # where a launched process puts its InterpError (process r > 0: this name + f".{r}")


def error_file_of(rank: int) -> Path | None:
    """Where launched process `rank` writes its InterpError for the launching process; None when not launched by it."""
    path = os.environ.get(ERROR_FILE_ENV)
    return None if not path else Path(path) if rank == 0 else Path(f"{path}.{rank}")


def run_launcher(target: list[str], *, num_processes: int, what: str, error: Path) -> None:
    """`accelerate launch --multi_gpu` of `num_processes` copies of `python TARGET...` (torchrun underneath) and wait.

    A process that fails with an InterpError writes its message to `error` (process 0; process r to
    `error`.r, see `error_file_of`) and exits; that message is raised here as one InterpError, so the
    user reads one `error:` line after anything the launcher printed. Another failure: an InterpError
    naming `what` (e.g. "training processes") and the launcher's exit status.
    """
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no", *target,
    ]
    launcher = subprocess.Popen(command, env={**os.environ, ERROR_FILE_ENV: str(error)})
    try:
        returncode = launcher.wait()
    except KeyboardInterrupt:  # the launcher got it too: let it stop its processes (not kill it, orphaning them)
        launcher.wait()
        raise
    written = [f for f in (error, *sorted(error.parent.glob(error.name + ".*"))) if f.is_file()]
    if written:
        raise InterpError(written[0].read_text().strip())
    if returncode != 0:
        raise InterpError(f"the {num_processes} {what} failed (exit status {returncode}); see their output above")


def launch(spec, cfg, *, runs_dir: Path, device: str, resume: bool, progress: bool, num_processes: int) -> None:
    """Run `train.train_run(spec, cfg, ...)` on `num_processes` processes; InterpError if they fail."""
    check_processes(num_processes, device)
    with tempfile.TemporaryDirectory(prefix="interp-launch-") as tmp:
        job, error = Path(tmp) / "job.json", Path(tmp) / "error.txt"
        job.write_text(json.dumps({
            "spec": {**asdict(spec), "method": spec.method.to_dict(), "data_dir": str(spec.data_dir)},
            "cfg": asdict(cfg), "runs_dir": str(runs_dir), "device": device, "resume": resume,
            "progress": progress, "error_file": str(error),
        }))
        run_launcher(["-m", "trainers.training.worker", str(job)], num_processes=num_processes, what="training processes", error=error)
