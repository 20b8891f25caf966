"""`build_corpus`: mine sources into an AdvTest-style directory, the same bytes on every run.

The steps, in order:

1. Resolve the sources (`sources.py`); a bad name fails here, before anything is read or written.
2. Mine every file (`extract.py`), in parallel worker processes but collected in the fixed
   order of sources, then files sorted by path, then functions by line.
3. Drop duplicates in that order (`filters.py`): the first pair of each kind is kept.
4. Split by source file: no file feeds two splits. Files are ordered by
   sha256(seed, repo, path); the first files (at least one) go to test until it holds about
   AdvTest's share of pairs, the next ones to valid the same way, and the rest to train.
   AdvTest's shares are 251,820 / 9,604 / 19,210, that is 89.7% / 3.4% / 6.8%.
5. Drop the valid and test pairs that near-duplicate a train pair (`neardup.py`: code 5-gram
   Jaccard >= 0.7 or query word Jaccard >= 0.8), counted per split and reason. The split is not
   redone: valid and test end a little under their shares.
6. Write `train.jsonl`, `valid.jsonl`, `test.jsonl` (valid and test with normalised code), then
   `manifest.json`, into a temporary directory beside `out`, and move them into `out` with the
   manifest last. Other files in `out` are left alone; if anything fails before the move, `out`
   is untouched (a full disk says so in one `InterpError`).

`out` must be new, empty, or an earlier build (`outdir.py`): a run, a report or anyone's other
files are refused before anything is read. What the walk and the reader skipped (FIFOs, links
out of the tree, files over `extract.MAX_FILE_BYTES`) is counted by reason in the manifest,
beside the limits that decided it.

`idx` counts up through train, valid and test, as CodeXGLUE's preprocessing numbers them;
`url` is `repo/path#Lstart-Lend`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from trainers.data.extract import MAX_FILE_BYTES, FileResult, Pair, mine_file
from trainers.data.filters import ACROSS_SPLIT_FILTERS, FILTERS, MAX_PER_TEMPLATE, MAX_SAME_SHAPE_PER_FILE, Deduplicator
from trainers.data.outdir import MOVING, check_out, disk_full
from trainers.data.neardup import drop_across_splits
from trainers.data.schema import SPLITS, fingerprint
from trainers.data.sources import DEFAULT_SOURCES, resolve_sources
from records.errors import DataError, InterpError
from records.io import dumps_json
from records.places import DATA_FORMAT

ADVTEST_SIZES = {"train": 251_820, "valid": 9_604, "test": 19_210}
MANIFEST = "manifest.json"
_SERIAL_BELOW = 64  # files; by default fewer are mined in this process
WORKERS_PER_CPU = 4  # at most this many mining processes per CPU; more only compete for the CPUs


def max_workers() -> int:
    return WORKERS_PER_CPU * (os.cpu_count() or 1)


def limits() -> dict[str, int]:
    """The limits that decide what a build skips or caps, recorded in its manifest."""
    return {"max_file_bytes": MAX_FILE_BYTES, "max_per_template": MAX_PER_TEMPLATE,
            "max_same_shape_per_file": MAX_SAME_SHAPE_PER_FILE}


@dataclass(frozen=True)
class Manifest:
    """What a build read, what it removed and why, and what it wrote."""

    seed: int
    python: str
    sources: tuple[dict, ...]  # name, kind, version, root, files, functions, pairs
    files_scanned: int
    files_unparsable: int
    functions: int  # functions with a docstring: the candidates
    removed: dict[str, int]  # per filter, every name in FILTERS
    splits: dict[str, int]  # pairs per split
    split_files: dict[str, int]  # source files per split that kept a pair
    fingerprint: str  # `schema.fingerprint` of the directory
    missing_sources: tuple[str, ...] = ()  # default sources that were not installed
    format: str = DATA_FORMAT
    near_duplicates: dict = field(default_factory=dict)  # `NearDuplicates.to_json()`; {} in older builds
    skipped_files: dict = field(default_factory=dict)  # reason -> files not mined (see sources.py); {} in older builds
    limits: dict = field(default_factory=dict)  # `limits()`; {} in older builds

    @property
    def pairs(self) -> int:
        return sum(self.splits.values())

    def to_json(self) -> dict:
        return {**self.__dict__, "sources": list(self.sources), "missing_sources": list(self.missing_sources)}

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """The manifest in `data`; TypeError or KeyError naming the field that is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        for name, kind in _FIELD_TYPES.items():
            value = data.get(name)
            if name in data and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
                raise TypeError(f"field {name!r} should be {kind.__name__ if isinstance(kind, type) else 'a list'}, "
                                f"got {type(data[name]).__name__}")
        removed = {name: data["removed"][name] for name in FILTERS if name in data["removed"]}
        return cls(**{**data, "sources": tuple(data["sources"]), "removed": removed | data["removed"],
                      "missing_sources": tuple(data.get("missing_sources", ()))})

    def summary(self) -> str:
        width = max(map(len, FILTERS))
        lines = [f"mined {self.functions} documented functions from {self.files_scanned} files "
                 f"({self.files_unparsable} did not parse as a whole) in {len(self.sources)} sources"]
        if self.missing_sources:
            lines += [f"  not installed, skipped: {', '.join(self.missing_sources)}"]
        if self.skipped_files:
            lines += [f"  files skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_files.items()))
                      + f" (at most {self.limits.get('max_file_bytes', MAX_FILE_BYTES)} bytes are read per file)"]
        lines += [f"  removed {name:<{width}}  {self.removed.get(name, 0):>7}" for name in FILTERS]
        lines += [f"  kept    {'':<{width}}  {self.pairs:>7}"]
        if self.near_duplicates:
            t = self.near_duplicates["thresholds"]
            lines += [f"near duplicates of train: code {t['code_ngram']}-gram Jaccard >= {t['code_jaccard']}, "
                      f"query word Jaccard >= {t['query_jaccard']}"]
            lines += [f"  {split:>5}: " + ", ".join(f"{counts[name]} {name.rsplit('_', 1)[-1]}" for name in ACROSS_SPLIT_FILTERS)
                      for split, counts in self.near_duplicates["removed"].items()]
        lines += [f"{split:>5}: {self.splits[split]:>6} pairs from {self.split_files[split]:>5} files" for split in SPLITS]
        lines += [f"fingerprint {self.fingerprint}"]
        return "\n".join(lines)


_FIELD_TYPES = {"seed": int, "sources": (list, tuple), "removed": dict, "splits": dict, "split_files": dict, "fingerprint": str,
                "near_duplicates": dict, "skipped_files": dict, "limits": dict, "missing_sources": (list, tuple)}


def read_manifest(data_dir: str | Path) -> Manifest | None:
    """The manifest a build wrote into `data_dir`, or None where there is none (real AdvTest)."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return Manifest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except KeyError as exc:
        raise DataError(path, f"not a data manifest: missing field {exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(path, f"not a data manifest: {exc}") from None
    except RecursionError:
        raise DataError(path, "not a data manifest: nested too deeply") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None


@dataclass
class _Mined:
    """Everything mined, after the duplicate filters: pairs by file in mining order, and counts."""

    by_file: dict[tuple[str, str], list[Pair]]
    tallies: list[dict[str, int]]  # per source: files, functions
    removed: Counter
    unparsable: int
    skipped: Counter  # reason -> files not read


def build_corpus(*, out: str | Path, sources: Sequence[str] | None = None, seed: int = 0,
                 progress: bool = True, workers: int | None = None) -> Manifest:
    """Mine `sources` (default: `DEFAULT_SOURCES`) into an AdvTest directory at `out`.

    `workers` is the number of mining processes (default: one per CPU, or none for fewer than
    64 files); the output does not depend on it. Unknown sources and too little data raise
    `InterpError` before anything is written.
    """
    if workers is not None and not 1 <= workers <= max_workers():
        raise InterpError(f"workers {workers}: should be between 1 and {max_workers()} ({WORKERS_PER_CPU} per CPU)")
    out = Path(out)
    check_out(out, f"output {str(out)!r}")
    resolved = resolve_sources(list(sources) if sources is not None else None)
    walks = [source.walk() for source in resolved]
    jobs = [(index, source.name, str(file), source.relative(file))
            for index, (source, walk) in enumerate(zip(resolved, walks)) for file in walk.files]
    if not jobs:
        raise InterpError(f"no Python files in the sources {', '.join(s.name for s in resolved)}")
    mined = _collect(jobs, len(resolved), progress=progress, workers=workers)
    mined.skipped.update(sum((walk.skipped for walk in walks), Counter()))
    assignment = assign_splits({key: len(pairs) for key, pairs in mined.by_file.items()}, seed=seed)
    splits: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for key, pairs in mined.by_file.items():
        splits[assignment[key]].extend(pairs)
    splits, near = drop_across_splits(splits)
    kept = Counter(pair.repo for pairs in splits.values() for pair in pairs)  # per source, after every filter
    names = {source.name for source in resolved}

    def manifest(fingerprint: str) -> Manifest:
        return Manifest(
            seed=seed, python=platform.python_version(),
            sources=tuple(source.describe() | tally | {"pairs": kept[source.name]}
                          for source, tally in zip(resolved, mined.tallies)),
            files_scanned=sum(tally["files"] for tally in mined.tallies), files_unparsable=mined.unparsable,
            functions=sum(tally["functions"] for tally in mined.tallies),
            removed={name: mined.removed.get(name, 0) + near.total(name) for name in FILTERS},
            splits={split: len(splits[split]) for split in SPLITS},
            split_files={split: len({(pair.repo, pair.path) for pair in splits[split]}) for split in SPLITS},
            fingerprint=fingerprint,
            missing_sources=tuple(n for n in DEFAULT_SOURCES if n not in names) if sources is None else (),
            near_duplicates=near.to_json(), skipped_files=dict(sorted(mined.skipped.items())), limits=limits(),
        )

    return _write(out, splits, manifest)


def _collect(jobs: list, n_sources: int, *, progress: bool, workers: int | None) -> _Mined:
    """Mine every job in order and apply the duplicate filters as the results arrive."""
    mined = _Mined({}, [{"files": 0, "functions": 0} for _ in range(n_sources)], Counter(), 0, Counter())
    dedup = Deduplicator()
    for (index, *_), result in zip(jobs, _mine(jobs, progress=progress, workers=workers)):
        if result.skipped is not None:
            mined.skipped[result.skipped] += 1
            continue
        tally = mined.tallies[index]
        tally["files"] += 1
        tally["functions"] += result.functions
        mined.unparsable += not result.parsed
        mined.removed.update(result.removed)
        for pair in result.pairs:
            reason = dedup.offer(pair)
            if reason is None:
                mined.by_file.setdefault((pair.repo, pair.path), []).append(pair)
            else:
                mined.removed[reason] += 1
    return mined


def assign_splits(sizes: dict[tuple[str, str], int], *, seed: int) -> dict[tuple[str, str], str]:
    """Split name per (repo, path): whole files, ordered by a seeded hash, test first, then valid."""
    if len(sizes) < len(SPLITS):
        raise InterpError(f"only {len(sizes)} source file(s) gave pairs after the filters; "
                          f"at least {len(SPLITS)} are needed so that no file feeds two splits")
    order = sorted(sizes, key=lambda key: hashlib.sha256(f"{seed}\0{key[0]}\0{key[1]}".encode()).digest())
    total, advtest_total = sum(sizes.values()), sum(ADVTEST_SIZES.values())
    assignment, position = {}, 0
    for remaining, split in enumerate(("test", "valid"), start=1):
        target, taken = total * ADVTEST_SIZES[split] / advtest_total, 0
        while position < len(order) - (len(SPLITS) - remaining):
            size = sizes[order[position]]
            if taken and taken + size / 2 > target:
                break
            assignment[order[position]] = split
            taken += size
            position += 1
    for key in order[position:]:
        assignment[key] = "train"
    return assignment


def _mine_job(job: tuple[int, str, str, str]) -> FileResult:
    _, repo, file, path = job
    return mine_file(Path(file), repo=repo, path=path)


def _mine(jobs: list, *, progress: bool, workers: int | None) -> Iterator[FileResult]:
    if workers is None:  # a few files are mined faster than worker processes start
        workers = (os.cpu_count() or 1) if len(jobs) >= _SERIAL_BELOW else 1
    workers = min(workers, len(jobs))  # never a process with nothing to do
    with tqdm(total=len(jobs), desc="mining", unit="file", disable=not progress, dynamic_ncols=True) as bar:
        with _pool(workers) as pool:
            results = pool.map(_mine_job, jobs, chunksize=4) if pool else map(_mine_job, jobs)
            for result in results:
                yield result
                bar.update()


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes, or None to mine in this one. Workers only parse and tokenize, so they are
    forked where fork exists (spawn would re-run the caller's main script); a worker that dies
    raises BrokenProcessPool instead of hanging."""
    if workers == 1:
        yield None
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def _write(out: Path, splits: dict[str, list[Pair]], manifest) -> Manifest:
    """Write everything beside `out`, then move it in, the manifest last."""
    existed = out.is_dir()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as exc:
        _raise_write_error(exc, out, existed, moving=False)
        raise
    moving = False
    try:
        idx = 0
        for split in SPLITS:
            examples = [pair.to_example(idx=idx + i, normalized=split != "train") for i, pair in enumerate(splits[split])]
            _write_synced(tmp / f"{split}.jsonl", (json.dumps(e.to_record()) + "\n" for e in examples))
            idx += len(examples)
        result = manifest(fingerprint(tmp))
        _write_synced(tmp / MANIFEST, [dumps_json(result.to_json())])
        moving = True
        out.mkdir(exist_ok=True)
        (out / MOVING).touch()  # the directory stays this build's own while it holds no manifest
        (out / MANIFEST).unlink(missing_ok=True)  # a half-moved directory must not claim a fingerprint
        for name in [f"{split}.jsonl" for split in SPLITS] + [MANIFEST]:
            os.replace(tmp / name, out / name)
        (out / MOVING).unlink()
        return result
    except OSError as exc:
        _raise_write_error(exc, out, existed, moving=moving)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _raise_write_error(exc: OSError, out: Path, existed: bool, *, moving: bool) -> None:
    """A full disk or a place that cannot be written is the user's to fix: `InterpError`, one sentence
    saying what was kept. Anything else returns, for the caller to raise as it is."""
    if disk_full(exc):
        problem = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem = f"cannot write there ({exc.strerror})"
    else:
        return
    if moving:
        kept = f"the build was moving its files in, so {out} is incomplete until a build there finishes"
    elif existed:
        kept = f"nothing in {out} was changed: the earlier data there is kept"
    else:
        kept = "nothing was written"
    raise InterpError(f"output {str(out)!r}: {problem} while writing the new data; {kept}") from None


def _write_synced(path: Path, chunks) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(chunks)
        f.flush()
        os.fsync(f.fileno())
