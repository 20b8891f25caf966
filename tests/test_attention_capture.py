"""Attention capture on SDPA equals the former eager capture, for every method preset, and leaves nothing behind.

The case table is every preset of trainers/methods/presets.toml on a tiny random BERT and a
tiny random RoBERTa (12 layers, so the presets on layers 9-12 apply; hidden 32, 4 heads),
each delta nudged off its initial values (LoRA's B starts at zero), over a padded batch and
an unpadded one (SDPA then gets no mask at all). The reference is `capture_attention_eager`:
eager attention and the weights its modules return. The recording itself is checked on hand-
made queries and keys, for every kind of mask transformers hands SDPA.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from interp.analyses.attention import (CapturedAttention, attention_implementation, capture_attention,
                                       capture_attention_eager)
from trainers import methods
from trainers.encoders import load_encoder
from trainers.methods.prefix.layer import CHILD as PREFIX_CHILD

LAYERS, HEADS, HIDDEN, VOCAB = 12, 4, 32, 120
PRESETS = methods.preset_names()
LENGTHS = {"padded": [12, 7, 3], "unpadded": [12, 12, 12]}  # real tokens per row; the batch is (3, 12)
TOLERANCE = 1e-5


def _save(model_cls, config, path):
    torch.manual_seed(0)
    model_cls(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, object]:
    """Directories of a tiny random BERT (pad id 0) and RoBERTa (pad id 1, CodeBERT's position offset); no tokenizer."""
    root = tmp_path_factory.mktemp("capture-bases")
    shape = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 intermediate_size=2 * HIDDEN, max_position_embeddings=260)  # room for prefix256 initialised from 256 tokens
    return {
        "bert": _save(BertModel, BertConfig(**shape), root / "bert"),
        "roberta": _save(RobertaModel, RobertaConfig(**shape, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2),
                         root / "roberta"),
    }


def make_batch(pad_id: int, lengths: list[int]) -> dict[str, torch.Tensor]:
    """(rows, max length) random ids above the special ids, right-padded with `pad_id`."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()  # (rows, len)
    return {"input_ids": ids.masked_fill(mask == 0, pad_id), "attention_mask": mask}


def with_delta(source, preset: str):
    """A fresh encoder with `preset` applied and every delta weight moved off its initial value."""
    encoder = load_encoder(source)
    torch.manual_seed(0)
    model = methods.apply_method(encoder, methods.get_preset(preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return encoder, model


def run(capture, encoder, model, batch, **kw) -> tuple[CapturedAttention, torch.Tensor]:
    with torch.inference_mode(), capture(encoder, **kw) as captured:
        embedding = encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)  # (rows, hidden)
    return captured, embedding


# -- every preset, both families ---------------------------------------------------------------

@pytest.mark.parametrize("padding", list(LENGTHS))
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_capture_equals_the_eager_capture(bases, family, preset, padding):
    encoder, model = with_delta(bases[family], preset)
    batch = make_batch(encoder.config.pad_token_id, LENGTHS[padding])
    with torch.inference_mode():
        plain = encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
    new, embedding = run(capture_attention, encoder, model, batch)
    full, _ = run(capture_attention, encoder, model, batch, full=True)
    eager, _ = run(capture_attention_eager, encoder, model, batch, full=True)
    rows, expected = new.cls_rows(), eager.cls_rows()  # (layers, rows, heads, len)
    assert rows.shape == (LAYERS, 3, HEADS, max(LENGTHS[padding])) and rows.dtype == torch.float32
    assert (rows - expected).abs().max() <= TOLERANCE
    assert (full.full_weights() - eager.full_weights()).abs().max() <= TOLERANCE  # (layers, rows, heads, len, len)
    assert torch.equal(full.cls_rows(), full.full_weights()[:, :, :, 0])
    assert torch.equal(embedding, plain)  # the capture does not change what the model computes
    pad = batch["attention_mask"] == 0  # (rows, len)
    assert not rows.permute(1, 3, 0, 2)[pad].any()  # padding columns get exactly 0
    mass = rows.sum(-1)  # (layers, rows, heads)
    prefixed = [i for i in range(LAYERS) if hasattr(encoder.module(i, "self_attention"), PREFIX_CHILD)]
    assert bool(prefixed) == preset.startswith("prefix")
    assert (mass[prefixed] < 1 - 1e-4).all()  # a prefix takes some of the mass
    others = mass[[i for i in range(LAYERS) if i not in prefixed]]
    assert torch.allclose(others, torch.ones_like(others), atol=1e-5)


def test_the_tiny_case_table_moves_attention(bases):
    """The nudged deltas are not no-ops: a LoRA, a prefix and a bottleneck adapter each move the rows."""
    batch = make_batch(0, LENGTHS["padded"])
    base = load_encoder(bases["bert"])
    reference, _ = run(capture_attention, base, base.model, batch)
    for preset in ("lora32", "prefix5", "adapter-h64", "ia3", "full"):
        encoder, model = with_delta(bases["bert"], preset)
        captured, _ = run(capture_attention, encoder, model, batch)
        assert (captured.cls_rows() - reference.cls_rows()).abs().max() > 1e-4, preset  # 20x the tolerance


# -- the recording, by hand ----------------------------------------------------------------------

LN2, LN3 = math.log(2), math.log(3)
KEYS = torch.tensor([LN2, 0.0, LN3, 5.0]).view(1, 1, 4, 1)  # (batch, heads, l + k_len, head_dim): one prefix key, 3 tokens
QUERY = torch.tensor([1.0, 0.0, 0.0]).view(1, 1, 3, 1)  # (batch, heads, q_len, head_dim): query 0 is 1
ATTEND = torch.tensor([True, True, True, False])  # the last token is padding
MASKS = {
    "bool": ATTEND.view(1, 1, 1, 4).expand(1, 1, 3, 4),
    "bool, broadcast over rows": ATTEND.view(1, 1, 1, 4),
    "additive": torch.where(ATTEND, 0.0, torch.finfo(torch.float32).min).view(1, 1, 1, 4).expand(1, 1, 3, 4),
    "additive -inf": torch.where(ATTEND, 0.0, -math.inf).view(1, 1, 1, 4).expand(1, 1, 3, 4),
}


@pytest.mark.parametrize("mask", list(MASKS))
def test_the_cls_row_is_softmax_of_query_0_against_every_key(mask):
    """exp(q0 k) = 2 (prefix), 1, 3, masked: the real row is [1/6, 1/2, 0] and the prefix keeps 1/3."""
    captured = CapturedAttention(1)
    captured.record(0, QUERY, KEYS, MASKS[mask], scaling=1.0)
    assert torch.allclose(captured.cls[0], torch.tensor([[[1 / 6, 1 / 2, 0.0]]]), atol=1e-7)
    assert captured.cls[0].shape == (1, 1, 3)  # (batch, heads, k_len)


def test_without_a_mask_every_key_counts_and_scaling_defaults_to_the_head_size():
    captured = CapturedAttention(1, keep_full=True)
    captured.record(0, QUERY, KEYS[:, :, :3], None, scaling=None)  # 3 tokens, no prefix; head_dim 1: scaling 1; exp = 2, 1, 3
    assert torch.allclose(captured.cls[0], torch.tensor([[[1 / 3, 1 / 6, 1 / 2]]]), atol=1e-7)
    full = captured.full[0]  # (batch, heads, q_len, k_len): queries 1 and 2 are 0, so uniform over the 3 keys
    assert full.shape == (1, 1, 3, 3) and torch.allclose(full[0, 0, 1:], torch.full((2, 3), 1 / 3))


# -- nothing is left behind ------------------------------------------------------------------------

def _raise_in_block(encoder, batch, captured):
    raise KeyError("in the block")


def _raise_in_forward(encoder, batch, captured):
    encoder.embed(batch["input_ids"] + 10**6, batch["attention_mask"])  # ids outside the vocabulary


def _switch_to_eager_inside(encoder, batch, captured):
    encoder.set_attention("eager")  # SDPA is never called: nothing is recorded, and reading the rows says so
    encoder.embed(batch["input_ids"], batch["attention_mask"])
    captured.cls_rows()


@pytest.mark.parametrize("before", ["sdpa", "eager"])
@pytest.mark.parametrize("fail, error", [(_raise_in_block, KeyError), (_raise_in_forward, IndexError),
                                         (_switch_to_eager_inside, RuntimeError)])
def test_nothing_is_left_behind_after_an_exception(bases, before, fail, error):
    encoder = load_encoder(bases["roberta"])
    encoder.set_attention(before)
    batch = make_batch(1, LENGTHS["padded"])
    with pytest.raises(error):
        with capture_attention(encoder) as captured:
            assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not sdpa_attention_forward
            assert attention_implementation(encoder) == "sdpa"
            fail(encoder, batch, captured)
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward and "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping
    assert attention_implementation(encoder) == before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in encoder.model.modules())


def test_the_eager_reference_leaves_no_hook_behind(bases):
    encoder = load_encoder(bases["bert"])
    with pytest.raises(KeyError):
        with capture_attention_eager(encoder):
            assert attention_implementation(encoder) == "eager"
            raise KeyError("in the block")
    assert attention_implementation(encoder) == "sdpa"
    assert all(not m._forward_hooks for m in encoder.model.modules())


def test_only_the_bound_encoder_is_recorded_and_captures_nest(bases):
    """Inside A's capture B's forward records nothing for A; with B's capture inside A's, each gets its own rows."""
    a, b = load_encoder(bases["bert"]), load_encoder(bases["roberta"])
    batch_a, batch_b = make_batch(0, LENGTHS["padded"]), make_batch(1, LENGTHS["unpadded"])
    with torch.inference_mode():
        with capture_attention(a) as outer:
            b.embed(batch_b["input_ids"], batch_b["attention_mask"])
            with pytest.raises(RuntimeError, match="no attention was captured"):
                outer.cls_rows()
            with capture_attention(b) as inner:
                a.embed(batch_a["input_ids"], batch_a["attention_mask"])
                b.embed(batch_b["input_ids"], batch_b["attention_mask"])
        alone_a, _ = run(capture_attention_eager, a, a.model, batch_a)
        alone_b, _ = run(capture_attention_eager, b, b.model, batch_b)
    assert (outer.cls_rows() - alone_a.cls_rows()).abs().max() <= TOLERANCE
    assert (inner.cls_rows() - alone_b.cls_rows()).abs().max() <= TOLERANCE
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
