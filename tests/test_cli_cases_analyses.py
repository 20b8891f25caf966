"""The analysis commands and the report refuse bad input as the README promises (issue 12).

attn-diff, ablate, anatomy, attribute, qualitative, compare and report, each given bad values,
damaged inputs and output paths that hold something else: exit status 2, one `error:` line
naming the option, file or line at fault, no traceback, and nothing on disk changed
(`helpers.check_refused`). Almost every case is refused before a model loads. (The report given
damaged or hostile analysis files: tests/test_report_damaged.py.)

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider tests/test_cli_cases_analyses.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import EXAMPLES, check_refused, invoke, snapshot

R = ["--runs-dir", "{runs}"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no CUDA device")


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world's runs copied beside damaged copies of them and odd files; cases may only read it.

    runs/          lora and adapter, and odd things where analyses write their results
    bad-ranks/     adapter, and copies of lora whose ranks.json is damaged (lora-<damage>)
    bad-manifest/  a run whose manifest is truncated; no-data/: a run whose data was moved away
    bad-weights/   a run whose adapter weights are cut short; moved-base/: one whose base model is gone
    analyses-file/ a run beside a file named analyses
    files/         code files, data files (good and damaged), a directory, a plain text file
    """
    root = tmp_path_factory.mktemp("analyses-cases")
    runs = root / "runs"
    shutil.copytree(cli_world.runs, runs)
    ranks = (runs / "lora" / "ranks.json").read_text()
    damages = {
        "trunc": ranks[: len(ranks) // 2],
        "notjson": "ranks\n",
        "empty": "",
        "list": "[1, 2, 3]\n",
        "nokeys": "{}\n",
        "noranks": json.dumps({k: v for k, v in json.loads(ranks).items() if k != "ranks"}),
        "badrank": json.dumps(json.loads(ranks) | {"ranks": {k: "first" for k in json.loads(ranks)["ranks"]}}),
        "fewranks": json.dumps(json.loads(ranks) | {"ranks": {}}),
        "binary": "\udcff",
    }
    bad_ranks = root / "bad-ranks"  # apart, so that the cases on runs/ list two runs, not eleven
    shutil.copytree(runs / "adapter", bad_ranks / "adapter")
    for damage, text in damages.items():
        shutil.copytree(runs / "lora", bad_ranks / f"lora-{damage}")
        (bad_ranks / f"lora-{damage}" / "ranks.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    (runs / "analyses" / "compare").mkdir(parents=True)
    (runs / "analyses" / "compare" / "lora-vs-adapter.json").mkdir()  # a directory where compare's result goes
    (runs / "analyses" / "qualitative").mkdir(parents=True)
    (runs / "analyses" / "qualitative" / "lora+adapter.json").write_text('{"mine": "notes"}\n')  # not a result
    (runs / "analyses" / "anatomy").mkdir(parents=True)
    (runs / "analyses" / "anatomy" / "adapter.json").write_text('{"kind": "anatomy", "name": "adap')  # truncated

    (runs / "analyses" / "ablate").mkdir(parents=True)
    (runs / "analyses" / "ablate" / "lora.drop1.json").symlink_to(runs / "lora" / "manifest.json")  # a link to a run's manifest
    analyses_file = root / "analyses-file"
    shutil.copytree(cli_world.runs / "lora", analyses_file / "lora")
    (analyses_file / "analyses").write_text("not a folder\n")

    bad_manifest = root / "bad-manifest"
    shutil.copytree(cli_world.runs / "lora", bad_manifest / "lora")
    text = (bad_manifest / "lora" / "manifest.json").read_text()
    (bad_manifest / "lora" / "manifest.json").write_text(text[: len(text) // 2])
    no_data = root / "no-data"
    shutil.copytree(cli_world.runs / "lora", no_data / "lora")
    manifest = json.loads((no_data / "lora" / "manifest.json").read_text())
    for info in manifest["data"].values():
        if isinstance(info, dict) and "file" in info:
            info["file"] = str(root / "moved" / Path(info["file"]).name)
    (no_data / "lora" / "manifest.json").write_text(json.dumps(manifest, indent=2))

    bad_weights = root / "bad-weights"
    shutil.copytree(cli_world.runs / "lora", bad_weights / "lora")
    weights = (bad_weights / "lora" / "adapter_model.safetensors").read_bytes()
    (bad_weights / "lora" / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    moved_base = root / "moved-base"
    shutil.copytree(cli_world.runs / "lora", moved_base / "lora")
    manifest = json.loads((moved_base / "lora" / "manifest.json").read_text())
    manifest["base"]["source"] = str(root / "moved-base-model")
    (moved_base / "lora" / "manifest.json").write_text(json.dumps(manifest, indent=2))

    files = root / "files"
    files.mkdir()
    (files / "code.py").write_text("def add(a, b):\n    return a + b\n")
    (files / "empty.py").write_text("")
    (files / "binary.py").write_bytes(b"\xff\xfe\x00def")
    (files / "broken.py").write_text("def f(:\n  '''\n")
    (files / "notes.txt").write_text("keep me\n")
    (files / "folder").mkdir()
    os.mkfifo(files / "fifo.jsonl")  # nothing ever writes to it: reading it would wait for ever
    os.mkfifo(files / "fifo.py")
    test_lines = (cli_world.data / "test.jsonl").read_text().splitlines()
    (files / "small.jsonl").write_text("\n".join(test_lines[:6]) + "\n")
    (files / "badline.jsonl").write_text("\n".join(test_lines[:2] + ["{not json"] + test_lines[3:5]) + "\n")
    (files / "empty.jsonl").write_text("")
    (files / "nested.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    idx = json.loads(test_lines[0])["idx"]
    return SimpleNamespace(root=root, runs=runs, files=files, data=cli_world.data, idx=idx, cli_world=cli_world,
                           shared=snapshot(cli_world.root))


PROGRESS = {"attn-diff", "ablate", "qualitative", "compare"}  # commands with --progress/--no-progress


def fill(args: list[str], world) -> list[str]:
    """The case's arguments with the world's paths, and --no-progress where the command has it (bars are not errors)."""
    quiet = ["--no-progress"] if args and args[0] in PROGRESS and "--bogus" not in args else []
    return [a.format(runs=world.runs, files=world.files, data=world.data, root=world.root, idx=world.idx) for a in args] + quiet


def case(*args: str, names: tuple[str, ...] = (), marks=()):
    return pytest.param(list(args), names, id=" ".join(args).replace("{runs}", "R").replace("{files}/", "").replace("{root}/", "")[:90],
                        marks=marks)


RUN_NAMES = [  # any command that takes run names: unknown, not allowed, or where no runs are
    ("lroa", ("'lroa'", "did you mean 'lora'")),
    ("nosuch", ("'nosuch'",)),
    ("../lora", ("../lora",)),
    ("lora/..", ("lora/..",)),
    ("", ("''",)),
    ("x" * 300, ("x" * 20,)),
    ("analyses", ("analyses",)),
    ("lora\nx", ("'lora\\nx'",)),
    ("lorä", ("lorä",)),
]


def _run_name_cases():
    out = []
    for name, names in RUN_NAMES:
        out += [
            case("attn-diff", name, "adapter", *R, names=names),
            case("attn-diff", "lora", name, *R, names=names),
            case("ablate", name, "--layers", "1", *R, names=names),
            case("anatomy", name, *R, names=names),
            case("attribute", name, "--example", "{idx}", *R, names=names),
            case("qualitative", "--runs", f"lora,{name}", *R, names=names),
            case("compare", "lora", name, *R, names=names),
        ]
    return out


REFUSED = _run_name_cases() + [
    # -- attn-diff ----------------------------------------------------------------------------
    case("attn-diff", "base", "base", *R, names=("'base'",)),
    case("attn-diff", "lora,,adapter", "base", *R, names=("lora,,adapter", "empty")),
    case("attn-diff", ",", "adapter", *R, names=("empty",)),
    case("attn-diff", "lora,lora", "adapter", *R, names=("'lora'", "twice")),
    case("attn-diff", "lora,adapter", "adapter", *R, names=("'adapter'", "both sides")),
    case("attn-diff", "lora", "adapter", "--seeds", *R, names=("preset", "'lora'")),
    case("attn-diff", "lora", "adapter", "--limit", "0", *R, names=("--limit", "0")),
    case("attn-diff", "lora", "adapter", "--limit", "-3", *R, names=("--limit", "-3")),
    case("attn-diff", "lora", "adapter", "--limit", "many", *R, names=("--limit",)),
    case("attn-diff", "lora", "adapter", "--layer", "0", *R, names=("--layer", "0")),
    case("attn-diff", "lora", "adapter", "--layer", "-1", *R, names=("--layer", "-1")),
    case("attn-diff", "lora", "adapter", "--layer", "5", *R, names=("--layer", "5")),
    case("attn-diff", "lora", "adapter", "--layer", "99999999999999999999999", *R, names=("--layer",)),
    case("attn-diff", "lora", "adapter", "--example", "999999999", *R, names=("--example", "999999999")),
    case("attn-diff", "lora", "adapter", "--example", "abc", *R, names=("--example", "abc")),
    case("attn-diff", "lora", "adapter", "--example", "", *R, names=("--example",)),
    case("attn-diff", "lora", "adapter", "--batch-size", "0", *R, names=("--batch-size", "0")),
    case("attn-diff", "lora", "adapter", "--batch-size", "-1", *R, names=("--batch-size", "-1")),
    case("attn-diff", "lora", "adapter", "--side", "left", *R, names=("--side",)),
    case("attn-diff", "lora", "adapter", "--device", "bogus", *R, names=("--device",)),
    case("attn-diff", "lora", "adapter", "--device", "cuda", *R, names=("--device", "cuda"), marks=NO_CUDA),
    case("attn-diff", "lora", "adapter", "--split", "bogus", *R, names=("--split", "bogus")),
    case("attn-diff", "lora", "adapter", "--split", "", *R, names=("--split",)),
    case("attn-diff", "lora", "adapter", "--split", "../test", *R, names=("--split",)),
    case("attn-diff", "lora", "adapter", "--data", "{files}/nope.jsonl", *R, names=("--data", "nope.jsonl")),
    case("attn-diff", "lora", "adapter", "--data", "{files}/folder", *R, names=("--data", "folder")),
    case("attn-diff", "lora", "adapter", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("attn-diff", "lora", "adapter", "--data", "{files}/empty.jsonl", *R, names=("empty.jsonl",)),
    case("attn-diff", "lora", "adapter", "--data", "{files}/nested.jsonl", *R, names=("nested.jsonl:1",)),
    case("attn-diff", "lora", "adapter", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("attn-diff", "lora", "adapter", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("attn-diff", "lora", "adapter", "--runs-dir", "", names=("--runs-dir",)),
    case("attn-diff", "lora", "adapter", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("attn-diff", "lora", "base", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
    case("attn-diff", "lora", "adapter", "--bogus", *R, names=("--bogus",)),
    case("attn-diff", "lora", *R, names=("'b'",)),
    # -- ablate -------------------------------------------------------------------------------
    case("ablate", "lora", *R, names=("--layers", "--sweep")),
    case("ablate", "base", "--layers", "1", *R, names=("'base'",)),
    case("ablate", "lora", "--layers", "0", *R, names=("--layers", "0")),
    case("ablate", "lora", "--layers", "5", *R, names=("--layers", "5")),
    case("ablate", "lora", "--layers", "-1", *R, names=("--layers", "-1")),
    case("ablate", "lora", "--layers", "3-1", *R, names=("--layers", "3-1")),
    case("ablate", "lora", "--layers", "1-99", *R, names=("--layers", "1-99")),
    case("ablate", "lora", "--layers", "abc", *R, names=("--layers", "abc")),
    case("ablate", "lora", "--layers", "", *R, names=("--layers",)),
    case("ablate", "lora", "--layers", "1,,2", *R, names=("--layers", "1,,2")),
    case("ablate", "lora", "--layers", "last:0", *R, names=("--layers", "last:0")),
    case("ablate", "lora", "--layers", "last:9", *R, names=("--layers", "last:9")),
    case("ablate", "lora", "--layers", "99999999999999999999999", *R, names=("--layers",)),
    case("ablate", "lora", "--layers", "1", "--mode", "both", *R, names=("--mode",)),
    case("ablate", "lora", "--layers", "1", "--limit", "0", *R, names=("--limit", "0")),
    case("ablate", "lora", "--layers", "1", "--limit", "-1", *R, names=("--limit", "-1")),
    case("ablate", "lora", "--layers", "1", "--device", "bogus", *R, names=("--device", "bogus")),
    case("ablate", "lora", "--layers", "1", "--device", "", *R, names=("--device",)),
    case("ablate", "lora", "--layers", "1", "--device", "cuda", *R, names=("--device", "cuda"), marks=NO_CUDA),
    case("ablate", "lora", "--layers", "1", "--split", "bogus", *R, names=("--split", "bogus")),
    case("ablate", "lora", "--layers", "1", "--data", "{files}/folder", *R, names=("--data",)),
    case("ablate", "lora", "--layers", "1", "--data", "{files}/nope.jsonl", *R, names=("--data",)),
    case("ablate", "lora", "--layers", "1", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("ablate", "lora", "--layers", "1", "--data", "{files}/empty.jsonl", *R, names=("empty.jsonl",)),
    case("ablate", "lora", "--layers", "1", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("ablate", "lora", "--layers", "1", "--runs-dir", "{files}/notes.txt", names=("--runs-dir",)),
    case("ablate", "lora", "--layers", "1", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("ablate", "lora", "--layers", "1", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
    case("ablate", *R, names=("'run'",)),
    case("ablate", "lora", "adapter", "--layers", "1", *R, names=("adapter",)),
    # -- anatomy ------------------------------------------------------------------------------
    case("anatomy", *R, names=("'runs'",)),
    case("anatomy", "lora", "adapter", "lora", *R, names=("one or two", "3")),
    case("anatomy", "base", *R, names=("'base'",)),
    case("anatomy", "lora", "base", *R, names=("'base'",)),
    case("anatomy", "lora", "--top", "0", *R, names=("--top", "0")),
    case("anatomy", "lora", "--top", "-5", *R, names=("--top", "-5")),
    case("anatomy", "lora", "adapter", "--k", "0", *R, names=("--k", "0")),
    case("anatomy", "lora", "adapter", "--k", "-1", *R, names=("--k", "-1")),
    case("anatomy", "lora", "--vectors", "-1", *R, names=("--vectors", "-1")),
    case("anatomy", "lora", "--top", "x", *R, names=("--top",)),
    case("anatomy", "lora", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("anatomy", "lora", "--runs-dir", "{files}/notes.txt", names=("--runs-dir",)),
    case("anatomy", "lora", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    # -- attribute ----------------------------------------------------------------------------
    case("attribute", "lora", *R, names=("--example", "--query")),
    case("attribute", "lora", "--example", "{idx}", "--query", "add", *R, names=("--example", "--query")),
    case("attribute", "lora", "--example", "{idx}", "--code", "{files}/code.py", *R, names=("--example", "--code")),
    case("attribute", "lora", "--query", "add two numbers", *R, names=("--code",)),
    case("attribute", "lora", "--code", "{files}/code.py", *R, names=("--query",)),
    case("attribute", "lora", "--query", "", "--code", "{files}/code.py", *R, names=("--query",)),
    case("attribute", "lora", "--query", "add", "--code", "{files}/empty.py", *R, names=("empty.py",)),
    case("attribute", "lora", "--query", "add", "--code", "{files}/binary.py", *R, names=("binary.py",)),
    case("attribute", "lora", "--query", "add", "--code", "{files}/broken.py", *R, names=("broken.py",)),
    case("attribute", "lora", "--query", "add", "--code", "{files}/nope.py", *R, names=("--code", "nope.py")),
    case("attribute", "lora", "--query", "add", "--code", "{files}/folder", *R, names=("--code", "folder")),
    case("attribute", "lora", "--query", "add", "--code", "{files}/fifo.py", *R, names=("fifo.py",)),
    case("attribute", "lora", "--example", "{idx}", "--data", "{files}/fifo.jsonl", *R, names=("fifo.jsonl",)),
    case("attn-diff", "lora", "adapter", "--data", "{files}/fifo.jsonl", *R, names=("fifo.jsonl",)),
    case("compare", "lora", "adapter", "--data", "{files}/fifo.jsonl", *R, names=("fifo.jsonl",)),
    case("attribute", "lora", "--example", "999999999", *R, names=("--example", "999999999")),
    case("attribute", "lora", "--example", "-1", *R, names=("--example", "-1")),
    case("attribute", "lora", "--example", "x", *R, names=("--example",)),
    case("attribute", "lora", "--example", "{idx}", "--show", "-1", *R, names=("--show", "-1")),
    case("attribute", "lora", "--example", "{idx}", "--others", "0", *R, names=("--others", "0")),
    case("attribute", "lora", "--example", "{idx}", "--others", "-2", *R, names=("--others", "-2")),
    case("attribute", "lora", "--example", "{idx}", "--reference", "pad", "--others", "0", *R, names=("--others", "0")),
    case("attribute", "lora", "--example", "{idx}", "--steps", "1", *R, names=("--steps", "1")),
    case("attribute", "lora", "--example", "{idx}", "--steps", "0", *R, names=("--steps", "0")),
    case("attribute", "lora", "--example", "{idx}", "--steps", "-4", *R, names=("--steps", "-4")),
    case("attribute", "lora", "--example", "{idx}", "--steps", "100000000", *R, names=("--steps", "100000000")),
    case("attribute", "lora", "--example", "{idx}", "--mode", "left", *R, names=("--mode",)),
    case("attribute", "lora", "--example", "{idx}", "--reference", "zero", *R, names=("--reference",)),
    case("attribute", "lora", "--example", "{idx}", "--baseline", "lora", *R, names=("--baseline", "lora")),
    case("attribute", "lora", "--example", "{idx}", "--baseline", "lroa", *R, names=("'lroa'",)),
    case("attribute", "lora", "--example", "{idx}", "--baseline", "", *R, names=("''",)),
    case("attribute", "base", "--example", "{idx}", *R, names=("'base'", "--data")),
    case("attribute", "lora", "--example", "{idx}", "--split", "bogus", *R, names=("--split", "bogus")),
    case("attribute", "lora", "--example", "{idx}", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("attribute", "lora", "--example", "{idx}", "--data", "{files}/empty.jsonl", *R, names=("empty.jsonl",)),
    case("attribute", "lora", "--example", "{idx}", "--data", "{files}/folder", *R, names=("--data",)),
    case("attribute", "lora", "--example", "{idx}", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("attribute", "lora", "--example", "{idx}", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("attribute", "lora", "--example", "{idx}", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
    # -- qualitative --------------------------------------------------------------------------
    case("qualitative", *R, names=("--runs", "--baseline")),
    case("qualitative", "--baseline", "lora", *R, names=("--baseline", "--candidate")),
    case("qualitative", "--candidate", "lora", *R, names=("--baseline", "--candidate")),
    case("qualitative", "--baseline", "lora", "--candidate", "lora", *R, names=("'lora'", "twice")),
    case("qualitative", "--baseline", "lroa", "--candidate", "adapter", *R, names=("'lroa'", "did you mean 'lora'")),
    case("qualitative", "--baseline", "lora", "--candidate", "adaptr", *R, names=("'adaptr'", "did you mean 'adapter'")),
    case("qualitative", "--baseline", "lora", "--candidate", "base", "--runs", "lora,lora", *R, names=("'lora'", "twice")),
    case("qualitative", "--runs", "lora,lora", *R, names=("'lora'", "twice")),
    case("qualitative", "--runs", "lora,,adapter", *R, names=("--runs", "lora,,adapter")),
    case("qualitative", "--runs", ",", *R, names=("--runs",)),
    case("qualitative", "--runs", "", *R, names=("--runs",)),
    case("qualitative", "--runs", "lora,adapter", "--samples", "-1", *R, names=("--samples", "-1")),
    case("qualitative", "--runs", "lora,adapter", "--samples", "x", *R, names=("--samples",)),
    case("qualitative", "--runs", "lora,adapter", "--limit", "0", *R, names=("--limit", "0")),
    case("qualitative", "--runs", "lora,adapter", "--limit", "-1", *R, names=("--limit", "-1")),
    case("qualitative", "--runs", "lora,adapter", "--split", "bogus", *R, names=("--split", "bogus")),
    case("qualitative", "--runs", "lora,adapter", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("qualitative", "--runs", "lora,adapter", "--data", "{files}/empty.jsonl", *R, names=("empty.jsonl",)),
    case("qualitative", "--runs", "lora,adapter", "--data", "{files}/nope.jsonl", *R, names=("--data",)),
    case("qualitative", "--runs", "lora,adapter", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("qualitative", "--runs", "lora", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("qualitative", "--runs", "lora", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
    # -- compare ------------------------------------------------------------------------------
    case("compare", *R, names=("'runs'",)),
    case("compare", "lora", *R, names=("two",)),
    case("compare", "lora", "lora", *R, names=("'lora'", "twice")),
    case("compare", "base", "base", *R, names=("'base'", "twice")),
    case("compare", "lora", "adapter", "--bootstrap", "0", *R, names=("--bootstrap", "0")),
    case("compare", "lora", "adapter", "--bootstrap", "-1", *R, names=("--bootstrap", "-1")),
    case("compare", "lora", "adapter", "--bootstrap", "1", *R, names=("--bootstrap", "1", "40")),
    case("compare", "lora", "adapter", "--bootstrap", "39", *R, names=("--bootstrap", "39")),
    case("compare", "lora", "adapter", "--bootstrap", "1000000000000", *R, names=("--bootstrap", "1000000000000")),
    case("compare", "lora", "adapter", "--permutations", "1000000000000", *R, names=("--permutations", "1000000000000")),
    case("compare", "lora", "adapter", "--permutations", "0", *R, names=("--permutations", "0")),
    case("compare", "lora", "adapter", "--permutations", "-10", *R, names=("--permutations", "-10")),
    case("compare", "lora", "adapter", "--seed", "-1", *R, names=("--seed", "-1")),
    case("compare", "lora", "adapter", "--seed", str(2**64), *R, names=("--seed",)),
    case("compare", "lora", "adapter", "--seed", "1.5", *R, names=("--seed",)),
    case("compare", "lora", "adapter", "--limit", "0", *R, names=("--limit", "0")),
    case("compare", "lora", "adapter", "--split", "bogus", *R, names=("--split", "bogus")),
    case("compare", "lora", "adapter", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("compare", "lora", "adapter", "--data", "{files}/nested.jsonl", *R, names=("nested.jsonl:1",)),
    case("compare", "lora", "adapter", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("compare", "lora", "adapter", "--runs-dir", "{files}/notes.txt", names=("--runs-dir",)),
    case("compare", "lora", "base", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("compare", "lora", "base", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
    # -- damaged ranks.json (compare and qualitative read them) ---------------------------------
    *[case(cmd, *pre, f"lora-{damage}", *post, "--limit", str(EXAMPLES), "--runs-dir", "{root}/bad-ranks",
           names=(f"lora-{damage}/ranks.json{colon}",) + extra)
      for damage, colon, extra in (("trunc", ":", ()), ("notjson", ":1", ()), ("empty", ":1", ()), ("list", "", ("list",)),
                                   ("nokeys", "", ("'fingerprint'",)), ("noranks", "", ("'ranks'",)), ("badrank", "", ("'first'",)),
                                   ("fewranks", "", ("no rank",)), ("binary", "", ("UTF-8",)))
      for cmd, pre, post in (("compare", (), ("adapter",)), ("qualitative", ("--runs",), ()))],
    # -- a run whose weights are damaged, or whose base model was moved away -------------------
    *[case(*args, "--runs-dir", f"{{root}}/{where}", names=(needle,))
      for where, needle in (("bad-weights", "lora/adapter_model.safetensors"), ("moved-base", "moved-base-model"))
      for args in (("attn-diff", "lora", "base", "--limit", "2"), ("ablate", "lora", "--layers", "1"), ("anatomy", "lora"),
                   ("attribute", "lora", "--example", "{idx}"), ("compare", "lora", "base"), ("qualitative", "--runs", "lora,base"))],
    # -- where results go: something else is there --------------------------------------------
    case("compare", "lora", "adapter", *R, names=("lora-vs-adapter.json", "directory")),
    case("ablate", "lora", "--layers", "1", *R, names=("lora.drop1.json", "not a regular file")),
    case("anatomy", "lora", "--runs-dir", "{root}/analyses-file", names=("analyses-file/analyses/anatomy/lora.json",)),
    case("compare", "lora", "base", "--runs-dir", "{root}/analyses-file", names=("analyses-file/analyses/compare",)),
    case("qualitative", "--runs", "lora,adapter", *R, names=("lora+adapter.json", "not an interp qualitative result")),
    case("anatomy", "adapter", *R, names=("adapter.json", "line 1")),
    # -- report -------------------------------------------------------------------------------
    case("report", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("report", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("report", "--runs-dir", "", names=("--runs-dir",)),
    case("report", *R, "--out", "", names=("--out",)),
    case("report", *R, "--out", "{runs}", names=("--out",)),
    case("report", *R, "--out", "{runs}/lora", names=("--out", "lora")),
    case("report", *R, "--out", "{runs}/lora/manifest.json", names=("--out", "manifest.json")),
    case("report", *R, "--out", "{data}", names=("--out",)),
    case("report", *R, "--out", "{runs}/analyses", names=("--out", "analyses")),
    case("report", *R, "--out", "{files}/notes.txt", names=("--out", "notes.txt")),
    case("report", *R, "--out", "{runs}/lora/site", names=("--out", "a run")),
    case("report", *R, "--out", "{data}/site", names=("--out", "a data directory")),
    case("report", *R, "--out", "{root}", names=("--out", "runs directory")),
    case("report", *R, "--out", "{runs}/..", names=("--out", "runs directory")),
    case("report", "--runs-dir", "{root}/bad-manifest", "--out", "{root}/bad-manifest/lora", names=("--out", "lora")),
    case("report", "--runs-dir", "{runs}/lora", names=("--out", "a run")),
    case("report", *R, "--out", "{files}", names=("--out",)),
    case("report", *R, "--out", "{files}/notes.txt/site", names=("--out",)),
    case("report", *R, "--out", "/dev/null", names=("--out", "/dev/null")),
    case("report", *R, "--out", "/dev/null/site", names=("--out",)),
    case("report", *R, "--open", "yes", names=("yes",)),
]


@pytest.mark.parametrize("args, names", REFUSED)
def test_refused(world, args, names, monkeypatch):
    monkeypatch.chdir(world.root)  # a default or empty path lands in the watched directory
    check_refused(fill(args, world), names, watched=world.root)


POSITIVE = [  # controls: the same commands with good values run, print the result's path and write it
    ["attn-diff", "lora", "adapter", "--limit", "3", "--side", "query", "--layer", "2", "--device", "cpu"],
    ["ablate", "lora", "--layers", "last:2", "--limit", "4", "--device", "cpu"],
    ["anatomy", "lora", "adapter", "--top", "2", "--k", "1"],
    ["attribute", "lora", "--example", "{idx}", "--steps", "2", "--others", "1", "--show", "0"],
    ["qualitative", "--baseline", "lora", "--candidate", "adapter", "--limit", str(EXAMPLES), "--samples", "0"],
    ["compare", "lora", "adapter", "--limit", str(EXAMPLES), "--bootstrap", "40", "--permutations", "1"],
]


@pytest.mark.parametrize("args", POSITIVE, ids=[a[0] for a in POSITIVE])
def test_good_values_run(world, tmp_path, args, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(world.cli_world.runs, runs)
    monkeypatch.chdir(tmp_path)
    result = invoke(fill(args, world) + ["--runs-dir", runs])
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}\n{result.exception!r}"
    written = result.stdout.splitlines()[-1].removeprefix("-> ")
    assert Path(written).is_file() and Path(written).parent.parent == runs / "analyses"
    assert "error" not in result.stderr


def test_an_earlier_result_is_replaced(world, tmp_path):
    """What the analysis itself wrote there before is not 'something else': a rerun replaces it."""
    runs = tmp_path / "runs"
    shutil.copytree(world.cli_world.runs, runs)
    first = invoke(["anatomy", "lora", "--top", "1", "--runs-dir", runs])
    second = invoke(["anatomy", "lora", "--top", "2", "--runs-dir", runs])
    assert first.exit_code == second.exit_code == 0, second.stderr
    saved = json.loads((runs / "analyses" / "anatomy" / "lora.json").read_text())
    assert saved["kind"] == "anatomy" and saved["inputs"]["top"] == 2


def test_the_shared_world_is_as_it_was(world):
    """No case of this module wrote into cli_world (cases read its data through the runs' manifests)."""
    assert snapshot(world.cli_world.root) == world.shared
