"""What every analysis shares: resolving run names (and `base`), fingerprints, saving results.

A saved result is plain JSON, so `reports/` can render it without torch:

    {"kind": "attn-diff", "name": "lora64-vs-lora256", "inputs": {...fingerprints...},
     "result": {...}, "versions": {...}, "code_version": "..."}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from interp.analyses.checks import check_result_target, check_runs_dir
from records.errors import InterpError
from records.io import write_json
from trainers.training.runs import RunInfo, code_version, find_run, list_runs, package_versions

BASE = "base"  # the run name that means "the untrained base model"


@dataclass(frozen=True)
class RunRef:
    """A run, or the untrained base of `base_of` when `name == 'base'`."""

    name: str
    run: RunInfo | None  # None for the base
    base: dict  # the base encoder as recorded in a manifest (source, weights_sha256, ...)

    @property
    def is_base(self) -> bool:
        return self.run is None

    def fingerprint(self) -> dict:
        """Identity of this input: the base weights, and the delta's files for a run."""
        out = {"name": self.name, "base_sha256": self.base["weights_sha256"]}
        if self.run is not None:
            out["delta_sha256"] = delta_fingerprint(self.run.delta_path)
            if self.run.source is not None:  # a foreign delta: where it is, and the choices it did not carry (trainers.foreign)
                out["source"] = self.run.source
        return out


def delta_fingerprint(path: Path) -> str:
    """sha256 over the run's saved delta files (peft format or full weights)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "adapter_config.json"))
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()


def resolve_runs(runs_dir: Path, names: list[str], *, foreign=None) -> list[RunRef]:
    """Resolve run names; `base` takes the base of the other runs. All must share one base.

    A name with a '/' is a directory (`trainers.foreign`); `foreign` (`ForeignOptions`: --base, --pooling, --max-len)
    fills in what such a delta lacks, and is refused when no name is a directory (runs record their own).
    """
    check_runs_dir(runs_dir)
    check_foreign(names, foreign)
    runs = {n: _find(runs_dir, n, foreign) for n in names if n != BASE}
    bases = {n: r.manifest.base for n, r in runs.items()}
    if not bases:
        known = [r.name for r in list_runs(runs_dir)]
        if not known:
            raise InterpError(f"'base' needs a trained run beside it to know which base model is meant; no runs in {runs_dir}")
        bases = {known[0]: find_run(runs_dir, known[0]).manifest.base}
    hashes = {n: b["weights_sha256"] for n, b in bases.items()}
    if len(set(hashes.values())) > 1:
        (a, ha), (b, hb) = list(hashes.items())[:2]
        raise InterpError(f"runs {a!r} and {b!r} have different base models ({ha[:12]} vs {hb[:12]}); they cannot be compared")
    base = next(iter(bases.values()))
    return [RunRef(n, runs.get(n), base) for n in names]


def depth_of(refs: list[RunRef]) -> int | None:
    """The base encoder's number of layers as the manifests record it (None where they do not say)."""
    depth = refs[0].base.get("layers") if refs else None
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else None


def check_foreign(names: list[str], foreign) -> None:
    """`foreign` (--base, --pooling, --max-len) given, and no name a directory: InterpError, worded as `interp eval`'s."""
    from trainers.foreign import ForeignOptions, is_path_name

    if foreign is None or foreign == ForeignOptions() or any(is_path_name(n) for n in names):
        return
    named = [n for n in names if n != BASE]
    what = f"run {named[0]!r} records its base, pooling and max_len" if named else f"{BASE!r} is the base of the runs"
    raise InterpError(f"{what}; --base, --pooling and --max-len are for a path (a peft adapter or a model directory, "
                      "such as ./adapter)")


def _find(runs_dir: Path, name: str, foreign=None) -> RunInfo:
    from trainers.foreign import is_path_name

    try:
        return find_run(runs_dir, name, foreign=foreign if is_path_name(name) else None)
    except OSError as exc:  # a name too long for the file system, a folder that cannot be read
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise InterpError(f"run {shown!r}: cannot be looked up in {runs_dir} ({exc.strerror or exc})") from None


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def result_path(runs_dir: Path, kind: str, name: str) -> Path:
    """runs/analyses/<kind>/<name>.json; a run given as a path ('./adapter') leaves no separator in the name."""
    name = re.sub(r"[/\\]+", "_", name).lstrip("._") if re.search(r"[/\\]", name) else name
    return runs_dir / "analyses" / kind / f"{name}.json"


def save_result(runs_dir: Path, kind: str, name: str, result: Any, inputs: dict) -> Path:
    """Write an analysis result atomically to runs/analyses/<kind>/<name>.json.

    InterpError, with nothing written, when that path holds anything but an earlier `kind` result
    or cannot be written (the message names the path and why).
    """
    path = result_path(runs_dir, kind, name)
    return write_result(path, kind, name, result, inputs)


def result_payload(kind: str, name: str, result: Any, inputs: dict) -> dict:
    """The saved form of a result: {"kind", "name", "inputs", "result" (plain JSON), "versions", "code_version"}."""
    return {
        "kind": kind,
        "name": name,
        "inputs": inputs,
        "result": json.loads(json.dumps(result, default=_plain)),
        "versions": package_versions(),
        "code_version": code_version(),
    }


def write_result(path: Path, kind: str, name: str, result: Any, inputs: dict) -> Path:
    """`result_payload` written atomically at `path`; InterpError, nothing written, as `save_result`."""
    check_result_target(path, kind)
    payload = result_payload(kind, name, result, inputs)
    try:
        write_json(path, payload)
    except OSError as exc:  # no space, no permission, a file where a folder should be, a name too long
        raise InterpError(f"{path}: cannot write the {kind} result ({exc.strerror or exc}); nothing was written") from None
    return path
