"""A union's parameter names carry its registered prefix (`union_`), and runs saved before that still load.

Runs on the tiny random RoBERTa (4 layers, d 32). The union holds every kind of part a union can:
a prefix (attention, a child of the self-attention module), LoRA (query, value), a bottleneck after
the FFN output (both in layers 1-2) and (IA)3 (keys, values and FFN activations, in layers 3-4). A run saved under the new names is rewritten in
the old naming (each `union_` dropped from its keys, which is exactly what the project saved before)
and must load, by `load_delta` and by peft alone, to the same outputs.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainers.encoders import load_encoder
from trainers.methods import (
    AdapterConfig, LoraConfig, PrefixConfig, UnionConfig, apply_method, count_parameters, load_delta, save_delta,
)
from trainers.methods.apply import delta_parameters
from trainers.methods.ia3.config import Ia3Config
from trainers.methods.union.names import migrate_keys

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TEXTS = ["def add(a, b): return a + b", "import os", "class Point: pass"]
UNION = UnionConfig(parts=(PrefixConfig(length=2), LoraConfig(r=2, layers="1-2"), AdapterConfig(r=4, placement="ffn", layers="1-2"),
                           Ia3Config(layers="3-4")))


@pytest.fixture(scope="module")
def saved(tiny_roberta_dir, tmp_path_factory):
    """(run directory in the old naming, batch, outputs): a union with a non-trivial delta, saved, then renamed back."""
    torch.manual_seed(0)
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS, max_len=16)
    model = apply_method(encoder, UNION)
    with torch.no_grad():
        for p in delta_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.05)
        expected = encoder.embed(**batch, model=model)
    run = save_delta(model, UNION, tmp_path_factory.mktemp("union-names") / "run")
    new = load_file(run / "adapter_model.safetensors")
    old_dir = tmp_path_factory.mktemp("union-names-old") / "run"
    old_dir.mkdir()
    for f in run.iterdir():
        (old_dir / f.name).write_bytes(f.read_bytes())
    save_file({k.replace(".union_", "."): v for k, v in new.items()}, old_dir / "adapter_model.safetensors",
              metadata={"format": "pt"})
    return run, old_dir, new, batch, expected


def test_every_parameter_of_a_union_carries_its_prefix(tiny_roberta_dir):
    model = apply_method(load_encoder(tiny_roberta_dir), UNION)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".union_" in n for n in trained)
    assert set(trained) == set(delta_parameters(model))
    kinds = {n.rsplit(".union_", 1)[1].split(".")[0] for n in trained}
    assert kinds == {"kv_prefix_key", "kv_prefix_value", "lora_A", "lora_B", "bottleneck_down", "bottleneck_up", "ia3_l"}
    # the base weights keep their names: no frozen parameter carries the prefix
    assert not any("union_" in n for n, p in model.named_parameters() if not p.requires_grad)


def test_the_parts_still_read_their_containers_by_their_own_names(tiny_roberta_dir):
    model = apply_method(load_encoder(tiny_roberta_dir), UNION)
    query = model.base_model.model.encoder.layer[0].attention.self.query
    assert query.lora_A is query.union_lora_A and "lora_A" not in query._modules
    dense = model.base_model.model.encoder.layer[0].output.dense
    assert dense.bottleneck_up is dense.union_bottleneck_up


def test_saved_keys_carry_the_prefix(saved):
    _, _, new, _, _ = saved
    assert new and all(".union_" in k for k in new)
    assert "base_model.model.encoder.layer.0.attention.self.query.union_lora_A.weight" in new
    assert "base_model.model.encoder.layer.3.attention.self.key.union_ia3_l" in new
    assert "base_model.model.encoder.layer.0.attention.self.prefix.union_kv_prefix_init_key" in new


def test_a_run_saved_in_the_old_naming_loads_to_the_same_outputs(saved, tiny_roberta_dir):
    _, old_dir, _, batch, expected = saved
    assert not any("union_" in k for k in load_file(old_dir / "adapter_model.safetensors"))
    encoder = load_encoder(tiny_roberta_dir)
    model = load_delta(encoder, old_dir)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**batch, model=model), expected, atol=1e-6, rtol=0)


def test_peft_alone_loads_the_old_naming_too(saved, tiny_roberta_dir):
    import peft

    import trainers.methods

    _, old_dir, _, batch, expected = saved
    trainers.methods.register()
    encoder = load_encoder(tiny_roberta_dir)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(encoder.model, str(old_dir))
    assert not [w for w in said if "missing adapter keys" in str(w.message)]
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**batch, model=model), expected, atol=1e-6, rtol=0)


def test_peft_warns_about_a_missing_union_key(saved, tiny_roberta_dir, tmp_path):
    """The warning peft filters by the registered prefix now fires for a union."""
    import peft

    import trainers.methods

    run, _, new, _, _ = saved
    for f in run.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    gone = "base_model.model.encoder.layer.1.output.dense.union_bottleneck_up.weight"
    save_file({k: v for k, v in new.items() if k != gone}, tmp_path / "adapter_model.safetensors", metadata={"format": "pt"})
    trainers.methods.register()
    with pytest.warns(UserWarning, match=r"missing adapter keys.*layer\.1\.output\.dense\.union_bottleneck_up\.default\.weight"):
        peft.PeftModel.from_pretrained(load_encoder(tiny_roberta_dir).model, str(tmp_path))


def test_the_count_is_unchanged(tiny_roberta_dir):
    """Counting reads requires_grad and the parts' layers, not names: prefix 2ld in 4 layers, LoRA 4rd and the
    FFN adapter 2rd (+ r + d biases) in 2, (IA)3 2d + d_ff in 2 (l 2, r 2 and 4, d 32, d_ff 128)."""
    count = count_parameters(load_encoder(tiny_roberta_dir), UNION)
    d, d_ff = 32, 128
    formula = 4 * (2 * 2 * d) + 2 * (4 * 2 * d) + 2 * (2 * 4 * d) + 2 * (2 * d + d_ff)
    assert (count.formula, count.trainable_without_biases, count.adapter_biases) == (formula, formula, 2 * (4 + d))


# -- the migration, key by key ---------------------------------------------------------------------------------
MODEL_PREFIX = "base_model.model.encoder.layer.0."


@pytest.mark.parametrize("key, expected", [
    ("attention.self.query.lora_A.weight", "attention.self.query.union_lora_A.weight"),  # a ModuleDict's Linear
    ("output.dense.bottleneck_up.bias", "output.dense.union_bottleneck_up.bias"),
    ("attention.self.prefix.kv_prefix_key", "attention.self.prefix.union_kv_prefix_key"),  # a ParameterDict's entry
    ("attention.self.prefix.kv_prefix_init_value", "attention.self.prefix.union_kv_prefix_init_value"),  # a BufferDict's
    ("attention.self.query.union_lora_A.weight", "attention.self.query.union_lora_A.weight"),  # already new: kept
    ("attention.self.query.base_layer.weight", "attention.self.query.base_layer.weight"),  # not a renamed child
    ("attention.self.key.lora_A.weight", "attention.self.key.lora_A.weight"),  # no LoRA layer there: kept
])
def test_migrate_keys_renames_only_the_children_it_renamed(tiny_roberta_dir, key, expected):
    model = apply_method(load_encoder(tiny_roberta_dir), UNION)
    for lead in (MODEL_PREFIX, MODEL_PREFIX.removeprefix("base_model.model.")):  # peft's keys, and a bare model's
        assert migrate_keys(model, {lead + key: 0}, "union_") == {lead + expected: 0}


def test_migrate_keys_keeps_a_key_whose_new_name_is_also_there(tiny_roberta_dir):
    model = apply_method(load_encoder(tiny_roberta_dir), UNION)
    old, new = MODEL_PREFIX + "attention.self.query.lora_A.weight", MODEL_PREFIX + "attention.self.query.union_lora_A.weight"
    assert migrate_keys(model, {old: 1, new: 2}, "union_") == {old: 1, new: 2}


def test_an_old_run_without_a_prefixs_initial_values_loads_and_says_so(saved, tiny_roberta_dir, tmp_path):
    """Runs from before prefixes kept P_init lack those keys (old naming too): they load, initial() is unknown."""
    from trainers.methods.prefix.layer import PrefixLayer

    _, old_dir, _, batch, expected = saved
    for f in old_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    state = load_file(old_dir / "adapter_model.safetensors")
    save_file({k: v for k, v in state.items() if "kv_prefix_init_" not in k}, tmp_path / "adapter_model.safetensors",
              metadata={"format": "pt"})
    encoder = load_encoder(tiny_roberta_dir)
    model = load_delta(encoder, tmp_path)
    layers = [m for m in model.modules() if isinstance(m, PrefixLayer)]
    assert len(layers) == 4 and all(m.initial("default") is None for m in layers)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**batch, model=model), expected, atol=1e-6, rtol=0)
