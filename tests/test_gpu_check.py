"""benchmarks/gpu_check.py, the one prepared GPU check: its CPU dry run goes through every step and prints every row.

The GPU figures themselves need a CUDA machine; here the same script runs each step at tiny sizes
(`--device cpu --dry-run`), which is what a GPU run would go through, minus the sizes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ROWS = [  # the table's rows, in order, at the dry run's batch of 8
    "dependencies",
    "install",
    "data: pairs mined",
    "data: training pairs",
    "bases: MiniLM- and roberta-base-shaped",
    "tests on cpu: test_devices",
    "smoke: train + eval",
    "throughput random, batch 8",
    "throughput bucketed, batch 8",
    "throughput codexglue, batch 8",
    "random / codexglue",
    "2-epoch LoRA-64 over 251,820 pairs",
    "study full",
    "study loFF",
    "study LOFF",
    "study LOff",
    "study lora256",
    "total",
]


def gpu_check(*args, timeout: float) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--dry-run", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def table(stdout: str) -> dict[str, str]:
    """The printed table: row name -> the rest of its line."""
    lines = stdout[stdout.index("\nrow "):].strip().splitlines()[1:]
    rows = {}
    for line in lines:
        if line.startswith("failed: "):
            break
        name = next(n for n in sorted(ROWS, key=len, reverse=True) if line.startswith(n))
        rows[name] = line[len(name):].strip()
    return rows


def test_the_dry_run_goes_through_every_step(tmp_path):
    done = gpu_check("--work", tmp_path / "work", timeout=900)
    shown = f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, shown
    rows = table(done.stdout)
    assert list(rows) == ROWS, shown
    assert "failed" not in " ".join(rows.values()), shown
    assert re.match(r"all installed, as tested\s+all installed\s+met$", rows["dependencies"]), shown
    assert rows["install"].startswith("pip --dry-run: would install"), shown
    mined, train = (int(re.match(r"[\d,]+", rows[r]).group().replace(",", "")) for r in ("data: pairs mined", "data: training pairs"))
    assert 0 < train < mined, shown
    assert re.match(r"\d+ passed\s+all passed\s+met$", rows["tests on cpu: test_devices"]), shown
    assert re.match(r"device cpu, mixed precision no, test MRR 0\.\d{4}$", rows["smoke: train + eval"]), shown
    for loop in ("random", "bucketed", "codexglue"):
        assert re.match(r"[\d,]+\.\d pairs/s", rows[f"throughput {loop}, batch 8"]), shown
    assert re.match(r"\d+\.\d\dx\s+>= 10x\s+(met|MISSED)$", rows["random / codexglue"]), shown
    assert re.match(r"[\d,]+\.\d min \(extrapolated\)\s+<= 4 min", rows["2-epoch LoRA-64 over 251,820 pairs"]), shown
    for preset in ("full", "loFF", "LOFF", "LOff", "lora256"):
        assert re.match(r"valid MRR 0\.\d{4}, test MRR 0\.\d{4} \(2 of 2 seeds\)$", rows[f"study {preset}"]), shown
    logs = sorted(p.name for p in (tmp_path / "work").glob("*.log"))
    assert logs == sorted(["install.log", "data.log", "bases.log", "tests.log", "smoke-train.log", "smoke-eval.log", "throughput.log",
                           "study.log"]), logs


def test_a_spent_budget_still_prints_every_row_and_fails(tmp_path):
    """No step runs past the budget: each is reported as not run, the table still has every row, exit status 1."""
    done = gpu_check("--work", tmp_path / "work", "--budget", "1", timeout=120)
    shown = f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 1, shown
    assert list(table(done.stdout)) == ROWS, shown
    not_run = re.findall(r"^failed: (\w+): not run, the 1 s budget was spent$", done.stdout, re.M)
    assert not_run == ["install", "data", "bases", "tests", "smoke", "throughput", "study"], shown
    assert not list((tmp_path / "work").glob("*.log")), "nothing was started"


def test_without_the_minilm_package_a_wordpiece_tokenizer_is_trained(tmp_path, mined_data):
    """--tokenizer wordpiece: what the bases step does where the default encoder's package is missing (the device image)."""
    import shutil

    from transformers import AutoTokenizer

    work = tmp_path / "work"
    shutil.copytree(mined_data, work / "data")
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, SCRIPT, "--step", "bases", "--dry-run", "--work", work, "--tokenizer", "wordpiece"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"tokenizer: WordPiece trained on {work / 'data' / 'train.jsonl'}" in done.stdout
    for base in ("minilm", "roberta-base"):
        tokenizer = AutoTokenizer.from_pretrained(work / base)
        ids = tokenizer("def parse(self, text): return json.loads(text)")["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and tokenizer.unk_token_id not in ids[1:-1]
    assert (work / "minilm" / "model.safetensors").is_file() and not list((work / "roberta-base").glob("*.safetensors"))
