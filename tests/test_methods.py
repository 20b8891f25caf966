"""Every method and combination: train a few steps, save, reload, and get the same embeddings.

Cases run on the tiny random RoBERTa (4 layers, hidden 32, CodeBERT's family); each trains
once per module (a fixture), and the tests below check what the delta touches, that it
round-trips through disk (our loader and peft's), and that switching it off gives the base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import trainers.methods
from trainers.encoders import load_encoder
from records.errors import InterpError
from trainers.methods import (
    AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig, apply_method, delta_state, disabled_layers,
    load_delta, load_delta_state, save_delta,
)
from trainers.methods.apply import delta_parameters
from trainers.methods.lora.config import SCALINGS, lora_parts

trainers.methods.register()  # the project's peft methods, for peft's own loading below

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TEXTS = ["def add(a, b): return a + b", "import os", "class Point: pass", "for i in range(10): print(i)"]

CASES = {
    "full": FullConfig(),
    "full-3-4": FullConfig(layers="3-4"),
    "lora": LoraConfig(r=4),
    "lora-alpha-over-r": LoraConfig(r=8, scaling="alpha/r"),
    "prefix": PrefixConfig(length=3),
    "adapter-attn": AdapterConfig(r=8, placement="attn"),
    "adapter-ffn": AdapterConfig(r=8, placement="ffn"),
    "adapter-h": AdapterConfig(r=8, placement="both"),
    "loFF-style": UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=12, placement="ffn"))),
    "loFF-last2": UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=12, placement="ffn")), layers="last:2"),
    "loFF-rslora": UnionConfig(parts=(LoraConfig(r=8, scaling="alpha/sqrt(r)"), AdapterConfig(r=12, placement="ffn"))),
    "prefix+adapter-3-4": UnionConfig(parts=(PrefixConfig(length=2, layers="3-4"), AdapterConfig(r=8, placement="attn", layers="3-4"))),
}
RESTRICTED = {"full-3-4": {2, 3}, "loFF-last2": {2, 3}, "prefix+adapter-3-4": {2, 3}}
PEFT_CASES = [name for name, config in CASES.items() if config.method != "full"]


def contrastive_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """In-batch cross entropy over [CLS] inner products (each text is its own positive)."""
    scores = embeddings @ embeddings.T  # (batch, batch)
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(embeddings)))


@dataclass
class Trained:
    name: str
    model: torch.nn.Module
    encoder: object
    batch: dict
    base: torch.Tensor  # (batch, hidden) embeddings before the method
    base_hidden: tuple  # hidden states of the base model, per layer
    trained: torch.Tensor  # embeddings after training
    run_dir: Path
    trainable: set[str]


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def trained(request, tiny_roberta_dir, tmp_path_factory) -> Trained:
    name, config = request.param, CASES[request.param]
    torch.manual_seed(0)
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS, max_len=32)
    with torch.no_grad():
        base_out = encoder.model(**batch, output_hidden_states=True)
    model = apply_method(encoder, config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = contrastive_loss(encoder.embed(**batch, model=model))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = encoder.embed(**batch, model=model)
    run_dir = save_delta(model, config, tmp_path_factory.mktemp("runs") / name)
    return Trained(name, model, encoder, batch, base_out.last_hidden_state[:, 0], base_out.hidden_states, after, run_dir, trainable)


def test_training_changes_the_embeddings(trained):
    assert not torch.allclose(trained.trained, trained.base, atol=1e-4)


def test_exactly_the_delta_is_trainable(trained):
    assert trained.trainable == set(delta_parameters(trained.model))
    assert trained.trainable


def test_reload_in_a_fresh_encoder_gives_identical_embeddings(trained, tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    model = load_delta(encoder, trained.run_dir)
    with torch.no_grad():
        again = encoder.embed(**trained.batch, model=model)
    torch.testing.assert_close(again, trained.trained, atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("trained", PEFT_CASES, indirect=True)
def test_peft_from_pretrained_matches_our_loader(trained, tiny_roberta_dir):
    import peft

    encoder = load_encoder(tiny_roberta_dir)
    model = peft.PeftModel.from_pretrained(encoder.model, str(trained.run_dir))
    with torch.no_grad():
        again = encoder.embed(**trained.batch, model=model)
    torch.testing.assert_close(again, trained.trained, atol=1e-6, rtol=0)


def test_disabling_every_layer_gives_the_base_model(trained):
    model, encoder = trained.model, trained.encoder
    with torch.no_grad(), disabled_layers(model, range(encoder.num_layers)):
        off = encoder.embed(**trained.batch, model=model)
    torch.testing.assert_close(off, trained.base, atol=1e-6, rtol=0)
    with torch.no_grad():  # and the delta is back afterwards
        torch.testing.assert_close(encoder.embed(**trained.batch, model=model), trained.trained, atol=0, rtol=0)


def test_disabled_layers_restores_even_when_the_block_raises(trained):
    model, encoder = trained.model, trained.encoder
    with pytest.raises(RuntimeError), disabled_layers(model, [0, 3]):
        raise RuntimeError("inside")
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**trained.batch, model=model), trained.trained, atol=0, rtol=0)


@pytest.mark.parametrize("trained", list(RESTRICTED), indirect=True)
def test_a_layer_restricted_delta_touches_only_its_layers(trained):
    layers = RESTRICTED[trained.name]
    root = trained.encoder.spec.layers
    for name in trained.trainable:
        assert any(f"{root}.{i}." in name for i in layers), name
    with torch.no_grad():
        hidden = trained.model(**trained.batch, output_hidden_states=True).hidden_states
    first = min(layers)
    for i in range(first + 1):  # the embeddings' output and every layer before the first restricted one
        torch.testing.assert_close(hidden[i], trained.base_hidden[i], atol=0, rtol=0)
    assert not torch.allclose(hidden[-1], trained.base_hidden[-1], atol=1e-4)


@pytest.mark.parametrize("trained", ["lora", "lora-alpha-over-r", "loFF-rslora"], indirect=True)
def test_the_reloaded_delta_applies_the_recorded_scale(trained, tiny_roberta_dir):
    """Our loader and peft's (from adapter_config.json) both rebuild the factor the config records."""
    import peft

    scale = next(p for p in lora_parts(CASES[trained.name])).scale
    for model in (load_delta(load_encoder(tiny_roberta_dir), trained.run_dir),
                  peft.PeftModel.from_pretrained(load_encoder(tiny_roberta_dir).model, str(trained.run_dir))):
        assert {m.scaling["default"] for m in model.modules() if isinstance(m, peft.tuners.lora.Linear)} == {scale}


@pytest.mark.parametrize("trained", ["lora", "loFF-style", "full"], indirect=True)
def test_delta_state_round_trips(trained):
    snapshot = delta_state(trained.model)
    assert set(snapshot) == trained.trainable
    params = dict(trained.model.named_parameters())
    saved = {n: params[n].detach().clone() for n in snapshot}
    with torch.no_grad():
        for n in snapshot:
            params[n].add_(1.0)
    load_delta_state(trained.model, snapshot)
    for n in snapshot:
        assert torch.equal(params[n], saved[n])
    with pytest.raises(InterpError, match="missing"):
        load_delta_state(trained.model, dict(list(snapshot.items())[1:]))


@pytest.mark.parametrize("config", [LoraConfig(r=4), AdapterConfig(r=8, placement="attn"), AdapterConfig(r=8, placement="ffn"),
                                    AdapterConfig(r=8), UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=8, placement="ffn")))],
                         ids=lambda c: c.describe())
def test_an_untrained_delta_leaves_the_base_outputs(config, tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        base = encoder.model(**batch).last_hidden_state
        model = apply_method(encoder, config)
        torch.testing.assert_close(model(**batch).last_hidden_state, base, atol=1e-6, rtol=0)


def test_save_keeps_other_files_and_replaces_the_delta(tiny_roberta_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    encoder = load_encoder(tiny_roberta_dir)
    save_delta(apply_method(encoder, LoraConfig(r=2)), LoraConfig(r=2), run)
    assert {"manifest.json", "adapter_model.safetensors", "adapter_config.json", "method.json"} <= {p.name for p in run.iterdir()}
    encoder = load_encoder(tiny_roberta_dir)
    save_delta(apply_method(encoder, FullConfig(layers="4")), FullConfig(layers="4"), run)
    names = {p.name for p in run.iterdir()}
    assert "manifest.json" in names and "model.safetensors" in names and "adapter_model.safetensors" not in names


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupted_delta_file_is_named(damage, tiny_roberta_dir, tmp_path):
    encoder = load_encoder(tiny_roberta_dir)
    save_delta(apply_method(encoder, AdapterConfig(r=4)), AdapterConfig(r=4), tmp_path / "run")
    weights = tmp_path / "run" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a safetensors file at all")
    with pytest.raises(InterpError, match="adapter_model.safetensors"):
        load_delta(load_encoder(tiny_roberta_dir), tmp_path / "run")


def test_a_delta_of_another_shape_is_refused(tiny_roberta_dir, tmp_path):
    encoder = load_encoder(tiny_roberta_dir)
    save_delta(apply_method(encoder, AdapterConfig(r=4, layers="1-2")), AdapterConfig(r=4, layers="1-2"), tmp_path / "run")
    (tmp_path / "run" / "method.json").write_text('{"method": "adapter", "r": 4, "placement": "both", "layers": null}')
    with pytest.raises(InterpError, match="missing"):
        load_delta(load_encoder(tiny_roberta_dir), tmp_path / "run")


def test_save_wants_the_model_apply_method_returned(tiny_roberta_dir, tmp_path):
    encoder = load_encoder(tiny_roberta_dir)
    apply_method(encoder, LoraConfig(r=2))
    with pytest.raises(InterpError, match="apply_method returned"):
        save_delta(encoder.model, LoraConfig(r=2), tmp_path / "run")  # the bare base: would save every weight
    assert not (tmp_path / "run").exists()


def test_a_method_goes_on_a_fresh_encoder_only(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    apply_method(encoder, LoraConfig(r=2))
    with pytest.raises(InterpError, match="fresh"):
        apply_method(encoder, AdapterConfig(r=2))


def test_minilm_loFF_round_trips_through_peft(minilm, tmp_path):
    """The real default encoder (BERT family): a union saves, and peft's own loader agrees."""
    import peft

    config = UnionConfig(parts=(LoraConfig(r=8), AdapterConfig(r=16, placement="ffn")), layers="5-6")
    encoder = load_encoder(minilm.source)
    batch = encoder.tokenize(TEXTS)
    model = apply_method(encoder, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)  # a non-trivial delta without training
        expected = encoder.embed(**batch, model=model)
    save_delta(model, config, tmp_path / "run")
    fresh = load_encoder(minilm.source)
    loaded = peft.PeftModel.from_pretrained(fresh.model, str(tmp_path / "run"))
    with torch.no_grad():
        torch.testing.assert_close(fresh.embed(**batch, model=loaded), expected, atol=1e-6, rtol=0)


def test_unload_gives_back_the_plain_base_model(tiny_roberta_dir):
    from peft.tuners.tuners_utils import BaseTunerLayer

    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS)
    with torch.no_grad():
        base = encoder.model(**batch).last_hidden_state
    union = UnionConfig(parts=(PrefixConfig(length=2), LoraConfig(r=2), AdapterConfig(r=4, placement="ffn")))
    model = apply_method(encoder, union)
    with pytest.raises(NotImplementedError):
        model.merge_and_unload()
    plain = model.unload()
    assert not any(isinstance(m, BaseTunerLayer) for m in plain.modules())
    assert type(encoder.module(0, "self_attention").config).__name__ != "PrefixRoutedConfig"
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).last_hidden_state, base, atol=0, rtol=0)


def test_the_encoder_still_describes_the_base_after_a_method(tiny_roberta_dir):
    fresh = load_encoder(tiny_roberta_dir)
    encoder = load_encoder(tiny_roberta_dir)
    apply_method(encoder, UnionConfig(parts=(LoraConfig(r=2), AdapterConfig(r=4, placement="ffn"))))
    assert encoder.num_parameters == fresh.num_parameters
    assert encoder.weights_hash == fresh.weights_hash


# -- LoRA's scaling rule: the factor peft applies is the one the config records -------------------
@pytest.mark.parametrize("scaling", list(SCALINGS))
@pytest.mark.parametrize("make", [
    lambda s: LoraConfig(r=8, alpha=3, scaling=s),
    lambda s: UnionConfig(parts=(LoraConfig(r=8, alpha=3, scaling=s), AdapterConfig(r=4, placement="ffn"))),  # loFF
], ids=["lora", "loFF"])
def test_the_factor_on_the_built_module_is_the_configs_scale(make, scaling, tiny_roberta_dir):
    from peft.tuners.lora import Linear

    config = make(scaling)
    (lora,) = lora_parts(config)
    model = apply_method(load_encoder(tiny_roberta_dir), config)
    modules = [m for m in model.modules() if isinstance(m, Linear)]
    assert len(modules) == 2 * 4  # query and value in each of the 4 layers
    assert {m.scaling["default"] for m in modules} == {lora.scale}
    assert lora.scale == {"alpha": 3.0, "alpha/r": 3 / 8, "alpha/sqrt(r)": 3 / 8**0.5}[scaling]


@pytest.mark.parametrize("scaling", list(SCALINGS))
def test_the_update_is_scale_times_the_low_rank_product(scaling, tiny_roberta_dir):
    """h W + scale * h A^T B^T on a query projection, with A and B set by hand."""
    config = LoraConfig(r=2, alpha=4, scaling=scaling)
    encoder = load_encoder(tiny_roberta_dir)
    apply_method(encoder, config)  # peft wraps the encoder's own modules
    query = encoder.module(0, "query")
    a, b = torch.zeros(2, 32), torch.zeros(32, 2)  # lora_A (r, d_in), lora_B (d_out, r)
    a[0, 0], a[1, 1], b[0, 0], b[1, 1] = 1.0, 2.0, 1.0, 1.0
    with torch.no_grad():
        query.lora_A["default"].weight.copy_(a)
        query.lora_B["default"].weight.copy_(b)
        h = torch.randn(3, 32)  # (tokens, hidden)
        change = query(h) - query.base_layer(h)
    expected = torch.zeros(3, 32)
    expected[:, 0], expected[:, 1] = config.scale * h[:, 0], config.scale * 2 * h[:, 1]
    torch.testing.assert_close(change, expected, atol=1e-6, rtol=0)


def test_a_checkpoint_from_before_the_rule_loads_as_alpha(trained_lora_old, tiny_roberta_dir):
    """An old method.json (numeric `scaling`, no rule) gives the outputs it was saved with."""
    run_dir, batch, expected = trained_lora_old
    encoder = load_encoder(tiny_roberta_dir)
    model = load_delta(encoder, run_dir)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**batch, model=model), expected, atol=1e-6, rtol=0)
    assert {m.scaling["default"] for n, m in model.named_modules() if n.endswith("query")} == {4.0}


@pytest.fixture
def trained_lora_old(tiny_roberta_dir, tmp_path):
    import json

    config = LoraConfig(r=4)
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS)
    model = apply_method(encoder, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
        expected = encoder.embed(**batch, model=model)
    save_delta(model, config, tmp_path / "run")
    (tmp_path / "run" / "method.json").write_text(json.dumps(  # as written before the rule was recorded
        {"method": "lora", "r": 4, "alpha": 4.0, "dropout": 0.0, "layers": None, "lora_alpha": 16.0, "scaling": 4.0}))
    return tmp_path / "run", batch, expected
