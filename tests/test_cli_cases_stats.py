"""qualitative, compare and report refuse bad input as the README promises (issue 12).

Each given bad values, damaged inputs (ranks.json, data files, manifests) and output paths that
hold something else: exit status 2, one `error:` line naming the option, file or line at fault,
no traceback, and nothing on disk changed (`helpers.check_refused`). The world they read is
test_cli_cases_analyses.py's (`helpers.analyses_cases_world`), which also holds the cases every
analysis command shares (bad run names, damaged weights, a moved base model).

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider -n 0 tests/test_cli_cases_stats.py
"""

from __future__ import annotations

import pytest

from helpers import EXAMPLES, analyses_cases_world, check_refused
from helpers import analysis_case as case, fill_analysis_args as fill

R = ["--runs-dir", "{runs}"]


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world's runs beside damaged copies of them and odd files (helpers.analyses_cases_world); cases may only read it."""
    return analyses_cases_world(cli_world, tmp_path_factory.mktemp("analyses-cases"))


REFUSED = [
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
