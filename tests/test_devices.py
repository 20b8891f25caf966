"""CUDA or CPU, decided in one place (trainers.devices) for training, evaluation and the analyses."""

from __future__ import annotations

import pytest
import torch

from trainers.devices import check_device, torch_device
from trainers.errors import InterpError

GPU = torch.cuda.is_available()


@pytest.mark.parametrize("device, cuda, refusal", [
    ("auto", GPU, None),
    ("cpu", False, None),
    ("cuda", True, None if GPU else "--device cuda: no CUDA device is available here (use --device auto or cpu)"),
    ("tpu", None, "--device should be auto, cpu or cuda, got 'tpu'"),
    ("CPU", None, "--device should be auto, cpu or cuda, got 'CPU'"),
])
def test_device(device, cuda, refusal):
    if refusal is not None:
        for decide in (check_device, torch_device):
            with pytest.raises(InterpError) as exc:
                decide(device)
            assert str(exc.value) == refusal
        return
    assert check_device(device) is cuda
    assert torch_device(device) == torch.device("cuda" if cuda else "cpu")
