"""A runs directory for the report tests: tiny real runs, real analysis results, hostile text.

Runs are trained for two steps on the tiny RoBERTa (test_ablate.train_tiny); the analyses are
the golden results of the analysis tests (importable as `report_site`) (real outputs of interp's analyses on tiny models),
saved as `interp` saves them. Into those, HOSTILE text goes wherever data reaches a page: a
docstring, code, a query, token strings. The report must show it as text.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from trainers import methods
from records.io import write_json

GOLDEN = Path(__file__).parent / "golden"
HOSTILE = "</script><script>alert(1)</script><b>bold</b> & <!-- x"
RUNS = {  # name -> (config, seed): two seeds of one config make a group with a std
    "lora2": (methods.LoraConfig(r=2), 3),
    "lora2-s2": (methods.LoraConfig(r=2), 4),
    "loff": (methods.UnionConfig(parts=(methods.LoraConfig(r=2), methods.AdapterConfig(r=2, placement="ffn"))), 3),
}


def train_runs(runs_dir: Path, data_dir: Path, base: Path) -> None:
    from helpers import EXAMPLES, MAX_LEN
    from trainers.training.loop import TrainConfig
    from trainers.training.train import RunSpec, train_run

    for name, (config, seed) in RUNS.items():
        spec = RunSpec(name=name, method=config, data_dir=data_dir, base=str(base), train_limit=16, eval_limit=EXAMPLES)
        cfg = TrainConfig(epochs=1, batch_size=4, max_len=MAX_LEN, evals_per_epoch=2, max_steps=4, lr=5e-2, seed=seed)
        train_run(spec, cfg, runs_dir=runs_dir, progress=False)


def golden(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def save(runs_dir: Path, kind: str, name: str, result: dict) -> Path:
    path = runs_dir / "analyses" / kind / f"{name}.json"
    write_json(path, {"kind": kind, "name": name, "inputs": {"data": {"file": "test.jsonl"}}, "result": result,
                      "versions": {}, "code_version": "test"})
    return path


def write_analyses(runs_dir: Path) -> None:
    attn = copy.deepcopy(golden("attn_diff.json")["result"])
    attn["a"], attn["b"] = "lora2", "loff"
    attn["example"]["query"] = HOSTILE
    attn["example"]["code"] = HOSTILE
    attn["example"]["sides"]["query"]["tokens"][3] = HOSTILE
    attn["tokens"]["query"][0]["token"] = HOSTILE
    save(runs_dir, "attn-diff", "lora2-vs-loff", attn)

    qual = copy.deepcopy(golden("qualitative.json")["result"])
    sample = qual["sets"][0]["samples"][0]
    sample["docstring"] = HOSTILE
    sample["code"] = "def f():\n    \t  return '" + HOSTILE + "'\n"
    save(runs_dir, "qualitative", "all", qual)

    attribution = copy.deepcopy(golden("attribute.json")["result"])
    attribution["run"] = "loff"
    attribution["query_tokens"][1]["text"] = HOSTILE
    save(runs_dir, "attribute", "loff.example500", attribution)

    save(runs_dir, "compare", "lora2-vs-loff", golden("compare.json")["result"])
    ablation = copy.deepcopy(golden("ablate.json")["result"])
    ablation["run"] = "loff"
    save(runs_dir, "ablate", "loff.sweep", ablation)
    anatomy = copy.deepcopy(golden("anatomy.json")["result"])
    anatomy["runs"][0]["name"] = "lora2"
    save(runs_dir, "anatomy", "lora2-vs-loff", anatomy)
    cka = copy.deepcopy(golden("cka.json")["result"])
    cka["a"], cka["b"] = "lora2", HOSTILE
    save(runs_dir, "cka", "lora2-vs-loff", cka)


def write_study(runs_dir: Path) -> None:
    row = {"preset": "lora2", "method": "lora", "trainable": 1024, "share_of_base": 0.01,
           "valid_mrr": {"mean": 0.5, "std": 0.1, "n": 2}, "test_mrr": {"mean": 0.4, "std": None, "n": 1},
           "best_step": {"mean": 4, "n": 2}, "runs": ["lora2", "lora2-s2"], "missing": []}
    write_json(runs_dir / "study" / "tiny" / "tables.json", {
        "kind": "study", "grid": "tiny", "scale": "demo", "seeds": [3, 4], "base": {"name": "tiny"},
        "data": {"dir": "data", "fingerprint": "0" * 64}, "train": {"epochs": 1},
        "tables": [{"table": "4.4", "title": HOSTILE, "rows": [row]}], "code_version": "test", "versions": {}})


def make_runs_dir(runs_dir: Path, data_dir: Path, base: Path) -> Path:
    train_runs(runs_dir, data_dir, base)
    write_analyses(runs_dir)
    write_study(runs_dir)
    return runs_dir
