"""CUDA or CPU, decided in one place (trainers.devices) for training, evaluation and the analyses."""

from __future__ import annotations

import pytest
import torch

from trainers.devices import autocast, check_device, check_precision, mixed_precision, torch_device
from records.errors import InterpError

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


@pytest.mark.parametrize("precision, accelerate, product", [
    ("fp32", "no", torch.float32),
    ("bf16", "bf16", torch.bfloat16),  # CPU autocast is real: the bf16 path runs without a GPU
])
def test_precision(precision, accelerate, product):
    assert check_precision(precision) == precision and mixed_precision(precision) == accelerate
    x = torch.ones(2, 2)
    with autocast(precision, torch.device("cpu")):
        assert (x @ x).dtype == product  # what autocast casts
        assert (x * x).sum().dtype == torch.float32  # sums of float32 stay float32
        assert (x.double() @ x.double()).dtype == torch.float64  # autocast never touches float64 (attn-diff's sums)
    assert (x @ x).dtype == torch.float32  # and nothing is left behind


@pytest.mark.parametrize("precision", ["fp16", "BF16", "", "no"])
def test_precision_refused(precision):
    for decide in (check_precision, mixed_precision, lambda p: autocast(p, "cpu")):
        with pytest.raises(InterpError) as exc:
            decide(precision)
        assert str(exc.value) == f"--precision should be fp32 or bf16, got {precision!r}"


def test_accelerators_of_two_precisions_in_one_process():
    """accelerate keeps one mixed precision per process; a study or a test session trains at both, one after the other."""
    from accelerate import Accelerator

    for precision in ("bf16", "fp32", "bf16"):
        assert Accelerator(cpu=True, mixed_precision=mixed_precision(precision)).mixed_precision == mixed_precision(precision)
