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

from helpers import check_refused, invoke, single_thread  # noqa: F401 - the fixture, one thread per module
from trainers.data import load_split
from trainers.foreign import is_path_name
from trainers.training.evaluate import gold_ranks

MAX_LEN = 32
KINDS = ("lora", "ia3", "full")


def _train_steps(model, tokenizer, examples, params) -> None:
    """Three steps of in-batch InfoNCE on eight pairs at a high learning rate: a delta far from zero."""
    optimizer = torch.optim.AdamW(params, lr=5e-2)
    q = tokenizer([e.query for e in examples], truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
    c = tokenizer([e.code_text for e in examples], truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
    model.train()
    for _ in range(3):
        scores = model(**q).last_hidden_state[:, 0] @ model(**c).last_hidden_state[:, 0].T  # (batch, batch)
        torch.nn.functional.cross_entropy(scores, torch.arange(len(examples))).backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, mined_data, tiny_roberta_dir):
    """Foreign deltas as users have them (adapters/lora, adapters/ia3, adapters/full), a copy of the mined data,
    and an empty runs directory."""
    import peft
    from transformers import AutoModel, AutoTokenizer

    root = tmp_path_factory.mktemp("foreign")
    shutil.copytree(mined_data, root / "data")
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    pairs = load_split(root / "data", "train")[:8]
    made = {}
    for kind, config in (("lora", peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"])), ("ia3", peft.IA3Config())):
        torch.manual_seed(0)
        model = peft.get_peft_model(AutoModel.from_pretrained(tiny_roberta_dir), config)
        _train_steps(model, tokenizer, pairs, [p for p in model.parameters() if p.requires_grad])
        model.save_pretrained(root / "adapters" / kind)
        made[kind] = root / "adapters" / kind
    model = AutoModel.from_pretrained(tiny_roberta_dir)
    _train_steps(model, tokenizer, pairs, list(model.parameters()))
    model.save_pretrained(root / "adapters" / "full")
    made["full"] = root / "adapters" / "full"
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


# -- a delta saved on a model with a task head, and a sentence-transformers directory --------------------


def _tiny_bert(path: Path) -> Path:
    """A tiny random BERT (two layers, hidden 32) with the MiniLM's WordPiece tokenizer."""
    from transformers import BertConfig, BertModel

    from trainers.encoders import default_base_dir

    path.mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_base_dir() / name, path / name)
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def headed(tmp_path_factory, mined_data, tiny_roberta_dir):
    """Deltas saved with a task head or as sentence-transformers save them, each with its base, the encoder inside the saved
    model (what plain transformers, or sentence-transformers, embeds with) and the keys its head saved."""
    import peft
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertForMaskedLM, RobertaForMaskedLM, RobertaForSequenceClassification

    root = tmp_path_factory.mktemp("headed")
    bert = _tiny_bert(root / "tiny-bert")
    pairs = load_split(mined_data, "train")[:8]
    made = {}
    torch.manual_seed(0)
    model = RobertaForSequenceClassification.from_pretrained(tiny_roberta_dir, num_labels=2)
    _train_steps(model.roberta, AutoTokenizer.from_pretrained(tiny_roberta_dir), pairs, list(model.roberta.parameters()))
    model.save_pretrained(root / "seq-cls")
    made["seq-cls"] = (tiny_roberta_dir, model.roberta, ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias",
                                                         "classifier.out_proj.weight"])
    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(bert)
    _train_steps(model.bert, AutoTokenizer.from_pretrained(bert), pairs, list(model.bert.parameters()))
    model.save_pretrained(root / "masked-lm")
    from safetensors import safe_open

    with safe_open(str(root / "masked-lm" / "model.safetensors"), "pt") as f:  # the MLM head as saved (its decoder is tied, not saved)
        made["masked-lm"] = (bert, model.bert, sorted(k for k in f.keys() if k.startswith("cls.")))
    assert made["masked-lm"][2]
    torch.manual_seed(0)
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"])
    model = peft.get_peft_model(RobertaForSequenceClassification.from_pretrained(tiny_roberta_dir, num_labels=2), config)
    inner = model.base_model.model.roberta  # the LoRA layers sit inside it
    _train_steps(inner, AutoTokenizer.from_pretrained(tiny_roberta_dir), pairs, [p for p in inner.parameters() if p.requires_grad])
    model.save_pretrained(root / "lora-seq-cls")
    made["lora-seq-cls"] = (tiny_roberta_dir, inner, [f"base_model.model.{k}" for k in made["seq-cls"][2]])
    torch.manual_seed(0)
    model = peft.get_peft_model(RobertaForMaskedLM.from_pretrained(tiny_roberta_dir), peft.LoraConfig(r=4, target_modules=["query"]))
    inner = model.base_model.model.roberta  # keys under roberta., and no head saved (no modules_to_save)
    _train_steps(inner, AutoTokenizer.from_pretrained(tiny_roberta_dir), pairs, [p for p in inner.parameters() if p.requires_grad])
    model.save_pretrained(root / "lora-masked-lm")
    made["lora-masked-lm"] = (tiny_roberta_dir, inner, [])
    transformer = models.Transformer(str(tiny_roberta_dir), max_seq_length=MAX_LEN)
    st = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")])
    _train_steps(transformer.auto_model, transformer.tokenizer, pairs, list(st.parameters()))
    st.save(str(root / "sentence-transformers"))
    made["sentence-transformers"] = (tiny_roberta_dir, st, [])
    return root, made


def _encoder_mrr(model, tokenizer_dir: Path, test: Path) -> float:
    """MRR of the [CLS] hidden states of a plain transformers encoder (or of a SentenceTransformer's encode), CodeXGLUE's ties."""
    from transformers import AutoTokenizer

    from trainers.data import read_split

    examples = read_split(test)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model.eval()

    def embed(texts):
        if hasattr(model, "encode"):
            return model.encode(texts, convert_to_tensor=True, batch_size=64)  # (n, hidden): its own pooling
        batch = tokenizer(texts, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model(**batch).last_hidden_state[:, 0]  # (n, hidden)

    ranks = gold_ranks(embed([e.query for e in examples]), embed([e.code_text for e in examples]), ties="codexglue")
    return float((1.0 / ranks.double()).mean())


@pytest.mark.parametrize("case", ["seq-cls", "masked-lm", "lora-seq-cls", "lora-masked-lm", "sentence-transformers"])
def test_a_task_head_is_left_out_and_listed(headed, foreign, case):
    """The encoder inside a task model (keys under `base_model_prefix`) is what is evaluated, imported and counted; the head's
    keys are listed in the record; a sentence-transformers directory pools as its Pooling module says."""
    from safetensors import safe_open

    root, made = headed
    base, reference, head = made[case]
    directory = root / case
    test = foreign[0] / "data" / "test.jsonl"
    result = invoke(["eval", directory, "--base", base, "--data", test, "--max-len", MAX_LEN, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "LOAD REPORT" not in result.stdout + result.stderr
    shown = float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1))
    assert shown == pytest.approx(_encoder_mrr(reference, base, test), abs=5e-5)
    from transformers import AutoModel

    assert abs(shown - _encoder_mrr(AutoModel.from_pretrained(base), base, test)) > 1e-3  # the delta was loaded, not the bare base
    assert ("pooling mean" if case == "sentence-transformers" else "pooling cls") in result.stdout

    runs = root / "runs"
    imported = invoke(["import", directory, "--name", case, "--base", base, "--data", foreign[0] / "data", "--max-len", MAX_LEN,
                       "--runs-dir", runs])
    assert imported.exit_code == 0, imported.stderr
    manifest = json.loads((runs / case / "manifest.json").read_text())
    assert manifest["source"].get("ignored", []) == head
    assert manifest["source"].get("pooling_from") == ("1_Pooling/config.json" if case == "sentence-transformers" else None)
    files = [directory / "adapter_model.safetensors"] if case.startswith("lora") else sorted(directory.glob("*.safetensors"))
    sizes = {}
    for file in files:
        with safe_open(str(file), "pt") as f:
            sizes |= {k: f.get_slice(k).get_shape() for k in f.keys()}
    assert set(head) <= set(sizes)
    assert manifest["parameters"]["trainable"] == sum(torch.Size(s).numel() for k, s in sizes.items() if k not in head)
    if head:
        assert "a task head's keys left out" in imported.stdout
    for args in (["ablate", case, "--layers", "1", "--limit", 6, "--no-progress"], ["anatomy", case]):
        result = invoke([*args, "--runs-dir", runs])
        assert result.exit_code == 0, f"{args}: {result.stderr}{result.exception!r}"
    anatomy = json.loads(next((runs / "analyses" / "anatomy").glob(f"{case}*.json")).read_text())["result"]
    assert anatomy["runs"][0]["matrices"] and not any("classifier" in json.dumps(m) for m in anatomy["runs"][0]["matrices"])


def test_an_older_sentence_transformers_layout(headed, foreign, tmp_path):
    """The transformer in 0_Transformer/ (older sentence-transformers): the top directory is refused, naming the subdirectory;
    the subdirectory is the model, pooled as its parent's Pooling module says."""
    root, made = headed
    base, reference, _ = made["sentence-transformers"]
    new, old = root / "sentence-transformers", tmp_path / "old-st"
    (old / "0_Transformer").mkdir(parents=True)
    for p in new.iterdir():
        if p.is_file() and p.name not in ("modules.json", "README.md"):
            shutil.copy(p, old / "0_Transformer" / p.name)
    shutil.copytree(new / "1_Pooling", old / "1_Pooling")
    modules = json.loads((new / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (old / "modules.json").write_text(json.dumps(modules))
    test = foreign[0] / "data" / "test.jsonl"
    check_refused(["eval", old, "--base", base, "--data", test], [str(old), "0_Transformer/", str(old / "0_Transformer")], watched=tmp_path)
    result = invoke(["eval", old / "0_Transformer", "--base", base, "--data", test, "--max-len", MAX_LEN, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "pooling mean" in result.stdout
    assert float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1)) == pytest.approx(_encoder_mrr(reference, base, test), abs=5e-5)
