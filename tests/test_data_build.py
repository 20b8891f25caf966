"""build_corpus over a small directory of real modules (tests/data/corpus)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from trainers.data import (
    FILTERS, SPLITS, assign_splits, build_corpus, fingerprint, load_split, read_manifest,
)
from trainers.data.check import looks_normalised
from trainers.data.filters import ACROSS_SPLIT_FILTERS
from trainers.data.neardup import CODE_JACCARD, CODE_NGRAM, QUERY_JACCARD
from records.errors import InterpError

CORPUS = Path(__file__).parent / "data" / "corpus"
FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "data"
    build_corpus(out=out, sources=[str(CORPUS)], progress=False)
    return out


@pytest.fixture(scope="module")
def examples(built):
    return {split: load_split(built, split) for split in SPLITS}


def test_writes_advtest_files_and_nothing_else(built):
    assert sorted(p.name for p in built.iterdir()) == sorted(FILES)
    assert not [p for p in built.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_splits_are_disjoint_by_source_file(examples):
    splits_of_file = defaultdict(set)
    for split, rows in examples.items():
        assert rows, f"{split} is empty"
        for example in rows:
            splits_of_file[(example.repo, example.path)].add(split)
    assert all(len(splits) == 1 for splits in splits_of_file.values())
    assert "colorsys.py" not in {path for _, path in splits_of_file}  # no docstrings, no pairs


def test_idx_counts_up_through_train_valid_test_and_urls_are_unique(examples):
    rows = [example for split in SPLITS for example in examples[split]]
    assert [example.idx for example in rows] == list(range(len(rows)))
    assert len({example.url for example in rows}) == len(rows)


def test_valid_and_test_are_normalised_train_is_not(examples):
    assert not any(looks_normalised(example) for example in examples["train"])
    for split in ("valid", "test"):
        assert all(looks_normalised(example) for example in examples[split])
        assert all(not example.original_string.startswith("def Func") for example in examples[split])


def test_lines_have_exactly_the_codexglue_fields(built):
    fields = ["repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
              "docstring", "docstring_tokens", "url", "idx"]
    for split in SPLITS:
        for line in (built / f"{split}.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert list(record) == fields
            assert record["language"] == "python" and record["repo"] == "corpus"


def test_manifest_accounts_for_every_function(built, examples):
    manifest = read_manifest(built)
    assert manifest.fingerprint == fingerprint(built)
    assert list(manifest.removed) == list(FILTERS)
    assert manifest.functions == sum(manifest.removed.values()) + manifest.pairs
    assert manifest.splits == {split: len(rows) for split, rows in examples.items()}
    assert manifest.sources[0] | {"root": None} == {
        "name": "corpus", "kind": "directory", "version": None, "root": None,
        "files": 6, "functions": manifest.functions, "pairs": manifest.pairs,
    }
    assert manifest.files_scanned == 6 and manifest.files_unparsable == 0


def test_two_builds_are_byte_identical_whatever_the_workers(built, tmp_path):
    build_corpus(out=tmp_path / "again", sources=[str(CORPUS)], progress=False, workers=2)
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (built / name).read_bytes(), name


def test_build_is_the_same_whatever_the_hash_seed(built, tmp_path):
    # sets of strings iterate in an order that PYTHONHASHSEED decides; the files must not depend on it
    script = (f"from trainers.data import build_corpus; "
              f"build_corpus(out={str(tmp_path / 'hashed')!r}, sources=[{str(CORPUS)!r}], progress=False)")
    for seed in ("1", "2"):
        shutil.rmtree(tmp_path / "hashed", ignore_errors=True)
        subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        for name in FILES:
            assert (tmp_path / "hashed" / name).read_bytes() == (built / name).read_bytes(), (seed, name)


def test_manifest_records_the_near_duplicate_thresholds(built):
    near = read_manifest(built).near_duplicates
    assert near["reference"] == "train"
    assert near["thresholds"] == {"code_ngram": CODE_NGRAM, "code_jaccard": CODE_JACCARD, "query_jaccard": QUERY_JACCARD}
    assert set(near["removed"]) == {"valid", "test"}
    assert all(list(counts) == list(ACROSS_SPLIT_FILTERS) for counts in near["removed"].values())
    assert set(near["compared"]) == {"code", "query"}


def test_manifest_of_an_older_build_still_reads(built, tmp_path):
    data = json.loads((built / "manifest.json").read_text())
    del data["near_duplicates"]
    for name in ACROSS_SPLIT_FILTERS:
        del data["removed"][name]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    manifest = read_manifest(tmp_path)
    assert manifest.near_duplicates == {} and "near duplicates of train" not in manifest.summary()
    assert manifest.pairs == read_manifest(built).pairs


def test_seed_changes_the_split_not_the_pairs(built, tmp_path):
    manifest = build_corpus(out=tmp_path / "seeded", sources=[str(CORPUS)], seed=3, progress=False)
    assert manifest.pairs == read_manifest(built).pairs
    assert manifest.fingerprint != read_manifest(built).fingerprint


def test_rebuild_into_a_directory_keeps_other_files(tmp_path):
    out = tmp_path / "data"
    build_corpus(out=out, sources=[str(CORPUS)], progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "train.jsonl").write_text("old\n")
    build_corpus(out=out, sources=[str(CORPUS)], progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert load_split(out, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.parametrize(("sources", "message"), [
    (["nump"], "unknown source 'nump'; did you mean 'numpy'?"),
    (["./no/such/dir"], "does not exist"),
    (["sys"], "has no Python source"),
    ([str(CORPUS), str(CORPUS)], "are both named 'corpus'"),
    ([], "no sources given"),
    ([str(CORPUS.parent / "advtest")], "no Python files"),
    ([str(CORPUS.parent / "filter_cases")], "at least 3 are needed"),
])
def test_bad_input_fails_before_touching_the_output(tmp_path, sources, message):
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "codexglue-advtest-jsonl"}')  # an earlier build's: may be rebuilt
    (out / "train.jsonl").write_text("precious\n")
    with pytest.raises(InterpError, match=message.replace("(", r"\(").replace("?", r"\?")):
        build_corpus(out=out, sources=sources, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert (out / "train.jsonl").read_text() == "precious\n"


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "data").write_text("x")
    with pytest.raises(InterpError, match="is not a directory"):
        build_corpus(out=tmp_path / "data", sources=[str(CORPUS)], progress=False)


@pytest.mark.parametrize(("sizes", "expected"), [
    # the first file in hash order goes to test, the next to valid, the rest to train
    ({("r", "a.py"): 5, ("r", "b.py"): 5, ("r", "c.py"): 5}, {"test": 1, "valid": 1, "train": 1}),
    ({("r", f"{i}.py"): 10 for i in range(100)}, {"test": 7, "valid": 3, "train": 90}),
])
def test_assign_splits_keeps_advtest_shares(sizes, expected):
    assignment = assign_splits(sizes, seed=0)
    counts = {split: sum(1 for s in assignment.values() if s == split) for split in SPLITS}
    assert counts == expected
    assert assignment == assign_splits(dict(reversed(sizes.items())), seed=0)  # order of input does not matter
