"""A run's manifest (runs/NAME/manifest.json): one typed record, read, checked and written here, and
the one rule of which runs are one configuration. Plain Python (no torch, peft or transformers):
the report imports it.

    Manifest.read(path)          the manifest of the run at `path`, checked; InterpError naming the file and key
    Manifest.from_dict(data)     the same from parsed JSON (the report's reader gives what it read)
    manifest.to_dict()           the JSON written to disk (`write(path)` writes it)
    config_key(m)                what determines the trained weights but the seed (below)
    differences(a, b)            every field that differs, the seed included, as `Difference`s
    differs_only_in_seed(a, b)   one configuration, two seeds
    group_by_config(manifests)   runs of one configuration with distinct seeds, pooled; the rest alone

One configuration. Two runs are one configuration when they agree on the preset they were
asked for (none is a value too), the method (as today's method config writes it: an older
LoRA's numeric `scaling` reads as the rule it was trained under), every training setting but
the seed (and but `UNCOMPARED`, which change no number), the base weights (sha256) and the
data (each split's fingerprint). Names, status, metrics, timings, device, processes and
versions are not the configuration. Two runs of
one configuration are the same run when their seeds agree too (resume, `interp study`), and
seeds of it when they do not (the report's groups, `interp compare`, the seed-noise nulls).

Older manifests. A field added over time is read with the value such runs were trained with:

    num_processes      1 (before data parallel training)
    train.pooling      "cls"
    train.batching     from the old `train.bucket`: true or absent "bucketed", false "codexglue"
    train.ties         "optimistic"
    train.precision    "fp32"
    method             (LoRA) a number under `scaling` is the factor, rule "alpha" (`trainers.methods`)

Metrics added over time are not made up: a manifest without metrics.valid/test (MRR@10, NDCG@10,
Recall@k) has only valid_mrr and test_mrr, and the test ones from the run's own ranks.json where
it is provably the one the test MRR came from (`split_metrics`, `ranks_file_metrics`).

Keys this module does not know are kept (`extra`) and written back as they were.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from records.errors import InterpError
from records.places import MANIFEST

METRIC_SPLITS = ("valid", "test")  # metrics.<split>: every retrieval metric of the best delta on that split
UNCOMPARED = ("log_with",)  # training settings that change no number: where the curves are also logged
LEGACY_TRAIN = {"pooling": "cls", "ties": "optimistic", "precision": "fp32"}  # what runs did before these were recorded
_ORDER = ("name", "status", "preset", "method", "parameters", "base", "data", "train", "device", "mixed_precision", "num_processes",
          "versions", "code_version", "elapsed_s", "metrics", "error")  # as train_run writes them
_SECTIONS = ("method", "base", "train", "data", "metrics", "parameters", "versions")
_TEXTS = ("name", "status", "device", "mixed_precision", "code_version", "error")
_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number",
          type(None): "null"}


class ManifestError(InterpError):
    """A run manifest that cannot be read or has the wrong shape; names the file and the key."""


def _kind(value) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def upgrade_train(train: Mapping) -> dict:
    """A manifest's "train" section with the choices older manifests did not record filled in as trained."""
    out = dict(train)
    bucket = out.pop("bucket", True)
    for key, value in LEGACY_TRAIN.items():
        out.setdefault(key, value)
    out.setdefault("batching", "bucketed" if bucket else "codexglue")
    return out


@dataclass(frozen=True)
class Manifest:
    """What train_run records about a run (see trainers/training/train.py `_manifest`)."""

    method: dict  # the method config, `MethodConfig.to_dict()`
    name: str | None = None
    status: str | None = None  # running | finished | stopped
    preset: str | None = None
    parameters: dict = field(default_factory=dict)  # ParameterCount: trainable, share_of_base, method, ...
    base: dict = field(default_factory=dict)  # encoder.describe() + weights_sha256
    data: dict = field(default_factory=dict)  # split -> {"file", "pairs", "used", "fingerprint"}
    train: dict = field(default_factory=dict)  # TrainConfig as a dict (`upgrade_train` applied)
    device: str | None = None
    mixed_precision: str | None = None
    num_processes: int = 1  # data parallel; train.batch_size is the global batch
    versions: dict = field(default_factory=dict)
    code_version: str | None = None
    elapsed_s: float | None = None
    metrics: dict = field(default_factory=dict)  # best_step, valid_mrr, test_mrr, steps, evaluations, valid, test (finished runs)
    error: str | None = None  # why a stopped run stopped
    extra: dict = field(default_factory=dict)  # keys this module does not know, kept as read

    # -- reading and writing --------------------------------------------------------------------

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """The manifest of the run at `path` (a run directory), complete and checked."""
        file = Path(path) / MANIFEST
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: not a run (no {MANIFEST})") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{file}:{exc.lineno}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError:
            raise ManifestError(f"{file}: not UTF-8 text") from None
        except RecursionError:
            raise ManifestError(f"{file}: nested too deeply to be a run manifest") from None
        except ValueError as exc:  # an integer of 5,000 digits
            raise ManifestError(f"{file}: cannot be read ({exc})") from None
        except OSError as exc:
            raise ManifestError(f"{file}: cannot be read ({exc.strerror})") from None
        return cls.from_dict(data, file, complete=True)

    @classmethod
    def from_dict(cls, data: Any, file: Path | str | None = None, *, complete: bool = False) -> Manifest:
        """`data` (parsed JSON) as a Manifest; ManifestError naming `file` and the key where its shape is wrong.

        Every reader needs the sections to be what they say (objects, strings, numbers);
        `complete` also asks for what loading the run's weights needs: the method's name, the
        base's source and weights hash, and a training section.
        """
        check_shape(data, file, complete=complete)
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        values["train"] = upgrade_train(values.get("train", {}))
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict:
        """The JSON on disk: known fields in the order train_run writes them (None and empty metrics left out), then the rest."""
        out = {}
        for name in _ORDER:
            value = getattr(self, name)
            if (value is None and name != "preset") or (name == "metrics" and not value):
                continue
            out[name] = value
        return out | self.extra

    def write(self, path: Path) -> None:
        """Write runs/NAME/manifest.json atomically (`path` is the run directory)."""
        from records.io import write_json

        write_json(Path(path) / MANIFEST, self.to_dict())

    def replace(self, **changes) -> Manifest:
        return replace(self, **changes)

    # -- what readers ask -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def seed(self) -> int | None:
        return self.train.get("seed")

    @property
    def label(self) -> str | None:
        """What tables call the run's configuration: its preset, else its method's name (None: neither is recorded)."""
        return self.preset or self.parameters.get("method")

    def split_metrics(self, split: str, run_dir: Path | None = None) -> dict[str, float]:
        """{"mrr", "mrr@10", "ndcg@10", "recall@1", ...} of the best delta on `split` ("valid" or "test"), as recorded.

        Runs that predate them recorded only `<split>_mrr`. For the test split, with `run_dir`, the
        run's ranks.json gives them when it is this run's (`ranks_file_metrics`); else the MRR alone
        ({} when not even it), never a guess.
        """
        recorded = dict(self.metrics.get(split) or {})
        if not recorded and split == "test" and run_dir is not None:
            recorded = ranks_file_metrics(self, Path(run_dir)) or {}
        if not recorded and isinstance(self.metrics.get(f"{split}_mrr"), (int, float)):
            recorded["mrr"] = self.metrics[f"{split}_mrr"]
        return recorded

    @property
    def weights_sha256(self) -> str | None:
        return self.base.get("weights_sha256")

    @property
    def fingerprints(self) -> dict[str, str | None]:
        """split -> the fingerprint of the examples used (file and sample)."""
        return {split: (info or {}).get("fingerprint") for split, info in self.data.items()}

    @property
    def trained_method(self) -> dict:
        """The method section as today's `to_dict()` writes it (older spellings read as trained); as recorded if unreadable."""
        from trainers.methods.registry import method_from_dict

        try:
            return method_from_dict(dict(self.method)).to_dict()
        except (ValueError, TypeError, InterpError):
            return dict(self.method)

    # -- the mapping view, for code that still reads keys ----------------------------------------

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)


def rank_metrics(ranks: list[int]) -> dict[str, float]:
    """`trainers.training.metrics.retrieval_metrics` in plain Python (the report reads ranks.json without torch)."""
    n = len(ranks)
    out = {"mrr": sum(1 / r for r in ranks) / n, "mrr@10": sum(1 / r for r in ranks if r <= 10) / n,
           "ndcg@10": sum(1 / math.log2(r + 1) for r in ranks if r <= 10) / n}
    return out | {f"recall@{k}": sum(r <= k for r in ranks) / n for k in (1, 5, 10)}


def ranks_file_metrics(m: Manifest, run_dir: Path) -> dict[str, float] | None:
    """The test metrics of an older run from its ranks.json (every test query's gold rank, as train_run wrote it), or None.

    Only when the file is this run's: the test split, the manifest's test fingerprint, the run's tie
    rule (ranks.json without one: written under the manifest's), one whole rank >= 1 per query used,
    and their MRR the recorded test MRR. Those ranks are what the recorded MRR was computed from, so
    the other metrics of them are what train_run would have recorded.
    """
    try:
        saved = json.loads((run_dir / "ranks.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    ranks = list(saved.get("ranks", {}).values()) if isinstance(saved, dict) and isinstance(saved.get("ranks"), dict) else []
    test, recorded = m.data.get("test") or {}, m.metrics.get("test_mrr")
    if not (ranks and saved.get("split") == "test" and saved.get("fingerprint") == test.get("fingerprint") is not None
            and saved.get("ties", m.train.get("ties")) == m.train.get("ties") and test.get("used") in (None, len(ranks))
            and all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks) and _number(recorded)):
        return None
    out = rank_metrics(ranks)
    return out if math.isclose(out["mrr"], recorded, rel_tol=1e-9, abs_tol=1e-12) else None


def check_shape(data: Any, file: Path | str | None = None, *, complete: bool = False) -> None:
    """ManifestError naming `file` and the key unless `data` has the shape train_run writes (see `Manifest.from_dict`)."""
    def damaged(what: str) -> ManifestError:
        return ManifestError(f"{file}: damaged run manifest: {what}" if file is not None else f"damaged run manifest: {what}")

    if not isinstance(data, dict):
        raise damaged(f"{_kind(data)}, not an object")
    for key in ("method", "base", "train") if complete else ("method",):
        if key not in data:
            raise damaged(f"no {key!r}")
    for key, types in [(k, dict) for k in _SECTIONS] + [(k, str) for k in _TEXTS if k in ("name", "status")]:
        if key in data and not isinstance(data[key], types):
            raise damaged(f"{key!r} is {_kind(data[key])}")
    for key in ("preset",) + tuple(k for k in _TEXTS if k not in ("name", "status")):
        if not isinstance(data.get(key), (str, type(None))):
            raise damaged(f"{key!r} is {_kind(data[key])}, not a string")
    if "num_processes" in data and not (isinstance(data["num_processes"], int) and not isinstance(data["num_processes"], bool)
                                        and data["num_processes"] >= 1):
        raise damaged(f"num_processes is {data['num_processes']!r}, not a whole number of at least 1")
    if data.get("elapsed_s") is not None and not _number(data["elapsed_s"]):
        raise damaged(f"elapsed_s is {_kind(data['elapsed_s'])}, not a number")
    if complete:
        for section, key in (("method", "method"), ("base", "source"), ("base", "weights_sha256")):
            if not isinstance(data[section].get(key), str):
                got = _kind(data[section].get(key)) if key in data[section] else "missing"
                raise damaged(f"{section}.{key} is {got}, not a string")
    metrics = data.get("metrics") or {}
    for split in METRIC_SPLITS:  # {"mrr": ..., "ndcg@10": ...} per split (newer runs)
        if split in metrics and not isinstance(metrics[split], dict):
            raise damaged(f"metrics.{split} is {_kind(metrics[split])}, not an object")
        for key, value in (metrics.get(split) or {}).items():
            if not _number(value):
                raise damaged(f"metrics.{split}.{key} is {_kind(value)}, not a number")
    numbers = [("metrics", key) for key in metrics if key not in METRIC_SPLITS] + [("parameters", "trainable"), ("parameters", "share_of_base")]
    for section, key in numbers:
        value = (data.get(section) or {}).get(key)
        if value is not None and not _number(value):
            raise damaged(f"{section}.{key} is {_kind(value)}, not a number")
    for split, info in (data.get("data") or {}).items():
        if not isinstance(info, (dict, type(None))):
            raise damaged(f"data.{split} is {_kind(info)}, not an object")


# -- one configuration ----------------------------------------------------------------------------


def configuration(m: Manifest) -> dict:
    """What a run was asked to be but the seed: preset, method, training settings, base weights, data."""
    train = {k: v for k, v in m.train.items() if k != "seed" and k not in UNCOMPARED}
    return {"preset": m.preset, "method": m.trained_method, "train": train, "base": m.weights_sha256, "data": m.fingerprints}


def config_key(m: Manifest) -> str:
    """`configuration(m)` as one string: equal for two runs exactly when they are one configuration."""
    return json.dumps(configuration(m), sort_keys=True, default=str)


@dataclass(frozen=True)
class Difference:
    section: str  # preset | method | train | base | data
    key: str  # the field within it ("r", "lr", "weights_sha256", a split; "" for the preset)
    before: Any  # in the first manifest
    after: Any  # in the second

    @property
    def field(self) -> str:
        return f"{self.section}.{self.key}" if self.key else self.section

    def text(self, sep: str = "vs") -> str:
        """'train.lr 0.01 vs 0.02' (hashes and fingerprints to 12 characters)."""
        return f"{self.field} {_shown(self.before)} {sep} {_shown(self.after)}"


def _shown(value) -> str:
    return repr(value[:12]) if isinstance(value, str) and len(value) == 64 else repr(value)


def differences(a: Manifest, b: Manifest) -> list[Difference]:
    """Every field of the configuration, and the seed, in which `b` differs from `a` (b's order of fields, then a's)."""
    out = [Difference("preset", "", a.preset, b.preset)] if a.preset != b.preset else []
    ma, mb = a.trained_method, b.trained_method
    out += [Difference("method", k, ma.get(k), mb.get(k)) for k in list(mb) + [k for k in ma if k not in mb] if ma.get(k) != mb.get(k)]
    if a.weights_sha256 != b.weights_sha256:
        out.append(Difference("base", "weights_sha256", a.weights_sha256, b.weights_sha256))
    fa, fb = a.fingerprints, b.fingerprints
    out += [Difference("data", s, fa.get(s), fb.get(s)) for s in list(fb) + [s for s in fa if s not in fb] if fa.get(s) != fb.get(s)]
    ta, tb = a.train, b.train
    keys = [k for k in list(tb) + [k for k in ta if k not in tb] if k not in UNCOMPARED]
    out += [Difference("train", k, ta.get(k), tb.get(k)) for k in keys if ta.get(k) != tb.get(k)]
    return out


def settings_differences(a: Manifest, b: Manifest) -> list[str]:
    """`differences` in words, one 'field before vs after' each."""
    return [d.text() for d in differences(a, b)]


def described(diffs: list[Difference], *, there: str = "there", here: str = "here") -> list[str]:
    """One phrase per section, as the study and resume refuse a run: 'training settings: lr 0.001 there, 0.002 here'."""
    def value(d: Difference, v) -> str:
        return str(v)[:12] if d.section in ("base", "data") else repr(v)

    titles = {"preset": "", "base": "", "method": "method: ", "train": "training settings: ", "data": "data (other files or samples): "}
    out = []
    for section, title in titles.items():
        mine = [d for d in diffs if d.section == section]
        if mine:
            out.append(title + ", ".join(f"{'base weights' if section == 'base' else d.key or section} {value(d, d.before)} {there}, "
                                         f"{value(d, d.after)} {here}" for d in mine))
    return out


def same_configuration(a: Manifest, b: Manifest) -> bool:
    return config_key(a) == config_key(b)


def differs_only_in_seed(a: Manifest, b: Manifest) -> bool:
    """One configuration (`config_key`), two different seeds."""
    return same_configuration(a, b) and a.seed is not None and b.seed is not None and a.seed != b.seed


def group_by_config(manifests: Mapping[str, Manifest]) -> tuple[list[list[str]], list[str]]:
    """Run names grouped: runs of one configuration with distinct seeds are one group; the rest each alone.

    Runs of one configuration whose seeds repeat (or are unknown) are not seeds of it: each stays
    alone, and a note says so. Groups come in the order of their first run in `manifests`;
    also returns the notes.
    """
    classes: dict[str, list[str]] = {}
    for name, m in manifests.items():
        classes.setdefault(config_key(m), []).append(name)
    groups, notes = [], []
    for names in classes.values():
        seeds = [manifests[n].seed for n in names]
        if len(names) > 1 and (None in seeds or len(set(seeds)) < len(seeds)):
            notes.append(f"runs {', '.join(names)} are one configuration but not distinct seeds; kept apart")
            groups += [[n] for n in names]
        else:
            groups.append(names)
    return groups, notes


def group_label(members: list[Manifest]) -> str | None:
    """A group's name: the preset its runs share, else its first run's label (None: the caller names it)."""
    presets = {m.preset for m in members}
    return presets.pop() if len(presets) == 1 and None not in presets else members[0].label
