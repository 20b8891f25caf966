"""Deltas from anywhere (trainers/foreign.py, `interp import`): a LoRA and an (IA)3 adapter trained with plain
peft, and a fully fine-tuned model saved with `save_pretrained`, on the tiny RoBERTa; each is evaluated by path
(MRR equal to a plain-transformers computation), imported, analysed by name and listed; bad ones are refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from foreign_deltas import FOREIGN_MAX_LEN
from helpers import check_refused, invoke, single_thread  # noqa: F401 - the fixture, one thread per module
from trainers.foreign import is_path_name
from trainers.training.evaluate import gold_ranks

MAX_LEN = FOREIGN_MAX_LEN
KINDS = ("lora", "ia3", "full")


@pytest.fixture(scope="module")
def foreign(foreign_deltas, tmp_path_factory):
    """The shared foreign deltas (conftest `foreign_deltas`: adapters/lora, adapters/ia3, adapters/full, each trained with
    plain peft or fully fine-tuned and saved), with this module's own copy of the mined data and an empty runs directory."""
    shared, made = foreign_deltas
    root = tmp_path_factory.mktemp("foreign")
    shutil.copytree(shared / "data", root / "data")
    (root / "runs").mkdir()
    return root, made


def _reference_mrr(kind: str, path: Path, base: Path, test: Path) -> tuple[float, torch.Tensor]:
    """MRR and ranks by plain transformers (and plain peft): [CLS] hidden states, CodeXGLUE's tie rule."""
    import peft
    from transformers import AutoModel, AutoTokenizer

    from trainers.data import read_split

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(path if kind == "full" else base)
    if kind != "full":
        model = peft.PeftModel.from_pretrained(model, path)
    model.eval()
    examples = read_split(test)

    def embed(texts):
        batch = tokenizer(texts, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model(**batch).last_hidden_state[:, 0]  # (n, hidden)

    ranks = gold_ranks(embed([e.query for e in examples]), embed([e.code_text for e in examples]), ties="codexglue")
    return float((1.0 / ranks.double()).mean()), ranks


# -- the path rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "is_path"), [
    ("lora64", False), ("lora.r4+ffn", False), ("base", False),
    ("./lora64", True), ("adapters/lora", True), ("/abs/x", True), ("~/x", True), (".", True), ("..", True),
])
def test_path_rule(name, is_path):
    assert is_path_name(name) is is_path


# -- eval by path: the MRR of plain transformers ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_eval_by_path_equals_plain_transformers(foreign, kind, tiny_roberta_dir):
    from trainers.foreign import ForeignOptions
    from trainers.training.runs import find_run
    from trainers.training.scoring import evaluate_run

    root, made = foreign
    test = root / "data" / "test.jsonl"
    base = ["--base", tiny_roberta_dir] if kind == "full" else []  # an adapter names its base in adapter_config.json
    result = invoke(["eval", made[kind], "--data", test, "--max-len", MAX_LEN, "--no-progress", *base])
    assert result.exit_code == 0, result.stderr
    expected, ranks = _reference_mrr(kind, made[kind], tiny_roberta_dir, test)
    shown = float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1))
    assert shown == pytest.approx(expected, abs=5e-5)
    assert "pooling cls" in result.stdout

    run = find_run(root / "runs", str(made[kind]), foreign=ForeignOptions(base=str(tiny_roberta_dir), max_len=MAX_LEN))
    ours = evaluate_run(run, data_file=test, progress=False)
    assert torch.equal(ours.evaluation.ranks.cpu(), ranks)
    assert ours.evaluation.mrr == pytest.approx(expected, rel=1e-9)
    assert run.source["kind"] == ("full" if kind == "full" else "peft") and run.source["max_len"] == MAX_LEN


# -- import, then every analysis by name, and the listings ----------------------------------------------


@pytest.fixture(scope="module")
def imported(foreign, tiny_roberta_dir):
    root, made = foreign
    runs = root / "runs"
    outputs = {}
    for kind in KINDS:
        extra = ["--base", tiny_roberta_dir] if kind == "full" else []
        extra += ["--copy"] if kind == "ia3" else []
        result = invoke(["import", made[kind], "--name", f"my-{kind}", "--data", root / "data", "--max-len", MAX_LEN,
                         "--runs-dir", runs, *extra])
        assert result.exit_code == 0, result.stderr
        outputs[kind] = result.stdout
    return runs, outputs


def test_import_records_the_source_and_references_the_weights(foreign, imported, tiny_roberta_dir):
    root, made = foreign
    runs, outputs = imported
    assert "imported my-lora: peft LORA r=4 alpha=8 on query, value (2,048 parameters" in outputs["lora"]
    for kind in KINDS:
        manifest = json.loads((runs / f"my-{kind}" / "manifest.json").read_text())
        source = manifest["source"]
        assert source["path"] == str(made[kind].resolve()) and source["copied"] is (kind == "ia3")
        assert (source["pooling"], source["max_len"], source["data_dir"]) == ("cls", MAX_LEN, str((root / "data").resolve()))
        assert manifest["train"]["max_len"] == MAX_LEN and manifest["status"] == "finished"
        assert manifest["data"]["test"]["fingerprint"] and manifest["data"]["train"]["fingerprint"] is None
        stored = sorted(p.name for p in (runs / f"my-{kind}").iterdir())
        assert stored == (["adapter_config.json", "adapter_model.safetensors", "manifest.json"] if kind == "ia3" else ["manifest.json"])
    assert json.loads((runs / "my-full" / "manifest.json").read_text())["source"]["base_from"] == "--base"

    listed = invoke(["runs", "--runs-dir", runs]).stdout
    for kind in KINDS:
        assert re.search(rf"^my-{kind}\s+imported\s+{'full' if kind == 'full' else 'peft'}\s", listed, re.M), listed


def test_imported_eval_equals_eval_by_path(foreign, imported):
    root, made = foreign
    runs, _ = imported
    by_name = invoke(["eval", "my-lora", "--runs-dir", runs, "--no-progress"])
    by_path = invoke(["eval", made["lora"], "--data", root / "data" / "test.jsonl", "--max-len", MAX_LEN, "--no-progress"])
    assert by_name.exit_code == by_path.exit_code == 0, by_name.stderr + by_path.stderr
    assert re.search(r"MRR \S+", by_name.stdout).group(0) == re.search(r"MRR \S+", by_path.stdout).group(0)


@pytest.mark.parametrize("kind", KINDS)
def test_analyses_on_imported_runs(imported, kind):
    """attn-diff and cka against the base, ablate of layer 1, anatomy: each saves a result whose inputs name the source."""
    runs, _ = imported
    name = f"my-{kind}"
    for args, kind_dir in ((["attn-diff", name, "base", "--limit", 6], "attn-diff"), (["cka", name, "base", "--limit", 6], "cka"),
                           (["ablate", name, "--layers", "1", "--limit", 6], "ablate"), (["anatomy", name], "anatomy")):
        result = invoke([*args, "--runs-dir", runs, *([] if kind_dir == "anatomy" else ["--no-progress"])])
        assert result.exit_code == 0, f"{args}: {result.stderr}{result.exception!r}"
        saved = [json.loads(p.read_text()) for p in (runs / "analyses" / kind_dir).glob(f"{name}*.json")]
        assert saved, f"{args}: no result in {runs / 'analyses' / kind_dir}"
        assert name in json.dumps(saved[0]["inputs"]) and '"source"' in json.dumps(saved[0]["inputs"])
    ablate = json.loads(next((runs / "analyses" / "ablate").glob(f"{name}*.json")).read_text())["result"]
    assert ablate["intact_mrr"] != ablate["base_mrr"]  # the delta changes the ranking: it was loaded
    anatomy = json.loads(next((runs / "analyses" / "anatomy").glob(f"{name}*.json")).read_text())["result"]
    assert anatomy["runs"][0]["matrices"], anatomy


def test_compare_imported_runs(imported):
    """The imported runs record the fingerprint of the whole test split, so they compare with each other and the base."""
    runs, _ = imported
    result = invoke(["compare", "my-lora", "my-full", "base", "--runs-dir", runs, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert re.search(r"my-lora: MRR \d\.\d{4}", result.stdout) and "base scored at max_len 32, cls pooling" in result.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_eval_records_an_imported_runs_metrics(foreign, imported, kind, tiny_roberta_dir):
    """`interp eval NAME` on an imported run writes its valid and test metrics where a trained run's are (the test ones those
    of plain transformers' ranks), so `interp runs` lists them; scored otherwise (--ties, --data), nothing is recorded."""
    from records.manifest import rank_metrics

    root, made = foreign
    runs, _ = imported
    name, file = f"my-{kind}", runs / f"my-{kind}" / "manifest.json"
    expected, ranks = _reference_mrr(kind, made[kind], tiny_roberta_dir, root / "data" / "test.jsonl")
    for args in (["--ties", "optimistic"], ["--data", root / "data" / "test.jsonl"]):
        before = file.read_bytes()
        result = invoke(["eval", name, *args, "--runs-dir", runs, "--no-progress"])
        assert result.exit_code == 0 and file.read_bytes() == before, result.stderr
        assert ("not recorded in" in result.stdout and "ties optimistic, but the run records codexglue" in result.stdout) is (
            args[0] == "--ties") and "metrics recorded" not in result.stdout
    for split in ("valid", "test"):
        result = invoke(["eval", name, "--split", split, "--runs-dir", runs, "--no-progress"])
        assert result.exit_code == 0 and f"{split} metrics recorded in {file}" in result.stdout, result.stdout + result.stderr
    metrics = json.loads(file.read_text())["metrics"]
    assert set(metrics) == {"valid_mrr", "valid", "test_mrr", "test"}
    assert metrics["test_mrr"] == pytest.approx(expected, rel=1e-9) and metrics["test"]["mrr"] == metrics["test_mrr"]
    assert metrics["test"] == pytest.approx(rank_metrics(ranks.tolist()), rel=1e-9)
    row = next(line for line in invoke(["runs", "--runs-dir", runs]).stdout.splitlines() if line.startswith(f"{name} "))
    assert f"{metrics['valid_mrr']:.4f} {expected:.4f} {metrics['test']['mrr@10']:.4f}" in " ".join(row.split()), row


def test_import_eval_scores_and_records(foreign, tmp_path, tiny_roberta_dir):
    """`interp import --eval`: the valid and test metrics recorded at once, the test MRR plain transformers'."""
    root, made = foreign
    runs = tmp_path / "runs"
    result = invoke(["import", made["lora"], "--name", "scored", "--data", root / "data", "--max-len", MAX_LEN, "--eval", "--no-progress",
                     "--runs-dir", runs])
    assert result.exit_code == 0, result.stderr
    expected, _ = _reference_mrr("lora", made["lora"], tiny_roberta_dir, root / "data" / "test.jsonl")
    assert re.search(rf"  test: MRR {expected:.4f} over \d+ queries .*test metrics recorded in", result.stdout), result.stdout
    assert "  valid: MRR " in result.stdout
    metrics = json.loads((runs / "scored" / "manifest.json").read_text())["metrics"]
    assert metrics["test_mrr"] == pytest.approx(expected, rel=1e-9) and set(metrics) == {"valid_mrr", "valid", "test_mrr", "test"}


def test_eval_does_not_record_on_changed_data(foreign, tmp_path):
    """The data an imported run was fingerprinted on has changed since: its metrics are not recorded, and it says why."""
    root, made = foreign
    shutil.copytree(root / "data", tmp_path / "data")
    runs = tmp_path / "runs"
    assert invoke(["import", made["lora"], "--name", "x", "--data", tmp_path / "data", "--max-len", MAX_LEN, "--runs-dir", runs]).exit_code == 0
    test = tmp_path / "data" / "test.jsonl"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[:-1]))
    before = (runs / "x" / "manifest.json").read_bytes()
    result = invoke(["eval", "x", "--runs-dir", runs, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert f"not recorded in {runs / 'x' / 'manifest.json'}: {test} is not the test split fingerprinted" in result.stdout
    assert (runs / "x" / "manifest.json").read_bytes() == before


def test_report_lists_imported_runs(imported):
    """Every imported run has a page saying where its delta is; one scored by `interp eval` has its test MRR in the runs table,
    marked imported."""
    runs, _ = imported
    assert invoke(["eval", "my-ia3", "--runs-dir", runs, "--no-progress"]).exit_code == 0
    mrr = json.loads((runs / "my-ia3" / "manifest.json").read_text())["metrics"]["test_mrr"]
    result = invoke(["report", "--runs-dir", runs])
    assert result.exit_code == 0, result.stderr
    pages = " ".join(p.read_text(errors="replace") for p in (runs / "report").rglob("*.html"))
    for kind in KINDS:
        assert f"my-{kind}" in pages
    index = " ".join((runs / "report" / "index.html").read_text().split())
    row = re.search(r'<tr><td><a href="runs/my-ia3.html">my-ia3</a></td>(.*?)</tr>', index).group(1)
    assert "<td>imported</td>" in row and f'<td class="num">{100 * mrr:.2f}</td>' in row, row
    page = " ".join((runs / "report" / "runs" / "my-ia3.html").read_text().split())
    assert "a peft delta at <code>" in page and "(copied into the run)" in page
    page = " ".join((runs / "report" / "runs" / "my-lora.html").read_text().split())  # referenced: its parameters read where it is
    assert "(referenced)" in page and "<code>attention.self.query.lora_A</code></td><td class=\"num\">512</td>" in page, page


# -- refusals: one error line naming what is at fault, nothing written --------------------------------


def _with_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text()) | changes
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def test_refusals(foreign, tmp_path, tiny_roberta_dir):
    from conftest import make_tiny_roberta

    root, made = foreign
    test = root / "data" / "test.jsonl"
    neither = tmp_path / "notes"
    neither.mkdir()
    (neither / "README.md").write_text("not a delta")
    wider = make_tiny_roberta(tmp_path / "wider", hidden=48)
    offline = _with_config(made["lora"], tmp_path / "hub-lora", base_model_name_or_path="microsoft/codebert-base")
    elsewhere = _with_config(made["lora"], tmp_path / "other-targets", target_modules=["query_proj"])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(made["lora"] / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80")
    cases = [
        (["eval", neither, "--data", test], [str(neither), "neither a peft adapter"]),
        (["eval", tmp_path / "absent", "--data", test], [str(tmp_path / "absent"), "no such directory"]),
        (["eval", made["lora"], "--base", wider, "--data", test, "--max-len", MAX_LEN], [str(made["lora"].resolve()), str(wider.resolve())]),
        (["eval", elsewhere, "--data", test, "--max-len", MAX_LEN], [str(elsewhere.resolve()), str(tiny_roberta_dir)]),
        (["eval", offline, "--data", test], [str(offline.resolve()), "microsoft/codebert-base", "--base"]),
        (["eval", made["full"], "--data", test], [str(made["full"].resolve()), "--base"]),
        (["eval", pickled, "--data", test], ["adapter_model.bin"]),
        (["eval", made["lora"], "--max-len", 1000, "--data", test], ["--max-len 1000"]),
        (["import", neither, "--name", "x", "--runs-dir", root / "runs"], [str(neither)]),
        (["import", made["lora"], "--name", "bad/name", "--runs-dir", root / "runs"], ["bad/name"]),
        (["import", made["lora"], "--name", "wide", "--base", wider, "--runs-dir", root / "runs"], [str(wider.resolve())]),
    ]
    for args, names in cases:
        check_refused(args, names, watched=root)
    invoke(["import", made["lora"], "--name", "twice", "--runs-dir", root / "runs"])
    check_refused(["import", made["ia3"], "--name", "twice", "--runs-dir", root / "runs"], ["twice", "already exists"], watched=root)


# -- by path, without importing: the project's own delta, and an analysis -------------------------------


def test_the_projects_own_delta_by_path(foreign, tiny_roberta_dir, tmp_path):
    """A directory save_delta wrote (method.json beside peft's files) is the project's own delta, loaded as ever."""
    from trainers import methods
    from trainers.data import read_split
    from trainers.encoders import load_encoder
    from trainers.training.scoring import evaluate_examples

    root, _ = foreign
    test = root / "data" / "test.jsonl"
    encoder = load_encoder(tiny_roberta_dir)
    config = methods.method_from_dict({"method": "lora", "r": 2})
    model = methods.apply_method(encoder, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # peft starts B at zero: a delta that changes the ranking
    methods.save_delta(model, config, tmp_path / "mine")
    expected = evaluate_examples(encoder, model, read_split(test), max_len=MAX_LEN, progress=False).mrr
    result = invoke(["eval", tmp_path / "mine", "--data", test, "--max-len", MAX_LEN, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1)) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_analyses_by_path(foreign, kind, tmp_path):
    """An adapter directory, not imported, goes through attn-diff and cka against the base, ablate and anatomy as a run does,
    beside no run at all; each result records where the delta is."""
    root, made = foreign
    runs = tmp_path / "runs"
    runs.mkdir()
    test = root / "data" / "test.jsonl"
    for args, kind_dir in ((["attn-diff", made[kind], "base", "--data", test, "--limit", 6, "--no-progress"], "attn-diff"),
                           (["cka", made[kind], "base", "--data", test, "--limit", 6, "--no-progress"], "cka"),
                           (["ablate", made[kind], "--layers", "1", "--data", test, "--limit", 6, "--no-progress"], "ablate"),
                           (["anatomy", made[kind]], "anatomy")):
        before = set((runs / "analyses" / kind_dir).glob("*.json"))
        result = invoke([*args, "--runs-dir", runs])
        assert result.exit_code == 0, f"{args}: {result.stderr}{result.exception!r}"
        written = sorted(set((runs / "analyses" / kind_dir).glob("*.json")) - before)
        assert len(written) == 1 and f"adapters_{kind}" in written[0].name, (args, written)
        assert str(made[kind].resolve()) in json.dumps(json.loads(written[0].read_text())["inputs"])


def test_an_analysis_by_path_saves_under_a_name_without_separators(foreign, imported):
    root, made = foreign
    runs, _ = imported
    result = invoke(["ablate", made["ia3"], "--layers", "2", "--limit", 6, "--data", root / "data" / "test.jsonl",
                     "--runs-dir", runs, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    written = [p for p in (runs / "analyses" / "ablate").iterdir() if "adapters_ia3" in p.name]
    assert len(written) == 1 and not written[0].name.startswith(".")
    inputs = json.loads(written[0].read_text())["inputs"]["run"]
    assert inputs["source"]["path"] == str(made["ia3"].resolve()) and inputs["source"]["max_len"] == 128  # the tiny base's longest input
