"""`check_dir`: read every line of an AdvTest directory and say what is in it.

Every line is validated (`schema.iter_split`), so a bad file fails with its line number. The
report gives per-split counts and length statistics of what the model reads (query and code as
whitespace-joined tokens), finds `idx` and `url` values used by more than one split, tells
whether valid and test look normalised (`def Func(arg_0, ...)`), and, where the directory has a
manifest from `build_corpus`, whether the files still match its fingerprint.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from trainers.data.build import read_manifest
from trainers.data.normalize import FUNC_NAME
from trainers.data.outdir import MOVING
from trainers.data.schema import SPLITS, Example, fingerprint, iter_split, split_path

# A split "looks normalised" when at least this share of its functions are named `Func`.
NORMALISED_SHARE = 0.95
_SHOWN = 5  # duplicates named in a problem message


@dataclass(frozen=True)
class LengthStats:
    min: int
    median: float
    mean: float
    p95: int
    max: int

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats:
        ordered = sorted(lengths)
        p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank
        return cls(ordered[0], statistics.median(ordered), round(statistics.fmean(ordered), 2), p95, ordered[-1])

    def __str__(self) -> str:
        return f"min {self.min}, median {self.median:g}, mean {self.mean:.1f}, p95 {self.p95}, max {self.max}"


@dataclass(frozen=True)
class SplitReport:
    count: int
    query_tokens: LengthStats  # whitespace tokens of `Example.query`
    code_tokens: LengthStats  # whitespace tokens of `Example.code_text`
    normalised_share: float  # share of functions named `Func`
    looks_normalised: bool


@dataclass(frozen=True)
class CheckReport:
    data_dir: str
    splits: dict[str, SplitReport]
    shared_idx: tuple[int, ...]  # idx values found in more than one split
    shared_url: tuple[str, ...]
    manifest_matches: bool | None  # None: no manifest
    fingerprint: str
    interrupted: bool = False  # a build stopped while moving its files in (`outdir.MOVING` is there)

    @property
    def problems(self) -> list[str]:
        found = []
        if self.shared_idx:
            found.append(f"{len(self.shared_idx)} idx value(s) appear in more than one split, e.g. {list(self.shared_idx[:_SHOWN])}")
        if self.shared_url:
            found.append(f"{len(self.shared_url)} url(s) appear in more than one split, e.g. {list(self.shared_url[:_SHOWN])}")
        for split in ("valid", "test"):
            if not self.splits[split].looks_normalised:
                found.append(f"{split} does not look normalised: {self.splits[split].normalised_share:.0%} of its functions are named {FUNC_NAME}")
        if self.manifest_matches is False:
            found.append("the files do not match the fingerprint in manifest.json; they changed after the build")
        if self.interrupted:
            found.append(f"a build stopped while moving its files in ({MOVING} is there); build again")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return asdict(self) | {"ok": self.ok, "problems": self.problems}

    def __str__(self) -> str:
        lines = [f"{self.data_dir}  (fingerprint {self.fingerprint[:16]}...)"]
        for split, report in self.splits.items():
            state = "normalised" if report.looks_normalised else "names kept"
            lines.append(f"{split:>5}: {report.count:>7} examples, {state} ({report.normalised_share:.0%} {FUNC_NAME})")
            lines.append(f"       query tokens: {report.query_tokens}")
            lines.append(f"       code tokens:  {report.code_tokens}")
        if self.manifest_matches is not None:
            lines.append(f"manifest: {'matches' if self.manifest_matches else 'DOES NOT MATCH'} the files")
        lines += [f"problem: {problem}" for problem in self.problems] or ["ok"]
        return "\n".join(lines)


def looks_normalised(example: Example) -> bool:
    """Whether the code reads `def Func(` or `async def Func(`."""
    tokens = example.code_tokens
    head = tokens[1:3] if tokens[:1] == ("async",) else tokens[0:2]
    return tuple(head) == ("def", FUNC_NAME)


def check_dir(data_dir: str | Path) -> CheckReport:
    """Validate `train.jsonl`, `valid.jsonl` and `test.jsonl` in `data_dir` and report on them."""
    data_dir = Path(data_dir)
    paths = {split: split_path(data_dir, split) for split in SPLITS}
    reports, idx_seen, url_seen = {}, Counter(), Counter()
    for split, path in paths.items():
        query_lengths, code_lengths, normalised = [], [], 0
        for example in iter_split(path):
            query_lengths.append(len(example.query.split()))
            code_lengths.append(len(example.code_text.split()))
            normalised += looks_normalised(example)
            idx_seen[example.idx] += 1
            url_seen[example.url] += 1
        share = normalised / len(code_lengths)
        reports[split] = SplitReport(
            count=len(code_lengths), query_tokens=LengthStats.of(query_lengths), code_tokens=LengthStats.of(code_lengths),
            normalised_share=round(share, 4), looks_normalised=share >= NORMALISED_SHARE,
        )
    manifest = read_manifest(data_dir)
    digest = fingerprint(data_dir)
    return CheckReport(
        data_dir=str(data_dir), splits=reports,
        shared_idx=tuple(sorted(i for i, n in idx_seen.items() if n > 1)),
        shared_url=tuple(sorted(u for u, n in url_seen.items() if n > 1)),
        manifest_matches=None if manifest is None else manifest.fingerprint == digest,
        fingerprint=digest, interrupted=(data_dir / MOVING).exists(),
    )

