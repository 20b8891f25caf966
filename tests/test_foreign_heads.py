"""Deltas saved on a model with a task head (RobertaForSequenceClassification, BertForMaskedLM, a SEQ_CLS LoRA, a LoRA
on RobertaForMaskedLM) and sentence-transformers directories (trainers/foreign_heads.py): the encoder under the head is
evaluated, imported and counted, with MRR equal to plain transformers (or sentence-transformers' encode), and the head's
keys are listed in the record."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from foreign_deltas import FOREIGN_MAX_LEN as MAX_LEN
from foreign_deltas import foreign_steps as _train_steps
from helpers import check_refused, invoke, single_thread  # noqa: F401 - the fixture, one thread per module
from trainers.data import load_split
from trainers.training.evaluate import gold_ranks


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
def test_a_task_head_is_left_out_and_listed(headed, mined_data, case):
    """The encoder inside a task model (keys under `base_model_prefix`) is what is evaluated, imported and counted; the head's
    keys are listed in the record; a sentence-transformers directory pools as its Pooling module says."""
    from safetensors import safe_open

    root, made = headed
    base, reference, head = made[case]
    directory = root / case
    test = mined_data / "test.jsonl"
    result = invoke(["eval", directory, "--base", base, "--data", test, "--max-len", MAX_LEN, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "LOAD REPORT" not in result.stdout + result.stderr
    shown = float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1))
    assert shown == pytest.approx(_encoder_mrr(reference, base, test), abs=5e-5)
    from transformers import AutoModel

    assert abs(shown - _encoder_mrr(AutoModel.from_pretrained(base), base, test)) > 1e-3  # the delta was loaded, not the bare base
    assert ("pooling mean" if case == "sentence-transformers" else "pooling cls") in result.stdout

    runs = root / "runs"
    imported = invoke(["import", directory, "--name", case, "--base", base, "--data", mined_data, "--max-len", MAX_LEN,
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


def test_an_older_sentence_transformers_layout(headed, mined_data, tmp_path):
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
    test = mined_data / "test.jsonl"
    check_refused(["eval", old, "--base", base, "--data", test], [str(old), "0_Transformer/", str(old / "0_Transformer")], watched=tmp_path)
    result = invoke(["eval", old / "0_Transformer", "--base", base, "--data", test, "--max-len", MAX_LEN, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    assert "pooling mean" in result.stdout
    assert float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1)) == pytest.approx(_encoder_mrr(reference, base, test), abs=5e-5)
