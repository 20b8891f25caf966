"""Commands on several processes: `--num-processes N`, or `accelerate launch --multi_gpu --num_processes N -m interp ...`.

`eval`, `attn-diff`, `ablate`, `cka`, `qualitative` and `compare` call `on_processes` once their
options are checked and before any model loads (the analyses through `run_analysis_on`):

    ran = launching.run_analysis_on(num_processes, Ablation, command="ablate", runs_dir=..., device=..., ...)
    if ran is None:
        return  # N launched processes ran the command and printed its output

In a process that no launcher started, with N > 1: `check` runs here (the analysis's `prepare`,
which loads nothing), so bad input gets one `error:` line and exit status 2 before anything
starts; then `accelerate launch --multi_gpu` runs `python -m interp` with the same arguments
less `--num-processes` on N processes (`trainers.training.distributed.run_launcher`; torchrun:
NCCL between GPUs, one GPU each; gloo between CPU processes) and this process waits. The first
of them to fail (an InterpError, or any exception: an out-of-memory, a bug hit by one share)
reports it through a file and exits with status 1, printing nothing (`end_if_launched`); torchrun
stops the others at once (they would otherwise wait in their next collective for its 30-minute
timeout), and this process prints that failure once: the traceback of an unexpected exception,
then one `error: process R of N: ...` line, exit status 2. Results are written only by process
0 after the last collective, so a failure in the computation leaves no result behind.

In a launched process: the process group is set up (accelerate's `PartialState`), every process
computes its share (`trainers.parallel`, `trainers.training.evaluate.embed_all`) and gets the
whole result, and only process 0 prints (the others' stdout goes to /dev/null) and writes
(`running.run_analysis`, eval's outputs check `parallel.is_main()`).

N = 1 (or no `--num-processes` and no launcher) runs in this process as before.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

NUM_PROCESSES_OPTION = "--num-processes"
ERROR_FILE_ENV = "INTERP_ERROR_FILE"  # trainers.training.distributed.ERROR_FILE_ENV (that module imports torch)
ARGV_KEY = "interp.argv"  # the command line the CLI parsed, kept in the click context's meta (interp.cli._Group)


def on_processes(num_processes: int | None, *, device: str, command: str, check: Callable[[], object] | None = None) -> bool:
    """True when `num_processes` launched processes ran the command (this process has nothing left to do).

    False: go on here, as the only process or as one of the processes a launcher started (the
    process group is then set up). InterpError for N < 1, N other than the launched count, more
    processes than GPUs on CUDA, or whatever `check` or the launched processes raise.
    """
    from records.errors import InterpError
    from trainers.training.distributed import check_processes, check_single_launch, launched_processes, run_launcher

    if num_processes is not None and num_processes < 1:
        raise InterpError(f"{NUM_PROCESSES_OPTION} {num_processes}: should be at least 1")
    launched = launched_processes()
    if launched > 1:
        if num_processes is not None and num_processes != launched:
            raise InterpError(f"{NUM_PROCESSES_OPTION} {num_processes}, but this process was launched as one of {launched}")
        join_processes(device)
        return False
    if num_processes is None or num_processes == 1:
        if num_processes is None:
            check_single_launch(command)
        return False
    check_processes(num_processes, device)
    if check is not None:
        check()
    argv = _command_line()
    with tempfile.TemporaryDirectory(prefix="interp-launch-") as tmp:
        run_launcher(["-m", "interp", *without_processes(argv)], num_processes=num_processes, what=f"`interp {command}` processes",
                     error=Path(tmp) / "error.txt")
    return True


def run_analysis_on(num_processes: int | None, analysis, *, command: str, **arguments):
    """`running.run_analysis(analysis, **arguments)` here, or on `num_processes` launched processes (then None:
    they printed the command's output); the launching process checks the inputs first (`running.check_analysis`).
    The processes run on `arguments["device"]` (auto when the analysis takes none)."""
    from interp.analyses.running import check_analysis, run_analysis

    device = arguments.get("device", "auto")
    if on_processes(num_processes, device=device, command=command, check=lambda: check_analysis(analysis, **arguments)):
        return None
    return run_analysis(analysis, **arguments)


def join_processes(device: str) -> None:
    """In a launched process: the process group (accelerate's `PartialState`: gloo on the CPU, NCCL on CUDA,
    each process on its own GPU); the processes other than 0 print nothing on stdout."""
    from accelerate import PartialState

    from trainers.devices import check_device

    state = PartialState(cpu=not check_device(device))
    if not state.is_main_process:
        sys.stdout = open(os.devnull, "w")  # for the life of the process


def without_processes(argv: list[str]) -> list[str]:
    """`argv` less `--num-processes N` / `--num-processes=N` (the launched processes learn N from the launcher)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == NUM_PROCESSES_OPTION:
            skip = True
        elif not arg.startswith(NUM_PROCESSES_OPTION + "="):
            out.append(arg)
    return out


def _command_line() -> list[str]:
    """The arguments the `interp` command line was given (after the program name)."""
    from typer._click.globals import get_current_context  # typer ships its own click

    from records.errors import InterpError

    ctx = get_current_context(silent=True)
    argv = ctx.meta.get(ARGV_KEY) if ctx is not None else None
    if argv is None:
        raise InterpError(f"{NUM_PROCESSES_OPTION} above 1 starts `interp` itself again: call it from the command line "
                          "(or start the script under `accelerate launch --multi_gpu`)")
    return list(argv)


def end_if_launched(failure: BaseException | str) -> None:
    """In a process launched by `on_processes`: tell the launching process why this one fails (an InterpError or
    message: one line; another exception: with its traceback), unless another failed first, and end this process
    at once with status 1, printing nothing (`distributed.end_failed`). Elsewhere: nothing (it returns)."""
    if not os.environ.get(ERROR_FILE_ENV):  # a usage error in one process is told without importing torch
        return
    from trainers.training.distributed import end_failed

    end_failed(failure)
