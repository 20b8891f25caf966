"""Analyses on 2 CPU processes (gloo, through accelerate's launcher) give the results of 1.

A case table over eval, ablate --sweep, compare, qualitative, attn-diff and cka on the tiny
RoBERTa runs of `cli_world`, over 150 training pairs (3 batches of 64 a side, so the processes
take 2 and 1 of them). Every case runs once in this process and once in each of 2 processes that
`accelerate launch --multi_gpu --num_processes 2` starts (one launch runs every case in turn:
a launch costs about 10 s, mostly importing torch). Embeddings are computed whole batch by whole
batch (`embed_all`), so eval, ablate, compare and qualitative come out bit for bit equal (their
JSON compared with ==, eval's predictions byte for byte). attn-diff and cka add float64 sums
over the processes in another order: equal within rel 1e-9 (measured differences about 1e-15).
`interp ... --num-processes 2` itself is launched twice: a run (eval with predictions), and an
error inside the launched processes, which comes back as the one `error:` line. Bad input is
refused before anything starts (no launch).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import check_refused, invoke, json_close, single_thread  # noqa: F401 (an autouse fixture)

LIMIT = "150"  # pairs of the training split: 3 evaluation batches of 64 per side
VOLATILE = {"seconds", "examples_per_second"}  # timings, not results
CASES = {  # name -> (arguments, with {data} and {out} filled in, exact?)
    "eval": (["eval", "lora", "--data", "{data}", "--device", "cpu", "--predictions", "{out}/predictions.jsonl"], True),
    "ablate --sweep": (["ablate", "lora", "--sweep", "--data", "{data}", "--limit", LIMIT, "--device", "cpu"], True),
    "compare": (["compare", "lora", "adapter", "--data", "{data}", "--limit", LIMIT, "--bootstrap", "200", "--permutations", "200"], True),
    "qualitative": (["qualitative", "--baseline", "lora", "--candidate", "adapter", "--data", "{data}", "--limit", LIMIT], True),
    "attn-diff": (["attn-diff", "lora", "adapter", "--data", "{data}", "--limit", LIMIT, "--device", "cpu"], False),
    "cka": (["cka", "lora", "adapter", "--data", "{data}", "--limit", LIMIT, "--device", "cpu"], False),
}
DRIVER = """
import sys
from interp.cli import app
for args in {cases!r}:
    try:
        app(args=args, prog_name="interp")
    except SystemExit as exc:
        if exc.code:
            sys.exit(exc.code)
"""
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]


def arguments(case: str, world: SimpleNamespace, runs: Path) -> list[str]:
    args, _ = CASES[case]
    filled = [a.format(data=world.data / "train.jsonl", out=runs.parent) for a in args]
    return [*filled, "--runs-dir", str(runs), "--no-progress"]


def environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def results(cli_world, tmp_path_factory):
    """Every case on 1 process (here) and on 2 (one launch), each into its own copy of the runs."""
    one, two = tmp_path_factory.mktemp("one") / "runs", tmp_path_factory.mktemp("two") / "runs"
    for copy in (one, two):
        shutil.copytree(cli_world.runs, copy)
    outputs = {}
    for case in CASES:
        result = invoke(arguments(case, cli_world, one))
        assert result.exit_code == 0, result.output
        outputs[case] = result.stdout
    driver = two.parent / "driver.py"
    driver.write_text(DRIVER.format(cases=[arguments(case, cli_world, two) for case in CASES]))
    launched = subprocess.run([*LAUNCH, str(driver)], capture_output=True, text=True, env=environment(), timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return SimpleNamespace(one=one, two=two, stdout=outputs, launched=launched.stdout)


def saved(runs: Path, kind: str) -> dict:
    (path,) = (runs / "analyses" / kind).glob("*.json")
    return {k: v for k, v in json.loads(path.read_text())["result"].items() if k not in VOLATILE}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_give_the_result_of_one(results, case):
    _, exact = CASES[case]
    if case == "eval":
        assert (results.two.parent / "predictions.jsonl").read_bytes() == (results.one.parent / "predictions.jsonl").read_bytes()
        assert results.stdout[case].splitlines()[1] in results.launched  # the metrics line: MRR, MRR@10, NDCG@10, R@k
        return
    kind = CASES[case][0][0]
    one, two = saved(results.one, kind), saved(results.two, kind)
    if exact:
        assert two == one
    else:
        assert json_close(two, one, rel=1e-9, abs_=1e-12)
    assert one != {}


def test_only_the_main_process_prints(results):
    """Each command's closing line ('-> PATH' of its result, or the predictions) is printed once, by process 0."""
    for case in CASES:
        last = results.stdout[case].strip().splitlines()[-1]
        assert results.launched.count(last.replace(str(results.one.parent), str(results.two.parent))) == 1, last


def test_num_processes_launches_and_reports_one_error(cli_world, tmp_path):
    """`interp eval --num-processes 2` prints what one process prints; an error inside the launched processes (a base
    model moved away, noticed when the model loads) comes back as one `error:` line, exit status 2."""
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    args = [sys.executable, "-m", "interp", "eval", "lora", "--data", str(cli_world.data / "train.jsonl"), "--device", "cpu",
            "--runs-dir", str(runs), "--no-progress"]
    alone = invoke(args[3:])
    assert alone.exit_code == 0, alone.output
    two = subprocess.run([*args, "--num-processes", "2"], capture_output=True, text=True, env=environment(), timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout == alone.stdout

    manifest = runs / "adapter" / "manifest.json"
    moved = json.loads(manifest.read_text())
    moved["base"]["source"] = str(tmp_path / "moved-base")
    manifest.write_text(json.dumps(moved))
    before = sorted(p.name for p in runs.rglob("*"))
    failed = subprocess.run([sys.executable, "-m", "interp", "ablate", "adapter", "--layers", "1", "--device", "cpu", "--runs-dir",
                             str(runs), "--no-progress", "--num-processes", "2"], capture_output=True, text=True, env=environment(),
                            timeout=300)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert failed.returncode == 2 and len(errors) == 1, failed.stderr[-3000:]
    assert "moved-base" in errors[0] and "no longer there" in errors[0]
    assert failed.stderr.rstrip().splitlines()[-1] == errors[0]  # last: nothing the launcher printed buries it
    assert sorted(p.name for p in runs.rglob("*")) == before


@pytest.mark.parametrize(
    "args, names",
    [
        (["eval", "lora", "--num-processes", "0"], ["--num-processes 0"]),
        (["ablate", "lora", "--sweep", "--num-processes", "0"], ["--num-processes 0"]),
        (["ablate", "lroa", "--sweep", "--num-processes", "2"], ["lroa"]),
        (["compare", "lora", "nosuch", "--num-processes", "2"], ["nosuch"]),
        (["qualitative", "--baseline", "lora", "--candidate", "adapter", "--limit", "0", "--num-processes", "2"], ["--limit"]),
        (["cka", "lora", "adapter", "--split", "dev", "--num-processes", "2"], ["--split", "dev"]),
        (["attn-diff", "lora", "adapter", "--layer", "9", "--num-processes", "2"], ["--layer", "9"]),
        pytest.param(["ablate", "lora", "--sweep", "--num-processes", "2", "--device", "cuda"], ["--device cuda"],
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
    ],
)
def test_bad_input_is_refused_before_any_process_starts(cli_world, args, names):
    device = [] if args[0] in ("compare", "qualitative") or "--device" in args else ["--device", "cpu"]
    check_refused([*args, "--runs-dir", str(cli_world.runs), *device], names, watched=cli_world.root)


@pytest.mark.parametrize(
    "env, args, message",
    [  # what a launcher left in the environment: refused before any process group or model
        ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}, ["ablate", "lora", "--sweep"],
         "accelerate launch started a single process"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, ["ablate", "lora", "--sweep", "--num-processes", "3"],
         "--num-processes 3, but this process was launched as one of 2"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, ["compare", "lora", "adapter", "--num-processes", "1"],
         "--num-processes 1, but this process was launched as one of 2"),
    ],
)
def test_launch_settings_that_disagree_are_refused(cli_world, monkeypatch, env, args, message):
    for name in ("WORLD_SIZE", "RANK", "ACCELERATE_USE_CPU", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    line = check_refused([*args, "--runs-dir", str(cli_world.runs)], [], watched=cli_world.root)
    assert message in line


@pytest.mark.parametrize(
    "argv, expected",
    [  # what the launched processes are given: the same command line less --num-processes
        (["eval", "lora", "--num-processes", "2", "--device", "cpu"], ["eval", "lora", "--device", "cpu"]),
        (["ablate", "lora", "--sweep", "--num-processes=4"], ["ablate", "lora", "--sweep"]),
        (["compare", "lora", "adapter"], ["compare", "lora", "adapter"]),
    ],
)
def test_launched_processes_get_the_command_line_less_num_processes(argv, expected):
    from interp.commands.launching import without_processes

    assert without_processes(argv) == expected
