"""train, eval, runs, params, encoder and study refuse bad input as the README promises (issue 12).

Every option of these commands given bad values, usage errors of every command and sub-app,
method options that do not fit the method or the base, out-of-range sizes, paths that are not
what they should be, and devices: exit status 2, one `error:` line naming the option, file or
value at fault, no traceback, nothing on disk changed (`helpers.check_refused`). The commands
check their options before a model or a data file loads, so the table runs in seconds. A few
positive controls close it: a preset restricted to layers builds, fits and trains only them.

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider tests/test_cli_cases.py
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from helpers import check_refused, invoke, snapshot

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="refused only where there is no CUDA device")
HUB_ID = "no-such-owner/no-such-encoder"  # neither a directory nor in the hub cache (the tests run offline)


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world (data/, base/ = tiny RoBERTa, runs/ with lora and adapter) and a folder of odd files.

    files/   notes.txt, a directory without splits, a data directory missing valid.jsonl, a model
             directory whose config.json is broken, predictions written earlier, an empty file
    """
    files = tmp_path_factory.mktemp("cli-cases")
    (files / "notes.txt").write_text("keep me\n")
    (files / "folder").mkdir()
    (files / "no-valid").mkdir()
    for split in ("train", "test"):
        (files / "no-valid" / f"{split}.jsonl").write_text((cli_world.data / f"{split}.jsonl").read_text())
    (files / "badbase").mkdir()
    (files / "badbase" / "config.json").write_text('{"model_type": "roberta", "hidden_size": ')
    (files / "otherbase").mkdir()
    (files / "otherbase" / "config.json").write_text('{"model_type": "gpt2"}')
    return SimpleNamespace(root=cli_world.root, data=cli_world.data, base=cli_world.base, runs=cli_world.runs, files=files)


def fill(args: list[str], world) -> list[str]:
    return [a.format(data=world.data, base=world.base, runs=world.runs, files=world.files, root=world.root) for a in args]


def case(*args: str, names: tuple[str, ...] = (), marks=()):
    shown = " ".join(args).replace("{data}", "D").replace("{runs}", "R").replace("{base}", "B").replace("{files}/", "")
    return pytest.param(list(args), names, id=shown[:100], marks=marks)


# `interp train` with a valid place to work in; each case adds a method and one bad thing
T = ["train", "--name", "new", "--data", "{data}", "--runs-dir", "{runs}", "--no-progress"]
TINY = ["--base", "{base}"]  # the tiny RoBERTa: 4 layers, hidden 32, FFN 128, 128 tokens
LORA = ["--preset", "lora64"]  # fits the default base (6 layers, hidden 384)
ADAPTER = ["--method", "adapter", "--r", "8", "--placement", "ffn"]

METHOD_CASES = [
    # one of --preset and --method
    case(*T, names=("--preset", "--method")),
    case(*T, *LORA, "--method", "lora", "--r", "4", names=("--preset", "--method")),
    case(*T, "--preset", "lora46", names=("'lora46'", "did you mean 'lora64'")),
    case(*T, "--preset", "LOFF2", names=("'LOFF2'",)),
    case(*T, "--preset", "", names=("preset",)),
    case(*T, "--method", "bogus", names=("--method", "bogus")),
    case(*T, "--method", "union", names=("--method", "union")),
    case(*T, "--method", "", names=("--method",)),
    # required and foreign options
    case(*T, "--method", "lora", names=("--r",)),
    case(*T, "--method", "adapter", names=("--r",)),
    case(*T, "--method", "prefix", names=("--length",)),
    case(*T, "--method", "lora", "--r", "4", "--length", "5", names=("--length", "--method lora")),
    case(*T, "--method", "lora", "--r", "4", "--placement", "ffn", names=("--placement", "--method lora")),
    case(*T, "--method", "prefix", "--length", "5", "--r", "4", names=("--r", "--method prefix")),
    case(*T, "--method", "prefix", "--length", "5", "--alpha", "4", names=("--alpha", "--method prefix")),
    case(*T, "--method", "adapter", "--r", "4", "--alpha", "4", names=("--alpha", "--method adapter")),
    case(*T, "--method", "adapter", "--r", "4", "--length", "5", names=("--length", "--method adapter")),
    case(*T, "--method", "full", "--r", "4", names=("--r", "--method full")),
    case(*T, "--method", "full", "--lora-scaling", "alpha/r", names=("--lora-scaling", "--method full")),
    case(*T, "--method", "adapter", "--r", "4", "--lora-scaling", "alpha/r", names=("--lora-scaling",)),
    case(*T, *LORA, "--r", "8", names=("--r", "--preset")),
    case(*T, *LORA, "--alpha", "8", names=("--alpha", "--preset")),
    case(*T, *LORA, "--length", "8", names=("--length", "--preset")),
    case(*T, *LORA, "--placement", "ffn", names=("--placement", "--preset")),
    case(*T, "--preset", "adapter-ffn64", "--lora-scaling", "alpha/r", names=("--lora-scaling", "adapter-ffn64")),
    case(*T, "--preset", "prefix5", "--lora-scaling", "alpha/r", names=("--lora-scaling", "prefix5")),
    case(*T, *LORA, "--lora-scaling", "bogus", names=("--lora-scaling", "bogus")),
    case(*T, *LORA, "--lora-scaling", "", names=("--lora-scaling",)),
    # bad values of the method's own options
    *[case(*T, "--method", "lora", "--r", v, names=("--r", v)) for v in ("0", "-3")],
    # sizes by the study's formula beyond the whole base (22,713,216 weights; r 2464 is the largest LoRA that fits)
    *[case(*T, "--method", "lora", "--r", v, names=("--r", v, "whole base")) for v in ("1000000000000", "2465")],
    *[case(*T, "--method", "lora", "--r", v, names=("--r",)) for v in ("abc", "", "4.5", "1e3", "99999999999999999999999999")],
    *[case(*T, "--method", "adapter", "--r", v, names=("--r", v)) for v in ("0", "-1")],
    *[case(*T, "--method", "adapter", "--r", v, names=("--r", v, "whole base")) for v in ("1000000000000", "2465")],
    case(*T, "--method", "adapter", "--placement", "ffn", "--r", "4930", names=("--r", "4930", "whole base")),
    *[case(*T, "--method", "prefix", "--length", v, names=("--length", v)) for v in ("0", "-5")],
    *[case(*T, "--method", "prefix", "--length", v, names=("--length", v, "whole base")) for v in ("4930", "1000000000000")],
    case(*T, "--method", "prefix", "--length", "x", names=("--length",)),
    *[case(*T, "--method", "lora", "--r", "4", "--alpha", v, names=("--alpha", v)) for v in ("nan", "inf", "-inf", "0", "-1")],
    case(*T, "--method", "lora", "--r", "4", "--alpha", "four", names=("--alpha",)),
    *[case(*T, "--method", "adapter", "--r", "4", "--placement", v, names=("--placement",)) for v in ("ATTN", "", "middle")],
    # tiny base (75,328 weights): deltas larger than it, presets that do not fit it
    case(*T, *TINY, "--method", "lora", "--r", "148", names=("--r", "148", "75,328")),
    case(*T, *TINY, "--method", "adapter", "--placement", "ffn", "--r", "295", names=("--r", "295", "75,328")),
    case(*T, *TINY, "--method", "prefix", "--length", "295", names=("--length", "295", "75,328")),
    case(*T, *TINY, "--preset", "loFF", names=("--preset loFF", "75,328")),
    case(*T, *TINY, "--preset", "adapter-h512", names=("--preset adapter-h512", "75,328")),
    case(*T, *TINY, "--preset", "prefix5", "--max-len", "129", names=("--max-len", "129", "128")),
    case(*T, "--preset", "loFF_9-12", names=("--preset loFF_9-12", "6 layers")),
    case(*T, *TINY, "--preset", "loFF_9-12", names=("--preset loFF_9-12", "4 layers")),
]

LAYER_SPECS = [("0", "0"), ("7", "6 layers"), ("5-7", "6 layers"), ("3-1", "3-1"), ("last:0", "last:0"), ("last:7", "6 layers"),
               ("abc", "abc"), ("", "''"), ("1,,2", "1,,2"), ("-1", "-1"), ("1-", "1-"), ("last:", "last:"), ("9-12", "6 layers"),
               ("99999999999999999999", "6 layers")]
LAYER_CASES = [
    *[case(*T, *LORA, "--layers", spec, names=("--layers", shown)) for spec, shown in LAYER_SPECS],
    *[case(*T, "--method", "lora", "--r", "4", "--layers", spec, names=("--layers",)) for spec, _ in LAYER_SPECS[:8]],
    *[case(*T, "--preset", "loFF", "--layers", spec, names=("--layers",)) for spec in ("0", "5-7", "3-1", "x")],
    case(*T, *TINY, "--method", "adapter", "--r", "4", "--layers", "5", names=("--layers", "4 layers")),
    case(*T, "--preset", "loFF_9-12", "--layers", "5-6", names=("--layers", "9-12")),
]

SIZES = [  # option, bad value, what the line shows
    ("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "two"),
    ("--batch-size", "0"), ("--batch-size", "1"), ("--batch-size", "-4"), ("--batch-size", "100000"),
    ("--lr", "0"), ("--lr", "-1"), ("--lr", "nan"), ("--lr", "inf"), ("--lr", "fast"),
    ("--warmup-frac", "2"), ("--warmup-frac", "1"), ("--warmup-frac", "-0.1"), ("--warmup-frac", "nan"),
    ("--seed", "-1"), ("--seed", "18446744073709551616"), ("--seed", "9223372036854775808"), ("--seed", "1.5"),
    ("--evals-per-epoch", "0"), ("--evals-per-epoch", "-2"),
    ("--max-steps", "0"), ("--max-steps", "-1"),
    ("--max-len", "0"), ("--max-len", "-1"), ("--max-len", "513"), ("--max-len", "100000"),
    ("--train-limit", "0"), ("--train-limit", "-1"), ("--train-limit", "3"),
    ("--eval-limit", "0"), ("--eval-limit", "-1"),
    ("--num-processes", "0"), ("--num-processes", "-1"), ("--num-processes", "3"),
    ("--pooling", "max"), ("--pooling", ""), ("--batching", "sorted"), ("--ties", "pessimistic"),
]
SIZE_CASES = [
    *[case(*T, *LORA, option, value, names=(option,)) for option, value in SIZES],
    *[case(*T, *ADAPTER, option, value, names=(option,)) for option, value in SIZES if option != "--max-len"],
    *[case(*T, *TINY, *ADAPTER, "--max-len", v, names=("--max-len", v)) for v in ("129", "0", "512")],
]

NEW = ["train", "--name", "new"]
NAMES = [("x" * 300, "x" * 20), ("a/b", "a/b"), ("../up", "../up"), (".hidden", ".hidden"), ("", "''"), ("data", "data"),
         ("analyses", "analyses"), ("report", "report"), ("study", "study"), ("with space", "with space"), ("a\\b", "a"),
         ("..", ".."), ("-", "-")]
PATH_CASES = [
    *[case("train", "--name", name, "--data", "{data}", "--runs-dir", "{runs}", *LORA, names=("--name", shown)) for name, shown in NAMES],
    case("train", "--name", "lora", "--data", "{data}", "--runs-dir", "{runs}", *LORA, names=("'lora'", "already exists")),
    case("train", "--name", "lora", "--resume", "--data", "{data}", "--runs-dir", "{runs}", *TINY, "--method", "lora", "--r", "4", "--max-len", "32",
         names=("'lora'", "finished")),
    case("train", *LORA, names=("--name",)),
    case("train", "--name", "new", *LORA, "--data", "{data}", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("train", "--name", "new", *LORA, "--data", "{data}", "--runs-dir", "/dev/null/runs", names=("--runs-dir", "/dev/null")),
    case("train", "--name", "new", *LORA, "--data", "{data}", "--runs-dir", "{files}/notes.txt/runs", names=("--runs-dir",)),
    case("train", "--name", "new", *LORA, "--data", "{data}", "--runs-dir", "{data}/train.jsonl", names=("--runs-dir", "train.jsonl")),
    case("train", "--name", "new", *LORA, "--data", "{data}", "--runs-dir", "", names=("--runs-dir",)),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "{data}/train.jsonl", names=("--data", "train.jsonl")),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "{files}/folder", names=("--data", "folder", "train.jsonl")),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "{files}/no-valid", names=("--data", "valid.jsonl")),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "{files}/nosuch", names=("--data", "nosuch")),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "{runs}", names=("--data",)),
    case(*NEW, *LORA, "--runs-dir", "{runs}", "--data", "", names=("--data",)),
    case(*NEW, *LORA, "--runs-dir", "{runs}", names=("--data", "runs/data")),
]

BASES = [(HUB_ID, (HUB_ID, "not found locally")), ("{files}/notes.txt", ("notes.txt",)), ("{files}/folder", ("folder", "config.json")),
         ("{runs}/lora", ("lora", "config.json")), ("{files}/badbase", ("badbase",)), ("{files}/otherbase", ("gpt2",)),
         ("./nosuch", ("./nosuch",)), ("", ("--base",)), ("bad id!", ("bad id!",))]
BASE_CASES = [
    *[case(*T, *LORA, "--base", base, names=("--base", *shown)) for base, shown in BASES],
    *[case("params", "--base", base, names=("--base", *shown)) for base, shown in BASES],
    *[case("encoder", "--base", base, names=("--base", *shown)) for base, shown in BASES],
]

DEVICE_CASES = [
    case(*T, *LORA, "--device", "bogus", names=("--device", "bogus")),
    case(*T, *LORA, "--device", "", names=("--device",)),
    case(*T, *LORA, "--device", "CUDA", names=("--device",)),
    case(*T, *LORA, "--device", "cuda", names=("--device", "cuda"), marks=NO_CUDA),
    case(*T, *LORA, "--device", "cuda", "--num-processes", "2", names=("--device", "cuda"), marks=NO_CUDA),
]

R = ["--runs-dir", "{runs}"]
EVAL_CASES = [
    case("eval", *R, names=("'name'",)),
    case("eval", "nosuch", *R, names=("'nosuch'",)),
    case("eval", "lroa", *R, names=("'lroa'", "did you mean 'lora'")),
    case("eval", "../lora", *R, names=("../lora",)),
    case("eval", "data", *R, names=("data",)),
    case("eval", "lora", "adapter", *R, names=("adapter",)),
    case("eval", "lora", "--split", "bogus", *R, names=("--split", "bogus")),
    case("eval", "lora", "--split", "", *R, names=("--split",)),
    case("eval", "lora", "--split", "../test", *R, names=("--split", "../test")),
    case("eval", "lora", "--top-k", "0", *R, names=("--top-k", "0")),
    case("eval", "lora", "--top-k", "-1", *R, names=("--top-k", "-1")),
    case("eval", "lora", "--top-k", "many", *R, names=("--top-k",)),
    case("eval", "lora", "--ties", "bogus", *R, names=("--ties", "bogus")),
    case("eval", "lora", "--device", "bogus", *R, names=("--device", "bogus")),
    case("eval", "lora", "--device", "cuda", *R, names=("--device", "cuda"), marks=NO_CUDA),
    case("eval", "lora", "--data", "{files}/nosuch.jsonl", *R, names=("--data", "nosuch.jsonl")),
    case("eval", "lora", "--data", "{data}", *R, names=("--data",)),
    case("eval", "lora", "--predictions", "{runs}/lora/manifest.json", *R, names=("--predictions", "manifest.json", "run's manifest")),
    case("eval", "lora", "--predictions", "{data}/test.jsonl", *R, names=("--predictions", "test.jsonl", "data split")),
    case("eval", "lora", "--predictions", "{files}/notes.txt", *R, names=("--predictions", "notes.txt")),
    case("eval", "lora", "--predictions", "{runs}/lora", *R, names=("--predictions", "directory")),
    case("eval", "lora", "--predictions", "{files}/folder", *R, names=("--predictions", "directory")),
    case("eval", "lora", "--predictions", "{files}/nosuch/p.jsonl", *R, names=("--predictions", "nosuch")),
    case("eval", "lora", "--predictions", "{files}/notes.txt/p.jsonl", *R, names=("--predictions",)),
    case("eval", "lora", "--runs-dir", "{files}/nosuch", names=("--runs-dir", "nosuch")),
    case("eval", "lora", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("eval", "lora", "--runs-dir", "{files}/folder", names=("'lora'",)),
    case("eval", "lora", "--bogus", *R, names=("--bogus",)),
]

RUNS_CASES = [
    case("runs", "--runs-dir", "{files}/nosuch", names=("--runs-dir", "nosuch", "no such directory")),
    case("runs", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("runs", "--runs-dir", "/dev/null/runs", names=("--runs-dir",)),
    case("runs", "--runs-dir", names=("--runs-dir",)),
    case("runs", "lora", *R, names=("lora",)),
    case("runs", "--json", *R, names=("--json",)),
]

PARAMS_CASES = [
    case("params", "lora46", names=("'lora46'", "did you mean 'lora64'")),
    case("params", "LOFF2", names=("'LOFF2'",)),
    case("params", "lora64", "nosuch", names=("'nosuch'",)),
    case("params", "", names=("''",)),
    case("params", "--lora-scaling", "bogus", names=("--lora-scaling", "bogus")),
    case("params", "adapter-h64", "--lora-scaling", "alpha/r", names=("--lora-scaling", "adapter-h64")),
    case("params", "loFF_9-12", names=("loFF_9-12", "6 layers")),
    case("params", "--json", "yes", names=("'yes'",)),
    case("params", "--bogus", names=("--bogus",)),
    case("encoder", "--bogus", names=("--bogus",)),
    case("encoder", "extra", names=("extra",)),
    case("encoder", "--base", names=("--base",)),
]

S = ["--data", "{data}", "--runs-dir", "{runs}", "--no-progress"]
STUDY_CASES = [
    case("study", *S, names=("GRID",)),
    case("study", "rq9", *S, names=("'rq9'",)),
    case("study", "", *S, names=("''",)),
    case("study", "rq1", "--seeds", "abc", *S, names=("--seeds", "abc")),
    case("study", "rq1", "--seeds", "-1", *S, names=("--seeds", "-1")),
    case("study", "rq1", "--seeds", "1,1", *S, names=("--seeds", "1")),
    case("study", "rq1", "--seeds", "", *S, names=("--seeds",)),
    case("study", "rq1", "--seeds", "1,,2", *S, names=("--seeds",)),
    case("study", "rq1", "--seeds", "1,36893488147419103232", *S, names=("--seeds", "36893488147419103232")),
    case("study", "rq1", "--scale", "huge", *S, names=("'huge'",)),
    case("study", "rq1", "--scale", "", *S, names=("scale",)),
    case("study", "rq1", "--device", "bogus", *S, names=("--device", "bogus")),
    case("study", "rq1", "--device", "cuda", "--scale", "demo", *S, names=("--device", "cuda"), marks=NO_CUDA),
    case("study", "rq1", "--data", "{files}/folder", "--runs-dir", "{runs}", names=("--data", "folder")),
    case("study", "rq1", "--data", "{files}/no-valid", "--runs-dir", "{runs}", names=("--data", "valid.jsonl")),
    case("study", "rq1", "--data", "{data}/train.jsonl", "--runs-dir", "{runs}", names=("--data", "train.jsonl")),
    case("study", "rq1", "--data", "{data}", "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt")),
    case("study", "rq1", "--data", "{data}", "--runs-dir", "/dev/null/runs", names=("--runs-dir", "/dev/null")),
    case("study", "rq1", "--base", HUB_ID, *S, names=("--base", HUB_ID)),
    case("study", "rq1", "--base", "{files}/notes.txt", *S, names=("--base", "notes.txt")),
    case("study", "rq1", "--bogus", *S, names=("--bogus",)),
    case("study", "rq1", "rq2", *S, names=("rq2",)),
]

USAGE_CASES = [  # Typer's usage errors in the one-line form, for every command and sub-app
    case("bogus", names=("bogus",)),
    case("--bogus", names=("--bogus",)),
    case("trian", names=("trian",)),
    case(*T, *LORA, "--bogus", names=("--bogus",)),
    case(*T, *LORA, "--nme", "x", names=("--nme",)),
    case(*T, *LORA, "--eval-batch-size", "0", names=("--eval-batch-size",)),
    case(*T, *LORA, "extra", names=("extra",)),
    case(*T, *LORA, "--epochs", names=("--epochs",)),
    case("train", "--name", names=("--name",)),
    case(*T, *LORA, "--progress", "yes", names=("yes",)),
    case("data", "bogus", names=("bogus",)),
    case("data", "build", "--bogus", names=("--bogus",)),
    case("data", "build", "--seed", "x", names=("--seed",)),
    case("data", "build", "--workers", "0", names=("--workers",)),
    case("data", "check", "--bogus", names=("--bogus",)),
    case("data", "check", "{data}", "extra", names=("extra",)),
    *[case(command, "--bogus", names=("--bogus",))
      for command in ("qualitative", "compare", "attn-diff", "cka", "ablate", "anatomy", "attribute", "report", "demo")],
]

CASES = (METHOD_CASES + LAYER_CASES + SIZE_CASES + PATH_CASES + BASE_CASES + DEVICE_CASES + EVAL_CASES + RUNS_CASES
         + PARAMS_CASES + STUDY_CASES + USAGE_CASES)


def _tripwire(*_, **__):
    raise AssertionError("a case meant to be refused went on to load the base encoder")


@pytest.mark.parametrize("args,names", CASES)
def test_refused(world, monkeypatch, args, names):
    monkeypatch.chdir(world.root)  # default relative paths (runs/, runs/data) resolve in the user's directory
    if args[0] in ("train", "eval", "study"):  # these refuse before any model loads: one that slips through fails fast
        import trainers.encoders
        import trainers.training.scoring
        import trainers.training.train

        for module in (trainers.encoders, trainers.training.scoring, trainers.training.train):
            monkeypatch.setattr(module, "load_encoder", _tripwire)
    check_refused(fill(args, world), names, watched=world.root)


# -- positive controls: valid requests get through the same checks ----------------------------


@pytest.mark.parametrize("preset,layers,depth", [
    ("lora64", "5-6", 6), ("adapter-ffn256", "last:2", 6), ("prefix10", "1,3", 6), ("loFF", "5-6", 6), ("LOff", "last:1", 6),
    ("full", "6", 6), ("loFF_9-12", "9-12", 12),
])
def test_a_preset_restricted_to_layers_builds_and_fits(preset, layers, depth):
    from interp.commands.train import method_config
    from trainers import methods
    from trainers.encoders import BaseShape

    config = method_config(preset, None, None, None, None, None, layers, shape=BaseShape(**(MINILM | {"depth": depth})))
    assert config.layers == layers
    assert all(part.layers == layers for part in getattr(config, "parts", ()))
    assert methods.method_from_dict(config.to_dict()) == config  # a manifest records it as it is
    unrestricted = methods.get_preset(preset)
    assert set(config.layer_indices(depth)) <= set(unrestricted.layer_indices(depth))


MINILM = dict(depth=6, hidden=384, ffn=1536, positions=512, parameters=22_713_216)
TINY_SHAPE = dict(depth=4, hidden=32, ffn=128, positions=128, parameters=75_328)


@pytest.mark.parametrize("shape,preset,method,r,length", [
    (MINILM, None, "lora", 2464, None), (MINILM, None, "adapter", 2464, None), (MINILM, None, "prefix", None, 4928),
    (MINILM, "adapter-h512", None, None, None), (MINILM, "prefix256", None, None, None),
    (TINY_SHAPE, "lora64", None, None, None), (TINY_SHAPE, None, "lora", 147, None), (TINY_SHAPE, "full", None, None, None),
])
def test_the_largest_deltas_that_fit_the_base_are_accepted(shape, preset, method, r, length):
    from interp.commands.train import Method, method_config
    from trainers.encoders import BaseShape

    config = method_config(preset, method and Method(method), r, None, length, None, None, shape=BaseShape(**shape))
    assert preset is not None or config.formula(BaseShape(**shape)) <= shape["parameters"]


@pytest.mark.parametrize("preset,layers", [("lora64", "5-6"), ("loFF", "5-6"), ("adapter-h64", "last:1"), ("prefix5", "2")])
def test_a_restricted_preset_trains_only_its_layers(minilm, preset, layers):
    from trainers import methods
    from trainers.methods.apply import apply_method
    from trainers.methods.counting import meta_encoder

    config = methods.get_preset(preset).with_layers(layers)
    model = apply_method(meta_encoder(minilm), config)  # on the meta device: shapes only
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    chosen = config.layer_indices(minilm.num_layers)
    layer_of = {name: int(name.split("layer.")[1].split(".")[0]) for name in trained}
    assert trained and set(layer_of.values()) == set(chosen), (sorted(set(layer_of.values())), chosen)


def test_valid_listing_commands_succeed(world, monkeypatch):
    monkeypatch.chdir(world.root)
    before = snapshot(world.root)
    runs = invoke(["runs", "--runs-dir", world.runs])
    assert runs.exit_code == 0 and "lora" in runs.stdout and "adapter" in runs.stdout, runs.output
    empty = invoke(["runs", "--runs-dir", world.files / "folder"])
    assert empty.exit_code == 0 and "no runs" in empty.stdout, empty.output
    params = invoke(["params", "lora64", "loFF"])
    assert params.exit_code == 0 and "lora64" in params.stdout and "loFF" in params.stdout, params.output
    encoder = invoke(["encoder", "--base", world.base])
    assert encoder.exit_code == 0 and "roberta" in encoder.stdout, encoder.output
    assert snapshot(world.root) == before
