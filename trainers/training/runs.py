"""Run directories: naming, finding, listing, and the manifest that describes a run.

    runs/NAME/
        adapter_config.json, adapter_model.safetensors   the best delta, in peft's format
        (model.safetensors for full fine-tuning)
        manifest.json    method, base, data fingerprints, hyperparameters, metrics, versions
        curves.json      loss per step, valid MRR per evaluation
        ranks.json       rank of the gold code for every test query, by idx
        state/           the last periodic state, for --resume (removed when the run ends)
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from trainers.errors import InterpError, did_you_mean

RESERVED = {"base", "analyses", "data", "report", "study"}  # names with another meaning under runs/
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "numpy", "interp")


def check_run_name(name: str) -> str:
    if "/" in name or "\\" in name or ".." in name or not _NAME.fullmatch(name):
        raise InterpError(
            f"run name {name!r} is not allowed: use letters, digits and . _ + - (no path separators, no '..')"
        )
    if name in RESERVED:
        raise InterpError(f"run name {name!r} is reserved; choose another")
    return name


@dataclass(frozen=True)
class RunInfo:
    name: str
    path: Path
    manifest: dict

    @property
    def finished(self) -> bool:
        return self.manifest.get("status") == "finished"

    @property
    def train_config(self):
        """The run's `TrainConfig`, with the choices older manifests did not record filled in as trained."""
        from trainers.training.loop import TrainConfig

        return TrainConfig.from_dict(self.manifest["train"])


def read_manifest(path: Path) -> dict:
    try:
        return json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise InterpError(f"{path}: not a run (no manifest.json)") from None
    except json.JSONDecodeError as exc:
        raise InterpError(f"{path / 'manifest.json'}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def list_runs(runs_dir: Path) -> list[RunInfo]:
    if not runs_dir.is_dir():
        return []
    runs = []
    for p in sorted(runs_dir.iterdir()):
        if p.name in RESERVED or not (p / "manifest.json").is_file():
            continue  # runs/data holds a data manifest, runs/analyses results
        manifest = read_manifest(p)
        if "method" in manifest:
            runs.append(RunInfo(p.name, p, manifest))
    return runs


def find_run(runs_dir: Path, name: str) -> RunInfo:
    check_run_name(name)
    path = runs_dir / name
    if not (path / "manifest.json").is_file():
        raise did_you_mean("run", name, [r.name for r in list_runs(runs_dir)], where=str(runs_dir))
    return RunInfo(name, path, read_manifest(path))


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
