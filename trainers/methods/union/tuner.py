"""A union on a model: peft's machinery (peft_tuner.py); each tuner layer is described by its part's tuner.

Its parameter names carry the union's prefix (names.py); a run saved under the parts' own names is renamed on load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from trainers.methods.peft_tuner import PeftTuner
from trainers.methods.protocol import DeltaMatrix
from trainers.methods.union.model import UnionModel, UnionPeftConfig
from trainers.methods.union.names import migrate_keys


class UnionTuner(PeftTuner):
    peft_method = ("union", UnionPeftConfig, UnionModel)

    def _parts(self) -> list[PeftTuner]:
        from trainers.methods.registry import tuners

        return [tuner for tuner in tuners() if isinstance(tuner, PeftTuner) and tuner is not self]

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
        """A run saved before the union's names carried its prefix loads too: its keys are renamed first."""
        super().load(model, migrate_keys(model, state, UnionModel.prefix), path)

    def layer_matrices(self, name: str, module: nn.Module) -> list[DeltaMatrix]:
        return [matrix for part in self._parts() for matrix in part.layer_matrices(name, module)]

    def layer_outside_formula(self, module: nn.Module) -> int:
        return sum(part.layer_outside_formula(module) for part in self._parts())


TUNER = UnionTuner()
