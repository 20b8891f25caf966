"""CUDA or CPU: the one place that decides, for training, evaluation and the analyses.

    check_device(device)  -> whether `device` (auto, cpu or cuda) means CUDA here; InterpError,
                             naming --device, for another name or for cuda where there is no GPU
    torch_device(device)  -> the torch.device it means

`auto` is CUDA where there is a CUDA device, else the CPU; `cuda` is never silently the CPU.
torch is imported when a device is decided, not when this module is.
"""

from __future__ import annotations

from trainers.errors import InterpError

DEVICES = ("auto", "cpu", "cuda")


def check_device(device: str) -> bool:
    import torch

    if device not in DEVICES:
        raise InterpError(f"--device should be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InterpError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    return device != "cpu" and torch.cuda.is_available()


def torch_device(device: str):
    import torch

    return torch.device("cuda" if check_device(device) else "cpu")
