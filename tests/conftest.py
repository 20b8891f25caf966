"""Shared fixtures: the real MiniLM and a tiny random RoBERTa (CodeBERT's family), built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """Under pytest-xdist every core already runs a worker: one torch thread each, and in the
    processes the tests start. Two threads per worker on a shared core wait for each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def make_tiny_roberta(path: Path, *, layers: int = 4, heads: int = 4, hidden: int = 32, vocab_texts: list[str] | None = None) -> Path:
    """A randomly initialised RoBERTa encoder with a byte-level BPE tokenizer trained on stdlib source.

    Shaped like CodeBERT (pad id 1, position offset, one token type), only tiny.
    """
    import inspect

    import tokenizers
    from tokenizers.processors import RobertaProcessing
    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    if vocab_texts is None:
        import bisect
        import colorsys
        import textwrap

        vocab_texts = [inspect.getsource(m) for m in (bisect, colorsys, textwrap)]
    path.mkdir(parents=True, exist_ok=True)
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(vocab_texts, vocab_size=600, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=128,
    )
    tokenizer.save_pretrained(path)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_roberta_dir(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


@pytest.fixture(scope="session")
def minilm():
    """The real default encoder, loaded once per test session."""
    from trainers.encoders import load_encoder

    return load_encoder()


MINED_SOURCES = ["json", "email", "logging", "argparse", "http"]  # ~540 real pairs, mined in about 2 s


@pytest.fixture(scope="session")
def mined_data(tmp_path_factory) -> Path:
    """A small AdvTest-format directory mined from real stdlib packages (train / valid / test)."""
    from trainers.data import build_corpus

    out = tmp_path_factory.mktemp("mined")
    build_corpus(out=out, sources=MINED_SOURCES, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory, mined_data, tiny_roberta_dir) -> Path:
    """Tiny real runs, analysis results and a study table with hostile text (tests/report_site.py)."""
    from report_site import make_runs_dir

    return make_runs_dir(tmp_path_factory.mktemp("report-runs"), mined_data, tiny_roberta_dir)


@pytest.fixture(scope="session")
def cli_world(tmp_path_factory, mined_data, tiny_roberta_dir):
    """A directory as a user has it, for the CLI case tables: data/, base/ (the tiny RoBERTa) and
    runs/ with two tiny finished runs, `lora` and `adapter`. Cases must leave it as it is
    (`helpers.check_refused` checks); a case that needs a damaged input makes its own copy.
    """
    import shutil
    from types import SimpleNamespace

    from helpers import train_tiny
    from trainers import methods

    root = tmp_path_factory.mktemp("cli-world")
    data, base, runs = root / "data", root / "base", root / "runs"
    shutil.copytree(mined_data, data)
    shutil.copytree(tiny_roberta_dir, base)
    train_tiny(runs, data, base, "lora", methods.method_from_dict({"method": "lora", "r": 4}))
    train_tiny(runs, data, base, "adapter", methods.method_from_dict({"method": "adapter", "r": 4, "placement": "ffn"}))
    return SimpleNamespace(root=root, data=data, base=base, runs=runs)


@pytest.fixture(scope="session")
def foreign_deltas(tmp_path_factory, mined_data, tiny_roberta_dir):
    """Foreign deltas on the tiny RoBERTa (`foreign_deltas.make_foreign_deltas`: adapters/lora, adapters/ia3, adapters/full) beside
    a copy of the mined data: (root, {kind: directory}). Tests must leave them as they are (copy one to change it)."""
    import shutil

    from foreign_deltas import make_foreign_deltas

    root = tmp_path_factory.mktemp("foreign-deltas")
    shutil.copytree(mined_data, root / "data")
    return root, make_foreign_deltas(root, root / "data", tiny_roberta_dir)
