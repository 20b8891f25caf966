"""One of 2 launched processes fails mid-computation: all stop at once, with one error line.

`interp eval --num-processes 2` on the tiny `lora` run of `cli_world`, with predictions: process
1 fails when it embeds the codes, after the queries were embedded and gathered (one collective
done, process 0 waiting in the next). Without stopping the others, process 0 would wait there
for gloo's 30-minute timeout (NCCL's too) or die of a lost peer with a traceback of its own.
Expected: the command ends within seconds of the failure (a launch of 2 processes costs about
10 s here, mostly importing torch; limit 60 s), exit status 2, one `error:` line, last, that
names process 1 and carries its message; for an unexpected exception (a RuntimeError) that
process's traceback printed once before it, and nothing of torchrun's; nothing on disk changed.

No hook in the product: the test's script is both the launching process (it has
`run_launcher` start the script itself instead of `python -m interp`) and the launched ones
(process 1 replaces `evaluate._embed_positions` with one that fails at its second call), and
calls the CLI's `main` in each.
"""

from __future__ import annotations

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
        from trainers.training import evaluate

        real, calls = evaluate._embed_positions, []

        def embed_positions(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:  # the codes: the queries were embedded and gathered
                raise {error}("{message}")
            return real(*args, **kwargs)

        evaluate._embed_positions = embed_positions
else:  # the launching process: start this script again, not `python -m interp`
    launch = distributed.run_launcher

    def run_launcher(target, **kwargs):
        assert target[:2] == ["-m", "interp"], target
        launch([__file__, *target[2:]], **kwargs)

    distributed.run_launcher = run_launcher

from interp.cli import main

sys.argv[0] = "interp"
main()
'''
LIMIT_S = 60  # a launch costs about 10 s; a process left waiting in a collective would take gloo's 30 minutes


@pytest.mark.parametrize(
    "error, message, traceback",
    [
        ("InterpError", "the codes of process 1 cannot be embedded", False),
        ("RuntimeError", "CUDA out of memory on process 1 (simulated)", True),
    ],
)
def test_a_failure_in_one_process_stops_all_with_one_error(cli_world, tmp_path, error, message, traceback):
    runs, predictions = tmp_path / "runs", tmp_path / "predictions.jsonl"
    shutil.copytree(cli_world.runs, runs)
    script = tmp_path / "fail_on_process_1.py"
    script.write_text(SCRIPT.format(error=error, message=message))
    before = snapshot(tmp_path)
    start = time.monotonic()
    failed = subprocess.run(
        [sys.executable, str(script), "eval", "lora", "--data", str(cli_world.data / "train.jsonl"), "--device", "cpu",
         "--runs-dir", str(runs), "--no-progress", "--predictions", str(predictions), "--num-processes", "2"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    seconds = time.monotonic() - start
    stderr = failed.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 2 and errors == [f"error: process 1 of 2: {message if error == 'InterpError' else f'{error}: {message}'}"], stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0]  # last: nothing the launcher printed buries it
    assert seconds < LIMIT_S, seconds
    assert stderr.count("Traceback (most recent call last)") == (1 if traceback else 0), stderr
    if traceback:
        assert f"{error}: {message}\n" in stderr and "in embed_positions" in stderr  # the failing process's own
    for torchrun in ("ChildFailedError", "SIGTERM", "Connection", "[rank0]"):
        assert torchrun not in stderr, stderr
    assert failed.stdout == ""
    assert snapshot(tmp_path) == before  # no predictions, nothing in the runs
