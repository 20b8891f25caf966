"""Method configs validate themselves, round-trip through dicts, and unions refuse overlaps; presets by name."""

from __future__ import annotations

import json
import re

import pytest

from trainers.encoders import load_encoder
from records.errors import InterpError
from trainers.methods import (
    PRESETS, AdapterConfig, FullConfig, LoraConfig, PrefixConfig, UnionConfig, apply_method, get_preset, method_from_dict,
    parse_layers, preset_names,
)
from trainers.methods.lora.config import lora_parts, with_lora_scaling

# -- configs check their fields: ValueError naming the field and the value ----------------------
BAD = [
    (lambda: LoraConfig(r=0), "`r`", "0"),
    (lambda: LoraConfig(r=8, alpha=0), "`alpha`", "0"),
    (lambda: LoraConfig(r=8, dropout=1.5), "`dropout`", "1.5"),
    (lambda: LoraConfig(r=True), "`r`", "True"),
    (lambda: LoraConfig(r=8, scaling="alpha*r"), "`scaling`", "'alpha*r'"),
    (lambda: LoraConfig(r=8, scaling=4.0), "`scaling`", "4.0"),
    (lambda: AdapterConfig(r=8, placement="middle"), "`placement`", "'middle'"),
    (lambda: AdapterConfig(r=-1), "`r`", "-1"),
    (lambda: PrefixConfig(length=0), "`length`", "0"),
    (lambda: PrefixConfig(length=4, init="zeros"), "`init`", "'zeros'"),
    (lambda: FullConfig(layers="9-"), "`layers`", "'9-'"),
    (lambda: LoraConfig(r=4, layers="0-3"), "`layers`", "'0-3'"),
    (lambda: LoraConfig(r=4, layers="4-2"), "`layers`", "'4-2'"),
    (lambda: LoraConfig(r=4, layers="last:0"), "`layers`", "'last:0'"),
    (lambda: UnionConfig(parts=(LoraConfig(r=4),)), "`parts`", "1"),
    (lambda: UnionConfig(parts=(FullConfig(), LoraConfig(r=4))), "`parts`", "full"),
    (lambda: UnionConfig(parts=(LoraConfig(r=4, layers="1-2"), AdapterConfig(r=4, placement="ffn")), layers="3-4"), "`layers`", "'3-4'"),
]


@pytest.mark.parametrize("make,field,value", BAD, ids=[f"{f}={v}" for _, f, v in BAD])
def test_a_bad_field_is_named_with_its_value(make, field, value):
    with pytest.raises(ValueError) as info:
        make()
    assert field in str(info.value) and value in str(info.value)


@pytest.mark.parametrize("spec,depth,expected", [
    ("9-12", 12, (8, 9, 10, 11)), ("9", 12, (8,)), ("1,3,5-6", 6, (0, 2, 4, 5)), ("last:4", 12, (8, 9, 10, 11)),
    ("last:1", 6, (5,)), (None, 3, (0, 1, 2)), ("2, 1", 4, (0, 1)),
])
def test_layer_specs_count_from_one_and_resolve_to_zero_based(spec, depth, expected):
    assert parse_layers(spec, depth) == expected


@pytest.mark.parametrize("config", [
    FullConfig(layers="9-12"), LoraConfig(r=2, layers="9-12"), PrefixConfig(length=2, layers="9-12"),
    AdapterConfig(r=2, placement="ffn", layers="9-12"), get_preset("loFF_9-12"),
], ids=lambda c: c.method)
def test_layers_outside_the_encoder_name_its_depth(config, tiny_roberta_dir):
    with pytest.raises(InterpError, match=r"layers 9-12: the encoder has 4 layers \(1-4\)"):
        apply_method(load_encoder(tiny_roberta_dir), config)


def test_last_k_beyond_the_depth_names_it(tiny_roberta_dir):
    with pytest.raises(InterpError, match=r"layers last:5: the encoder has 4 layers \(1-4\)"):
        apply_method(load_encoder(tiny_roberta_dir), LoraConfig(r=2, layers="last:5"))


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_round_trips_through_json(name):
    config = PRESETS[name]
    data = json.loads(json.dumps(config.to_dict()))
    assert data["method"] == config.method
    assert method_from_dict(data) == config


# -- LoRA's scaling rule: what multiplies the low-rank product, recorded ---------------------------
@pytest.mark.parametrize("scaling,scale,lora_alpha,rslora", [
    ("alpha", 4.0, 256.0, False),  # the study's Eq. 2.3: the factor is alpha
    ("alpha/r", 4 / 64, 4.0, False),  # OpenDelta and peft: 64 times smaller at r 64
    ("alpha/sqrt(r)", 4 / 8, 4.0, True),  # rsLoRA
])
def test_each_scaling_rule_gives_its_factor_and_round_trips(scaling, scale, lora_alpha, rslora):
    config = LoraConfig(r=64, alpha=4, scaling=scaling)
    assert (config.scale, config.lora_alpha, config.use_rslora) == (scale, lora_alpha, rslora)
    data = json.loads(json.dumps(config.to_dict()))
    assert (data["scaling"], data["scale"], data["lora_alpha"]) == (scaling, scale, lora_alpha)
    assert method_from_dict(data) == config


def test_the_default_rule_is_the_studys_alpha():
    assert LoraConfig(r=64).scaling == "alpha" and LoraConfig(r=64).scale == 4.0
    assert all(part.scaling == "alpha" for config in PRESETS.values() for part in lora_parts(config))


OLD_LORA = {"method": "lora", "r": 64, "alpha": 4.0, "dropout": 0.0, "layers": None, "lora_alpha": 256.0, "scaling": 4.0}


def test_a_dict_from_before_the_rule_reads_as_alpha():
    """Checkpoints and manifests written before the rule was recorded: a numeric `scaling`, which was alpha."""
    assert method_from_dict(OLD_LORA) == LoraConfig(r=64, alpha=4, scaling="alpha")
    old_union = {"method": "union", "layers": None, "parts": [OLD_LORA, {"method": "adapter", "r": 384, "placement": "ffn", "layers": None}]}
    assert method_from_dict(old_union) == get_preset("loFF")


@pytest.mark.parametrize("data,field,value", [
    (OLD_LORA | {"scaling": 4 / 64}, "`scaling`", "0.0625"),  # a number is the old factor alpha, never alpha / r
    (OLD_LORA | {"lora_alpha": 4.0}, "`lora_alpha`", "4.0"),
    (LoraConfig(r=64, scaling="alpha/r").to_dict() | {"scale": 4.0}, "`scale`", "4.0"),
    (LoraConfig(r=64, scaling="alpha/r").to_dict() | {"lora_alpha": 256.0}, "`lora_alpha`", "256.0"),
    (LoraConfig(r=64).to_dict() | {"scaling": "alpha*r"}, "`scaling`", "'alpha*r'"),
    (LoraConfig(r=64).to_dict() | {"scale": "4"}, "`scale`", "'4'"),
])
def test_recorded_numbers_that_disagree_are_refused(data, field, value):
    with pytest.raises(ValueError) as info:
        method_from_dict(data)
    assert field in str(info.value) and value in str(info.value)


def test_with_lora_scaling_reaches_every_lora_part_and_only_lora():
    union = with_lora_scaling(get_preset("loFF_9-12"), "alpha/r")
    lora, ffn = union.parts
    assert (lora.scaling, lora.scale, lora.layers) == ("alpha/r", 4 / 64, "9-12") and ffn == get_preset("loFF_9-12").parts[1]
    assert union.describe() == "lora r=64 alpha=4 scaling=alpha/r + adapter-ffn r=384 layers 9-12"
    assert method_from_dict(json.loads(json.dumps(union.to_dict()))) == union
    with pytest.raises(ValueError, match="`scaling` applies to LoRA only.*adapter-h r=64"):
        with_lora_scaling(get_preset("adapter-h64"), "alpha/r")


def test_unknown_method_and_fields_are_refused():
    with pytest.raises(ValueError, match="`method`"):
        method_from_dict({"method": "bitfit"})
    with pytest.raises(ValueError, match="rank"):
        method_from_dict({"method": "lora", "r": 4, "rank": 4})


# -- unions ---------------------------------------------------------------------------------------
def test_lora_with_adapter_ffn_is_a_valid_union():
    union = UnionConfig(parts=(LoraConfig(r=64), AdapterConfig(r=384, placement="ffn")))
    assert union.roles() == ("query", "value", "ffn_output")


@pytest.mark.parametrize("a,b,words", [
    (AdapterConfig(r=64, placement="attn"), AdapterConfig(r=64, placement="both"), "the attention output"),
    (AdapterConfig(r=8, placement="ffn"), AdapterConfig(r=16, placement="ffn", layers="2"), "the FFN output"),
    (LoraConfig(r=4), LoraConfig(r=8, layers="1-2"), "the query projection"),
    (PrefixConfig(length=2), PrefixConfig(length=3), "the attention keys and values"),
])
def test_overlapping_parts_are_refused_naming_both(a, b, words):
    with pytest.raises(ValueError) as info:
        UnionConfig(parts=(a, b))
    message = str(info.value)
    assert a.describe() in message and b.describe() in message and words in message


def test_parts_in_different_layers_may_share_a_place():
    UnionConfig(parts=(AdapterConfig(r=8, placement="attn", layers="1-6"), AdapterConfig(r=8, placement="both", layers="7-12")))


def test_an_overlap_that_depends_on_the_depth_is_caught_when_applied(tiny_roberta_dir):
    union = UnionConfig(parts=(AdapterConfig(r=4, placement="ffn", layers="1-3"), AdapterConfig(r=4, placement="both", layers="last:2")))
    with pytest.raises(InterpError, match="in layer\\(s\\) 3"):
        apply_method(load_encoder(tiny_roberta_dir), union)


def test_union_layers_go_to_every_part_and_nested_unions_flatten():
    inner = UnionConfig(parts=(LoraConfig(r=4), AdapterConfig(r=8, placement="ffn")))
    outer = UnionConfig(parts=(inner, PrefixConfig(length=2)), layers="9-12")
    assert [p.method for p in outer.parts] == ["lora", "adapter", "prefix"]
    assert {p.layers for p in outer.parts} == {"9-12"}
    assert method_from_dict(outer.to_dict()) == outer


# -- presets ----------------------------------------------------------------------------------------
STUDY = (
    ["full", "loFF", "LOFF", "LOff", "loFF_9-12"] + [f"lora{r}" for r in (32, 64, 128, 256)]
    + [f"prefix{n}" for n in (5, 10, 20, 30, 50, 100, 256)]
    + [f"adapter-{kind}{r}" for kind in ("h", "attn", "ffn") for r in (64, 128, 256, 512)]
)


def test_every_configuration_of_the_study_is_a_preset():
    assert sorted(preset_names()) == sorted(STUDY + ["ia3", "ia3_9-12"])  # and (IA)3's, which the study did not run


@pytest.mark.parametrize("name,lora_r,ffn_r", [("loFF", 64, 384), ("LOFF", 128, 256), ("LOff", 192, 128)])
def test_the_loff_presets_differ_by_case(name, lora_r, ffn_r):
    lora, ffn = get_preset(name).parts
    assert (lora.method, lora.r, lora.alpha, ffn.placement, ffn.r) == ("lora", lora_r, 4.0, "ffn", ffn_r)


def test_loff_9_12_restricts_both_parts():
    assert [p.layers for p in get_preset("loFF_9-12").parts] == ["9-12", "9-12"]


@pytest.mark.parametrize("typed,suggested", [("loff", "loFF"), ("lora46", "lora64"), ("adapter-h65", "adapter-h64"), ("prefix-10", "prefix10")])
def test_an_unknown_preset_gets_did_you_mean(typed, suggested):
    with pytest.raises(InterpError, match=f"unknown preset '{typed}'; did you mean '{suggested}'"):
        get_preset(typed)


# -- the study's grids state their LoRA scaling --------------------------------------------------
def test_every_grid_with_lora_states_its_scaling_and_applies_it():
    from interp.study.grid import load_grid_file

    grids = load_grid_file().grids
    assert {name: g.lora_scaling for name, g in grids.items() if g.has_lora} == {
        "rq2": "alpha", "rq3": "alpha", "rq4": "alpha", "layers": "alpha", "all": "alpha", "core": "alpha",
        "all-opendelta": "alpha/r", "core-opendelta": "alpha/r",
    }
    for name in ("all-opendelta", "core-opendelta"):
        assert grids[name].tables == grids[name.removesuffix("-opendelta")].tables
    opendelta = grids["core-opendelta"]
    assert opendelta.method("loFF") == with_lora_scaling(get_preset("loFF"), "alpha/r")
    assert opendelta.method("lora256").scale == 4 / 256
    assert opendelta.method("adapter-h256") == get_preset("adapter-h256")
    assert grids["core"].method("loFF") == get_preset("loFF")


@pytest.mark.parametrize("entry,message", [
    ('lora_scaling = "alpha*r"', "lora_scaling should be one of 'alpha', 'alpha/r', 'alpha/sqrt(r)', got 'alpha*r'"),
    ("", "grid 'g' trains LoRA but does not state its lora_scaling"),
])
def test_a_grid_with_a_bad_or_missing_scaling_is_refused(tmp_path, entry, message):
    from interp.study.grid import load_grid_file

    path = tmp_path / "grids.toml"
    path.write_text(f'[tables.t]\ntitle = "t"\npresets = ["lora64"]\n\n[grids.g]\ntables = ["t"]\n{entry}\n')
    with pytest.raises(InterpError, match=re.escape(message)):
        load_grid_file(path)
