"""Parameter counts against the study's Table 4.2, on roberta-base's shape and on MiniLM; `interp params`."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from trainers.encoders import load_encoder
from trainers.methods import PRESETS, AdapterConfig, LoraConfig, UnionConfig, count_parameters, get_preset


@pytest.fixture(scope="module")
def roberta_base_dir(tmp_path_factory):
    """A config-only directory shaped like roberta-base / CodeBERT: 12 layers, hidden 768."""
    from transformers import RobertaConfig

    path = tmp_path_factory.mktemp("roberta-base")
    RobertaConfig().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def roberta_base(roberta_base_dir):
    return load_encoder(roberta_base_dir)


@pytest.mark.parametrize("preset,trainable,biases", [
    ("lora64", 2_359_296, 0),
    ("lora256", 9_437_184, 0),
    ("prefix10", 184_320, 0),
    ("loFF", 9_437_184 + 13_824, 13_824),
    ("adapter-h256", 9_437_184 + 24_576, 24_576),
    ("loFF_9-12", 3_145_728 + 4_608, 4_608),
])
def test_roberta_base_counts(roberta_base, preset, trainable, biases):
    count = count_parameters(roberta_base, get_preset(preset))
    assert (count.trainable, count.adapter_biases) == (trainable, biases)
    assert count.trainable_without_biases == count.formula == trainable - biases
    assert count.matches_formula


def test_every_preset_meets_table_4_2_on_roberta_base(roberta_base):
    for name, config in PRESETS.items():
        count = count_parameters(roberta_base, config)
        if config.method == "full":
            assert count.formula is None and count.trainable == count.base_parameters == roberta_base.num_parameters
        else:
            assert count.matches_formula, name


@pytest.mark.parametrize("preset,per_layer", [
    ("lora64", 4 * 64 * 384), ("adapter-h64", 4 * 64 * 384), ("adapter-attn128", 2 * 128 * 384),
    ("adapter-ffn256", 2 * 256 * 384), ("prefix50", 2 * 50 * 384), ("LOff", 4 * 192 * 384 + 2 * 128 * 384),
])
def test_minilm_counts(minilm, preset, per_layer):
    count = count_parameters(minilm, get_preset(preset))
    assert count.trainable_without_biases == count.formula == 6 * per_layer
    assert count.base_parameters == minilm.num_parameters == 22_713_216
    assert count.share_of_base == pytest.approx(count.trainable / 22_713_216)


def test_counting_leaves_the_encoder_alone(tiny_roberta_dir):
    encoder = load_encoder(tiny_roberta_dir)
    before = {n: p.clone() for n, p in encoder.model.state_dict().items()}
    count_parameters(encoder, get_preset("loFF"))
    after = encoder.model.state_dict()
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    assert not any(p.is_meta for p in encoder.model.parameters())


# -- the command --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app():
    from interp.cli import _Group
    from interp.commands import params

    app = typer.Typer(cls=_Group, add_completion=False, pretty_exceptions_enable=False)
    app.command("params")(params.params)
    app.callback()(lambda: None)  # keep `params` a subcommand, as in the real app
    return app


def test_params_table_on_roberta_base(app, roberta_base_dir):
    result = CliRunner().invoke(app, ["params", "lora64", "prefix10", "loFF", "--base", str(roberta_base_dir)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert "2,359,296" in lines["lora64"] and "184,320" in lines["prefix10"]
    assert "9,451,008" in lines["loFF"] and "9,437,184" in lines["loFF"] and "13,824" in lines["loFF"]
    assert all(" ok " in line for line in lines.values())


def test_params_json_lists_every_preset_and_skips_what_does_not_fit(app):
    result = CliRunner().invoke(app, ["params", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["preset"]: row for row in json.loads(result.output)["presets"]}
    assert list(rows) == list(PRESETS)
    assert rows["lora64"]["trainable"] == 4 * 64 * 384 * 6
    assert "the encoder has 6 layers" in rows["loFF_9-12"]["skipped"]


@pytest.mark.parametrize("args,message", [
    (["params", "loff"], "did you mean 'loFF'"),
    (["params", "loFF_9-12"], "layers 9-12: the encoder has 6 layers (1-6)"),
])
def test_params_bad_input_exits_2_with_one_line(app, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and result.output.startswith("error: ")


# -- LoRA's scaling rule: shown, and set with --lora-scaling (here and in `interp train`) -----------
def test_params_shows_each_presets_lora_scale(app, roberta_base_dir):
    result = CliRunner().invoke(app, ["params", "lora64", "loFF", "adapter-h64", "--base", str(roberta_base_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[-2:] == ["LoRA", "scale"]
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert lines["lora64"].endswith(" 4") and lines["loFF"].endswith(" 4") and lines["adapter-h64"].endswith(" -")


@pytest.mark.parametrize("scaling,scale", [("alpha", 4.0), ("alpha/r", 4 / 64), ("alpha/sqrt(r)", 4 / 8)])
def test_params_lora_scaling_applies_to_every_lora_part(app, roberta_base_dir, scaling, scale):
    result = CliRunner().invoke(app, ["params", "lora64", "loFF", "--lora-scaling", scaling, "--base", str(roberta_base_dir), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["preset"]: row for row in json.loads(result.output)["presets"]}
    for name, count in (("lora64", 2_359_296), ("loFF", 9_437_184)):
        assert rows[name]["lora"] == [{"r": 64, "alpha": 4.0, "scaling": scaling, "scale": scale}]
        assert rows[name]["trainable_without_biases"] == count  # the rule changes the factor, never the count


@pytest.mark.parametrize("args,message", [
    (["params", "adapter-h64", "--lora-scaling", "alpha/r"], "--lora-scaling alpha/r: preset(s) adapter-h64 have no LoRA part"),
    (["params", "lora64", "--lora-scaling", "alpha*r"], "--lora-scaling alpha*r: should be one of alpha, alpha/r, alpha/sqrt(r)"),
])
def test_params_bad_lora_scaling_exits_2_with_one_line(app, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and result.output.startswith("error: ")


@pytest.mark.parametrize("preset,method,expected", [
    ("lora64", None, LoraConfig(r=64, scaling="alpha/r")),
    ("loFF", None, UnionConfig(parts=(LoraConfig(r=64, scaling="alpha/r"), AdapterConfig(r=384, placement="ffn")))),
    (None, "lora", LoraConfig(r=8, alpha=2, scaling="alpha/r")),
])
def test_train_lora_scaling_overrides_a_presets_lora_parts(preset, method, expected):
    from interp.commands.train import Method, method_config

    chosen = Method(method) if method else None
    r, alpha = (8, 2.0) if method else (None, None)
    assert method_config(preset, chosen, r, alpha, None, None, None, "alpha/r") == expected


@pytest.mark.parametrize("preset,method,message", [
    ("adapter-ffn64", None, "--lora-scaling alpha/r: preset adapter-ffn64 has no LoRA part"),
    (None, "prefix", "--lora-scaling alpha/r: --method prefix has no LoRA part"),
])
def test_train_lora_scaling_without_lora_is_refused(preset, method, message):
    from interp.commands.train import Method, method_config
    from records.errors import InterpError

    with pytest.raises(InterpError, match=re.escape(message)):
        method_config(preset, Method(method) if method else None, None, None, 4 if method else None, None, None, "alpha/r")
