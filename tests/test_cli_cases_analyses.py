"""attn-diff, cka, ablate, anatomy and attribute refuse bad input as the README promises (issue 12).

attn-diff, cka, ablate, anatomy and attribute given bad values and damaged inputs, and every analysis
command given bad run names, damaged weights, a moved base model and output paths that hold
something else: exit status 2, one `error:` line naming the option, file or line at fault, no
traceback, and nothing on disk changed (`helpers.check_refused`). Almost every case is refused
before a model loads. (qualitative, compare and report: tests/test_cli_cases_stats.py; the
report given damaged or hostile analysis files: tests/test_report_damaged.py.)

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider -n 0 tests/test_cli_cases_analyses.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from helpers import EXAMPLES, analyses_cases_world, check_refused, invoke, snapshot
from helpers import analysis_case as case, fill_analysis_args as fill

R = ["--runs-dir", "{runs}"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no CUDA device")


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world's runs beside damaged copies of them and odd files (helpers.analyses_cases_world); cases may only read it."""
    return analyses_cases_world(cli_world, tmp_path_factory.mktemp("analyses-cases"))


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
            case("cka", name, "lora", *R, names=names),
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
    # -- cka ----------------------------------------------------------------------------------
    case("cka", "lora", *R, names=("'b'",)),
    case("cka", "lora", "adapter", "--tokens", "mean", *R, names=("--tokens", "mean")),
    case("cka", "lora", "adapter", "--tokens", "", *R, names=("--tokens",)),
    case("cka", "lora", "adapter", "--estimator", "debiased", *R, names=("--estimator", "debiased")),
    case("cka", "lora", "adapter", "--limit", "0", *R, names=("--limit", "0")),
    case("cka", "lora", "adapter", "--limit", "-2", *R, names=("--limit", "-2")),
    case("cka", "lora", "adapter", "--limit", "1", *R, names=("at least 2 examples", "got 1")),
    case("cka", "lora", "adapter", "--limit", "3", "--estimator", "unbiased", *R, names=("at least 4 examples", "unbiased")),
    case("cka", "lora", "adapter", "--batch-size", "0", *R, names=("--batch-size", "0")),
    case("cka", "lora", "adapter", "--side", "left", *R, names=("--side",)),
    case("cka", "lora", "adapter", "--device", "bogus", *R, names=("--device",)),
    case("cka", "lora", "adapter", "--device", "cuda", *R, names=("--device", "cuda"), marks=NO_CUDA),
    case("cka", "lora", "adapter", "--split", "bogus", *R, names=("--split", "bogus")),
    case("cka", "lora", "adapter", "--data", "{files}/empty.jsonl", *R, names=("empty.jsonl",)),
    case("cka", "lora", "adapter", "--data", "{files}/badline.jsonl", *R, names=("badline.jsonl:3",)),
    case("cka", "lora", "adapter", "--seeds", *R, names=("preset", "'lora'")),
    case("cka", "lora,lora", "adapter", *R, names=("'lora'", "twice")),
    case("cka", "lora,adapter", "adapter", *R, names=("'adapter'", "both sides")),
    case("cka", "lora", "adapter", "--runs-dir", "{root}/nosuch", names=("--runs-dir", "nosuch")),
    case("cka", "lora", "adapter", "--runs-dir", "{root}/bad-manifest", names=("manifest.json",)),
    case("cka", "lora", "base", "--runs-dir", "{root}/no-data", names=("test.jsonl",)),
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
    # -- a run whose weights are damaged, or whose base model was moved away -------------------
    *[case(*args, "--runs-dir", f"{{root}}/{where}", names=(needle,))
      for where, needle in (("bad-weights", "lora/adapter_model.safetensors"), ("moved-base", "moved-base-model"))
      for args in (("attn-diff", "lora", "base", "--limit", "2"), ("ablate", "lora", "--layers", "1"), ("anatomy", "lora"),
                   ("attribute", "lora", "--example", "{idx}"), ("compare", "lora", "base"), ("qualitative", "--runs", "lora,base"),
                   ("cka", "lora", "base", "--limit", "2"))],
    # -- where results go: something else is there --------------------------------------------
    case("compare", "lora", "adapter", *R, names=("lora-vs-adapter.json", "directory")),
    case("ablate", "lora", "--layers", "1", *R, names=("lora.drop1.json", "not a regular file")),
    case("anatomy", "lora", "--runs-dir", "{root}/analyses-file", names=("analyses-file/analyses/anatomy/lora.json",)),
    case("compare", "lora", "base", "--runs-dir", "{root}/analyses-file", names=("analyses-file/analyses/compare",)),
    case("qualitative", "--runs", "lora,adapter", *R, names=("lora+adapter.json", "not an interp qualitative result")),
    case("anatomy", "adapter", *R, names=("adapter.json", "line 1")),
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
    ["cka", "lora", "adapter", "--limit", "4", "--side", "query", "--tokens", "all", "--device", "cpu"],
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
