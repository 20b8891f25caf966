"""A union on a model: peft's machinery (peft_tuner.py); each tuner layer is described by its part's tuner."""

from __future__ import annotations

from torch import nn

from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.protocol import DeltaMatrix
from trainers.methods.union.model import UnionModel, UnionPeftConfig


class UnionTuner(PeftTuner):
    peft_method = ("union", UnionPeftConfig, UnionModel)

    def _parts(self) -> list[PeftTuner]:
        from trainers.methods.registry import tuners

        return [tuner for tuner in tuners() if isinstance(tuner, PeftTuner) and tuner is not self]

    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        return [matrix for part in self._parts() for matrix in part.layer_matrices(name, module)]

    def layer_outside_formula(self, module: nn.Module) -> int:
        return sum(part.layer_outside_formula(module) for part in self._parts())


TUNER = UnionTuner()
