"""Options shared by several commands, declared once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Device(str, Enum):
    """--device of train, eval, attn-diff and cka."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"

Base = Annotated[
    str | None,
    typer.Option("--base", help="Base encoder: a local Hugging Face directory or a hub id (default: all-MiniLM-L6-v2, shipped offline)."),
]


def _path(value: str | Path) -> Path:
    """Parser of path options: an empty value is refused (Path('') would quietly mean the current directory)."""
    if not str(value).strip():
        raise typer.BadParameter("should be a path, got an empty value")
    return Path(value)


RunsDir = Annotated[Path, typer.Option("--runs-dir", parser=_path, help="Where runs, analyses and the report live.")]
DataDir = Annotated[Path, typer.Option("--data", parser=_path,
                                       help="A directory with train/valid/test.jsonl in AdvTest format (built by `interp data build`).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


# -- the options the analysis commands share (attn-diff, cka, ablate, anatomy, attribute, qualitative, compare) --

Split = Annotated[str, typer.Option("--split", help="train, valid or test of the runs' data.")]
RunSplit = Annotated[str, typer.Option("--split", help="train, valid or test of the run's data.")]  # a one-run command's
DataFile = Annotated[Path | None, typer.Option("--data", exists=True, dir_okay=False, help="Any AdvTest-format jsonl instead of --split.")]
ScoredDataFile = Annotated[Path | None, typer.Option(  # the commands that score every run on it (qualitative, compare)
    "--data", exists=True, dir_okay=False, help="Any AdvTest-format jsonl instead of --split (every run is evaluated on it).")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only this many examples: the same fixed sample as a run's --eval-limit.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Sequences per forward pass.")]
DeviceOption = Annotated[Device, typer.Option("--device", help="auto picks CUDA when there is one.")]
DeviceName = Annotated[str, typer.Option("--device", help="auto (CUDA when there is one), cpu or cuda.")]  # checked by the analysis


class Side(str, Enum):
    """--side of attn-diff and cka: which sequences of each pair are compared."""

    query = "query"
    code = "code"
    both = "both"


def precision(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Callback of --precision: fp32 or bf16 (`trainers.devices.PRECISIONS`), else InterpError naming the option."""
    from trainers.devices import PRECISIONS
    from records.errors import InterpError

    if value is not None and value not in PRECISIONS:
        raise InterpError(f"--precision {value}: should be {' or '.join(PRECISIONS)}")
    return value


PRECISION_HELP = ("Forward passes in fp32, or bf16 (mixed precision: bfloat16 autocast, on the CPU too; weights and what is "
                  "accumulated stay float32). ")
# An analysis: fp32 unless asked, whatever precision the run was trained at. Recorded in the result's inputs.
Precision = Annotated[str, typer.Option("--precision", callback=precision, help=PRECISION_HELP + "Recorded with the result.")]


# -- what a foreign delta (a directory: a peft adapter, a model directory) lacks; every command that takes a run --

ForeignBase = Annotated[str | None, typer.Option("--base", help="For a directory: its base encoder (default: the adapter's "
                                                 "base_model_name_or_path; a model directory needs it).")]
ForeignMaxLen = Annotated[int | None, typer.Option("--max-len", help="For a directory: tokens per query or code (default 256).")]


def foreign(base: str | None, pooling: str | None, max_len: int | None):
    """`trainers.foreign.ForeignOptions` of --base, --pooling and --max-len (the command's --pooling declared with
    `ForeignPooling`, whose callback is `choice`); --max-len checked. Recorded in a foreign run's manifest ("source")."""
    from trainers.foreign import ForeignOptions

    at_least("--max-len", max_len)
    return ForeignOptions(base=base, pooling=pooling, max_len=max_len)


NumProcesses = Annotated[int | None, typer.Option(
    "--num-processes",
    help="Share the examples over this many processes (one per GPU; CPU processes talk through gloo), started through "
         "accelerate; the result is the one of a single process. Default: those `accelerate launch` started, else 1.")]


def choice(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Callback of --pooling, --ties and --batching: a value the library knows, else InterpError naming the option.

    (Not an Enum: the library's lists are the one home of the choices, and a bad value gets the CLI's one error line.)
    """
    if value is None:
        return value
    from trainers.encoders import POOLINGS
    from records.errors import InterpError
    from trainers.training.evaluate import TIE_RULES
    from trainers.training.loop import BATCHINGS

    allowed = {"pooling": POOLINGS, "ties": TIE_RULES, "batching": BATCHINGS}[param.name]
    if value not in allowed:
        raise InterpError(f"{param.opts[0]} {value}: should be one of {', '.join(allowed)}")
    return value


ForeignPooling = Annotated[str | None, typer.Option("--pooling", callback=choice, help="For a directory: cls (default), pooler or mean.")]


def finite(ctx: typer.Context, param: typer.CallbackParam, value: float | None) -> float | None:
    """Callback of float options: NaN and infinities are refused, naming the option."""
    import math

    from records.errors import InterpError

    if value is not None and not math.isfinite(value):
        raise InterpError(f"{param.opts[0]} {value}: should be a finite number")
    return value


# -- the checks commands run before loading anything: one line naming the option, exit status 2 --

SPLITS = ("train", "valid", "test")


def option_name(field: str) -> str:
    """The CLI option of a config field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def at_least(option: str, value: int | None, low: int = 1) -> None:
    """InterpError naming `option` when `value` is given and below `low`."""
    from records.errors import InterpError

    if value is not None and value < low:
        raise InterpError(f"{option} {value}: should be at least {low}")


def existing_dir(option: str, path: Path) -> Path:
    """A directory that must already exist (e.g. `runs --runs-dir`): InterpError naming `option` otherwise."""
    from records.errors import InterpError

    if not path.exists():
        raise InterpError(f"{option} {path}: no such directory")
    if not path.is_dir():
        raise InterpError(f"{option} {path}: not a directory")
    return path


def creatable_dir(option: str, path: Path) -> Path:
    """A directory that exists or can be made (e.g. `train --runs-dir`); nothing is created here."""
    import os

    from records.errors import InterpError

    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise InterpError(f"{option} {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InterpError(f"{option} {path}: the directory is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InterpError(f"{option} {path}: cannot be created, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InterpError(f"{option} {path}: cannot be created, {parent} is not writable")
    return path


def data_dir(option: str, path: Path) -> Path:
    """An AdvTest directory with train/valid/test.jsonl: InterpError naming `option` and what is missing."""
    from records.errors import InterpError

    if not path.exists():
        raise InterpError(f"{option} {path}: no such directory (build one with `interp data build --out {path}`)")
    if not path.is_dir():
        raise InterpError(f"{option} {path}: not a directory; give a directory with {', '.join(s + '.jsonl' for s in SPLITS)}")
    missing = [f"{split}.jsonl" for split in SPLITS if not (path / f"{split}.jsonl").is_file()]
    if missing:
        raise InterpError(f"{option} {path}: no {', '.join(missing)} there (an AdvTest directory from `interp data build`)")
    return path


def base_shape(base: str | None):
    """The base encoder's sizes from its config alone (nothing loaded); InterpError naming --base."""
    from trainers.encoders import read_shape

    return read_shape(base)


def device(value: str) -> str:
    """--device: `cuda` without a GPU is refused here rather than run on the CPU."""
    from trainers.devices import check_device

    check_device(value)
    return value
