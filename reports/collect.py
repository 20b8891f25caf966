"""Read everything a report shows from a runs directory: plain JSON, never a model.

    runs/NAME/manifest.json, curves.json, adapter_model.safetensors (its header: parameter shapes)
    runs/analyses/<kind>/<name>.json       (interp/analyses/base.py `save_result`)
    runs/study/<grid>/tables.json          (`interp study`)
    runs/analyses/eval/base-<label>.json   (`interp eval base`: the untrained base's metrics, the zero-shot row)

A file that cannot be read becomes a `problem` the index lists (and the command prints), not a
failed build: one broken run must not hide the others. Runs are grouped across seeds by
`records.manifest.group_by_config`, the rule `interp compare` pools seeds by: runs with the same
preset, method, training settings apart from the seed, base weights and data, and distinct seeds, are one
group, and their valid and test MRR are reported as mean and sample std.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.kinds import KINDS
from records.manifest import Manifest, ManifestError, group_by_config, group_label
from records.places import NOT_RUNS
from records.summaries import summarize


@dataclass
class Run:
    name: str
    manifest: Manifest
    curves: dict | None
    modules: list[dict]  # trainable parameters per module kind and layer, from the delta's header
    test_metrics: dict = field(default_factory=dict)  # Manifest.split_metrics("test"): an older run's from its ranks.json

    @property
    def metrics(self) -> dict:
        return self.manifest.metrics

    @property
    def label(self) -> str:
        return self.manifest.label or self.name


@dataclass
class Group:
    """Runs that differ only in their seed."""

    label: str
    group: str  # method family for the budget plot: lora, prefix, adapter-h, ..., lora+adapter-ffn, full
    runs: list[Run]
    trainable: int | None
    share_of_base: float | None
    valid: dict
    test: dict
    best_step: dict
    metrics: dict = field(default_factory=dict)  # TEST_METRICS name -> mean_std over the seeds (mean None unless every seed recorded it)


TEST_METRICS = ("mrr@10", "ndcg@10", "recall@1")  # the test split's metrics the runs table shows beside its MRR


@dataclass
class Site:
    runs_dir: Path
    runs: list[Run] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    analyses: dict[str, list[dict]] = field(default_factory=dict)  # kind -> saved results, sorted by file name
    sources: dict[int, Path] = field(default_factory=dict)  # id() of a saved result or study -> the file it was read from
    studies: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    zero_shot: list[dict] = field(default_factory=list)  # `interp eval base` results, by file name


def printable(text: str) -> str:
    """`text` on one line, safe to print and to write as UTF-8: control characters (newlines, NUL),
    undecodable bytes of a file name and lone surrogates escaped as Python writes them."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def read_json(path: Path, problems: list[str]) -> Any | None:
    """The JSON in `path`, or None with a problem listed: unreadable, not UTF-8, not JSON, nested too deeply,
    or not a regular file (a FIFO would never finish reading)."""
    try:
        if not path.is_file():
            problems.append(f"{printable(str(path))}: cannot be read (not a regular file)")
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.append(f"{printable(str(path))}:{exc.lineno}: not valid JSON ({exc.msg})")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: an integer of 5,000 digits
        reason = "nested too deeply" if isinstance(exc, RecursionError) else printable(str(exc))
        problems.append(f"{printable(str(path))}: cannot be read ({reason})")
    return None


def collect(runs_dir: Path) -> Site:
    site = Site(runs_dir=runs_dir)
    if runs_dir.is_dir():
        for path in sorted(runs_dir.iterdir()):
            hidden = path.name.startswith(".")  # an interrupted write's temporary directory, never a run
            if not hidden and path.name not in NOT_RUNS and (path / "manifest.json").is_file():
                run = _read_run(path, site.problems)
                if run is not None:
                    site.runs.append(run)
        for kind in KINDS:
            results = []
            for path in sorted((runs_dir / "analyses" / kind).glob("*.json")):
                saved = read_json(path, site.problems)
                if _valid_result(saved, kind, path, site.problems):
                    results.append(saved)
                    site.sources[id(saved)] = path
            site.analyses[kind] = results
        for path in sorted((runs_dir / "analyses" / "eval").glob("base-*.json")):
            saved = read_json(path, site.problems)
            if _valid_zero_shot(saved, path, site.problems):
                site.zero_shot.append(saved)
                site.sources[id(saved)] = path
        for path in sorted((runs_dir / "study").glob("*/tables.json")):
            study = read_json(path, site.problems)
            if isinstance(study, dict) and study.get("kind") == "study" and isinstance(study.get("tables"), list):
                site.studies.append(study)
                site.sources[id(study)] = path
            elif study is not None:
                site.problems.append(f"{printable(str(path))}: not a study tables file (no kind 'study' with tables)")
    else:
        site.analyses = {kind: [] for kind in KINDS}
    site.groups = group_runs(site.runs)
    return site


def _read_run(path: Path, problems: list[str]) -> Run | None:
    file = path / "manifest.json"
    data = read_json(file, problems)
    if data is None:
        return None
    try:
        manifest = Manifest.from_dict(data, printable(str(file)))
    except ManifestError as exc:
        problems.append(str(exc))
        return None
    curves = read_json(path / "curves.json", problems) if (path / "curves.json").is_file() else None
    if curves is not None and not isinstance(curves, dict):
        problems.append(f"{printable(str(path / 'curves.json'))}: not training curves (not an object)")
        curves = None
    return Run(name=path.name, manifest=manifest, curves=curves, modules=_modules(*_delta_weights(path, manifest), problems=problems),
               test_metrics=manifest.split_metrics("test", path))


def _valid_zero_shot(saved: Any, path: Path, problems: list[str]) -> bool:
    """An `interp eval base` result: kind "eval", a string name and file, metrics of numbers."""
    if saved is None:
        return False
    metrics = saved.get("metrics") if isinstance(saved, dict) else None
    if not (isinstance(saved, dict) and saved.get("kind") == "eval" and isinstance(saved.get("name"), str)
            and isinstance(saved.get("file"), str) and isinstance(metrics, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())):
        problems.append(f"{printable(str(path))}: not an `interp eval base` result (kind 'eval', name, file, metrics of numbers)")
        return False
    return True


def _valid_result(saved: Any, kind: str, path: Path, problems: list[str]) -> bool:
    if saved is None:
        return False
    if not (isinstance(saved, dict) and saved.get("kind") == kind and isinstance(saved.get("result"), dict)):
        problems.append(f"{printable(str(path))}: not an interp {kind} result")
        return False
    if not isinstance(saved.get("name"), str):
        problems.append(f"{printable(str(path))}: not an interp {kind} result (its name is not a string)")
        return False
    return True


# A prefix's initial P_k and P_v (trainers.methods.prefix: buffers saved beside the trained ones), alone or in a union,
# whose keys carry the union's prefix: '...prefix.kv_prefix_init_key', '...prefix.union_kv_prefix_init_value'.
_INIT_VALUES = re.compile(r"(^|\.)(union_)?kv_prefix_init_(key|value)(\.|$)")


def _delta_weights(path: Path, manifest: Manifest) -> tuple[Path, frozenset]:
    """Where a run's adapter_model.safetensors is, and the keys in it that are no part of the delta: the run's own directory;
    for a peft adapter imported by reference, the directory its manifest names (`source.path`), less a task head's keys
    (`source.ignored`)."""
    source = manifest.extra.get("source")
    if not isinstance(source, dict):
        return path, frozenset()
    ignored = frozenset(k for k in source.get("ignored") or () if isinstance(k, str)) if isinstance(source.get("ignored"), list) else frozenset()
    where = source.get("path")
    if source.get("kind") == "peft" and not source.get("copied") and isinstance(where, str) and Path(where).is_dir():
        return Path(where), ignored
    return path, ignored


def _modules(path: Path, ignored: frozenset = frozenset(), *, problems: list[str]) -> list[dict]:
    """Trainable parameters per (module, layer) from the safetensors header in `path`, without loading tensors; `ignored`
    keys left out."""
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return []
    try:
        with weights.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
    except (OSError, ValueError, RecursionError) as exc:
        problems.append(f"{printable(str(weights))}: unreadable safetensors header ({printable(str(exc))})")
        return []
    counts: dict[tuple[str, int | None], int] = {}
    for name, info in (header.items() if isinstance(header, dict) else [("", None)]):
        if name == "__metadata__" or name in ignored or _INIT_VALUES.search(name):  # a prefix's initial values: not trained
            continue
        shape = info.get("shape", []) if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            problems.append(f"{printable(str(weights))}: unreadable safetensors header (no shape for {printable(name)!r})")
            return []
        module, layer = module_of(name)
        numel = 1
        for dim in shape:
            numel *= dim
        counts[(module, layer)] = counts.get((module, layer), 0) + numel
    return [{"module": m, "layer": layer, "parameters": n} for (m, layer), n in
            sorted(counts.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1]))]


def module_of(name: str) -> tuple[str, int | None]:
    """'base_model.model.encoder.layer.3.attention.self.query.lora_A.weight' -> ('attention.self.query.lora_A', 4)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layer" and parts[i + 1].isdigit():
            rest = [p for p in parts[i + 2:] if p not in ("weight", "bias", "default")]
            return ".".join(rest) or parts[-1], int(parts[i + 1]) + 1
    rest = [p for p in parts if p not in ("base_model", "model", "weight", "default")]
    return ".".join(rest[-3:]) or name, None


def method_group(method: dict) -> str:
    kind = method.get("method", "?")
    if kind == "adapter":
        return {"both": "adapter-h", "attn": "adapter-attn", "ffn": "adapter-ffn"}.get(method.get("placement"), "adapter")
    if kind == "union":
        return "+".join(method_group(part) for part in method.get("parts", []))
    return kind


def _every(runs: list[Run], key: str) -> dict:
    """mean_std of the test split's `key` over `runs`; no mean unless every run recorded it (older runs did not)."""
    values = [run.test_metrics.get(key) for run in runs]
    return summarize([] if None in values else values).mean_std()


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs of one configuration with distinct seeds as one group (`records.manifest.group_by_config`), every other run alone."""
    by_name = {run.name: run for run in runs}
    together, _ = group_by_config({run.name: run.manifest for run in runs})
    groups = []
    for names in together:
        members = [by_name[n] for n in names]
        first = members[0].manifest
        finished = [r for r in members if r.metrics.get("test_mrr") is not None]
        groups.append(Group(
            label=(group_label([r.manifest for r in members]) if len(members) > 1 else None) or members[0].label,
            group=method_group(first.method),
            runs=members,
            trainable=first.parameters.get("trainable"),
            share_of_base=first.parameters.get("share_of_base"),
            valid=summarize([r.metrics["valid_mrr"] for r in finished if r.metrics.get("valid_mrr") is not None]).mean_std(),
            test=summarize([r.metrics["test_mrr"] for r in finished]).mean_std(),
            best_step=summarize([r.metrics["best_step"] for r in finished if r.metrics.get("best_step") is not None]).mean_std(),
            metrics={key: _every(finished, key) for key in TEST_METRICS},
        ))
    return sorted(groups, key=lambda g: (g.group, g.trainable or 0, g.label))
