"""peft's tests of an adapter's life: several adapters, their trainability, direct injection, checkpointing.

From peft 0.21.2's tests/test_custom_models.py and tests/testing_common.py (Copyright 2023-present the
HuggingFace Inc. team, Apache License 2.0), adapted as described in checks.py.
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from peft_contract.checks import INPUTS, Method, adapter_names, load, out, peft_model, refuses_merge_cleanly, tuner_layers


def _trainable_adapters(model) -> dict[str, bool]:
    """Adapter name -> whether all its parameters train (an adapter's name is the key segment after its container)."""
    seen: dict[str, set[bool]] = {}
    for name in adapter_names(model):
        param = model.get_parameter(name)
        for adapter in model.peft_config:
            if f".{adapter}." in name or name.endswith(f".{adapter}"):
                seen.setdefault(adapter, set()).add(param.requires_grad)
    assert all(len(flags) == 1 for flags in seen.values()), seen
    return {adapter: flags.pop() for adapter, flags in seen.items()}


def test_save_pretrained_pickle(base, method: Method, tmp_path):
    model = peft_model(base, method, init_weights=False)
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").exists()
    with warnings.catch_warnings(record=True) as recs:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(load(base), tmp_path)
    assert not any("Found missing adapter keys" in str(r.message) for r in recs)
    state, state_loaded = model.state_dict(), loaded.state_dict()
    assert all(torch.allclose(state[k], state_loaded[k]) for k in state)


def test_save_load_roundtrip_direct_injection(base, method: Method, tmp_path):
    torch.manual_seed(0)
    model = inject_adapter_in_model(method.make(init_weights=False), load(base)).eval()
    with torch.inference_mode():
        logits = out(model)
    state = get_peft_model_state_dict(model)
    torch.manual_seed(54321)
    model = inject_adapter_in_model(method.make(init_weights=False), load(base)).eval()
    assert not set_peft_model_state_dict(model, state).unexpected_keys
    with torch.inference_mode():
        assert torch.allclose(logits, out(model))


def test_add_adapter_rejects_duplicate_name_without_mutation(base, method: Method, tmp_path):
    model = get_peft_model(load(base), method.make(init_weights=False), adapter_name="existing")
    config_before = model.peft_config["existing"]
    state_before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="Adapter with name 'existing' already exists"):
        model.add_adapter("existing", method.make(init_weights=False))
    assert model.peft_config["existing"] is config_before
    state_after = model.state_dict()
    assert state_after.keys() == state_before.keys()
    assert all(torch.equal(state_after[k], v) for k, v in state_before.items())


def test_set_requires_grad(base, method: Method, tmp_path):
    model = get_peft_model(load(base), method.make(), adapter_name="adapter0").eval()
    assert _trainable_adapters(model) == {"adapter0": True}
    model.add_adapter("adapter1", method.make())
    assert _trainable_adapters(model) == {"adapter0": True, "adapter1": False}
    model.set_requires_grad(adapter_names="adapter1")
    assert _trainable_adapters(model) == {"adapter0": True, "adapter1": True}
    model.set_requires_grad(adapter_names=["adapter0", "adapter1"], requires_grad=False)
    assert _trainable_adapters(model) == {"adapter0": False, "adapter1": False}


def test_loading_model_requires_grad_set_correctly(base, method: Method, tmp_path):
    """peft parametrizes is_trainable; both values run here, one after the other."""
    peft_model(base, method).save_pretrained(tmp_path)
    for trainable in (True, False):
        model = PeftModel.from_pretrained(load(base), tmp_path, is_trainable=trainable)
        base_names = set(dict(model.named_parameters())) - adapter_names(model)
        assert not any(model.get_parameter(n).requires_grad for n in base_names)
        assert _trainable_adapters(model) == {"default": trainable}
        model.load_adapter(tmp_path, adapter_name="other", is_trainable=trainable)
        assert _trainable_adapters(model) == {"default": trainable, "other": trainable}
        model.load_adapter(tmp_path, adapter_name="opposite", is_trainable=not trainable)
        expected = {"default": trainable, "other": trainable, "opposite": not trainable}
        assert _trainable_adapters(model) == expected
        model.add_adapter(adapter_name="added", peft_config=method.make())
        assert _trainable_adapters(model) == expected | {"added": False}
        assert not any(model.get_parameter(n).requires_grad for n in base_names)


def test_load_adapter_file_holds_its_own_type(base, method: Method, tmp_path):
    """A second adapter saves under its own config: the file's keys are exactly what that config rebuilds."""
    model = peft_model(base, method, init_weights=False)
    model.add_adapter("other", method.make(init_weights=False))
    model.save_pretrained(tmp_path, selected_adapters=["other"])
    saved = set(load_file(tmp_path / "other" / "adapter_model.safetensors"))
    assert saved == set(load_file(_saved_default(base, method, tmp_path / "alone")))


def _saved_default(base, method: Method, where):
    peft_model(base, method, init_weights=False).save_pretrained(where)
    return where / "adapter_model.safetensors"


def test_merge_layers_multi(base, method: Method, tmp_path):
    torch.manual_seed(0)
    model = peft_model(base, method, init_weights=False).eval()
    with torch.inference_mode():
        logits_1 = out(model)
    torch.manual_seed(1)
    model.add_adapter("adapter-2", method.make(init_weights=False))
    model.set_adapter("adapter-2")
    model.eval()
    containers = (torch.nn.ModuleDict, torch.nn.ParameterDict)
    num_default = len([m for m in model.modules() if isinstance(m, containers) and "default" in m])
    assert num_default > 0 and num_default == len([m for m in model.modules() if isinstance(m, containers) and "adapter-2" in m])
    with torch.inference_mode():
        logits_2 = out(model)
    assert not torch.allclose(logits_1, logits_2, atol=1e-3, rtol=1e-3)
    model.set_adapter("default")
    with torch.inference_mode():
        assert torch.allclose(out(model), logits_1, atol=1e-3, rtol=1e-3)
    if not method.mergeable:
        refuses_merge_cleanly(model, lambda: model.merge_and_unload(adapter_names=["adapter-2", "default"]))
        return
    merged_2 = copy.deepcopy(model).merge_and_unload(adapter_names=["adapter-2"])
    with torch.inference_mode():
        assert torch.allclose(out(merged_2), logits_2, atol=1e-3, rtol=1e-3)
    merged_all = model.merge_and_unload(adapter_names=["adapter-2", "default"])
    with torch.inference_mode():
        logits_all = out(merged_all)
    assert not torch.allclose(logits_all, logits_1, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(logits_all, logits_2, atol=1e-3, rtol=1e-3)


def test_delete_merged_adapter_raises_without_mutation(base, method: Method, tmp_path):
    model = peft_model(base, method, init_weights=False)
    if not method.mergeable:
        refuses_merge_cleanly(model, model.merge_adapter)
        model.delete_adapter("default")  # never merged, so deleting it is allowed
        assert "default" not in model.peft_config
        return
    layers = tuner_layers(model)
    model.merge_adapter()
    merged_before = [layer.merged_adapters[:] for layer in layers]
    with pytest.raises(ValueError, match=re.escape("Cannot delete adapter(s) ['default'] while they are merged.")):
        model.delete_adapter("default")
    assert "default" in model.peft_config
    assert [layer.merged_adapters[:] for layer in layers] == merged_before
    model.unmerge_adapter()
    model.delete_adapter("default")
    assert "default" not in model.peft_config


def test_training_gradient_checkpointing(base, method: Method, tmp_path):
    """peft parametrizes use_reentrant; both values run here."""
    for use_reentrant in (True, False):
        model = peft_model(base, method)
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        model.train(True)

        def grads():
            for _, p in params:
                p.grad = None
            (out(model) ** 2).sum().backward()
            return {n: 0.0 if p.grad is None else p.grad.abs().sum().item() for n, p in params}

        normal = grads()
        model.prepare_model_for_gradient_checkpointing(model)
        model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})
        checkpointed = grads()
        threshold = sum([*normal.values(), *checkpointed.values()]) / (2 * len(normal)) * 1e-6
        for n in normal:
            if normal[n] > threshold:
                assert checkpointed[n] > 0, (use_reentrant, n)
            if checkpointed[n] > threshold:
                assert normal[n] > 0, (use_reentrant, n)
        adapter = adapter_names(model)
        for n, p in model.named_parameters():
            assert (p.grad is not None) == (n in adapter), (use_reentrant, n)


def test_disable_adapters_exiting_context_irregular_state(base, method: Method, tmp_path):
    model = peft_model(base, method)
    layers = tuner_layers(model)
    assert len(layers) >= 2
    layers[0].enable_adapters(False)
    assert {m.disable_adapters for m in layers} == {True, False}
    msg = "The model contains some adapter layers that are enabled and others that are disabled"
    with pytest.warns(UserWarning, match=msg), model.disable_adapter():
        pass
    assert not any(m.disable_adapters for m in layers)
    model(**INPUTS)
