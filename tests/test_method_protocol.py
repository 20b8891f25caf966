"""A method describes itself: every registered method's tuner answers the protocol, and a new
method is a config, a tuner and one registry line (nothing else changes).

The first table asks each registered method's tuner, on the tiny random RoBERTa, for what the
rest of the project needs (parameters, matrices for anatomy, what Table 4.2 leaves out). The
second part adds a toy method (train the biases of the chosen layers) through one registry
line, and builds, saves, loads, counts, switches off and dissects it with the project's own
functions.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass

import pytest
import torch

from interp.analyses.anatomy import find_matrices
from trainers.encoders import load_encoder
from records.errors import InterpError
from trainers.methods import (
    AdapterConfig, FullConfig, LoraConfig, MethodConfig, PrefixConfig, UnionConfig, apply_method, count_parameters,
    delta_state, disabled_layers, load_delta, save_delta,
)
from trainers.methods import registry
from trainers.methods.ia3.config import Ia3Config
from trainers.methods.apply import applied_method, delta_parameters, layers_path, tuner_of
from trainers.methods.protocol import DeltaMatrix, Tuner, frobenius
from trainers.methods.state import check_keys, read_safetensors

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TEXTS = ["def add(a, b): return a + b", "import os"]
# method -> (a config of it, the kinds of matrix it exposes, layers it touches (0-based))
CASES = {
    "full": (FullConfig(layers="2"), {"full"}, {1}),
    "lora": (LoraConfig(r=2, layers="1-2"), {"lora"}, {0, 1}),
    "prefix": (PrefixConfig(length=2, layers="3"), {"prefix_key", "prefix_value"}, {2}),
    "adapter": (AdapterConfig(r=2, placement="ffn", layers="4"), {"adapter"}, {3}),
    "union": (UnionConfig(parts=(LoraConfig(r=2), AdapterConfig(r=2, placement="ffn")), layers="2-3"), {"lora", "adapter"}, {1, 2}),
    "ia3": (Ia3Config(layers="2"), {"ia3"}, {1}),
}


def test_every_registered_method_has_a_case_and_a_tuner_with_the_whole_protocol():
    assert set(CASES) == set(registry.REGISTRY)
    wanted = [name for name in dir(Tuner) if not name.startswith("_")] + list(Tuner.__annotations__)
    for tuner in registry.tuners():
        assert [name for name in wanted if not hasattr(tuner, name)] == [], type(tuner).__name__


@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    """Move every delta parameter off its initial value (an untrained LoRA or adapter is zero)."""
    generator = torch.Generator().manual_seed(0)
    for p in delta_parameters(model).values():
        p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.05)


@pytest.mark.parametrize("method", list(CASES))
def test_each_tuner_answers_what_trainer_counting_and_anatomy_ask(method, tiny_roberta_dir):
    config, kinds, layers = CASES[method]
    encoder = load_encoder(tiny_roberta_dir)
    model = apply_method(encoder, config)
    tuner = tuner_of(model)
    assert applied_method(model) == config and tuner is registry.tuner_for(config)
    assert set(delta_parameters(model)) == {n for n, p in model.named_parameters() if p.requires_grad}
    _perturb(model)
    matrices = tuner.delta_matrices(model)
    assert {m.kind for m in matrices} == kinds
    base = encoder.model
    root = encoder.spec.layers + "."
    assert {int(m.module[len(root):].split(".")[0]) for m in matrices} == layers
    for m in matrices:
        base.get_submodule(m.module)  # a real module of the transformers model
        assert m.value.dtype == torch.float64 and m.value.dim() == 2 and m.rank_bound <= min(m.value.shape)
        assert m.family in (None, "update", "adapter") and not m.raw
    count = count_parameters(encoder, config)
    assert count.adapter_biases == tuner.outside_formula(model)
    assert count.matches_formula is (None if config.formula(encoder.shape) is None else True)


# -- a method added by one registry line -----------------------------------------------------------
@dataclass(frozen=True)
class BiasConfig(MethodConfig):
    """Toy method: the biases of the chosen layers train (BitFit restricted to layers)."""

    method = "bias-toy"
    layers: str | None = None

    def roles(self) -> tuple[str, ...]:
        return ()

    def formula(self, shape) -> None:
        return None

    def describe(self) -> str:
        return "biases" + self.layers_note()


class BiasTuner:
    weights_file = "biases.safetensors"
    files = frozenset({weights_file})
    peft_method = None

    def _chosen(self, model, config):
        root = layers_path(model)
        prefixes = tuple(f"{root}.{i}." for i in config.layer_indices(len(model.get_submodule(root))))
        return {n: p for n, p in model.named_parameters() if n.startswith(prefixes) and n.endswith(".bias")}

    def apply(self, encoder, config):
        model = encoder.model
        model.__dict__["toy_base"] = {n: p.detach().clone() for n, p in self._chosen(model, config).items()}
        for n, p in model.named_parameters():
            p.requires_grad_(n in model.toy_base)
        return model

    def save(self, model, directory):
        from safetensors.torch import save_file

        save_file({n: p.detach().contiguous() for n, p in self.delta_parameters(model).items()}, directory / self.weights_file)

    def load(self, model, state, path):
        params = self.delta_parameters(model)
        check_keys(path, expected=set(params), found=set(state))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n])

    def delta_parameters(self, model):
        return self._chosen(model, applied_method(model))

    @contextlib.contextmanager
    def disabled(self, model, layers):
        root = layers_path(model) + "."
        chosen = {n: p for n, p in self.delta_parameters(model).items() if int(n[len(root):].split(".")[0]) in layers}
        tuned = {n: p.detach().clone() for n, p in chosen.items()}
        with torch.no_grad():
            for n, p in chosen.items():
                p.copy_(model.toy_base[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, p in chosen.items():
                    p.copy_(tuned[n])

    def delta_matrices(self, model):
        return [DeltaMatrix(n.removesuffix(".bias"), "bias", "b_run-b_base", (p.detach().double() - model.toy_base[n].double())[None],
                            1, {"b": frobenius(p)}, {"left": "one", "right": "output"}, family=None)
                for n, p in self.delta_parameters(model).items()]

    def outside_formula(self, model):
        return 0


TUNER = BiasTuner()


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, BiasConfig.method, (BiasConfig, __name__))  # the one registry line
    monkeypatch.setitem(registry.METHODS, BiasConfig.method, BiasConfig)
    assert sys.modules[__name__].TUNER is TUNER


def test_a_method_is_its_config_its_tuner_and_one_registry_line(toy_registered, tiny_roberta_dir, tmp_path):
    config = BiasConfig(layers="3-4")
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS, max_len=16)
    with torch.no_grad():
        base = encoder.embed(**batch)
    model = apply_method(encoder, config)
    _perturb(model)
    with torch.no_grad():
        tuned = encoder.embed(**batch, model=model)
        with disabled_layers(model, [2, 3]):
            off = encoder.embed(**batch, model=model)
    assert not torch.allclose(tuned, base, atol=1e-5)
    torch.testing.assert_close(off, base)
    run = save_delta(model, config, tmp_path / "run")
    assert json.loads((run / "method.json").read_text()) == {"method": "bias-toy", "layers": "3-4"}
    assert set(read_safetensors(run / "biases.safetensors")) == set(delta_state(model))
    fresh = load_encoder(tiny_roberta_dir)
    again = load_delta(fresh, run)
    with torch.no_grad():
        torch.testing.assert_close(fresh.embed(**batch, model=again), tuned)
    count = count_parameters(encoder, config)
    assert count.trainable == sum(p.numel() for p in delta_parameters(model).values()) and count.formula is None
    matrices, notes = find_matrices(encoder, model)
    assert {(m.layer, m.kind) for m in matrices} == {(3, "bias"), (4, "bias")} and notes == []


def test_a_model_without_a_delta_is_refused_by_what_asks_the_method(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    for ask in (delta_parameters, delta_state, lambda m: find_matrices(encoder, m), lambda m: disabled_layers(m, [0]).__enter__()):
        with pytest.raises(InterpError, match="carries no delta"):
            ask(encoder.model)
    apply_method(encoder, FullConfig())
    with pytest.raises(InterpError, match=r"already carries a delta \(full fine-tuning\)"):
        apply_method(encoder, LoraConfig(r=2))
