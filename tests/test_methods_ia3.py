"""(IA)3, added as a folder and one registry line: it trains, counts, saves in peft's own format,
switches off per layer, is dissected by anatomy, joins a union, and `interp params` counts it.

Runs on the tiny random RoBERTa (4 layers, d 32, d_ff 128): each delta trains three steps once
per module (a fixture), as in test_methods.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers import invoke
from interp.analyses.anatomy import Anatomy, DeltaModel
from trainers.encoders import load_encoder
from records.errors import FieldError
from trainers.methods import (
    AdapterConfig, LoraConfig, UnionConfig, apply_method, count_parameters, disabled_layers, get_preset, load_delta,
    save_delta,
)
from trainers.methods.ia3.config import Ia3Config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

TEXTS = ["def add(a, b): return a + b", "import os", "class Point: pass", "for i in range(10): print(i)"]
CASES = {
    "ia3": Ia3Config(),
    "lora+ia3": UnionConfig(parts=(LoraConfig(r=4, layers="1-2"), Ia3Config(layers="3-4"))),
}


@dataclass
class Trained:
    config: object
    model: torch.nn.Module
    encoder: object
    batch: dict
    base: torch.Tensor  # [CLS] embeddings before the method
    base_state: dict  # the base's weights before training
    trained: torch.Tensor  # [CLS] embeddings after training
    run_dir: Path


@pytest.fixture(scope="module", params=list(CASES))
def trained(request, tiny_roberta_dir, tmp_path_factory) -> Trained:
    config = CASES[request.param]
    torch.manual_seed(0)
    encoder = load_encoder(tiny_roberta_dir)
    batch = encoder.tokenize(TEXTS, max_len=32)
    base_state = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    with torch.no_grad():
        base = encoder.embed(**batch)
    model = apply_method(encoder, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    model.train()
    for _ in range(3):
        embeddings = encoder.embed(**batch, model=model)
        torch.nn.functional.cross_entropy(embeddings @ embeddings.T, torch.arange(len(TEXTS))).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        after = encoder.embed(**batch, model=model)
    run_dir = save_delta(model, config, tmp_path_factory.mktemp("ia3-runs") / request.param)
    return Trained(config, model, encoder, batch, base, base_state, after, run_dir)


def test_training_changes_only_the_scaling_vectors(trained):
    trainable = {n for n, p in trained.model.named_parameters() if p.requires_grad}
    vectors = {n for n in trainable if "ia3_l." in n}  # `.ia3_l.`, or `.union_ia3_l.` in a union
    assert vectors and trainable - vectors == {n for n in trainable if "lora_" in n}  # the union's LoRA part, or nothing
    assert not torch.allclose(trained.trained, trained.base, atol=1e-4)
    for name, value in trained.encoder.model.state_dict().items():  # the base weights, under peft's base_layer names
        if "ia3_l." not in name and "lora_" not in name:
            torch.testing.assert_close(value, trained.base_state[name.replace(".base_layer", "")], atol=0, rtol=0)
    assert any(not torch.all(p == 1) for n, p in trained.model.named_parameters() if "ia3_l." in n)


@pytest.mark.parametrize("layers, expected", [(None, 4 * (2 * 32 + 128)), ("3-4", 2 * (2 * 32 + 128)), ("last:1", 2 * 32 + 128)])
def test_the_count_is_2d_plus_d_ff_per_layer(tiny_roberta_dir, layers, expected):
    encoder = load_encoder(tiny_roberta_dir)
    config = Ia3Config(layers=layers)
    count = count_parameters(encoder, config)
    assert (count.trainable, count.formula, count.adapter_biases, count.matches_formula) == (expected, expected, 0, True)
    assert config.formula(encoder.shape) == expected


def test_our_loader_gives_the_trained_outputs(trained, tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    model = load_delta(encoder, trained.run_dir)
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**trained.batch, model=model), trained.trained, atol=1e-6, rtol=0)


@pytest.mark.parametrize("trained", ["lora+ia3"], indirect=True)
def test_peft_reloads_the_union_once_the_project_registered_it(trained, tiny_roberta_dir):
    """A union is the project's peft type: peft loads it after `register()`, (IA)3 part and all."""
    import peft

    import trainers.methods

    trainers.methods.register()
    encoder = load_encoder(tiny_roberta_dir)
    model = peft.PeftModel.from_pretrained(encoder.model, str(trained.run_dir))
    with torch.no_grad():
        torch.testing.assert_close(encoder.embed(**trained.batch, model=model), trained.trained, atol=1e-6, rtol=0)


PLAIN_PEFT = """
import sys, torch, peft, transformers
model = peft.PeftModel.from_pretrained(transformers.AutoModel.from_pretrained(sys.argv[1]), sys.argv[2]).eval()
batch = torch.load(sys.argv[3], weights_only=True)
with torch.no_grad():
    torch.save(model(**batch).last_hidden_state[:, 0], sys.argv[4])
assert not any(name == "trainers" or name.startswith("trainers.") for name in sys.modules)
"""


def test_plain_peft_loads_it_without_the_project(tiny_roberta_dir, tmp_path):
    """A fresh interpreter that never imports `trainers` (so nothing is registered) loads the run
    with peft alone and gets the trained outputs: the file is peft's own IA3."""
    config, batch, expected, run_dir = _one_trained(tiny_roberta_dir, tmp_path)
    assert json.loads((run_dir / "adapter_config.json").read_text())["peft_type"] == "IA3"
    torch.save(batch, tmp_path / "batch.pt")
    subprocess.run([sys.executable, "-c", PLAIN_PEFT, str(tiny_roberta_dir), str(run_dir), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt")], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected, atol=1e-6, rtol=0)


def _one_trained(tiny_roberta_dir, tmp_path):
    """An (IA)3 delta moved off its initial value (no training: the subprocess is the cost here)."""
    encoder = load_encoder(tiny_roberta_dir)
    batch = dict(encoder.tokenize(TEXTS, max_len=32))
    config = Ia3Config(layers="2-4")
    model = apply_method(encoder, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
        expected = encoder.embed(**batch, model=model)
    return config, batch, expected, save_delta(model, config, tmp_path / "run")


def test_switching_off_every_layer_gives_the_base(trained):
    with torch.no_grad(), disabled_layers(trained.model, range(trained.encoder.num_layers)):
        torch.testing.assert_close(trained.encoder.embed(**trained.batch, model=trained.model), trained.base, atol=1e-6, rtol=0)


def test_anatomy_reads_each_vector_as_a_diagonal_change(trained):
    result = Anatomy([DeltaModel("run", trained.config.describe(), trained.encoder, trained.model)]).compute(top=4, k=2)
    stats = [m for m in result.runs[0].matrices if m.kind == "ia3"]
    vectors = {n: p.detach().double() for n, p in trained.model.named_parameters() if "ia3_l." in n}
    assert len(stats) == len(vectors)
    widths = sorted(m.shape[0] for m in stats)
    assert widths == sorted(v.numel() for v in vectors.values()) and all(m.shape[0] == m.shape[1] for m in stats)
    norms = sorted(round(m.frobenius, 9) for m in stats)
    assert norms == sorted(round(float(torch.linalg.vector_norm(v - 1)), 9) for v in vectors.values())


def test_a_union_refuses_an_ia3_part_on_the_same_place():
    with pytest.raises(FieldError, match="both modify the value projection"):
        UnionConfig(parts=(LoraConfig(r=4), Ia3Config()))
    with pytest.raises(FieldError, match="both modify the FFN output"):
        UnionConfig(parts=(Ia3Config(layers="1"), AdapterConfig(r=4, placement="ffn", layers="1")))


def test_presets_and_params(tiny_roberta_dir):
    assert get_preset("ia3") == Ia3Config() and get_preset("ia3_9-12") == Ia3Config(layers="9-12")
    result = invoke(["params", "ia3", "--base", str(tiny_roberta_dir), "--json"])
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["presets"]
    assert (row["trainable"], row["formula"], row["matches_formula"]) == (768, 768, True)
    table = invoke(["params", "ia3", "--base", str(tiny_roberta_dir)])
    (line,) = [line for line in table.stdout.splitlines() if line.split()[:1] == ["ia3"]]
    assert "(IA)3" in line and "768" in line
