"""CUDA or CPU: the one place that decides, for training, evaluation and the analyses.

    check_device(device)  -> whether `device` (auto, cpu or cuda) means CUDA here; InterpError,
                             naming --device, for another name or for cuda where there is no GPU
    torch_device(device)  -> the torch.device it means (under a launcher: this process's own GPU)

    check_precision(p)    -> `p` if it is fp32 or bf16; InterpError naming --precision otherwise
    mixed_precision(p)    -> accelerate's name for it ("no" or "bf16"), for the next `Accelerator(mixed_precision=...)`
    autocast(p, device)   -> the context a forward pass runs in: torch.autocast to bfloat16 on `device`'s
                             type for bf16 (the CPU too), nothing for fp32

`auto` is CUDA where there is a CUDA device, else the CPU; `cuda` is never silently the CPU.
torch is imported when a device is decided, not when this module is.

Precision is chosen, never implied by the device: fp32 unless asked (`DEFAULT_PRECISION`), on
the CPU and on CUDA alike. bf16 is autocast (mixed precision): weights, optimizer state and
gradients stay float32; matrix products run in bfloat16. Whatever the precision, what an analysis
accumulates (sums, means, ranks) is cast to float32 or float64 where it leaves the forward pass.
"""

from __future__ import annotations

from records.errors import InterpError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"
_ACCELERATE = {"fp32": "no", "bf16": "bf16"}  # accelerate's mixed_precision for each


def check_device(device: str) -> bool:
    import torch

    if device not in DEVICES:
        raise InterpError(f"--device should be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InterpError("--device cuda: no CUDA device is available here (use --device auto or cpu)")
    return device != "cpu" and torch.cuda.is_available()


def torch_device(device: str):
    """The torch.device `device` means: the CPU, or this process's GPU (under a launcher, the one at its LOCAL_RANK)."""
    import os

    import torch

    if not check_device(device):
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK")  # set by torchrun (accelerate launch): one GPU per process
    return torch.device("cuda", int(local)) if local else torch.device("cuda")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InterpError(f"--precision should be {' or '.join(PRECISIONS)}, got {precision!r}")
    return precision


def mixed_precision(precision: str) -> str:
    """accelerate's `mixed_precision` for `precision` ("no" for fp32, "bf16"), ready for the next `Accelerator`.

    accelerate keeps one mixed precision per process (its `AcceleratorState` singleton) and refuses
    an Accelerator of another: a process that trains an fp32 run and then a bf16 one (a study, the
    tests) has that state cleared first. The processes themselves (`PartialState`) are kept.
    """
    name = _ACCELERATE[check_precision(precision)]
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision") != name:
        AcceleratorState._reset_state(reset_partial_state=False)
    return name


def autocast(precision: str, device):
    """The context every forward pass of training, evaluation and the analyses runs in.

    bf16: `torch.autocast` to bfloat16 on `device`'s type (a torch.device or a name: cuda or cpu;
    CPU autocast is real, so the bf16 path runs without a GPU). fp32: nothing.
    """
    import contextlib

    import torch

    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16)
