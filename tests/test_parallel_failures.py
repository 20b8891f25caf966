"""One of 2 launched processes fails mid-computation: all stop at once, with one error line.

`interp eval --num-processes 2` on the tiny `lora` run of `cli_world`, with predictions: process
1 fails when it embeds the codes, after the queries were embedded and gathered (one collective
done, process 0 waiting in the next); `interp train --num-processes 2`: process 1 fails computing
the loss of step 3 (process 0 waits in the gradients' all-reduce). Without stopping the others,
process 0 would wait there for the collective's timeout (30 minutes; NCCL's too) or die of a lost
peer (gloo) with a traceback of its own and torchrun's ChildFailedError account after it.
Expected: the command ends within seconds of the failure (a launch of 2 processes costs about
10 s here, mostly importing torch; limit 60 s; the error line comes about 0.1 s after the
failure), exit status 2, one `error:` line, last, that names process 1 and carries its message;
for an unexpected exception (a RuntimeError) that process's traceback printed once before it;
nothing of torchrun's; nothing on disk changed (training: the run left as a killed one).

No hook in the product: the test's script is both the launching process (it has
`run_launcher` start the script itself instead of `python -m interp` or the training worker)
and the launched ones (process 1 replaces a function the computation calls with one that fails
at its Nth call), and calls the CLI's `main` (or the worker's) in each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers import snapshot, single_thread  # noqa: F401 (an autouse fixture)

SCRIPT = '''
import sys

from records.errors import InterpError
from trainers.training import distributed

if distributed.launched_processes() > 1:  # one of the launched processes
    if distributed.process_rank() == 1:
        from {module} import {function} as real
        import {module} as patched

        calls = []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == {call}:
                raise {error}("{message}")
            return real(*args, **kwargs)

        patched.{function} = failing
    if sys.argv[1] == "--worker":  # a training process
        from trainers.training.worker import main

        main(sys.argv[2])
        sys.exit(0)
else:  # the launching process: start this script again, not `python -m interp` or `-m trainers.training.worker`
    launch = distributed.run_launcher

    def run_launcher(target, **kwargs):
        module = {{"interp": [], "trainers.training.worker": ["--worker"]}}[target[1]]
        launch([__file__, *module, *target[2:]], **kwargs)

    distributed.run_launcher = run_launcher

from interp.cli import main

sys.argv[0] = "interp"
main()
'''
EVAL = (["eval", "lora", "--data", "{data}/train.jsonl", "--device", "cpu", "--predictions", "{out}/predictions.jsonl"],
        "trainers.training.evaluate", "_embed_positions", 2)  # the codes: the queries were embedded and gathered
TRAIN = (["train", "--name", "dp", "--preset", "lora64", "--data", "{data}", "--base", "{base}", "--batch-size", "8",
          "--max-steps", "20", "--max-len", "32", "--train-limit", "160", "--eval-limit", "21", "--device", "cpu"],
         "trainers.training.loop", "contrastive_loss", 3)  # the loss of step 3: process 0 then waits in the gradients' all-reduce
LIMIT_S = 60  # a launch costs about 10 s; a process left waiting in a collective would take gloo's 30 minutes


@pytest.mark.parametrize(
    "command, error, message",
    [
        (EVAL, "InterpError", "the codes of process 1 cannot be embedded"),
        (EVAL, "RuntimeError", "CUDA out of memory on process 1 (simulated)"),
        (TRAIN, "RuntimeError", "a bug hit by process 1 at step 3 (simulated)"),
    ],
    ids=["eval-InterpError", "eval-RuntimeError", "train-RuntimeError"],
)
def test_a_failure_in_one_process_stops_all_with_one_error(cli_world, tmp_path, command, error, message):
    args, module, function, call = command
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    script = tmp_path / "fail_on_process_1.py"
    script.write_text(SCRIPT.format(module=module, function=function, call=call, error=error, message=message))
    filled = [a.format(data=cli_world.data, base=cli_world.base, out=tmp_path) for a in args]
    before = snapshot(tmp_path)
    start = time.monotonic()
    failed = subprocess.run([sys.executable, str(script), *filled, "--runs-dir", str(runs), "--no-progress", "--num-processes", "2"],
                            capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.monotonic() - start
    stderr = failed.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    told = message if error == "InterpError" else f"{error}: {message}"
    assert failed.returncode == 2 and errors == [f"error: process 1 of 2: {told}"], stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]  # last: nothing the launcher printed buries it
    assert seconds < LIMIT_S, seconds
    assert stderr.count("Traceback (most recent call last)") == (error != "InterpError"), stderr
    if error != "InterpError":
        assert f"{error}: {message}\n" in stderr and "in failing" in stderr  # the failing process's own traceback
    for torchrun in ("ChildFailedError", "SIGTERM", "exitcode", "Connection", "gloo"):  # nothing of torchrun's, nor of a lost peer
        assert torchrun not in stderr, stderr
    after = snapshot(tmp_path)
    if args[0] == "train":  # a run stopped midway, as after a kill: resumable (--resume), no best delta yet
        run = json.loads((runs / "dp" / "manifest.json").read_text())
        assert run["status"] == "running" and not (runs / "dp" / "best").exists()
        after = {path: v for path, v in after.items() if not path.startswith("runs/dp")}
    else:
        assert failed.stdout == ""
    assert after == before  # no predictions, nothing else in the runs
