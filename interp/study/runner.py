"""Run a grid of presets x seeds as ordinary runs, resumably, and tabulate them.

Before anything trains, every run of the grid is planned against what is on disk:

    no run directory                  -> train
    finished, same settings           -> skip (its metrics are reused)
    not finished, same settings       -> resume (train_run continues from its saved state)
    any settings differ               -> refused: one InterpError naming each run and what differs
    the preset does not fit the base  -> failed (reported; the others still run)

"Same settings" means the same run as `records.manifest` defines it: the same method config,
training settings (the seed, pooling, batching and tie rule included; an older manifest that
does not record them is read with the values it was trained with), data (the fingerprints of
the splits and samples used) and base weights (sha256). A scale may state any training setting, its
pooling among them (`pooling = "pooler"` in grids.toml). So a
study can be killed and started again: nothing finished is redone and nothing is overwritten.
A run that fails while training (a non-finite loss or evaluation, say) is reported and the study goes on;
the tables are rewritten after every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from records.errors import InterpError
from records.manifest import Manifest, described, differences
from interp.study.grid import Grid, Scale, run_name
from interp.study.tables import build_tables, write_tables

SKIP, RESUME, TRAIN, FAIL = "skip", "resume", "train", "fail"
DONE = {SKIP: "skipped", RESUME: "resumed", TRAIN: "trained"}


@dataclass(frozen=True)
class PlannedRun:
    name: str
    preset: str
    seed: int
    action: str  # skip, resume, train or fail
    reason: str | None = None  # why it fails before training


@dataclass(frozen=True)
class RunOutcome:
    name: str
    preset: str
    seed: int
    status: str  # skipped, resumed, trained or failed
    metrics: dict | None = None
    error: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class StudyResult:
    grid: str
    outcomes: tuple[RunOutcome, ...]
    tables_json: Path
    tables_md: Path

    @property
    def failed(self) -> tuple[RunOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "failed")

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in ("trained", "resumed", "skipped", "failed")}
        for o in self.outcomes:
            counts[o.status] += 1
        return counts


@dataclass(frozen=True)
class Expected:
    """What every run of the study must have been made with, measured once before training."""

    base: dict  # the manifest's base block: encoder.describe() + weights_sha256
    data: dict  # split -> {"file", "pairs", "used", "fingerprint"}, as in the manifest
    parameters: dict  # preset -> ParameterCount as a dict, or {"error": ...} when it does not fit the base


def measure(*, presets: tuple[str, ...], data_dir: Path, base: str | None, scale: Scale, seed: int) -> Expected:
    """Load the base and the data once: weights hash, split fingerprints and each preset's parameters."""
    from trainers import methods
    from trainers.encoders import load_encoder
    from trainers.training.splits import load_split_data

    encoder = load_encoder(base)
    data = load_split_data(encoder, data_dir, max_len=scale.config(seed).max_len, train_limit=scale.train_limit, eval_limit=scale.eval_limit)
    parameters = {}
    for preset in presets:
        try:
            parameters[preset] = asdict(methods.count_parameters(encoder, methods.get_preset(preset)))
        except InterpError as exc:
            parameters[preset] = {"error": str(exc)}
    return Expected(encoder.describe() | {"weights_sha256": encoder.weights_hash}, data.describe(), parameters)


def plan_runs(*, grid: Grid, seeds: tuple[int, ...], scale: Scale, runs_dir: Path, expected: Expected) -> list[PlannedRun]:
    """Every run of the grid with what to do about it; InterpError listing every run that conflicts."""
    from trainers.training.runs import check_run_name, read_manifest

    plan, conflicts = [], []
    for preset in grid.presets:
        for seed in seeds:
            name = check_run_name(run_name(preset, seed))
            path = runs_dir / name
            unfit = expected.parameters[preset].get("error")
            if not path.exists():
                plan.append(PlannedRun(name, preset, seed, FAIL if unfit else TRAIN, unfit))
                continue
            try:
                manifest = read_manifest(path)
            except InterpError as exc:
                conflicts.append(f"{name}: {exc}")
                continue
            differences = settings_differences(manifest, preset=preset, method=grid.method(preset).to_dict(), train=scale.config(seed),
                                               expected=expected)
            if differences:
                conflicts.append(f"{name}: {'; '.join(differences)}")
            elif manifest.finished:
                plan.append(PlannedRun(name, preset, seed, SKIP))
            else:
                plan.append(PlannedRun(name, preset, seed, RESUME))
    if conflicts:
        raise InterpError(
            f"{len(conflicts)} run(s) in {runs_dir} were made with other settings than this study's, and are left as they are "
            f"(move them away or use another --runs-dir): " + " | ".join(conflicts)
        )
    return plan


def settings_differences(manifest: Manifest, *, preset: str, method: dict, train, expected: Expected) -> list[str]:
    """What differs between an existing run's manifest and this study's settings (`train`: a TrainConfig), one phrase each."""
    wanted = Manifest(preset=preset, method=method, train=asdict(train), base=expected.base, data=expected.data)
    return described(differences(manifest, wanted))


def run_study(
    *,
    grid: Grid,
    seeds: tuple[int, ...],
    scale: Scale,
    data_dir: Path,
    runs_dir: Path,
    base: str | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    wait: bool = False,
    log_with: str = "none",
    precision: str | None = None,
) -> StudyResult:
    """Train (or skip, or resume) every run of `grid` x `seeds` under runs_dir; write runs/study/<grid>/tables.*.

    The study's lock (`trainers.locks.study_lock_path`) is held throughout, and each run's while it
    trains: another process on the same grid, or writing one of its runs, is refused with a message
    naming it, or waited for with `wait`. A full disk stops the study (DiskFullError saying what was kept).
    `log_with`: the tracker each trained run also logs to (TrainConfig.log_with; not a setting runs are compared on).
    `precision`: fp32 or bf16 for every run (TrainConfig.precision, a setting runs are compared on); None: the scale's.
    """
    from trainers.devices import check_precision
    from trainers.locks import hold, study_lock_path

    if not seeds:
        raise InterpError("give at least one seed")
    if precision is not None:
        scale = replace(scale, train=tuple((k, v) for k, v in scale.train if k != "precision") + (("precision", check_precision(precision)),))
    data_dir, runs_dir = Path(data_dir), Path(runs_dir)
    with hold(study_lock_path(runs_dir, grid.name), f"study {grid.name!r} in {runs_dir}", wait=wait):
        return _run_study(grid=grid, seeds=seeds, scale=scale, data_dir=data_dir, runs_dir=runs_dir, base=base, device=device,
                          progress=progress, log=log, wait=wait, log_with=log_with)


def _run_study(*, grid: Grid, seeds: tuple[int, ...], scale: Scale, data_dir: Path, runs_dir: Path, base: str | None, device: str,
               progress: bool, log: Callable[[str], None], wait: bool, log_with: str = "none") -> StudyResult:
    from records.io import DiskFullError, disk_full
    from trainers.training.train import RunSpec, train_run

    expected = measure(presets=grid.presets, data_dir=data_dir, base=base, scale=scale, seed=seeds[0])
    plan = plan_runs(grid=grid, seeds=seeds, scale=scale, runs_dir=runs_dir, expected=expected)
    out_dir = runs_dir / "study" / grid.name

    def tabulate() -> tuple[Path, Path]:
        doc = build_tables(grid=grid, seeds=seeds, scale=scale, runs_dir=runs_dir, data_dir=data_dir, expected=expected)
        try:
            with disk_full(f"the tables into {out_dir}"):
                return write_tables(doc, out_dir)
        except DiskFullError as exc:
            raise DiskFullError(f"{exc}; kept: every run trained so far; each table file is whole (the earlier or the new one)") from None

    outcomes = []
    for i, run in enumerate(plan, 1):
        where = f"[{i}/{len(plan)}] {run.name}"
        if run.action == FAIL:
            outcomes.append(RunOutcome(run.name, run.preset, run.seed, "failed", error=run.reason))
            log(f"{where}: failed: {run.reason}")
            continue
        if run.action == SKIP:
            metrics = _read_metrics(runs_dir / run.name)
            outcomes.append(RunOutcome(run.name, run.preset, run.seed, "skipped", metrics))
            log(f"{where}: skipped (finished earlier): {_metrics_text(metrics)}")
            continue
        if progress:
            log(f"{where}: {'resuming' if run.action == RESUME else 'training'} (preset {run.preset}, seed {run.seed})")
        spec = RunSpec(name=run.name, method=grid.method(run.preset), data_dir=data_dir, preset=run.preset, base=base,
                       train_limit=scale.train_limit, eval_limit=scale.eval_limit)
        start = time.perf_counter()
        try:
            manifest = train_run(spec, replace(scale.config(run.seed), log_with=log_with), runs_dir=runs_dir, device=device, resume=run.action == RESUME, progress=progress,
                                 wait=wait)
        except DiskFullError as exc:  # the next runs would fail the same way
            raise DiskFullError(f"study {grid.name!r} stopped at run {i} of {len(plan)}, {run.name}: {exc}") from None
        except Exception as exc:  # one run failing must not stop the study; KeyboardInterrupt still does
            error = str(exc) if isinstance(exc, InterpError) else f"{type(exc).__name__}: {exc}"
            outcomes.append(RunOutcome(run.name, run.preset, run.seed, "failed", error=error, elapsed_s=time.perf_counter() - start))
            log(f"{where}: failed: {error}")
        else:
            elapsed = time.perf_counter() - start
            outcomes.append(RunOutcome(run.name, run.preset, run.seed, DONE[run.action], manifest.metrics, elapsed_s=elapsed))
            log(f"{where}: {DONE[run.action]} in {elapsed:.0f} s: {_metrics_text(manifest.metrics)}")
        tabulate()
    json_path, md_path = tabulate()
    return StudyResult(grid.name, tuple(outcomes), json_path, md_path)


def _read_metrics(path: Path) -> dict:
    from trainers.training.runs import read_manifest

    return read_manifest(path).metrics


def _metrics_text(m: dict) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
    return f"valid MRR {fmt(m.get('valid_mrr'))} (step {m.get('best_step', '-')}), test MRR {fmt(m.get('test_mrr'))}"
