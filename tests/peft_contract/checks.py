"""peft's generic test bodies, restated as plain functions over one method on one tiny base model.

Adapted from peft 0.21.2's own test suite (`tests/testing_common.py`: `PeftCommonTester._test_*`, and
`tests/test_custom_models.py`: `TestPeftCustomModel.test_*`), Copyright 2023-present the HuggingFace Inc.
team, Apache License 2.0 (http://www.apache.org/licenses/LICENSE-2.0). Each function is named after
the peft test it mirrors and keeps that test's assertions; what changed: no hub (`base` is a local
directory), no diffusers/yaml, one input batch of a feature-extraction model, and an adapter's
parameters are found structurally (inside a peft tuner layer, outside its base layer), as peft 0.21
itself finds them, instead of by `model.prefix in name` (that assumption is its own check,
`prefix_in_parameter_names`).

A `Method` builds its peft config: `make(init_weights)`, where False asks for a non-identity start as
peft's `set_init_weights_false` does. A check that needs merging, on a method that cannot merge,
instead requires a clean refusal (NotImplementedError, nothing changed), as peft's own non-mergeable
methods (Lily, ShadowPEFT) refuse.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Callable

import pytest
import torch
from peft import PeftModel, get_base_model_state_dict, get_peft_model, inject_adapter_in_model, set_base_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import _get_submodules
from transformers import AutoModel


@dataclass(frozen=True)
class Method:
    name: str
    make: Callable[..., object]  # make(init_weights=True, layers_to_transform=None) -> peft config
    mergeable: bool
    identity_at_init: bool = True  # a prefix changes attention even before training


INPUTS = {"input_ids": torch.tensor([[5, 6, 7], [5, 8, 7]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 0, 1]])}


def load(base: Path, **kwargs) -> torch.nn.Module:
    return AutoModel.from_pretrained(base, **kwargs)


def out(model) -> torch.Tensor:
    return model(**INPUTS)[0]  # (batch, seq, hidden)


def adapter_names(model) -> set[str]:
    """Parameter names inside peft tuner layers, outside their base layers."""
    owners = [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    return {n for n, _ in model.named_parameters()
            if any(n.startswith(o + ".") and not n.startswith(o + ".base_layer.") for o in owners)}


def tuner_layers(model) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def peft_model(base: Path, method: Method, *, init_weights: bool = True, **kwargs):
    return get_peft_model(load(base), method.make(init_weights=init_weights), **kwargs)


def refuses_merge_cleanly(model, call: Callable[[], object]) -> None:
    """A non-mergeable method: NotImplementedError, and the weights, outputs and merge state unchanged."""
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = out(model)
    with pytest.raises(NotImplementedError):
        call()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "a refused merge changed weights"
    assert not any(layer.merged for layer in tuner_layers(model)), "a refused merge left layers marked merged"
    assert torch.equal(logits, out(model))


# -- PeftCommonTester (testing_common.py) ------------------------------------------------------------------


def test_attributes_parametrized(base, method, tmp_path):
    model = peft_model(base, method)
    assert all(hasattr(model, a) for a in ("save_pretrained", "from_pretrained", "push_to_hub"))


def test_adapter_name(base, method, tmp_path):
    model = get_peft_model(load(base), method.make(), adapter_name="test-adapter")
    assert any("test-adapter" in n for n, _ in model.named_parameters())


def test_prepare_for_training(base, method, tmp_path):
    model = peft_model(base, method)
    assert not model.get_input_embeddings()(INPUTS["input_ids"]).requires_grad


def test_save_pretrained(base, method, tmp_path):
    model = peft_model(base, method, init_weights=False)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as recs:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(load(base), tmp_path)
    assert not any("Found missing adapter keys" in str(r.message) for r in recs)
    state, state_loaded = model.state_dict(), loaded.state_dict()
    assert all(torch.allclose(state[k], state_loaded[k]) for k in state)
    names = set(os.listdir(tmp_path))
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= names
    assert not names & {"model.safetensors", "config.json"}
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == model.config.to_dict()["_name_or_path"]


def test_save_pretrained_selected_adapters(base, method, tmp_path):
    model = peft_model(base, method, init_weights=False)
    model.add_adapter("new_adapter", method.make(init_weights=False))
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load(base), tmp_path)
    loaded.load_adapter(tmp_path / "new_adapter", "new_adapter")
    state, state_loaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == state_loaded.keys()
    assert all(torch.allclose(state[k], state_loaded[k]) for k in state)
    for where in (tmp_path, tmp_path / "new_adapter"):
        assert (where / "adapter_model.safetensors").exists() and (where / "adapter_config.json").exists()
    saved = json.loads((tmp_path / "new_adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == method.make().peft_type.value
    only_default = tmp_path / "only_default"
    model.save_pretrained(only_default, selected_adapters=["default"])
    loaded = PeftModel.from_pretrained(load(base), only_default)
    assert "default" in loaded.peft_config and "new_adapter" not in loaded.peft_config


def test_save_pretrained_adapter_name_substring(base, method, tmp_path):
    model = peft_model(base, method)
    from peft import get_peft_model_state_dict

    expected = len(get_peft_model_state_dict(model))
    for name in ("default2", "other_default", "foodefault_bar", "efaul"):
        model.add_adapter(name, method.make())
    model.save_pretrained(tmp_path, selected_adapters=["default"])
    from safetensors.torch import load_file

    assert len(load_file(tmp_path / "adapter_model.safetensors")) == expected


def test_from_pretrained_config_construction(base, method, tmp_path):
    config = method.make()
    get_peft_model(load(base), config).save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load(base), tmp_path, is_trainable=False, config=config)
    assert loaded.peft_config["default"].inference_mode
    assert loaded.peft_config["default"] is config


def test_load_multiple_adapters(base, method, tmp_path):
    peft_model(base, method).save_pretrained(tmp_path)
    model = PeftModel.from_pretrained(load(base), tmp_path)
    assert model.load_adapter(tmp_path, adapter_name="other").missing_keys == []
    assert model.load_adapter(tmp_path, adapter_name="yet-another").missing_keys == []


def test_load_model_low_cpu_mem_usage(base, method, tmp_path):
    config = method.make()
    get_peft_model(load(base), config).save_pretrained(tmp_path)
    model = PeftModel.from_pretrained(load(base), tmp_path, low_cpu_mem_usage=True)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    model.load_adapter(tmp_path, adapter_name="other", low_cpu_mem_usage=True)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    injected = inject_adapter_in_model(config, load(base), low_cpu_mem_usage=True)
    assert "meta" in {p.device.type for p in injected.parameters()}


def test_merge_layers(base, method, tmp_path):
    model = peft_model(base, method, init_weights=False).eval()
    if not method.mergeable:
        refuses_merge_cleanly(model, model.merge_adapter)
        refuses_merge_cleanly(model, model.merge_and_unload)
        return
    logits = out(model)
    model.merge_adapter()
    logits_merged = out(model)
    model.unmerge_adapter()
    logits_unmerged = out(model)
    model = model.merge_and_unload()
    assert not tuner_layers(model) and not hasattr(model, "peft_config")
    logits_unloaded = out(model)
    for other in (logits_merged, logits_unmerged, logits_unloaded):
        assert torch.allclose(logits, other, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits_merged, out(load(base)), atol=1e-10, rtol=1e-10)
    model.save_pretrained(tmp_path)
    assert torch.allclose(logits_merged, out(load(tmp_path)), atol=1e-4, rtol=1e-4)


def test_merge_layers_is_idempotent(base, method, tmp_path):
    model = peft_model(base, method).eval()
    if not method.mergeable:
        refuses_merge_cleanly(model, model.merge_adapter)
        return
    model.merge_adapter()
    logits = out(model)
    with pytest.warns(UserWarning, match="All adapters are already merged, nothing to do"):
        model.merge_adapter()
    assert torch.allclose(logits, out(model), atol=1e-6, rtol=1e-6)


def test_safe_merge(base, method, tmp_path):
    model = peft_model(base, method, init_weights=False).eval()
    if not method.mergeable:
        refuses_merge_cleanly(model, lambda: model.merge_and_unload(safe_merge=True))
        return
    logits = out(model)
    assert torch.allclose(logits, out(model.merge_and_unload(safe_merge=True)), atol=1e-6, rtol=1e-6)


def test_training(base, method, tmp_path):
    model = peft_model(base, method)
    out(model).sum().backward()
    adapter = adapter_names(model)
    for n, p in model.named_parameters():
        if n in adapter and p.requires_grad:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n


def test_training_layer_indexing(base, method, tmp_path):
    try:
        config = method.make(layers_to_transform=[0])
    except TypeError:
        pytest.skip("not-applicable: no layers_to_transform")
    model = get_peft_model(load(base), config)
    out(model).sum().backward()
    adapter = adapter_names(model)
    assert adapter and all((p.grad is not None) == (n in adapter) for n, p in model.named_parameters())
    model.eval()
    logits = out(model)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(load(base), tmp_path)
    assert torch.allclose(logits, out(loaded), atol=1e-4, rtol=1e-4)
    assert len(adapter) < len(adapter_names(peft_model(base, method)))


def test_inference_safetensors(base, method, tmp_path):
    model = peft_model(base, method)
    out(model).sum().backward()
    model.eval()
    logits = out(model)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert "adapter_model.bin" not in os.listdir(tmp_path)
    assert torch.allclose(logits, out(PeftModel.from_pretrained(load(base), tmp_path)), atol=1e-4, rtol=1e-4)


def test_peft_model_device_map(base, method, tmp_path):
    peft_model(base, method).save_pretrained(tmp_path)
    PeftModel.from_pretrained(load(base), tmp_path, device_map={"": "cpu"})


def _check_deleted(model, gone: str, remaining: list[str]) -> None:
    assert gone not in model.peft_config
    assert model.active_adapters == remaining
    for key, _ in model.named_modules():
        _, target, _ = _get_submodules(model, key)
        for attr in list(getattr(target, "adapter_layer_names", [])) + list(getattr(target, "other_param_names", [])):
            assert gone not in attrgetter(attr)(target), f"{key}.{attr} still holds {gone!r}"


def _test_delete(base, method, activate: bool) -> None:
    model = peft_model(base, method)
    model.add_adapter("delete_me", method.make())
    if activate:
        model.set_adapter("delete_me")
    model.delete_adapter("delete_me")
    _check_deleted(model, "delete_me", ["default"])
    model.delete_adapter("default")
    _check_deleted(model, "default", [])
    model.base_model(**INPUTS)


def test_delete_adapter(base, method, tmp_path):
    _test_delete(base, method, activate=True)


def test_delete_inactive_adapter(base, method, tmp_path):
    _test_delete(base, method, activate=False)


def test_delete_unknown_adapter_raises(base, method, tmp_path):
    with pytest.raises(ValueError, match="Adapter unknown-adapter does not exist"):
        peft_model(base, method).delete_adapter("unknown-adapter")


def test_unload_adapter(base, method, tmp_path):
    model = load(base)
    num_params = len(model.state_dict())
    with torch.inference_mode():
        logits_base = out(model)
    model = get_peft_model(model, method.make(init_weights=False))
    with torch.inference_mode():
        logits_adapter = out(model)
    model.eval()
    model = model.unload()
    with torch.inference_mode():
        logits_unloaded = out(model)
    assert not tuner_layers(model) and not hasattr(model, "peft_config")
    assert not torch.allclose(logits_adapter, logits_unloaded, atol=1e-10, rtol=1e-10)
    assert torch.allclose(logits_base, logits_unloaded, atol=1e-4, rtol=1e-4)
    assert len(model.state_dict()) == num_params


def test_disable_adapter(base, method, tmp_path):
    model = load(base)
    logits_base = out(model)
    model = get_peft_model(model, method.make(init_weights=False))
    logits = out(model)
    assert not torch.allclose(logits_base, logits)
    with model.disable_adapter():
        assert torch.allclose(logits_base, out(model), atol=1e-6, rtol=1e-6)
    assert torch.allclose(logits, out(model), atol=1e-6, rtol=1e-6)


def test_get_base_model_state_dict(base, method, tmp_path):
    model = load(base)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model = get_peft_model(model, method.make())
    extracted = get_base_model_state_dict(model)
    assert set(extracted) == set(original)
    assert all(torch.allclose(original[k], extracted[k]) for k in original)
    with torch.no_grad():
        for p in model.get_base_model().parameters():
            p.add_(torch.randn_like(p) * 0.1)
    result = set_base_model_state_dict(model, original, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    restored = get_base_model_state_dict(model)
    assert all(torch.allclose(original[k], restored[k]) for k in original)

