"""Prefix tuning: the prefix joins keys and values only; positions, padding and both attention paths hold.

Padded batches throughout, so masks are real; the tiny RoBERTa has CodeBERT's position
offset (pad id 1), MiniLM is the real BERT-family default.
"""

from __future__ import annotations

import pytest
import torch

import trainers.methods
from trainers.encoders import load_encoder
from trainers.methods import PrefixConfig, UnionConfig, LoraConfig, apply_method, count_parameters, disabled_layers, load_delta, save_delta
from trainers.methods.apply import delta_parameters
from trainers.methods.prefix.layer import PrefixLayer
from trainers.methods.prefix.model import init_from_vocabulary, random_token_ids

trainers.methods.register()  # the project's peft methods, for peft's own loading below

TEXTS = ["def add(a, b): return a + b  # a longer line of code", "import os", "x = 1"]
L = 3


def prefixed(source, config=PrefixConfig(length=L)):
    encoder = load_encoder(source)
    batch = encoder.tokenize(TEXTS, max_len=32)
    torch.manual_seed(0)
    base = encoder.model
    with torch.no_grad():
        base_out = base(**batch).last_hidden_state
    positions = record_position_ids(encoder)
    with torch.no_grad():
        base(**batch)
    model = apply_method(encoder, config)
    return encoder, model, batch, base_out, positions


def record_position_ids(encoder) -> list[torch.Tensor]:
    """Position ids the embeddings look up, recorded on every forward."""
    seen = []
    table = encoder.model.embeddings.position_embeddings
    table.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return seen


@pytest.fixture(params=["tiny_roberta", "minilm"])
def source(request, tiny_roberta_dir, minilm):
    return tiny_roberta_dir if request.param == "tiny_roberta" else minilm.source


def test_real_tokens_keep_their_position_ids(source):
    encoder, model, batch, _, positions = prefixed(source)
    with torch.no_grad():
        model(**batch)
    base, with_prefix = positions[0], positions[-1]  # (between them: the forward that initialises the prefix)
    assert torch.equal(base, with_prefix)
    assert with_prefix.shape[-1] == batch["input_ids"].shape[1]  # no room made for the prefix


def test_eager_and_sdpa_agree(source):
    encoder, model, batch, _, _ = prefixed(source)
    with torch.no_grad():
        sdpa = model(**batch).last_hidden_state
        encoder.set_attention("eager")
        eager = model(**batch).last_hidden_state
        encoder.set_attention("sdpa")
        again = model(**batch).last_hidden_state
    pad = batch["attention_mask"].bool()
    torch.testing.assert_close(eager[pad], sdpa[pad], atol=1e-5, rtol=1e-4)
    assert torch.equal(again, sdpa)


def test_eager_weights_cover_the_prefix_and_never_the_padding(tiny_roberta_dir):
    encoder, model, batch, _, _ = prefixed(tiny_roberta_dir)
    encoder.set_attention("eager")
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions
    mask = batch["attention_mask"]  # (batch, seq)
    assert len(attentions) == encoder.num_layers
    for weights in attentions:  # (batch, heads, q_len, L + k_len), prefix columns first
        assert weights.shape == (len(TEXTS), encoder.num_heads, mask.shape[1], L + mask.shape[1])
        assert (weights[..., :L] > 0).all()
        padded = (mask == 0)[:, None, None, :].expand_as(weights[..., L:])
        assert padded.any() and (weights[..., L:][padded] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_a_restricted_prefix_only_widens_its_layers(tiny_roberta_dir):
    encoder, model, batch, _, _ = prefixed(tiny_roberta_dir, PrefixConfig(length=L, layers="2"))
    encoder.set_attention("eager")
    with torch.no_grad():
        attentions = model(**batch, output_attentions=True).attentions
    k_len = batch["input_ids"].shape[1]
    assert [w.shape[-1] for w in attentions] == [k_len, L + k_len, k_len, k_len]


def test_the_prefix_changes_outputs_and_switches_off_cleanly(tiny_roberta_dir):
    encoder, model, batch, base_out, _ = prefixed(tiny_roberta_dir)
    with torch.no_grad():
        on = model(**batch).last_hidden_state
        with disabled_layers(model, range(encoder.num_layers)):
            off = model(**batch).last_hidden_state
        with disabled_layers(model, [0]):
            partly = model(**batch).last_hidden_state
    assert not torch.allclose(on, base_out, atol=1e-4)
    torch.testing.assert_close(off, base_out, atol=0, rtol=0)  # the same functions on the same inputs
    assert not torch.allclose(partly, on) and not torch.allclose(partly, base_out)


def test_module_paths_and_class_stay_so_other_code_still_finds_them(tiny_roberta_dir):
    encoder, model, batch, _, _ = prefixed(tiny_roberta_dir, UnionConfig(parts=(PrefixConfig(length=2), LoraConfig(r=2))))
    attention = encoder.module(0, "self_attention")
    assert type(attention).__name__ == "RobertaSelfAttention"
    assert isinstance(attention.prefix, PrefixLayer)
    assert encoder.module(0, "query") is attention.query  # LoRA-wrapped, at the same path
    assert attention.config.hidden_size == encoder.hidden_size  # the routed view reads through


def test_vocab_init_sets_the_base_keys_and_values_of_real_tokens(tiny_roberta_dir):
    """Each layer's P_k, P_v are exactly that layer's key and value projections of the tokens' hidden states."""
    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, PrefixConfig(length=6, init="normal", layers="1,3"))
    ids = torch.tensor([40, 41, 300, 7, 99, 512])
    with torch.no_grad():
        with disabled_layers(model, range(encoder.num_layers)):
            hidden = encoder.model(input_ids=ids[None], output_hidden_states=True).hidden_states  # inputs of each layer
        init_from_vocabulary(encoder.model, "default", ids)
        for layer in (0, 2):
            attention = encoder.module(layer, "self_attention")
            assert attention.prefix.capture is None
            torch.testing.assert_close(attention.prefix.kv_prefix_key["default"], attention.key(hidden[layer][0]))
            torch.testing.assert_close(attention.prefix.kv_prefix_value["default"], attention.value(hidden[layer][0]))
    assert not hasattr(encoder.module(1, "self_attention"), "prefix")


def _prefix_layers(model) -> list[PrefixLayer]:
    return [m for m in model.modules() if isinstance(m, PrefixLayer)]


@pytest.mark.parametrize("config", [PrefixConfig(length=3), PrefixConfig(length=2, init="normal", layers="2-3"),
                                    UnionConfig(parts=(PrefixConfig(length=2), LoraConfig(r=2)))], ids=lambda c: c.describe())
def test_initial_values_are_kept_saved_and_loaded(config, tiny_roberta_dir, tmp_path):
    """P_k0, P_v0 are the values training starts from, are never trained, and come back from the delta file
    through load_delta and through peft's own loader."""
    import peft
    from transformers import AutoModel

    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, config)
    layers = _prefix_layers(model)
    start = [tuple(store["default"].detach().clone() for store in (m.kv_prefix_key, m.kv_prefix_value)) for m in layers]
    for m, (k0, v0) in zip(layers, start):
        assert [torch.equal(a, b) for a, b in zip(m.initial("default"), (k0, v0))] == [True, True]
    assert not any("kv_prefix_init" in name for name in delta_parameters(model))  # buffers: not trained, not counted
    assert count_parameters(encoder, config).trainable == sum(p.numel() for p in delta_parameters(model).values())
    with torch.no_grad():  # "training"
        for i, m in enumerate(layers):
            m.kv_prefix_key["default"].add_(0.5 * (i + 1))
            m.kv_prefix_value["default"].mul_(-2.0)
    save_delta(model, config, tmp_path / "run")
    for loaded in (load_delta(load_encoder(tiny_roberta_dir), tmp_path / "run"),
                   peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_roberta_dir), tmp_path / "run")):
        again = _prefix_layers(loaded)
        assert len(again) == len(layers)
        for m, trained, (k0, v0) in zip(again, layers, start):
            torch.testing.assert_close(m.initial("default")[0], k0, rtol=0, atol=0)
            torch.testing.assert_close(m.initial("default")[1], v0, rtol=0, atol=0)
            torch.testing.assert_close(m.kv_prefix_key["default"], trained.kv_prefix_key["default"], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Found missing adapter keys:UserWarning")
def test_a_checkpoint_without_initial_values_loads_and_says_they_are_unknown(tiny_roberta_dir, tmp_path):
    """Saved before the initial values were kept: both loaders still load it; `initial()` is None, never a guess."""
    import peft
    from safetensors.torch import load_file, save_file
    from transformers import AutoModel

    encoder = load_encoder(tiny_roberta_dir)
    config = PrefixConfig(length=2)
    save_delta(apply_method(encoder, config), config, tmp_path / "run")
    weights = tmp_path / "run" / "adapter_model.safetensors"
    state = load_file(weights)
    old = {k: v for k, v in state.items() if "kv_prefix_init" not in k}
    assert len(old) == len(state) // 2
    save_file(old, weights, metadata={"format": "pt"})
    for loaded in (load_delta(load_encoder(tiny_roberta_dir), tmp_path / "run"),
                   peft.PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_roberta_dir), tmp_path / "run")):
        layers = _prefix_layers(loaded)
        assert len(layers) == 4 and all(m.initial("default") is None for m in layers)
        key = next(k for k in old if k.endswith("layer.0.attention.self.prefix.kv_prefix_key"))
        torch.testing.assert_close(layers[0].kv_prefix_key["default"], old[key], rtol=0, atol=0)


def test_random_token_ids_avoid_special_tokens(tiny_roberta_dir):
    config = load_encoder(tiny_roberta_dir).config
    ids = random_token_ids(config, 2000)
    assert ids.shape == (2000,) and ids.max() < config.vocab_size
    assert not set(ids.tolist()) & {config.pad_token_id, config.bos_token_id, config.eos_token_id}


def test_why_not_peft_prefix_tuning_it_shifts_position_ids(tiny_roberta_dir):
    """peft's PREFIX_TUNING passes the prefix as past_key_values, so RoBERTa numbers real tokens after it."""
    import peft

    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS)
    positions = record_position_ids(encoder)
    with torch.no_grad():
        encoder.model(**batch)
        peft.get_peft_model(encoder.model, peft.PrefixTuningConfig(num_virtual_tokens=L, task_type="FEATURE_EXTRACTION"))(**batch)
    real = batch["attention_mask"].bool()
    assert torch.equal(positions[-1][real], positions[0][real] + L)
