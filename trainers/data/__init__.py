"""The data layer: mine AdvTest-style query/code pairs from Python source, load and check them.

    build_corpus(out=..., sources=..., seed=...)  -> Manifest     (build.py)
    read_split(path) / load_split(dir, split)     -> list[Example] (schema.py)
    fingerprint(path_or_dir)                      -> sha256 hex
    check_dir(dir)                                -> CheckReport  (check.py)

Nothing here imports torch.
"""

from pathlib import Path

from trainers.data.build import ADVTEST_SIZES, Manifest, assign_splits, build_corpus, read_manifest
from trainers.data.check import CheckReport, LengthStats, SplitReport, check_dir
from trainers.data.filters import FILTERS
from trainers.data.normalize import normalize_code, normalize_function
from trainers.data.schema import SPLITS, Example, fingerprint, iter_split, load_split, read_split, split_path
from trainers.data.sources import DEFAULT_SOURCES, STDLIB

DEFAULT_DATA_DIR = Path("runs/data")

__all__ = [
    "ADVTEST_SIZES", "DEFAULT_DATA_DIR", "DEFAULT_SOURCES", "FILTERS", "SPLITS", "STDLIB",
    "CheckReport", "Example", "LengthStats", "Manifest", "SplitReport",
    "assign_splits", "build_corpus", "check_dir", "fingerprint", "iter_split", "load_split",
    "normalize_code", "normalize_function", "read_manifest", "read_split", "split_path",
]
