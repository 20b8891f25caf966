"""Run directories: naming, finding, listing, and the manifest that describes a run.

A run is named bare (`check_run_name`: no path separators); an argument with a '/' is a directory
holding a delta from anywhere, which `find_run` takes as a run too (`trainers.foreign`).

    runs/NAME/
        adapter_config.json, adapter_model.safetensors   the best delta, in peft's format
        (model.safetensors for full fine-tuning)
        manifest.json    method, base, data fingerprints, hyperparameters, metrics, versions (`records.manifest`)
        curves.json      loss per step, valid MRR per evaluation
        ranks.json       rank of the gold code for every test query, by idx
        state/           the last periodic state, for --resume (removed when the run ends)
        logs/            the tracker's curves (`interp train --log-with`), kept across --resume

    runs/.NAME.lock      held while a process writes the run (`trainers.locks`)
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from records.errors import InterpError, did_you_mean
from records.io import SWAP_TEMP, SWAP_JOURNAL, leftovers, recover_dir
from trainers.locks import hold, run_lock_path, try_hold
from records.manifest import MANIFEST, Manifest, ManifestError
from records.places import NOT_RUNS

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "numpy", "interp")


LOGS_DIR = "logs"  # a tracker's files inside a run (loop.tracking); not a checkpoint

NAME_LIMIT = 100  # characters of a run name (a directory name, listed in tables and report pages)


def check_run_name(name: str) -> str:
    if len(name) > NAME_LIMIT:
        raise InterpError(f"run name {name[:20]!r}...: {len(name)} characters, at most {NAME_LIMIT}")
    if "/" in name or "\\" in name or ".." in name or not _NAME.fullmatch(name):
        raise InterpError(
            f"run name {name!r} is not allowed: use letters, digits and . _ + - (no path separators, no '..')"
        )
    if name in NOT_RUNS:
        raise InterpError(f"run name {name!r} is reserved; choose another")
    return name


@dataclass(frozen=True)
class RunInfo:
    name: str
    path: Path
    manifest: Manifest

    @property
    def finished(self) -> bool:
        return self.manifest.finished

    @property
    def delta_path(self) -> Path:
        """Where the delta's files are: the run's directory, or the directory an imported run references (`trainers.foreign`)."""
        from trainers.foreign import delta_location

        return delta_location(self.path)

    @property
    def source(self) -> dict | None:
        """What `interp import` or a path recorded of a foreign delta (where, what, base, pooling, max_len, data); None for the project's runs."""
        source = self.manifest.extra.get("source")
        return dict(source) if isinstance(source, dict) else None

    @property
    def train_config(self):
        """The run's `TrainConfig`, with the choices older manifests did not record filled in as trained."""
        from trainers.training.loop import TrainConfig  # torch: only where settings are used

        return TrainConfig.from_dict(self.manifest.train)


def read_manifest(path: Path) -> Manifest:
    """The manifest of the run at `path`, checked (`Manifest.read`), its training settings too: InterpError naming
    the file (and the key) if it is damaged."""
    manifest = Manifest.read(path)
    try:
        from trainers.training.loop import TrainConfig

        TrainConfig.from_dict(manifest.train)  # the settings validate themselves
    except (InterpError, TypeError, ValueError) as exc:
        raise ManifestError(f"{Path(path) / MANIFEST}: damaged run manifest: 'train': {exc}") from None
    return manifest


def _other_manifest(path: Path) -> bool:
    """Whether path/manifest.json is not a run's at all (a data directory's, say), rather than a damaged run's."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and not {"method", "train", "status"} & manifest.keys()


def scan_runs(runs_dir: Path) -> tuple[list[RunInfo], list[InterpError]]:
    """The runs under `runs_dir`, and an error for each damaged one (skipped).

    Hidden entries (locks, temporary and old directories of a swap) are never runs; what an
    interrupted write left is tidied where no process holds the run's lock (`tidy_run`).
    """
    if not runs_dir.is_dir():
        return [], []
    for name in sorted({m["name"] for p in runs_dir.iterdir() if (m := SWAP_TEMP.fullmatch(p.name))}
                       | {p.name[1:-len(SWAP_JOURNAL)] for p in runs_dir.glob(f".*{SWAP_JOURNAL}")}):
        if _NAME.fullmatch(name) and name not in NOT_RUNS:
            tidy_run(runs_dir, name)
    runs, damaged = [], []
    for p in sorted(runs_dir.iterdir()):
        if p.name.startswith(".") or p.name in NOT_RUNS or not (p / "manifest.json").is_file():
            continue  # runs/data holds a data manifest, runs/analyses results
        tidy_run(runs_dir, p.name)
        try:
            runs.append(RunInfo(p.name, p, read_manifest(p)))
        except InterpError as exc:
            if not _other_manifest(p):
                damaged.append(exc)
    return runs, damaged


def list_runs(runs_dir: Path) -> list[RunInfo]:
    """The runs under `runs_dir` whose manifests can be read (`scan_runs` also says which cannot)."""
    return scan_runs(runs_dir)[0]


def find_run(runs_dir: Path, name: str, *, foreign=None) -> RunInfo:
    """The run `name` under `runs_dir`, or, where `name` is a path (it holds a '/', or is '.' or '..': the rule of
    `trainers.foreign`), the delta in that directory: a run of this project as it is, a peft adapter or a full model
    directory as a run whose manifest is synthesized, its missing choices from `foreign` (`ForeignOptions`, for paths only)."""
    from trainers.foreign import ForeignOptions, is_path_name

    if is_path_name(name):
        return _path_run(Path(name), name=name, runs_dir=runs_dir, options=foreign)
    if foreign is not None and foreign != ForeignOptions():
        raise InterpError(f"run {name!r} records its base, pooling and max_len; --base, --pooling and --max-len are for a path "
                          "(a peft adapter or a model directory, such as ./adapter)")
    check_run_name(name)
    path = runs_dir / name
    tidy_run(runs_dir, name)
    if not (path / "manifest.json").is_file():
        raise did_you_mean("run", name, [r.name for r in list_runs(runs_dir)], where=str(runs_dir))
    return RunInfo(name, path, read_manifest(path))


def _foreign_manifest(directory: Path, **settings) -> Manifest:
    """`trainers.foreign_record.foreign_manifest`, with this checkout's versions recorded as a trained run's are."""
    from trainers.foreign_record import foreign_manifest

    return foreign_manifest(directory, **settings).replace(versions=package_versions(), code_version=code_version())


def _path_run(path: Path, *, name: str, runs_dir: Path, options=None) -> RunInfo:
    """The directory `path` as a run: a run of this project as it is, any other delta with a synthesized manifest."""
    from trainers.foreign import ForeignOptions, delta_kind

    directory = Path(path).expanduser()
    if delta_kind(directory) == "run":
        if options is not None and options != ForeignOptions():
            raise InterpError(f"{path}: a run of this project records its base, pooling and max_len; leave out --base, --pooling, --max-len")
        return RunInfo(name, directory, read_manifest(directory))
    return RunInfo(name, directory.resolve(), _foreign_manifest(directory, name=name, runs_dir=runs_dir, options=options))


def import_run(path: Path, *, name: str, runs_dir: Path, options=None, copy: bool = False) -> RunInfo:
    """Register the delta at `path` (a peft adapter, a model directory, the project's own delta; `trainers.foreign`) as
    runs_dir/NAME: a manifest whose "source" names the directory, the weights referenced there or, with `copy`, copied.

    The delta is loaded on its base once, so a misfit is refused here; nothing is written then, nor for an existing NAME.
    """
    from trainers.encoders import load_encoder
    from trainers.foreign import COPIED, SOURCE, delta_kind, load_foreign
    from records.io import atomic_dir
    from trainers.methods.delta import load_delta

    check_run_name(name)
    runs_dir, directory = Path(runs_dir), Path(path).expanduser()
    target = runs_dir / name
    if target.exists():
        raise InterpError(f"--name {name}: {target} already exists; choose another name")
    if delta_kind(directory) == "run":
        raise InterpError(f"{path}: already a run of this project (its {MANIFEST} names a method); use it by path, or copy it into {runs_dir}")
    manifest = _foreign_manifest(directory, name=name, runs_dir=runs_dir, options=options, copied=copy)
    source = Path(manifest.extra[SOURCE]["path"])
    (load_delta if manifest.extra[SOURCE]["kind"] == "interp" else load_foreign)(load_encoder(manifest.base["source"]), source)
    with hold(run_lock_path(runs_dir, name), f"run {name!r} in {runs_dir}"):
        if target.exists():
            raise InterpError(f"--name {name}: {target} already exists; choose another name")
        with atomic_dir(target) as tmp:
            if copy:
                for p in source.iterdir():
                    if p.is_file() and (p.suffix == ".safetensors" or p.name in COPIED):
                        shutil.copy2(p, tmp / p.name)
            manifest.write(tmp)
    return RunInfo(name, target, manifest)


def record_evaluation(run: RunInfo, result, *, split: str, precision: str, data_file: Path | None = None) -> str | None:
    """Record `result` (`trainers.training.scoring.RunEvaluation` of `run`) as the metrics of an imported run, where a
    trained run's are: the manifest's `metrics.<split>_mrr` and `metrics.<split>` (`Manifest.split_metrics`), so
    `interp runs`, the study tables and the report show it. Returns a line saying what was recorded, or why not.

    Only for a run `import_run` registered (a trained run's metrics are its training's; a delta used by path has no
    manifest to write), scored on its own valid or test split (no --data) whose examples are still the ones fingerprinted
    at import, under the tie rule and precision its manifest records. Written atomically, holding the run's lock.
    """
    from records.manifest import METRIC_SPLITS
    from trainers.data import fingerprint, read_split
    from trainers.training.splits import split_fingerprint

    if run.source is None or not (run.path / MANIFEST).is_file() or data_file is not None or split not in METRIC_SPLITS:
        return None
    manifest, why = run.manifest, None
    recorded = (manifest.data.get(split) or {}).get("fingerprint")
    if result.ties != manifest.train.get("ties"):
        why = f"ties {result.ties}, but the run records {manifest.train.get('ties')}"
    elif precision != manifest.train.get("precision"):
        why = f"{precision}, but the run records {manifest.train.get('precision')}"
    elif recorded is None or split_fingerprint(fingerprint(result.file), read_split(result.file)) != recorded:
        why = f"{result.file} is not the {split} split fingerprinted when the run was imported ({str(recorded)[:12]})"
    if why is not None:
        return f"not recorded in {run.path / MANIFEST}: {why}"
    with hold(run_lock_path(run.path.parent, run.name), f"run {run.name!r} in {run.path.parent}"):
        current = read_manifest(run.path)  # as it is now: another split's metrics recorded since are kept
        metrics = dict(current.metrics) | {f"{split}_mrr": result.evaluation.mrr, split: dict(result.evaluation.metrics)}
        current.replace(metrics=metrics).write(run.path)
    return f"{split} metrics recorded in {run.path / MANIFEST}"


@contextlib.contextmanager
def writing_into(run: RunInfo, target: Path | None) -> Iterator[None]:
    """Hold the run's lock for the block if `target` (a file a command will write) lies inside the run's
    directory, where a training process swapping the directory would lose it; LockedError if one holds it."""
    if target is None or not Path(target).resolve().is_relative_to(run.path.resolve()):
        yield
        return
    with hold(run_lock_path(run.path.parent, run.name), f"run {run.name!r} in {run.path.parent}"):
        yield


def half_made(path: Path) -> bool:
    """Whether `path` is a run that never saved a checkpoint: a manifest (not finished) and nothing else of ours (a tracker's logs aside)."""
    if not (path / "manifest.json").is_file() or {p.name for p in path.iterdir() if not p.name.startswith(".")} - {LOGS_DIR} != {"manifest.json"}:
        return False
    try:
        return not read_manifest(path).finished
    except InterpError:
        return False


def _inner_leftovers(path: Path) -> list[Path]:
    """Temporary files and directories an interrupted write left inside a run (.state.*.tmp, .manifest.json.*.tmp)."""
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old", SWAP_JOURNAL))]


def recover_run(path: Path) -> None:
    """Finish or undo interrupted swaps of the run at `path` and of its state; remove what interrupted writes left.

    Only by the holder of the run's lock (`trainers.locks.run_lock_path`).
    """
    recover_dir(path)
    if path.is_dir():
        recover_dir(path / "state")
        for p in _inner_leftovers(path):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def tidy_run(runs_dir: Path, name: str) -> None:
    """`recover_run` if an interrupted write left something of run `name` and no process is writing it now."""
    path = runs_dir / name
    if not leftovers(path) and not _inner_leftovers(path):
        return
    with try_hold(run_lock_path(runs_dir, name)) as free:
        if free:
            recover_run(path)


def package_versions() -> dict[str, str]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return versions


def code_version() -> str:
    """The git commit of this checkout (with '+dirty' for local changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return package_versions().get("interp", "unknown")
