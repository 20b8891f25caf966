"""Near-duplicates across splits (trainers/data/neardup.py): hand-counted Jaccard over real
functions (tests/data/neardup/), the exact search against a brute-force loop, and a build that
drops and counts them."""

from __future__ import annotations

import dataclasses
import random
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

from trainers.data import build_corpus, load_split, read_manifest
from trainers.data.build import assign_splits
from trainers.data.extract import Pair, mine_file
from trainers.data.filters import ACROSS_SPLIT_FILTERS, Deduplicator
from trainers.data.neardup import (
    CODE_JACCARD, CODE_NGRAM, QUERY_JACCARD, code_shingles, drop_across_splits, jaccard, near_duplicates, query_words,
)
from trainers.data.sources import resolve_sources

CASES = Path(__file__).parent / "data" / "neardup"
CORPUS = Path(__file__).parent / "data" / "corpus"
CODE, QUERY = ACROSS_SPLIT_FILTERS


@pytest.fixture(scope="module")
def pairs() -> dict[str, Pair]:
    found = {}
    for name in ("origin.py", "copies.py", "together.py"):
        found |= {pair.func_name: pair for pair in mine_file(CASES / name, repo="neardup", path=name).pairs}
    return found


CODE_CASES = [
    # (a, b, 5-token windows shared, windows in all): counted by hand from the code tokens
    # 12 tokens each, 8 windows each; only the last token differs (log / asinh): 1 window each is its own
    ("exp.inverse", "sinh.inverse", 7, 9),
    # 27 and 29 tokens, 23 and 25 windows; the name spoils the first 2 of each, `- EPOCHORDINAL` adds 2
    ("_days_before_year", "_post_epoch_days_before_year", 21, 27),
    # 12 and 13 tokens, 8 and 9 windows; the name spoils the first 2 of each, `not` the last 1 and 2
    ("is_", "is_not", 5, 12),
    # 16 and 19 tokens: the signatures part at `value :` / `value )`, and nothing after is shared
    ("_NestedSequence.count", "Tuple.tuple_count", 0, 12 + 15),
    ("is_", "truth", 0, 8 + 8),
]


@pytest.mark.parametrize(("a", "b", "shared", "total"), CODE_CASES, ids=[f"{a}~{b}" for a, b, *_ in CODE_CASES])
def test_code_jaccard_counts_shared_windows(pairs, a, b, shared, total):
    x, y = code_shingles(pairs[a].code_tokens), code_shingles(pairs[b].code_tokens)
    assert (len(x & y), len(x | y)) == (shared, total)
    assert jaccard(x, y) == jaccard(y, x) == Fraction(shared, total)


QUERY_CASES = [
    # (a, b, words shared, words in all), from the queries' lower-cased words
    ("exp.inverse", "sinh.inverse", 5, 8),  # returns the inverse function of exp x / ... of this function
    ("_NestedSequence.count", "Tuple.tuple_count", 5, 6),  # return (the) number of occurrences of value
    ("is_", "is_not", 5, 6),  # same as a is (not) b
    ("_days_before_year", "_post_epoch_days_before_year", 4, 13),  # a word counts once: "of year" twice is {of, year}
    ("is_", "truth", 2, 10),
]


@pytest.mark.parametrize(("a", "b", "shared", "total"), QUERY_CASES, ids=[f"{a}~{b}" for a, b, *_ in QUERY_CASES])
def test_query_jaccard_counts_shared_words(pairs, a, b, shared, total):
    x, y = query_words(pairs[a].query_key), query_words(pairs[b].query_key)
    assert (len(x & y), len(x | y)) == (shared, total)
    assert jaccard(x, y) == Fraction(shared, total)


def test_code_shingles_of_short_code_is_the_code_itself():
    assert code_shingles(["def", "f", "(", ")"]) == {("def", "f", "(", ")")}
    assert len(code_shingles("def f ( ) : pass".split())) == 6 - CODE_NGRAM + 1


@pytest.mark.parametrize(("probe", "reference", "threshold", "found"), [
    # 7 of 10 in all is 7/10 and counts at 0.7. The prefix must keep 10 - 7 + 1 = 4 members: one
    # fewer would be {0, 1, 2}, the rarest (in no reference), and the match would be missed.
    (range(10), range(3, 10), 0.7, Fraction(7, 10)),
    (range(10), range(3, 10), 0.71, None),
    # asyncio's start_tls: "Upgrade a transport to TLS." against "Upgrade transport to TLS."
    ("upgrade a transport to tls".split(), "upgrade transport to tls".split(), QUERY_JACCARD, Fraction(4, 5)),
    ("upgrade a transport to tls".split(), "upgrade transport to tls".split(), 0.81, None),
    ([], [], 0.5, None),  # an empty set is near nothing
])
def test_threshold_is_exact(probe, reference, threshold, found):
    matches = near_duplicates([frozenset(reference)], [frozenset(probe)], threshold)
    assert [m.jaccard for m in matches] == ([found] if found is not None else [])


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 1.0])
def test_near_duplicates_equals_brute_force(threshold):
    rng = random.Random(11)
    make = lambda: frozenset(rng.sample(range(24), rng.randint(0, 10)))  # noqa: E731
    references, probes = [make() for _ in range(300)], [make() for _ in range(120)]
    expected = []
    for p, probe in enumerate(probes):
        scores = [(jaccard(ref, probe), -r) for r, ref in enumerate(references)]
        score, minus_r = max(scores)
        if score and score >= Fraction(str(threshold)):
            expected.append((p, -minus_r, score))
    got = near_duplicates(iter(references), probes, threshold)
    assert [(m.probe, m.reference, m.jaccard) for m in got] == expected
    assert expected  # the table is not empty: the comparison says something


@pytest.mark.parametrize("threshold", [0, -0.5, 1.5])
def test_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(ValueError, match="`threshold` should be in"):
        near_duplicates([frozenset({1})], [frozenset({1})], threshold)


def _splits(pairs, **names) -> dict[str, list[Pair]]:
    return {split: [pairs[name] for name in names.get(split, ())] for split in ("train", "valid", "test")}


def test_valid_and_test_lose_their_near_duplicates_of_train(pairs):
    splits = _splits(pairs, train=["exp.inverse", "_NestedSequence.count", "is_"],
                     valid=["is_not"], test=["sinh.inverse", "Tuple.tuple_count", "truth"])
    kept, near = drop_across_splits(splits)
    assert kept["train"] == splits["train"]
    assert kept["valid"] == [] and [p.func_name for p in kept["test"]] == ["truth"]
    assert near.removed == {"valid": {CODE: 0, QUERY: 1}, "test": {CODE: 1, QUERY: 1}}
    assert [(d.split, d.url, d.reason, d.train_url, d.jaccard) for d in near.dropped] == [
        ("valid", pairs["is_not"].url, QUERY, pairs["is_"].url, 0.8333),
        ("test", pairs["sinh.inverse"].url, CODE, pairs["exp.inverse"].url, 0.7778),
        ("test", pairs["Tuple.tuple_count"].url, QUERY, pairs["_NestedSequence.count"].url, 0.8333),
    ]


def test_near_duplicates_within_a_split_stay(pairs):
    for split in ("train", "test"):  # 7/9 of their windows shared, in one split
        splits = _splits(pairs, **{split: ["_days_before_year", "_post_epoch_days_before_year"]})
        kept, near = drop_across_splits(splits)
        assert kept == splits and near.dropped == ()


def test_a_pair_near_on_both_counts_once_under_code(pairs):
    both = dataclasses.replace(pairs["sinh.inverse"], query_key=pairs["exp.inverse"].query_key)
    kept, near = drop_across_splits({"train": [pairs["exp.inverse"]], "valid": [], "test": [both]})
    assert kept["test"] == [] and near.removed["test"] == {CODE: 1, QUERY: 0}


def test_drops_do_not_depend_on_the_order_of_train(pairs):
    train = [pairs[n] for n in ("exp.inverse", "_NestedSequence.count", "is_", "_days_before_year")]
    splits = _splits(pairs, test=["sinh.inverse", "Tuple.tuple_count", "is_not", "truth"])
    forward = drop_across_splits(splits | {"train": train})
    backward = drop_across_splits(splits | {"train": train[::-1]})
    assert forward[0]["test"] == backward[0]["test"] and forward[1] == backward[1]


# --- a build: the near-duplicate lands across the split, is dropped, and the manifest says so


def _sizes(root: Path) -> dict[tuple[str, str], int]:
    """Pairs per file after the duplicate filters, as build_corpus counts them before splitting."""
    source, dedup, sizes = resolve_sources([str(root)])[0], Deduplicator(), {}
    for file in source.files():
        path = source.relative(file)
        kept = [p for p in mine_file(file, repo=source.name, path=path).pairs if dedup.offer(p) is None]
        if kept:
            sizes[(source.name, path)] = len(kept)
    return sizes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, int]:
    """tests/data/corpus plus the three files, and a seed that puts origin.py in train, copies.py
    in test and together.py (two near-duplicates of each other) in valid."""
    root = tmp_path_factory.mktemp("src") / "corpus"
    shutil.copytree(CORPUS, root)
    for name in ("origin.py", "copies.py", "together.py"):
        shutil.copy(CASES / name, root / name)
    sizes = _sizes(root)
    wanted = {"origin.py": "train", "copies.py": "test", "together.py": "valid"}
    for seed in range(500):
        assignment = assign_splits(sizes, seed=seed)
        if all(assignment[("corpus", name)] == split for name, split in wanted.items()):
            return root, seed
    raise AssertionError("no seed in 0..499 puts the files where the test needs them")


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory) -> Path:
    root, seed = corpus
    out = tmp_path_factory.mktemp("built") / "data"
    build_corpus(out=out, sources=[str(root)], seed=seed, progress=False)
    return out


def test_build_drops_test_near_duplicates_of_train_and_keeps_the_rest(built):
    test = {example.func_name for example in load_split(built, "test")}
    train = {example.func_name for example in load_split(built, "train")}
    assert {"exp.inverse", "_NestedSequence.count", "is_"} <= train
    assert not test & {"sinh.inverse", "Tuple.tuple_count", "is_not"}
    assert "truth" in test
    valid = {example.func_name for example in load_split(built, "valid")}
    assert {"_days_before_year", "_post_epoch_days_before_year"} <= valid  # near each other in one split: both stay


def test_build_counts_drops_per_split_and_reason_and_records_thresholds(built):
    manifest = read_manifest(built)
    near = manifest.near_duplicates
    assert near["thresholds"] == {"code_ngram": CODE_NGRAM, "code_jaccard": CODE_JACCARD, "query_jaccard": QUERY_JACCARD}
    assert near["thresholds"] == {"code_ngram": 5, "code_jaccard": 0.7, "query_jaccard": 0.8}
    assert near["removed"] == {"valid": {CODE: 0, QUERY: 0}, "test": {CODE: 1, QUERY: 2}}
    assert {(d["url"].split("#")[0], d["reason"], d["jaccard"]) for d in near["dropped"]} == {
        ("corpus/copies.py", CODE, 0.7778), ("corpus/copies.py", QUERY, 0.8333),
    } and len(near["dropped"]) == 3
    for reason in ACROSS_SPLIT_FILTERS:  # the totals beside the other filters
        assert manifest.removed[reason] == sum(counts[reason] for counts in near["removed"].values())
    assert manifest.functions == sum(manifest.removed.values()) + manifest.pairs
    assert manifest.sources[0]["pairs"] == manifest.pairs == sum(manifest.splits.values())
    assert "near duplicates of train: code 5-gram Jaccard >= 0.7, query word Jaccard >= 0.8" in manifest.summary()


def test_build_with_near_duplicates_is_byte_identical(built, corpus, tmp_path):
    root, seed = corpus
    build_corpus(out=tmp_path / "again", sources=[str(root)], seed=seed, progress=False, workers=2)
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "again" / name).read_bytes() == (built / name).read_bytes(), name
