"""One face for every analysis, and the one function that runs any of them.

An analysis is a class with (STYLE.md pattern 4, after captum's attribution classes):

    kind = "cka"                                  # the one place its results' kind is named
    @classmethod
    def prepare(cls, *, runs_dir, **arguments) -> Prepared
        # resolve run names (or 'base') and the data, check every option; nothing is loaded
    def __init__(self, ...)                       # binds the models (`Prepared.bind` calls it)
    def compute(self, data, **options) -> Result  # the inputs, checked once; a typed dataclass

`run_analysis(CKA, runs_dir=..., **arguments)` does the rest for all of them: prepare, refuse a
result path that holds something else before any model loads (`check_analysis`: all a launching
process runs before it starts N others), bind, compute, and save the result (with its inputs) as
runs/analyses/<kind>/<name>.json through `base.save_result` (process 0 of several).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from interp.analyses.base import result_path, save_result
from interp.analyses.checks import check_result_target
from trainers import parallel


class Analysis(Protocol):
    kind: ClassVar[str]

    @classmethod
    def prepare(cls, *, runs_dir: Path, **arguments: Any) -> Prepared: ...

    def compute(self, data: Any, **options: Any) -> Any: ...


@dataclass(frozen=True)
class Prepared:
    """What `prepare` resolved and checked, before any model is loaded."""

    name: str | Callable[[Any], str]  # the result's file name under runs/analyses/<kind>/ (from the result when only
    # binding can tell it, e.g. a layer spec checked against a depth the manifest does not record)
    bind: Callable[[], Any]  # loads the models and returns the bound analysis
    data: Any = None  # compute's first argument: examples, a rank table, or None
    options: dict = field(default_factory=dict)  # compute's keyword options
    inputs: Callable[[Any], dict] | dict = field(default_factory=dict)  # saved beside the result (may read the result)


def check_analysis(analysis: type[Analysis], *, runs_dir: Path, **arguments: Any) -> Prepared:
    """`analysis.prepare(...)` and, where the result's name is known, a check of its path: every input checked, nothing loaded."""
    prepared = analysis.prepare(runs_dir=Path(runs_dir), **arguments)
    if isinstance(prepared.name, str):
        check_result_target(result_path(Path(runs_dir), analysis.kind, prepared.name), analysis.kind)  # before any model loads
    return prepared


def run_analysis(analysis: type[Analysis], *, runs_dir: Path, **arguments: Any) -> tuple[Any, Path]:
    """Prepare, bind, compute and save `analysis`; (its result, the JSON written).

    On several processes (`trainers.parallel`) every one computes (its share) and gets the result;
    process 0 alone writes it, the others return the path it writes.
    """
    runs_dir = Path(runs_dir)
    prepared = check_analysis(analysis, runs_dir=runs_dir, **arguments)
    bound = prepared.bind()
    result = bound.compute(prepared.data, **prepared.options)
    name = prepared.name if isinstance(prepared.name, str) else prepared.name(result)
    inputs = prepared.inputs(result) if callable(prepared.inputs) else prepared.inputs
    if not parallel.is_main():
        return result, result_path(runs_dir, analysis.kind, name)
    return result, save_result(runs_dir, analysis.kind, name, result, inputs)
