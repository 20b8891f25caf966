"""peft's `TestPeftCustomModel` bodies (tests/test_custom_models.py of peft 0.21.2), restated for one method.

Copyright 2023-present the HuggingFace Inc. team, Apache License 2.0; adapted as described in
checks.py (local bases, one feature-extraction batch, adapter parameters found structurally). Plus
the checks the project's issue adds: peft's tests assume `model.prefix` appears in every adapter
parameter name, that a tuner layer exposes its base layer (and `.weight` through it), and that a
config's `init_weights=False` starts away from the identity.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model

from peft_contract.checks import Method, adapter_names, load, out, peft_model, refuses_merge_cleanly, tuner_layers


def _train(model, steps: int = 3, lr: float = 0.5) -> None:
    """peft's loop; the loss weighs the outputs at random, since a plain sum after BERT's final LayerNorm has no gradient."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    weights = torch.randn(out(model).shape, generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        optimizer.zero_grad()
        (out(model) * weights).sum().backward()
        optimizer.step()


def test_in_features_out_features_exposed(base, method: Method, tmp_path):
    for layer in tuner_layers(peft_model(base, method)):
        assert hasattr(layer, "in_features") and hasattr(layer, "out_features"), type(layer).__name__


def test_weight_bias_attributes(base, method: Method, tmp_path):
    """peft's test_weight_bias_attributes and BaseTunerLayer.get_base_layer: no tuner layer is its own base."""
    for layer in tuner_layers(peft_model(base, method)):
        base_layer = layer.get_base_layer()
        assert base_layer is not layer and not isinstance(base_layer, type(layer))
        hasattr(layer, "weight")  # must not recurse (RecursionError is not an AttributeError)


def test_forward_output_finite(base, method: Method, tmp_path):
    model = peft_model(base, method).eval()
    with torch.no_grad():
        assert torch.isfinite(out(model)).all()


def test_forward_bfloat16(base, method: Method, tmp_path):
    model = get_peft_model(load(base, dtype=torch.bfloat16), method.make(), autocast_adapter_dtype=False).eval()
    out(model)
    if not method.mergeable:
        return  # peft skips the merging half for methods that cannot merge (test_merge_layers covers the refusal)
    model.merge_adapter(safe_merge=False)
    out(model)
    model.unmerge_adapter()
    model.merge_adapter(safe_merge=True)
    out(model)
    model.unmerge_adapter()
    out(model.merge_and_unload())


def test_adapter_dtype_autocast(base, method: Method, tmp_path):
    """Both autocast settings and both low_cpu_mem_usage settings, as peft parametrizes them, in one case."""
    for autocast in (True, False):
        for low_cpu in (False, True):
            expected = torch.float32 if autocast else torch.bfloat16
            where = tmp_path / f"{autocast}-{low_cpu}"
            model = get_peft_model(load(base, dtype=torch.bfloat16), method.make(), autocast_adapter_dtype=autocast)
            model.add_adapter("other", method.make(), autocast_adapter_dtype=autocast)
            dtypes = {p.dtype for n, p in model.named_parameters() if n in adapter_names(model)}
            assert dtypes == {expected}, (autocast, dtypes)
            model.save_pretrained(where)
            model = PeftModel.from_pretrained(load(base, dtype=torch.bfloat16), where, autocast_adapter_dtype=autocast,
                                              low_cpu_mem_usage=low_cpu)
            model.load_adapter(where / "other", adapter_name="other", autocast_adapter_dtype=autocast, low_cpu_mem_usage=low_cpu)
            dtypes = {p.dtype for n, p in model.named_parameters() if n in adapter_names(model)}
            assert dtypes == {expected}, (autocast, low_cpu, dtypes)


def test_only_params_are_updated(base, method: Method, tmp_path):
    model = peft_model(base, method, init_weights=False)
    before = copy.deepcopy(model)
    _train(model)
    adapter = adapter_names(model)
    params_before, params_after = dict(before.named_parameters()), dict(model.named_parameters())
    assert params_before.keys() == params_after.keys()
    for name, p_before in params_before.items():
        p_after = params_after[name]
        if name in adapter and p_after.requires_grad:
            assert not torch.allclose(p_before, p_after, atol=1e-4, rtol=1e-4), name
        else:
            assert torch.allclose(p_before, p_after, atol=1e-4, rtol=1e-4), name


def test_save_load_roundtrip(base, method: Method, tmp_path):
    logits_base = out(load(base).eval())
    torch.manual_seed(0)
    model = peft_model(base, method, init_weights=False).eval()
    logits = out(model)
    assert not torch.allclose(logits_base, logits, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    torch.manual_seed(54321)
    assert torch.allclose(logits, out(PeftModel.from_pretrained(load(base), tmp_path)), atol=1e-5, rtol=1e-5)


def test_parameters_after_loading_model(base, method: Method, tmp_path):
    model = peft_model(base, method)
    _train(model)
    before = model.state_dict()
    model.save_pretrained(tmp_path)
    after = PeftModel.from_pretrained(load(base), tmp_path).state_dict()
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-4, rtol=1e-4) for k in before)


def test_disable_adapters(base, method: Method, tmp_path):
    logits_base = out(load(base).eval())
    model = peft_model(base, method).eval()
    logits_before = out(model)
    if method.identity_at_init:
        assert torch.allclose(logits_base, logits_before)
    _train(model, lr=0.01)
    model.eval()
    logits_after = out(model)
    with model.disable_adapter():
        logits_disabled = out(model)
    assert not torch.allclose(logits_before, logits_after, rtol=1e-8, atol=1e-8)
    assert torch.allclose(logits_base, logits_disabled, atol=1e-6, rtol=1e-6)
    assert torch.allclose(logits_after, out(model))


def test_disable_adapters_with_merging(base, method: Method, tmp_path):
    model = peft_model(base, method).eval()
    logits_before = out(model)
    _train(model, lr=0.01)
    model.eval()
    if not method.mergeable:
        refuses_merge_cleanly(model, model.merge_adapter)
        return
    logits_unmerged = out(model)
    model.merge_adapter()
    logits_after = out(model)
    with model.disable_adapter():
        logits_disabled = out(model)
    assert not torch.allclose(logits_before, logits_after, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits_after, logits_unmerged, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits_before, logits_disabled, atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits_after, out(model), atol=1e-5, rtol=1e-5)


def test_disable_adapter_is_reentrant(base, method: Method, tmp_path):
    model = peft_model(base, method)
    layers = tuner_layers(model)
    assert layers and model.has_active_enabled_adapter
    with model.disable_adapter():
        with model.disable_adapter():
            assert all(m.disable_adapters for m in layers) and not model.has_active_enabled_adapter
        assert all(m.disable_adapters for m in layers) and not model.has_active_enabled_adapter
    assert not any(m.disable_adapters for m in layers) and model.has_active_enabled_adapter
    model.disable_adapter_layers()
    with model.disable_adapter():
        pass
    assert all(m.disable_adapters for m in layers)


def test_active_adapter(base, method: Method, tmp_path):
    model = peft_model(base, method)
    logits = out(model.eval())
    model.add_adapter("other", method.make(init_weights=False))
    assert model.active_adapters == ["default"] and model.active_adapter == "default"
    assert torch.equal(logits, out(model)), "adding an adapter changed the outputs of the active one"
    assert {layer.active_adapters[0] for layer in tuner_layers(model)} == {"default"}
    other = {n for n, p in model.named_parameters() if ".other." in n or n.endswith(".other")}
    assert other and not any(p.requires_grad for n, p in model.named_parameters() if n in other), "new adapter trains"
    assert model.peft_config["other"].peft_type == model.peft_config["default"].peft_type
    assert hasattr(model.get_base_model(), "peft_config")
    model.set_adapter("other")
    assert model.active_adapters == ["other"] and model.active_adapter == "other"
    assert not torch.equal(logits, out(model))
    model.base_model.set_adapter(["default", "other"])
    assert model.active_adapters == ["default", "other"]
    assert model.base_model.active_adapter == ["default", "other"]


def test_delete_adapter_properly_cleans_up_after_itself(base, method: Method, tmp_path):
    model = get_peft_model(load(base), method.make(), adapter_name="foobar")

    def dict_like(obj):
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                attr = getattr(obj, name)
            except AttributeError:
                continue
            if callable(getattr(attr, "keys", None)) and hasattr(attr, "__getitem__") and hasattr(attr, "__contains__"):
                if "foobar" in attr:
                    yield name, attr

    held = list(dict_like(model)) + [pair for m in tuner_layers(model) for pair in dict_like(m)]
    assert held
    model.delete_adapter(adapter_name="foobar")
    assert not sorted(name for name, attr in held if "foobar" in attr)


# -- what the issue adds ---------------------------------------------------------------------------------------


def test_prefix_in_parameter_names(base, method: Method, tmp_path):
    """peft's tests (and older peft code) find a method's parameters by `model.prefix in name`."""
    model = peft_model(base, method)
    adapter = adapter_names(model)
    assert adapter and all(model.prefix in n for n in adapter), sorted(n for n in adapter if model.prefix not in n)[:3]


def test_init_weights_false(base, method: Method, tmp_path):
    logits_base = out(load(base).eval())
    assert not torch.allclose(logits_base, out(peft_model(base, method, init_weights=False).eval()), atol=1e-6, rtol=1e-6)
    if method.identity_at_init:
        assert torch.allclose(logits_base, out(peft_model(base, method).eval()), atol=1e-6, rtol=1e-6)


def test_merge_refusal_changes_nothing(base, method: Method, tmp_path):
    """merge_adapter on a trained model: either it merges (outputs kept) or it refuses and nothing changed."""
    model = peft_model(base, method, init_weights=False).eval()
    if method.mergeable:
        logits = out(model)
        model.merge_adapter()
        assert torch.allclose(logits, out(model), atol=1e-4, rtol=1e-4)
    else:
        refuses_merge_cleanly(model, model.merge_adapter)

