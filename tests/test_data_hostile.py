"""A data build over hostile source trees and a full disk (issue 12): it finishes, skips what it must
and says so in the manifest, caps generated code, and keeps the earlier data when the disk is full.

Each tree is the six small modules of tests/data/corpus plus one hostile thing, built in a fraction
of a second; nothing here reads site-packages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import invoke, snapshot
from trainers.data import build_corpus, check_dir
from trainers.data.extract import mine_file, read_source
from trainers.data.filters import MAX_PER_TEMPLATE, MAX_SAME_SHAPE_PER_FILE, Deduplicator
from trainers.data.outdir import MOVING

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(CORPUS, root)
    return root


def _fifo(root: Path) -> None:
    os.mkfifo(root / "x.py")  # opening it for reading would wait for a writer forever


def _dev_zero(root: Path) -> None:
    (root / "zero.py").symlink_to("/dev/zero")  # reading it would never end


def _outside(root: Path) -> None:
    (root.parent / "elsewhere.py").write_text('def f(x):\n    """Return x doubled, from outside the tree."""\n    return 2 * x\n')
    (root / "elsewhere.py").symlink_to(root.parent / "elsewhere.py")


def _linked_dir(root: Path) -> None:
    (root.parent / "other").mkdir()
    (root / "other").symlink_to(root.parent / "other", target_is_directory=True)


def _dangling(root: Path) -> None:
    (root / "gone.py").symlink_to(root / "nowhere.py")


def _oversized(root: Path) -> None:
    with (root / "huge.py").open("w") as f:  # sparse: over the cap without writing 2 MiB
        f.truncate(2 * 1024 * 1024 + 1)


def _odd_names(root: Path) -> None:
    os.rename(root / "fnmatch.py", root / "fn\nmatch.py")  # kept: JSON escapes the newline
    (root / "more").mkdir()
    os.rename(root / "bisect.py", os.path.join(os.fsencode(root / "more"), b"bi\xffsect.py"))  # not UTF-8: skipped


# tree change -> what the manifest counts as skipped
HOSTILE = {
    "fifo": (_fifo, {"not_a_regular_file": 1}),
    "symlink to /dev/zero": (_dev_zero, {"symlink_leaves_source": 1}),
    "symlink out of the tree": (_outside, {"symlink_leaves_source": 1}),
    "symlinked directory": (_linked_dir, {"symlinked_directory": 1}),
    "dangling symlink": (_dangling, {"not_a_regular_file": 1}),
    "over the size cap": (_oversized, {"over_size_cap": 1}),
    "odd file names": (_odd_names, {"name_not_utf8": 1}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_tree_is_built_and_what_was_skipped_is_counted(tree, tmp_path, name):
    make, skipped = HOSTILE[name]
    plain = build_corpus(out=tmp_path / "plain", sources=[str(tree)], progress=False)
    make(tree)
    result = invoke(["data", "build", "--no-progress", "--out", tmp_path / "data", "--source", tree])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["skipped_files"] == skipped
    if name != "odd file names":
        assert manifest["fingerprint"] == plain.fingerprint  # the same pairs as without the hostile file
    assert manifest["limits"]["max_file_bytes"] == 2 * 1024 * 1024
    assert "files skipped: " in result.output and next(iter(skipped)) in result.output


def test_a_link_inside_the_tree_is_followed(tree, tmp_path):
    (tree / "more").mkdir()
    (tree / "more" / "bisect_copy.py").symlink_to(tree / "bisect.py")
    manifest = build_corpus(out=tmp_path / "data", sources=[str(tree)], progress=False)
    assert manifest.skipped_files == {} and manifest.files_scanned == 7
    assert manifest.removed["exact_duplicate"] > 0  # its functions were read, and are the same as bisect.py's


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: os.mkfifo(p), "not_a_regular_file"),
    (lambda p: p.symlink_to("/dev/zero"), "not_a_regular_file"),
    (lambda p: p.mkdir(), "not_a_regular_file"),
    (lambda p: p.write_bytes(b"x" * 101), "over_size_cap"),
    (lambda p: None, "unreadable"),  # missing
])
def test_read_source_never_blocks_and_stops_at_the_cap(tmp_path, make, reason):
    path = tmp_path / "x.py"
    make(path)
    assert read_source(path, limit=100) == reason
    if reason != "over_size_cap":
        assert mine_file(path, repo="r", path="x.py").skipped == reason


def test_a_docstring_that_is_not_text_is_filtered(tmp_path):
    """A lone surrogate written as an escape in a docstring would reach the tokenizer, which refuses it."""
    path = tmp_path / "odd.py"
    path.write_text('def f(x):\n    """Return the odd value \\ud800 of x quickly."""\n    return 3 * x + 1\n')
    assert mine_file(path, repo="r", path="odd.py").rejected == [("f", "query_not_english")]


def _generated(path: Path, numbered: int, named: int) -> None:
    """`numbered` functions that differ in a number only (as a generator writes them), then `named`
    ones that differ in the names they use."""
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lamda mu nu xi omicron pi rho sigma tau".split()
    with path.open("w") as f:
        for i in range(numbered):
            f.write(f'def handler_{i}(value):\n    """Handle event number {i} and return the value."""\n    return value + {i}\n\n\n')
        for i in range(named):
            word, other = words[i % len(words)], words[i // len(words)]
            f.write(f'def get_{word}_{other}(self):\n    """Read the {word} {other} field of this record."""\n'
                    f'    return self.{word}_{other}\n\n\n')


def test_generated_near_identical_functions_count_against_one_template(tmp_path):
    path = tmp_path / "generated.py"
    _generated(path, numbered=300, named=3 * MAX_SAME_SHAPE_PER_FILE)
    mined = mine_file(path, repo="r", path="generated.py")
    assert len(mined.pairs) == 300 + 3 * MAX_SAME_SHAPE_PER_FILE  # every one passes the per-pair filters
    dedup = Deduplicator()
    outcomes = [dedup.offer(pair) for pair in mined.pairs]
    numbered, named = outcomes[:300], outcomes[300:]
    assert numbered.count(None) == MAX_PER_TEMPLATE and set(numbered) == {None, "over_template_cap"}
    assert named.count(None) == MAX_SAME_SHAPE_PER_FILE and set(named) == {None, "over_template_cap"}


def test_the_per_file_shape_cap_starts_again_in_the_next_file(tmp_path):
    for name in ("a.py", "b.py"):
        _generated(tmp_path / name, numbered=0, named=MAX_SAME_SHAPE_PER_FILE)
    dedup = Deduplicator()
    text = (tmp_path / "b.py").read_text().replace("get_", "fetch_").replace("Read the", "Fetch the").replace("self.", "self.f_")
    (tmp_path / "b.py").write_text(text)  # other queries and names, the same shape
    kept = [dedup.offer(p) for name in ("a.py", "b.py") for p in mine_file(tmp_path / name, repo="r", path=name).pairs]
    assert kept.count(None) == 2 * MAX_SAME_SHAPE_PER_FILE


# -- a full disk: one line that says so and what was kept ------------------------------------------


def _disk_fills(monkeypatch, after: int) -> None:
    """The build's writer raises ENOSPC from its `after`-th file on."""
    from trainers.data import build

    real, calls = build._write_synced, []

    def write(path, chunks):
        calls.append(path)
        if len(calls) > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, chunks)

    monkeypatch.setattr(build, "_write_synced", write)


@pytest.mark.parametrize("after", [0, 2, 3])  # the first split, the last one, the manifest
def test_disk_full_keeps_the_earlier_data(tmp_path, monkeypatch, after):
    out = tmp_path / "data"
    build_corpus(out=out, sources=[str(CORPUS)], seed=1, progress=False)
    before = snapshot(tmp_path)
    _disk_fills(monkeypatch, after)
    result = invoke(["data", "build", "--no-progress", "--out", out, "--source", CORPUS])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "the disk is full" in lines[0] and "the earlier data there is kept" in lines[0] and str(out) in lines[0]
    assert snapshot(tmp_path) == before  # the old build as it was, and no temporary directory left beside it


def test_disk_full_on_a_first_build_writes_nothing(tmp_path, monkeypatch):
    _disk_fills(monkeypatch, 1)
    result = invoke(["data", "build", "--no-progress", "--out", tmp_path / "data", "--source", CORPUS])
    assert result.exit_code == 2 and "the disk is full" in result.stderr and "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_build_stopped_while_moving_its_files_in_is_reported_and_rebuilt(tmp_path, monkeypatch):
    """A crash between the renames leaves a directory without a manifest but with the build's marker:
    `data check` says so, and the next build may write there (it is the build's own)."""
    from trainers.data import build

    out = tmp_path / "data"
    first = build_corpus(out=out, sources=[str(CORPUS)], seed=1, progress=False)
    real, moved = os.replace, []

    def replace(src, dst):
        if Path(dst).parent == out and len(moved) == 2:
            raise KeyboardInterrupt  # killed after two of the four renames
        moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(build.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(out=out, sources=[str(CORPUS)], seed=2, progress=False)
    monkeypatch.undo()
    assert (out / MOVING).exists() and not (out / "manifest.json").exists()
    assert any("a build stopped while moving its files in" in p for p in check_dir(out).problems)
    again = build_corpus(out=out, sources=[str(CORPUS)], seed=1, progress=False)
    assert again.fingerprint == first.fingerprint and not (out / MOVING).exists() and check_dir(out).ok
