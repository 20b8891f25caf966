"""--base, --pooling and --max-len on every analysis command (a directory's missing choices, trainers/foreign.py), and the
rows `interp runs` adds: the zero-shot base (`interp eval base`'s saved metrics) and imported deltas marked "imported".

The deltas are `foreign_deltas.make_foreign_deltas`'s: a LoRA and an (IA)3 adapter made with plain peft and a fully fine-tuned
tiny RoBERTa saved with `save_pretrained`, none of them imported."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from foreign_deltas import FOREIGN_MAX_LEN
from helpers import check_refused, invoke, single_thread  # noqa: F401 - the fixture, one thread per module

LIMIT = 6  # examples an analysis reads


def _with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of the adapter `src` whose adapter_config.json has `changes`."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text()) | changes
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def _written(runs: Path, kind: str, before: set[Path]) -> dict:
    """The one result the command wrote under runs/analyses/<kind>/."""
    new = sorted(set((runs / "analyses" / kind).glob("*.json")) - before)
    assert len(new) == 1, new
    return json.loads(new[0].read_text())


def _sources(inputs: dict) -> list[dict]:
    """Every foreign run's recorded "source" in a result's inputs (attn-diff, cka, anatomy: "runs"; ablate: "run")."""
    refs = inputs["runs"] if "runs" in inputs else [inputs["run"]]
    return [r["source"] for r in refs if "source" in r]


# -- a fully fine-tuned model directory names no base: --base on each analysis, by path -------------------

FULL_CASES = [  # (command args before the common ones, result kind, --pooling, --max-len): what the source records
    (["attn-diff", "{full}", "base"], "attn-diff", None, None),
    (["cka", "base", "{full}"], "cka", "mean", 24),
    (["ablate", "{full}", "--layers", "1"], "ablate", None, 24),
    (["anatomy", "{full}"], "anatomy", "pooler", None),
    (["attribute", "{full}", "--example", "{first}", "--steps", "4", "--others", "2"], "attribute", "mean", None),
    (["compare", "{full}", "base", "--bootstrap", "1000", "--permutations", "100"], "compare", None, 24),
    (["qualitative", "--runs", "{full},base"], "qualitative", "mean", 24),
]


@pytest.mark.parametrize("args,kind,pooling,max_len", FULL_CASES, ids=[c[1] for c in FULL_CASES])
def test_a_model_directory_by_path_with_base(foreign_deltas, tiny_roberta_dir, tmp_path, args, kind, pooling, max_len):
    """Every analysis command takes a model directory with --base. Each result records the directory, its kind, the base given and where it came from (--base), and the pooling and
    max_len given, else the defaults: cls, and 128 (the tiny base's longest input, below the default 256)."""
    root, made = foreign_deltas
    runs = tmp_path / "runs"
    runs.mkdir()
    test = root / "data" / "test.jsonl"
    first = json.loads(test.read_text().splitlines()[0])["idx"]
    line = [a.format(full=made["full"], first=first) for a in args] + ["--base", tiny_roberta_dir, "--runs-dir", runs]
    line += [] if kind == "anatomy" else ["--data", test] + ([] if kind == "attribute" else ["--limit", LIMIT, "--no-progress"])
    line += (["--pooling", pooling] if pooling else []) + (["--max-len", max_len] if max_len else [])
    result = invoke(line)
    assert result.exit_code == 0, f"{line}: {result.stderr}{result.exception!r}"
    saved = _written(runs, kind, set())
    (source,) = _sources(saved["inputs"])
    assert source["path"] == str(made["full"].resolve()) and source["kind"] == "full"
    assert (source["base"], source["base_from"]) == (str(tiny_roberta_dir), "--base")
    assert (source["pooling"], source["max_len"]) == (pooling or "cls", max_len or 128)
    if kind == "anatomy":  # full fine-tuning: W_run - W_base of every layer's linear maps, all four layers
        layers = {m["layer"] for m in saved["result"]["runs"][0]["matrices"] if m["layer"] is not None}
        assert layers == {1, 2, 3, 4}, layers
    if kind == "ablate":
        assert saved["result"]["intact_mrr"] != saved["result"]["base_mrr"]  # the fine-tuned weights were loaded


def test_ablate_by_path_scores_as_eval_by_path(foreign_deltas, tiny_roberta_dir, tmp_path):
    """The same directory, --base and --max-len: ablate's intact MRR (nothing switched off) is eval's MRR of the whole file."""
    root, made = foreign_deltas
    runs = tmp_path / "runs"
    runs.mkdir()
    test = root / "data" / "test.jsonl"
    common = ["--base", tiny_roberta_dir, "--data", test, "--max-len", FOREIGN_MAX_LEN, "--no-progress"]
    evaluated = invoke(["eval", made["full"], *common])
    ablated = invoke(["ablate", made["full"], "--layers", "2", "--runs-dir", runs, *common])
    assert evaluated.exit_code == ablated.exit_code == 0, evaluated.stderr + ablated.stderr
    mrr = re.search(r"MRR (\d\.\d{4})", evaluated.stdout).group(1)
    assert f"intact MRR {mrr}" in ablated.stdout, (evaluated.stdout, ablated.stdout)


# -- an adapter whose recorded base cannot be had offline: --base names a local copy ------------------------


def test_an_adapter_with_an_unusable_base(foreign_deltas, tiny_roberta_dir, tmp_path):
    """base_model_name_or_path rewritten to a hub id not at hand: refused without --base (naming the id and --base), analysed
    with it (attn-diff and cka against the base, anatomy), each result recording --base as the base's origin."""
    root, made = foreign_deltas
    runs = tmp_path / "runs"
    runs.mkdir()
    hub = _with_config(made["lora"], tmp_path / "adapters" / "hub-lora", base_model_name_or_path="microsoft/codebert-base")
    test = root / "data" / "test.jsonl"
    check_refused(["attn-diff", hub, "base", "--data", test, "--limit", LIMIT, "--runs-dir", runs],
                  [str(hub.resolve()), "microsoft/codebert-base", "--base"], watched=tmp_path)
    for args, kind in ((["attn-diff", "base", hub, "--data", test, "--limit", LIMIT, "--no-progress"], "attn-diff"),
                       (["cka", hub, "base", "--data", test, "--limit", LIMIT, "--no-progress"], "cka"),
                       (["anatomy", hub], "anatomy")):
        result = invoke([*args, "--base", tiny_roberta_dir, "--max-len", FOREIGN_MAX_LEN, "--runs-dir", runs])
        assert result.exit_code == 0, f"{args}: {result.stderr}{result.exception!r}"
        (source,) = _sources(_written(runs, kind, set())["inputs"])
        assert (source["kind"], source["base"], source["base_from"], source["max_len"]) == (
            "peft", str(tiny_roberta_dir), "--base", FOREIGN_MAX_LEN)
    anatomy = json.loads(next((runs / "analyses" / "anatomy").glob("*.json")).read_text())["result"]["runs"][0]
    assert {m["layer"] for m in anatomy["matrices"]} == {1, 2, 3, 4}  # LoRA on query and value of every layer


# -- refusals: one error line, nothing written ---------------------------------------------------------------


@pytest.fixture(scope="module")
def named(foreign_deltas, tmp_path_factory):
    """A runs directory holding one run, `my-lora` (the LoRA imported, referenced where it is)."""
    root, made = foreign_deltas
    runs = tmp_path_factory.mktemp("named") / "runs"
    result = invoke(["import", made["lora"], "--name", "my-lora", "--data", root / "data", "--max-len", FOREIGN_MAX_LEN,
                     "--runs-dir", runs])
    assert result.exit_code == 0, result.stderr
    return runs


PATH_ONLY = "--base, --pooling and --max-len are for a path"
NAMED = "run 'my-lora' records its base, pooling and max_len"
REFUSED = [  # (args after the command name; {base}, {lora}, {wider}, {full} filled in), what the error line names
    (["attn-diff", "my-lora", "base", "--base", "{base}"], [NAMED, PATH_ONLY]),
    (["cka", "base", "my-lora", "--pooling", "mean"], [NAMED, PATH_ONLY]),
    (["ablate", "my-lora", "--layers", "1", "--max-len", "16"], [NAMED, PATH_ONLY]),
    (["anatomy", "my-lora", "--base", "{base}"], [NAMED, PATH_ONLY]),
    (["attribute", "my-lora", "--example", "0", "--base", "{base}"], [NAMED, PATH_ONLY]),
    (["attribute", "base", "--reference", "pad", "--query", "x", "--code", "{code}", "--pooling", "cls"],
     ["'base' is the base of the runs", PATH_ONLY]),
    (["qualitative", "--runs", "my-lora,base", "--max-len", "16"], [NAMED, PATH_ONLY]),
    (["compare", "my-lora", "base", "--base", "{base}"], [NAMED, PATH_ONLY]),
    (["attn-diff", "{lora}", "base", "--pooling", "first"], ["--pooling first", "cls"]),
    (["cka", "{lora}", "base", "--max-len", "0"], ["--max-len 0", "at least 1"]),
    (["attn-diff", "{lora}", "base", "--max-len", "1000"], ["--max-len 1000", "128"]),
    (["attn-diff", "{full}", "base"], ["{full}", "--base"]),  # a model directory names no base
    (["ablate", "{lora}", "--layers", "1", "--base", "{wider}"], ["{lora}", "{wider}"]),  # the adapter does not fit that base
    (["attn-diff", "{full}", "base", "--base", "{wider}"], ["{full}", "{wider}", "hidden_size"]),
    (["cka", "{elsewhere}", "base", "--max-len", "16"], ["{elsewhere}", "{base}"]),  # its target modules are not in the base
    (["attn-diff", "{lora}", "my-lora", "--base", "{wider}"], ["'my-lora'", "different base models"]),
]


def test_refusals(foreign_deltas, named, tiny_roberta_dir, tmp_path):
    from conftest import make_tiny_roberta

    root, made = foreign_deltas
    wider = make_tiny_roberta(tmp_path / "wider", hidden=48)
    code = tmp_path / "f.py"
    code.write_text("def f():\n    return 1\n")
    elsewhere = _with_config(made["lora"], tmp_path / "other-targets", target_modules=["query_proj"])
    fill = {"base": str(tiny_roberta_dir), "lora": str(made["lora"]), "full": str(made["full"]), "wider": str(wider),
            "code": str(code), "elsewhere": str(elsewhere)}
    shown = {"lora": str(made["lora"].resolve()), "full": str(made["full"].resolve()), "wider": str(wider.resolve()),
             "elsewhere": str(elsewhere.resolve()), "base": str(tiny_roberta_dir)}
    for args, names in REFUSED:
        line = [a.format(**fill) for a in args] + ["--runs-dir", named]
        line += ["--data", root / "data" / "test.jsonl"] if args[0] not in ("anatomy", "qualitative", "compare") else []
        check_refused(line, [n.format(**shown) for n in names], watched=named.parent)


# -- `interp runs`: the zero-shot base and imported deltas ----------------------------------------------------


def _eval_file(runs: Path, label: str, metrics: dict, **fields) -> None:
    out = runs / "analyses" / "eval" / f"base-{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"kind": "eval", "name": f"base-{label}", "file": f"{label}.jsonl", "pooling": "cls",
                               "ties": "codexglue", "metrics": metrics} | fields))


M = {"mrr": 0.25, "mrr@10": 0.2, "ndcg@10": 0.3, "recall@1": 0.125}
RUNS_ROWS = [  # (the base-<label>.json files written, the rows `interp runs` shows for the base: name, valid, test MRR, R@1)
    ({}, []),
    ({"test": M}, [("base", "-", "0.2500", "0.1250")]),
    ({"valid": {"mrr": 0.5}}, [("base", "0.5000", "-", "-")]),
    ({"test": M, "valid": {"mrr": 0.5, "recall@1": 1}}, [("base", "0.5000", "0.2500", "0.1250")]),
    ({"test": M, "mine": {"mrr": 1, "recall@1": 1}}, [("base", "-", "0.2500", "0.1250"), ("base:mine", "-", "1.0000", "1.0000")]),
]


@pytest.mark.parametrize("files,rows", RUNS_ROWS)
def test_runs_shows_the_zero_shot_base(named, tmp_path, files, rows):
    runs = tmp_path / "runs"
    shutil.copytree(named, runs)
    for label, metrics in files.items():
        _eval_file(runs, label, metrics)
    result = invoke(["runs", "--runs-dir", runs])
    assert result.exit_code == 0 and not result.stderr, result.output
    header, *lines = result.stdout.splitlines()
    cells = [line.split() for line in lines]
    assert [(c[0], c[7], c[8], c[11]) for c in cells if c[0].startswith("base")] == rows
    for c in cells:
        if c[0].startswith("base"):
            assert c[1:7] == ["zero-shot", "(untrained)", "0", "0.00%", "cls", "codexglue"] and c[-1] == "scored"
    (lora,) = [c for c in cells if c[0] == "my-lora"]
    assert lora[1:3] == ["imported", "peft"]


def test_runs_skips_an_unreadable_base_file(named, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(named, runs)
    _eval_file(runs, "test", {"mrr": "high"})
    result = invoke(["runs", "--runs-dir", runs])
    assert result.exit_code == 0 and "base-test.json: not an `interp eval base` result" in result.stderr, result.output
    assert not any(line.startswith("base") for line in result.stdout.splitlines())


def test_runs_base_row_is_the_reports(named, tmp_path):
    """`interp eval base` on the test and valid splits: `interp runs` shows the saved MRRs, and the report's zero-shot row
    the same test MRR (in percent)."""
    runs = tmp_path / "runs"
    shutil.copytree(named, runs)
    for split in ("test", "valid"):
        result = invoke(["eval", "base", "--split", split, "--runs-dir", runs, "--no-progress"])
        assert result.exit_code == 0, result.stderr
    saved = {s: json.loads((runs / "analyses" / "eval" / f"base-{s}.json").read_text())["metrics"] for s in ("test", "valid")}
    row = next(line.split() for line in invoke(["runs", "--runs-dir", runs]).stdout.splitlines() if line.startswith("base "))
    assert row[7:12] == [f"{saved['valid']['mrr']:.4f}", f"{saved['test']['mrr']:.4f}",
                         *(f"{saved['test'][k]:.4f}" for k in ("mrr@10", "ndcg@10", "recall@1"))], row
    assert invoke(["report", "--runs-dir", runs]).exit_code == 0
    index = " ".join((runs / "report" / "index.html").read_text().split())
    zero = re.search(r'<tr class="zero-shot"><td>base \(zero-shot\)</td>(.*?)</tr>', index).group(1)
    assert f'<td class="num">{100 * saved["test"]["mrr"]:.2f}</td>' in zero, zero
