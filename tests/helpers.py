"""Helpers shared by the test modules (importable as `helpers`; pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import typer

from trainers import methods
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run


def json_close(a, b, rel: float, abs_: float) -> bool:
    """Two JSON values are equal, floats within the given relative / absolute tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


# -- tiny trained runs and golden results, shared by the analysis tests ----------------------

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = 12  # test queries scored (the runs' --eval-limit sample)
MAX_LEN = 32


def train_tiny(runs_dir: Path, data_dir: Path, base: Path, name: str, config: methods.MethodConfig, **settings) -> Path:
    """A run of `config` on the tiny base: two steps at a high learning rate, so the delta is far from zero.

    `settings`: other TrainConfig fields (pooling, ties, ...).
    """
    spec = RunSpec(name=name, method=config, data_dir=data_dir, base=str(base), train_limit=16, eval_limit=EXAMPLES)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 4, "max_len": MAX_LEN, "evals_per_epoch": 1, "max_steps": 2, "lr": 5e-2, "seed": 3} | settings)
    train_run(spec, cfg, runs_dir=runs_dir, progress=False)
    return runs_dir / name


def _rounded(value, digits: int = 6):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def check_golden(path: Path, golden: Path, *, rel: float = 1e-4, abs_: float = 1e-5) -> None:
    """The saved result equals the golden one (kind, name, result; floats rounded to 6 significant
    digits and compared with a tolerance); inputs (tmp paths, fingerprints) and versions are ignored.

    UPDATE_GOLDEN=1 rewrites the golden file instead.
    """
    saved = json.loads(path.read_text())
    got = _rounded({k: saved[k] for k in ("kind", "name", "result")})
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert json_close(got, json.loads(golden.read_text()), rel, abs_), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


def command_app() -> typer.Typer:
    """The three commands mounted as the lead mounts them, with the CLI's error handling."""
    from interp.cli import _Group
    from interp.commands import delta_analyses

    app = typer.Typer(cls=_Group, pretty_exceptions_enable=False)
    for name in ("ablate", "anatomy", "attribute"):
        app.command(name)(getattr(delta_analyses, name))
    return app


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread while these modules run, restored afterwards.

    The models here are tiny (hidden 32; MiniLM on one short pair) and gain nothing from a
    second thread, while on a shared two-core machine two threads that wait for each other
    made these files three to twenty times slower (64 s against 14 s for this one).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
