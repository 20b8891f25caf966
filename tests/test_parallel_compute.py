"""attn-diff and CKA on 2 CPU processes (gloo, spawned) against 1 process: the same result.

Each process takes its batches of those one process would make (length-sorted windows, each
side's batches), dealt out in turn (trainers.parallel.deal), and the float64 sums are added over the
processes, so a 2-process result differs from the 1-process one only in the order of addition:
RTOL 1e-10 relative (ATOL 1e-12 for values that are 0 up to rounding); timings are left out.
Both ranks hold the same result, exactly. The runs: the tiny random RoBERTa with two LoRA
deltas (side A) and two prefix deltas (side B) moved off their start by seeded noise, so both
sides are seed groups and the seed-noise null, pair tables and token tables are compared too.

With batch size 2 the 37 test pairs make two windows (32 + 5 examples); attn-diff's 38 batches
split 19 / 19 (even and odd), so each rank has query and code batches of both windows; CKA's 19
batches a side split 10 / 9, and rank 1, never dealt batch 1, must shift by it as rank 0 does. One
CKA case has a single batch: rank 1 is dealt none and it still takes part in every sum.
One spawn of 2 processes (importing torch and transformers) runs every case: about 15 s here.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from helpers import MAX_LEN, single_thread  # noqa: F401 (single_thread: autouse)
from interp.analyses.attn_diff import AttnDiff, BoundRun
from interp.analyses.cka import CKA
from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.methods.apply import delta_parameters

RTOL, ATOL = 1e-10, 1e-12
VOLATILE = {"seconds", "examples_per_second"}
RUNS = [("lora-s1", {"method": "lora", "r": 4}, 1), ("lora-s2", {"method": "lora", "r": 4}, 2),
        ("prefix-s1", {"method": "prefix", "length": 3}, 1), ("prefix-s2", {"method": "prefix", "length": 3}, 2)]
CASES = {  # name -> (analysis, examples taken, compute's options)
    "attn-diff": ("attn-diff", None, {"batch_size": 2, "layer": 3}),
    "attn-diff bf16": ("attn-diff", 12, {"batch_size": 4, "sides": ("query",), "precision": "bf16"}),
    "cka cls": ("cka", None, {"batch_size": 2}),
    "cka all unbiased": ("cka", None, {"batch_size": 2, "tokens": "all", "estimator": "unbiased"}),
    "cka one batch": ("cka", 5, {"batch_size": 8, "sides": ("query",)}),
}


def bound_runs(base: Path) -> list[BoundRun]:
    """The four runs, the same in every process: seeded delta start, then seeded noise on the delta."""
    out = []
    for name, config, seed in RUNS:
        encoder = load_encoder(base)
        torch.manual_seed(seed)
        model = methods.apply_method(encoder, methods.method_from_dict(config))
        with torch.no_grad():
            for p in delta_parameters(model).values():
                p.add_(0.3 * torch.randn_like(p))
        out.append(BoundRun(name, encoder, model))
    return out


def compute_all(base: Path, data: Path) -> dict[str, dict]:
    """Every case's result as plain data, computed on however many processes are running."""
    runs, examples = bound_runs(base), load_split(data, "test")
    out = {}
    for case, (kind, limit, options) in CASES.items():
        analysis = AttnDiff if kind == "attn-diff" else CKA
        bound = analysis(a=runs[:2], b=runs[2:], labels=("lora", "prefix"), max_len=MAX_LEN, device="cpu")
        result = asdict(bound.compute(examples[:limit], **options))
        out[case] = {k: v for k, v in result.items() if k not in VOLATILE}
    return json.loads(json.dumps(out))  # tuples as lists, as in the saved JSON


def _worker(rank: int, port: int, base: str, data: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(compute_all(Path(base), Path(data))))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one(tiny_roberta_dir, mined_data) -> dict[str, dict]:
    return compute_all(tiny_roberta_dir, mined_data)


@pytest.fixture(scope="module")
def two(tiny_roberta_dir, mined_data, tmp_path_factory) -> list[dict[str, dict]]:
    """Both ranks' results of the same cases on 2 spawned gloo processes."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("two-processes")
    mp.spawn(_worker, args=(_free_port(), str(tiny_roberta_dir), str(mined_data), str(out)), nprocs=2)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def differences(a, b, path: str = "") -> tuple[list[str], float]:
    """(places where a and b differ beyond RTOL / ATOL or in kind, the largest relative difference of two floats)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"], 0.0
        found = [differences(a[k], b[k], f"{path}.{k}") for k in a]
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} against {len(b)} items"], 0.0
        found = [differences(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    elif isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return ([] if math.isnan(a) and math.isnan(b) else [f"{path}: {a} against {b}"]), 0.0
        gap, scale = abs(a - b), max(abs(a), abs(b))
        return ([] if gap <= RTOL * scale + ATOL else [f"{path}: {a!r} against {b!r}"]), (gap / scale if scale > ATOL else 0.0)
    else:
        return ([] if a == b and type(a) is type(b) else [f"{path}: {a!r} against {b!r}"]), 0.0
    return [d for bad, _ in found for d in bad], max((r for _, r in found), default=0.0)


@pytest.mark.parametrize("case", CASES)
def test_two_processes_give_the_one_process_result(one, two, case):
    bad, worst = differences(one[case], two[0][case])
    print(f"{case}: 1 vs 2 processes, largest relative difference {worst:.1e}")
    assert not bad, "\n".join(bad[:10])
    assert two[0][case] == two[1][case]  # every rank holds the whole result


def test_the_cases_cover_what_they_claim(one):
    """The comparison is not empty: seed nulls, token tables, pair tables and the example are there to compare."""
    attn = one["attn-diff"]
    assert attn["examples"] == 37 and attn["seed_null"]["sides"].keys() == {"query", "code"}
    assert all(attn["tokens"][side] for side in ("query", "code"))
    assert attn["example"]["sides"]["code"]["full_a"] and attn["stats"]["code"]["examples"] == 37
    assert attn["stats"]["query"]["mean_total_variation"] > 0.01  # the deltas moved the attention
    for case in ("cka cls", "cka all unbiased"):
        cka = one[case]
        assert cka["seed_null"] is not None and len(cka["stats"]["query"]["pair_cka"]) == 6  # every pair of the 4 runs
        assert min(v for v in cka["stats"]["code"]["diagonal"] if v is not None) < 0.999
    assert one["cka all unbiased"]["stats"]["query"]["samples"] > one["cka cls"]["stats"]["query"]["samples"] == 37
    assert one["cka one batch"]["stats"]["query"]["examples"] == 5
