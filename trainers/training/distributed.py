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
launch for any target (the analyses start `-m interp` itself, `interp.commands.launching`): the
first launched process to fail reports why through a file (`end_failed`) and exits with
status 1, torchrun stops the others at once (not at a collective's 30-minute timeout), and the
launching process raises that failure as its one error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
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


ERROR_FILE_ENV = "INTERP_ERROR_FILE"  # where the first of `run_launcher`'s processes to fail says why (JSON)


def end_failed(failure: BaseException | str) -> None:
    """In a process that `run_launcher` started: tell the launching process why this one fails, and end it at once.

    `failure`: an InterpError or a message (told as one line), or an unexpected exception (told as
    "TYPE: MESSAGE" with its traceback). Only the first process to fail is told of (an atomic link
    claims the error file); the others fail because it did (a peer gone in a collective) and add
    nothing. The process ends with status 1, printing nothing and skipping the interpreter's
    teardown (`os._exit`: about 1.5 s with torch loaded, and it may wait on a collective), so that
    torchrun's agent sees the exit within its poll (0.1 s) and stops the other processes (SIGTERM);
    the launching process prints the failure once. Returns only in a process `run_launcher` did
    not start (nothing is done).
    """
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return
    unexpected = isinstance(failure, BaseException) and not isinstance(failure, InterpError)
    message = f"{type(failure).__name__}: {failure}" if unexpected else str(failure)
    trace = "".join(traceback.format_exception(failure)) if unexpected else ""
    rank = process_rank()
    mine = Path(f"{path}.{rank}")
    mine.write_text(json.dumps({"process": rank, "processes": launched_processes(), "message": " ".join(message.split()),
                                "traceback": trace}))
    try:
        os.link(mine, path)
    except FileExistsError:  # another process failed first
        pass
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(1)


def launcher_main() -> None:
    """`accelerate launch ARGS` (ARGS: sys.argv[1:]) as `run_launcher` starts it.

    When a process reported its failure (`end_failed`), torchrun's own account of it (its
    agent's log lines, the ChildFailedError block, accelerate's traceback) is left out: the
    launching process prints the failure once. Any other failure (a process killed, a crash before
    the CLI) keeps torchrun's account, shown when the launcher ends; exit status 1.
    """
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    held: list[logging.LogRecord] = []
    elastic = logging.getLogger("torch.distributed.elastic")  # the agent: "Sending process N closing signal SIGTERM", ...
    handler = logging.Handler()
    handler.emit = held.append
    elastic.addHandler(handler)
    elastic.propagate = False
    try:
        launch_command(launch_command_parser().parse_args(sys.argv[1:]))
    except ChildFailedError as exc:
        if _failure_reported():
            sys.stderr.flush()
            os._exit(1)  # at once: the launching process is waiting to print the failure (a teardown costs about 1 s)
        print(exc, file=sys.stderr)
        sys.exit(1)
    finally:  # what the agent logged, unless the failure it tells of was reported
        elastic.removeHandler(handler)
        elastic.propagate = True
        if not _failure_reported():
            for record in held:
                elastic.handle(record)


def _failure_reported() -> bool:
    path = os.environ.get(ERROR_FILE_ENV)
    return bool(path) and Path(path).is_file()


def run_launcher(target: list[str], *, num_processes: int, what: str, error: Path) -> None:
    """`accelerate launch --multi_gpu` of `num_processes` copies of `python TARGET...` (torchrun underneath) and wait.

    A process that fails (an InterpError, or any exception the CLI or the training worker catches)
    reports it through `error` and exits with status 1 (`end_failed`); torchrun then stops the
    others within a second, and the first failure is raised here as one InterpError, "process R of
    N: MESSAGE", after the traceback of that process for an unexpected exception (printed here,
    once). Another failure (a process killed, say): an InterpError naming `what` (e.g. "training
    processes") and the launcher's exit status, after torchrun's account of it.
    """
    command = [
        sys.executable, "-c", "from trainers.training.distributed import launcher_main; launcher_main()",
        "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1", "--main_process_port", "0",
        "--mixed_precision", "no", "--dynamo_backend", "no", *target,
    ]
    launcher = subprocess.Popen(command, env={**os.environ, ERROR_FILE_ENV: str(error)})
    try:
        returncode = launcher.wait()
    except KeyboardInterrupt:  # the launcher got it too: let it stop its processes (not kill it, orphaning them)
        launcher.wait()
        raise
    if error.is_file():
        failure = json.loads(error.read_text())
        if failure["traceback"]:
            sys.stderr.write(failure["traceback"].rstrip("\n") + "\n")
            sys.stderr.flush()
        raise InterpError(f"process {failure['process']} of {failure['processes']}: {failure['message']}")
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
            "progress": progress,
        }))
        run_launcher(["-m", "trainers.training.worker", str(job)], num_processes=num_processes, what="training processes", error=error)
