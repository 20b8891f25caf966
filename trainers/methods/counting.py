"""Trainable parameters of a method on an encoder: counted exactly, and checked against Table 4.2.

Counting applies the method to a copy of the encoder built on the meta device (no memory, no
initialisation), so it is instant even for roberta-base and works on a config-only directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from trainers.encoders import Encoder
from trainers.methods.base import MethodConfig


@dataclass(frozen=True)
class ParameterCount:
    """What a method trains on one encoder.

    `formula` is the study's Table 4.2 (LoRA 4rd, Adapter-H 4rd, Adapter-ATTN/FFN 2rd, prefix
    2ld per layer, summed over a union's parts); the study leaves adapter biases out, so it is
    compared with `trainable_without_biases`. Full fine-tuning has no formula (None).
    """

    method: str
    trainable: int
    trainable_without_biases: int
    adapter_biases: int
    formula: int | None
    matches_formula: bool | None
    base_parameters: int
    share_of_base: float  # trainable / base_parameters

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def meta_encoder(encoder: Encoder) -> Encoder:
    """A copy of `encoder` whose model lives on the meta device (shapes only)."""
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(encoder.config, attn_implementation=encoder.config._attn_implementation)
    return dataclasses.replace(encoder, model=model, tokenizer=None)  # same base: keeps its hash


def count_parameters(encoder: Encoder, config: MethodConfig) -> ParameterCount:
    """Apply `config` to a meta copy of `encoder` and count; InterpError if it does not fit."""
    from trainers.methods.apply import apply_method, tuner_of

    meta = meta_encoder(encoder)
    base = sum(p.numel() for p in meta.model.parameters())  # not encoder.num_parameters: a delta may already be in it
    model = apply_method(meta, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    biases = tuner_of(model).outside_formula(model)  # what the method says Table 4.2 leaves out (adapter biases)
    formula = config.formula(encoder.shape)  # None: the method has no formula (full)
    return ParameterCount(
        method=config.describe(),
        trainable=trainable,
        trainable_without_biases=trainable - biases,
        adapter_biases=biases,
        formula=formula,
        matches_formula=None if formula is None else formula == trainable - biases,
        base_parameters=base,
        share_of_base=trainable / base,
    )
