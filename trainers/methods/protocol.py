"""What a method says about itself on a model (STYLE.md pattern 13): its tuner.

Each method's folder has a `tuner.py` whose `TUNER` answers every question the rest of the
project asks about a delta; the registry line names that module. The trainer, `save_delta` /
`load_delta`, ablation (`disabled_layers`), counting and anatomy ask the tuner and never branch
on the method's type:

    apply(encoder, config) -> model        the model to train (the delta in `encoder.model`)
    weights_file                           the delta's tensors in a run directory
    save(model, directory)                 write the delta's files (config, tensors)
    load(model, state, path)               put `state` (read from `path`) into a freshly applied model
    delta_parameters(model)                the delta's parameters by structure, under the model's names
    disabled(model, layers)                context manager: the delta off in those 0-based encoder layers
    delta_matrices(model)                  the matrices anatomy analyses (`DeltaMatrix`)
    outside_formula(model)                 parameters the study's Table 4.2 leaves out (adapter biases)
    peft_method                            (name, peft config class, peft tuner class) to register with
                                           peft, or None (peft's own LoRA; full fine-tuning)

Methods built on peft share one implementation of most of these (`peft_tuner.PeftTuner`) and
describe only their own tuner layers (`layer_matrices`, `layer_outside_formula`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainers.encoders import Encoder
    from trainers.methods.base import MethodConfig

LINEAR = {"left": "output", "right": "input"}  # the sides of a linear map written as (d_out, d_in)


@dataclass
class DeltaMatrix:
    """One matrix of a delta, as a method exposes it to anatomy.

    `module` is the path, in the transformers model, of the module the matrix belongs to;
    `value` is float64 on the CPU, (rows, columns), a linear map written y = M x as (d_out, d_in).
    `family` says which matrices of two runs may be compared ('update' for a change of a weight,
    'adapter' for a bottleneck's product, None: never). `raw` marks a matrix analysed as it is
    because the change from its initial value could not be known (a prefix saved without it).
    """

    module: str
    kind: str  # 'lora', 'adapter', 'prefix_key', 'prefix_value', 'full'
    label: str  # what was analysed: 'scale*B@A', '(W_down@W_up)^T', 'P_k-P_k0', 'W_run-W_base', ...
    value: torch.Tensor
    rank_bound: int
    factors: dict[str, float]
    sides: dict[str, str]
    family: str | None
    raw: bool = False


def frobenius(t: torch.Tensor) -> float:
    """The Frobenius norm of a matrix (the 2-norm of a vector), in float64."""
    import torch

    t = t.detach().double()
    return float(torch.linalg.matrix_norm(t) if t.dim() == 2 else torch.linalg.vector_norm(t))


class Tuner(Protocol):
    weights_file: str
    peft_method: tuple[str, type, type] | None

    def apply(self, encoder: Encoder, config: MethodConfig) -> nn.Module: ...

    def save(self, model: nn.Module, directory: Path) -> None: ...

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None: ...

    def delta_parameters(self, model: nn.Module) -> dict[str, nn.Parameter]: ...

    def disabled(self, model: nn.Module, layers: list[int]) -> AbstractContextManager: ...

    def delta_matrices(self, model: nn.Module) -> list[DeltaMatrix]: ...

    def outside_formula(self, model: nn.Module) -> int: ...
