"""check_dir on a built directory, on real-AdvTest-shaped files, and on damaged ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trainers.data import LengthStats, build_corpus, check_dir
from records.errors import DataError

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("check") / "data"
    build_corpus(out=out, sources=[str(DATA / "corpus")], progress=False)
    return out


def test_built_directory_is_ok(built):
    report = check_dir(built)
    assert report.ok, report.problems
    assert report.manifest_matches is True
    assert {split: r.count for split, r in report.splits.items()} == json.loads((built / "manifest.json").read_text())["splits"]
    assert report.splits["test"].looks_normalised and not report.splits["train"].looks_normalised
    assert "ok" in str(report) and "query tokens: min" in str(report)
    json.dumps(report.to_json())


def test_real_advtest_shape_is_ok_without_manifest():
    report = check_dir(DATA / "advtest")
    assert report.ok and report.manifest_matches is None
    assert report.splits["test"].count == 2
    assert report.splits["test"].query_tokens == LengthStats(min=7, median=7.5, mean=7.5, p95=8, max=8)


@pytest.mark.parametrize(("lengths", "expected"), [
    ([5], LengthStats(5, 5, 5.0, 5, 5)),
    (list(range(1, 101)), LengthStats(1, 50.5, 50.5, 95, 100)),
    ([3, 1, 2], LengthStats(1, 2, 2.0, 3, 3)),
])
def test_length_stats(lengths, expected):
    assert LengthStats.of(lengths) == expected


def copy_of(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(source, target)
    return target


def test_edited_files_no_longer_match_the_manifest(built, tmp_path):
    data = copy_of(built, tmp_path)
    lines = (data / "valid.jsonl").read_text().splitlines()
    (data / "valid.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    report = check_dir(data)
    assert report.manifest_matches is False
    assert any("do not match the fingerprint" in p for p in report.problems)


def test_idx_shared_between_splits_and_unnormalised_test_are_problems(tmp_path):
    data = copy_of(DATA / "advtest", tmp_path)
    (data / "test.jsonl").write_text((DATA / "advtest" / "train.jsonl").read_text())
    report = check_dir(data)
    assert report.shared_idx == (0, 1)
    assert any("2 idx value(s) appear in more than one split" in p for p in report.problems)
    assert any("test does not look normalised" in p for p in report.problems)
    assert not report.ok


def test_a_bad_line_fails_with_its_location(tmp_path):
    data = copy_of(DATA / "advtest", tmp_path)
    with (data / "train.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"train.jsonl:3: malformed JSON"):
        check_dir(data)
