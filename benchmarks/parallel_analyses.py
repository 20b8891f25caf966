"""Analyses on several processes: `interp eval`, `attn-diff` and `cka` on 1 process against N, timed as a user runs them.

Two runs of the default MiniLM (all-MiniLM-L6-v2 from its package; --base for another) are
trained for one step each into a runs directory (`--presets`, default lora64 and prefix10, so
the two deltas differ; one step at --lr moves them off their start), the same fixed sample of
--limit pairs of --split (`subset` with EVAL_SUBSET_SEED: a run's --eval-limit sample) is written
to one AdvTest file, and each command runs on that file as a user runs it, in a fresh process:

    eval       python -m interp eval A --data FILE --predictions OUT/predictions.jsonl --top-k 1
    attn-diff  python -m interp attn-diff A B --data FILE
    cka        python -m interp cka A B --data FILE

once with `--num-processes 1` and once with `--num-processes N` (accelerate's launcher; CPU
processes talk through gloo), every process with OMP_NUM_THREADS=1, so the comparison is per
core. Each process count has its own copy of the runs directory. The seconds are the wall time
of the whole command: starting Python, importing torch, the launch of N processes, loading the
models and writing the result (all of it is real for the user). Where the result carries
`seconds` (attn-diff, cka: the compute of process 0, models loaded), that is printed too. With
--repeats R every command runs R times a process count, 1 and N in alternating order (a load
that comes and goes on the machine hits both alike), and the medians are printed.

The table: command, processes, seconds, pairs/s (the --limit pairs over the wall seconds; cka
and attn-diff read both sides of each pair), compute seconds, speed-up (1-process seconds over
these), its bound, and whether the result equals the 1-process one: eval's metrics (MRR
included) and predictions exactly; attn-diff's and cka's saved results (less timings) within
rel 1e-9 (their float64 sums are added over the processes in another order). The table is also
written to --out. The bound is 1 / the largest fraction of the padded tokens (rows x longest row
of each batch) that one process runs, batches cut and shared as the command does it
(`busiest_share`): no launch, no load, work in proportion to padded tokens. The length-sorted
batches are dealt out in turn (`trainers.parallel.deal`), so each process gets short and long
ones alike (contiguous runs gave eval's last process 3/4 of the tokens on 1,024 pairs).

    OMP_NUM_THREADS=1 python benchmarks/parallel_analyses.py --limit 1024           # runs/data, MiniLM, 1 vs 2 processes
    OMP_NUM_THREADS=1 python benchmarks/parallel_analyses.py --limit 1024 --processes 4 --repeats 3
    OMP_NUM_THREADS=1 python benchmarks/parallel_analyses.py --limit 128 --commands eval --out /tmp/parallel.md   # a quick look

The first line writes benchmarks/results/parallel.md: on a quiet machine with at least 2 free
cores it takes 15 to 20 minutes (estimated from 128-pair runs: about 10 s a command to start
Python, import torch and load the models, about 10 s more to launch 2 processes, then about
0.07 s a pair for eval, 0.23 s for attn-diff and 0.2 s for cka on one core). On a machine whose cores are
busy with other work the processes wait for each other and the figures measure that instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

COMMANDS = ("eval", "attn-diff", "cka")
BATCH_SIZES = {"eval": 64, "attn-diff": 32, "cka": 32}  # each command's default sequences per forward pass
VOLATILE = {"seconds", "examples_per_second"}  # timings, not results
REL, ABS = 1e-9, 1e-12  # attn-diff and cka: float64 sums added in another order


@dataclass(frozen=True)
class Timing:
    """One command on one process count: median wall seconds over the repeats, compute seconds, its result."""

    command: str
    processes: int
    seconds: float
    compute_seconds: float | None  # the result's own `seconds` (process 0's compute), None for eval
    result: dict  # what is compared with the 1-process result


def make_runs(runs_dir: Path, data_dir: Path, *, presets: tuple[str, str], base: str | None = None, lr: float = 1e-3,
              max_len: int = 256, train_pairs: int = 8) -> list[str]:
    """Two runs named after `presets`, one optimizer step each on `train_pairs` pairs; their names.
    A run already finished in `runs_dir` is kept (not trained again)."""
    from trainers import methods
    from trainers.training.loop import TrainConfig
    from trainers.training.runs import list_runs
    from trainers.training.train import RunSpec, train_run

    finished = {run.name for run in list_runs(runs_dir) if run.finished} if runs_dir.is_dir() else set()
    for preset in presets:
        if preset not in finished:
            spec = RunSpec(name=preset, method=methods.get_preset(preset), preset=preset, data_dir=data_dir, base=base,
                           train_limit=train_pairs, eval_limit=train_pairs)
            cfg = TrainConfig(epochs=1, batch_size=4, lr=lr, evals_per_epoch=1, max_steps=1, max_len=max_len, seed=0)
            train_run(spec, cfg, runs_dir=runs_dir, device="cpu", progress=False)
    return list(presets)


def write_examples(data_dir: Path, split: str, limit: int | None, out: Path) -> int:
    """The fixed sample of `limit` pairs of `split` (a run's --eval-limit sample) as an AdvTest file; how many pairs."""
    from records.io import write_text
    from trainers.data.schema import load_split
    from trainers.training.splits import EVAL_SUBSET_SEED, subset

    examples = subset(load_split(data_dir, split), limit, EVAL_SUBSET_SEED)
    write_text(out, "".join(json.dumps(e.to_record()) + "\n" for e in examples))
    return len(examples)


def command_line(command: str, runs: list[str], data_file: Path, runs_dir: Path, processes: int) -> list[str]:
    """The `python -m interp ...` argument list of one timed command (eval's predictions go beside `runs_dir`)."""
    if command == "eval":
        args = ["eval", runs[0], "--predictions", str(runs_dir.parent / "predictions.jsonl"), "--top-k", "1"]
    elif command in ("attn-diff", "cka"):
        args = [command, runs[0], runs[1]]
    else:
        raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    return [sys.executable, "-m", "interp", *args, "--data", str(data_file), "--device", "cpu", "--runs-dir", str(runs_dir),
            "--no-progress", "--num-processes", str(processes)]


def environment() -> dict:
    """This process's environment with one torch thread per process (OMP_NUM_THREADS=1 and MKL's)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_command(command: str, runs: list[str], data_file: Path, runs_dir: Path,
                processes: int) -> tuple[float, dict, float | None]:
    """Run one command in a fresh process; (wall seconds, its result, the result's compute seconds or None).

    SystemExit naming the command when it fails (its stderr's tail printed)."""
    args = command_line(command, runs, data_file, runs_dir, processes)
    start = time.perf_counter()
    done = subprocess.run(args, check=False, capture_output=True, text=True, env=environment())
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-2000:] + done.stderr[-4000:])
        raise SystemExit(f"{' '.join(args[1:])}: exit status {done.returncode}")
    result, compute = read_result(command, runs_dir)
    return seconds, result, compute


def read_result(command: str, runs_dir: Path) -> tuple[dict, float | None]:
    """What a command left: eval's metrics and predictions, or the analysis's saved result less timings; and its seconds."""
    if command == "eval":
        predictions = runs_dir.parent / "predictions.jsonl"
        metrics = json.loads(predictions.with_name("predictions.metrics.json").read_text())["metrics"]
        return {"metrics": metrics, "predictions": predictions.read_text()}, None
    (path,) = (runs_dir / "analyses" / command).glob("*.json")
    saved = json.loads(path.read_text())["result"]
    return {k: v for k, v in saved.items() if k not in VOLATILE}, saved.get("seconds")


def close(a, b, *, rel: float = REL, abs_: float = ABS) -> bool:
    """Two JSON values equal, floats within `rel` (relative) or `abs_` (absolute); NaN equals NaN."""
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel=rel, abs_=abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel=rel, abs_=abs_) for x, y in zip(a, b))
    return a == b


def same_result(command: str, one: dict, other: dict) -> bool:
    """eval: metrics and predictions exactly equal; attn-diff and cka: within rel 1e-9."""
    return one == other if command == "eval" else close(one, other)


def busiest_share(command: str, examples: list, tokenizer, *, processes: int, max_len: int) -> float:
    """The largest fraction of the padded tokens (a batch's rows x its longest row, both sides) that one of `processes`
    processes runs, batched and shared as the command shares them; 1 / it bounds the speed-up of the compute.

    eval (`embed_all`): each side sorted by length over the whole file, cut into batches of 64, dealt out in turn
    (`trainers.parallel.deal`). attn-diff: both sides' batches of 32 from length-sorted windows (`text_batches`), one
    list, dealt out. cka: each side's such batches dealt out on their own; a process not dealt the first batch also
    runs it (the shift)."""
    from interp.analyses.attn_diff import SIDES, text_batches
    from trainers.parallel import deal
    from trainers.training.batching import length_order

    def padded(texts: list[str]) -> int:
        lengths = [len(i) for i in tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
        return len(lengths) * max(lengths)

    size = BATCH_SIZES[command]
    if command == "eval":  # a list of batch costs per shared list, and whether a later share also runs the first batch
        lists = []
        for side in SIDES:
            texts = [e.query if side == "query" else e.code_text for e in examples]
            order = length_order(tokenizer(texts, truncation=True, max_length=max_len)["input_ids"])
            lists.append([padded([texts[i] for i in order[b : b + size]]) for b in range(0, len(order), size)])
    elif command == "attn-diff":
        lists = [[padded(texts) for _, texts in text_batches(examples, SIDES, size)]]
    else:
        lists = [[padded(texts) for _, texts in text_batches(examples, (side,), size)] for side in SIDES]
    per_rank = [0] * processes
    for costs in lists:
        for rank in range(processes):
            part = deal(len(costs), processes, rank)
            if command == "eval" and len(costs) < processes:  # fewer batches than processes: each embeds everything
                part = range(len(costs))
            shift = costs[0] if command == "cka" and 0 not in part else 0
            per_rank[rank] += sum(costs[b] for b in part) + shift
    total = sum(sum(costs) for costs in lists)
    return max(per_rank) / total


def padded_token_bounds(commands: list[str], data_file: Path, *, base: str | None, processes: int,
                        max_len: int) -> dict[str, float]:
    """Per command, `busiest_share` of the pairs in `data_file` on `processes` processes, with the base's tokenizer."""
    from trainers.data.schema import read_split
    from trainers.encoders import load_encoder

    tokenizer, examples = load_encoder(base).tokenizer, read_split(data_file)
    return {c: busiest_share(c, examples, tokenizer, processes=processes, max_len=max_len) for c in commands}


def measure(commands: list[str], runs: list[str], data_file: Path, dirs: dict[int, Path], *, repeats: int) -> list[Timing]:
    """Every command on every process count of `dirs` (a runs directory each), `repeats` times in alternating order."""
    timings = []
    counts = sorted(dirs)
    for command in commands:
        seen: dict[int, list[tuple[float, dict, float | None]]] = {n: [] for n in counts}
        for r in range(repeats):
            for n in counts if r % 2 == 0 else counts[::-1]:
                seen[n].append(run_command(command, runs, data_file, dirs[n], n))
                print(f"  {command} on {n} process{'es' if n > 1 else ''}: {seen[n][-1][0]:.1f} s", flush=True)
        for n in counts:
            computes = [c for _, _, c in seen[n] if c is not None]
            timings.append(Timing(command, n, statistics.median(s for s, _, _ in seen[n]),
                                  statistics.median(computes) if computes else None, seen[n][-1][1]))
    return timings


def table(timings: list[Timing], pairs: int, bounds: dict[str, float]) -> str:
    """A markdown table: command, processes, seconds, pairs/s, compute seconds, speed-up, its bound, equal to 1 process.

    `bounds`: per command, the busiest process's fraction of the padded tokens on N processes (`busiest_share`)."""
    one = {t.command: t for t in timings if t.processes == 1}
    lines = ["| command | processes | seconds | pairs/s | compute s | speed-up | bound | equal to 1 process |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for t in timings:
        base = one[t.command]
        compute = "-" if t.compute_seconds is None else f"{t.compute_seconds:.1f}"
        speedup = f"{base.seconds / t.seconds:.2f}x"
        if t.compute_seconds and base.compute_seconds:
            speedup += f" (compute {base.compute_seconds / t.compute_seconds:.2f}x)"
        bound = "-" if t.processes == 1 else f"{1 / bounds[t.command]:.2f}x"
        equal = "-" if t.processes == 1 else ("yes" if same_result(t.command, base.result, t.result) else "NO")
        lines.append(f"| {t.command} | {t.processes} | {t.seconds:.1f} | {pairs / t.seconds:.1f} | {compute} | {speedup} "
                     f"| {bound} | {equal} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/data"), help="AdvTest-format data directory (interp data build)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=1024, help="pairs of --split (a fixed sample); 0: all")
    parser.add_argument("--base", default=None, help="encoder directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--presets", default="lora64,prefix10", help="the two runs (A,B), trained one step each")
    parser.add_argument("--max-len", type=int, default=256, help="the runs' tokens per query or code")
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"comma list of {', '.join(COMMANDS)}")
    parser.add_argument("--processes", type=int, default=2, help="N, compared with 1 process")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each command a process count (medians)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the trained runs here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "parallel.md")
    args = parser.parse_args(argv)

    commands = [c for c in args.commands.split(",") if c]
    if unknown := [c for c in commands if c not in COMMANDS]:
        parser.error(f"--commands: {', '.join(unknown)} unknown; one of {', '.join(COMMANDS)}")
    presets = tuple(args.presets.split(","))
    if len(presets) != 2 or presets[0] == presets[1]:
        parser.error(f"--presets {args.presets}: two different presets, A,B")
    if args.processes < 2 or args.repeats < 1:
        parser.error("--processes should be at least 2 and --repeats at least 1")
    load = os.getloadavg()[0]  # the machine's load before the timings (other work on the cores)
    with tempfile.TemporaryDirectory(prefix="parallel-analyses-") as tmp:
        tmp = Path(tmp)
        trained = args.runs_dir or tmp / "trained"
        start = time.perf_counter()
        runs = make_runs(trained, args.data, presets=presets, base=args.base, max_len=args.max_len)
        print(f"runs {', '.join(runs)} in {trained} ({time.perf_counter() - start:.1f} s)", flush=True)
        data_file = tmp / f"{args.split}-{args.limit}.jsonl"
        pairs = write_examples(args.data, args.split, args.limit or None, data_file)
        bounds = padded_token_bounds(commands, data_file, base=args.base, processes=args.processes, max_len=args.max_len)
        dirs = {}
        for n in (1, args.processes):  # each process count writes into its own copy
            dirs[n] = tmp / f"p{n}" / "runs"
            shutil.copytree(trained, dirs[n], ignore=shutil.ignore_patterns("analyses"))
        timings = measure(commands, runs, data_file, dirs, repeats=args.repeats)
    base = args.base or "all-MiniLM-L6-v2"
    header = (f"{pairs} pairs of {args.data / (args.split + '.jsonl')}, {base}, runs {runs[0]} (A) and {runs[1]} (B) "
              f"at max_len {args.max_len}, CPU, OMP_NUM_THREADS=1 a process, {os.cpu_count()} cores seen "
              f"(load average {load:.1f} before), median of {args.repeats} run{'s' if args.repeats > 1 else ''}; "
              "seconds: the whole command, launch included\n\n")
    text = header + table(timings, pairs, bounds)
    print(text, end="")
    from records.io import write_text

    given = " ".join(argv if argv is not None else sys.argv[1:])
    write_text(args.out, f"# Analyses on 1 and {args.processes} processes\n\n"
                         f"`OMP_NUM_THREADS=1 python benchmarks/parallel_analyses.py {given}`\n\n{text}")
    print(f"-> {args.out}")
    return text


if __name__ == "__main__":
    main()
