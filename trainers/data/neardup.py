"""Fuzzy near-duplicates across splits: a valid or test pair too close to a train pair is dropped.

The duplicate filters in `filters.py` match exact keys before the split; copies that differ in a
few tokens (transformers' `replace_batch_norm`, copied from model to model with one line
changed) survive them and can land on both sides of the split. After the split, a valid or test
pair is dropped when

- `near_duplicate_of_train_code`: its code and some train code have a token 5-gram Jaccard of at
  least `CODE_JACCARD` (0.7), or else
- `near_duplicate_of_train_query`: its query and some train query have a word Jaccard of at
  least `QUERY_JACCARD` (0.8).

A pair is counted under the first rule that drops it, in that order. What is compared:

- Code: the code tokens of both pairs as train stores them (`Pair.code_tokens`: Python's
  `tokenize` tokens of the code without its docstring, comments and layout dropped, a string
  literal one token, names as written), cut into the set of their contiguous 5-token windows
  (`code_shingles`). Code shorter than 5 tokens is one shingle, itself. Names are kept, not
  normalised: in a short function the names are most of what it says, and with them hidden
  every one-line accessor (`return self._month`, `return self._day`: 5 of 7 windows shared)
  would near-duplicate every other (57 of the 73 default test codes the normalised tokens flag
  are under 25 tokens). Copies that differ only in local names are already gone before the
  split (`near_duplicate_code` compares the normalised tokens exactly).
- Query: the set of its lower-cased words (`query_words`): the `docstring_tokens` that hold a
  letter or digit, as `filters.query_key` keeps them; punctuation is ignored.
- Jaccard |A & B| / |A | B| on those sets, compared with the threshold exactly, as fractions
  (7 windows shared of 10 in all is 7/10 and counts at 0.7; no float rounding decides).

Only train is the reference: train is what a model learns from. Near-duplicates inside one
split, and between valid and test, are left alone (a distractor close to the gold code is a
fair part of a retrieval test, and neither valid nor test is trained on).

The search is exact, not sampled (no MinHash, so nothing is missed and no seed is involved):
every probe (valid or test) set P keeps its |P| - ceil(t |P|) + 1 members rarest in train as
its prefix. A train set R with Jaccard >= t shares at least t |P u R| >= t |P| members with P,
so at least one of them is in the prefix, and R is found through an inverted index from prefix
members to the train sets holding them (the prefix filter of Chaudhuri et al. 2006 and Bayardo
et al.'s All-Pairs, 2007). Every candidate is then checked with its exact Jaccard. Which pairs
are dropped depends only on the pairs; the train pair named for each is the closest, the first
in build order among equally close ones.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from trainers.data.filters import ACROSS_SPLIT_FILTERS
from trainers.data.schema import SPLITS

if TYPE_CHECKING:
    from trainers.data.extract import Pair

CODE_NGRAM = 5  # tokens per code shingle
CODE_JACCARD = 0.7  # a valid/test code this close to a train code is dropped
QUERY_JACCARD = 0.8  # a valid/test query this close to a train query is dropped
REFERENCE_SPLIT = "train"
PROBED_SPLITS = tuple(split for split in SPLITS if split != REFERENCE_SPLIT)
COMPARED = {  # what the thresholds apply to, as the manifest says it
    "code": f"sets of {CODE_NGRAM}-token windows of code_tokens (tokenize tokens, names as written)",
    "query": "sets of lower-cased words of docstring_tokens (punctuation ignored)",
}


def code_shingles(tokens: Sequence[str], n: int = CODE_NGRAM) -> frozenset[tuple[str, ...]]:
    """The set of contiguous `n`-token windows of `tokens`; shorter code is one window, itself."""
    tokens = tuple(tokens)
    if len(tokens) <= n:
        return frozenset([tokens])
    return frozenset(zip(*(tokens[i:] for i in range(n))))


def query_words(query_key: str) -> frozenset[str]:
    """The set of words of a query key (`filters.query_key`: lower-cased words, no punctuation)."""
    return frozenset(query_key.split())


def jaccard(a: frozenset, b: frozenset) -> Fraction:
    """|a & b| / |a | b| as an exact fraction; 0 for two empty sets."""
    shared = len(a & b)
    union = len(a) + len(b) - shared
    return Fraction(shared, union) if union else Fraction(0)


@dataclass(frozen=True)
class Match:
    """The closest reference set to one probe set, at or above the threshold."""

    probe: int  # index into the probes
    reference: int  # index into the references; the lowest one among equally close
    jaccard: Fraction


def near_duplicates(references: Iterable[frozenset], probes: Sequence[frozenset], threshold: float) -> list[Match]:
    """For each probe with a reference at Jaccard >= `threshold`, its closest one, by probe index.

    `references` is read once, so it may be a generator (only what the probes can share is kept).
    Exact: a prefix-filtered inverted index proposes candidates and each is verified.
    """
    t = _fraction(threshold)
    if not 0 < t <= 1:
        raise ValueError(f"`threshold` should be in (0, 1], got {threshold}.")
    probed = frozenset().union(*probes)
    # only what a probe can share matters on the reference side: keep that, and each set's size
    seen = [(len(ref), ref & probed) for ref in references]
    frequency = Counter(member for _, shared in seen for member in shared)
    prefixes = [_prefix(probe, t, frequency) for probe in probes]
    wanted = frozenset().union(*prefixes)
    postings: dict = {}
    for index, (_, shared) in enumerate(seen):
        for member in shared & wanted:
            postings.setdefault(member, []).append(index)
    num, den = t.numerator, t.denominator  # integer arithmetic below: exact, and fast
    matches = []
    for p, (probe, prefix) in enumerate(zip(probes, prefixes)):
        candidates = sorted({index for member in prefix for index in postings.get(member, ())})
        best, low, high = None, num * len(probe), den * len(probe)
        for index in candidates:
            size, shared = seen[index]
            if not low <= den * size or not num * size <= high:  # the sizes alone rule it out
                continue
            overlap = len(probe & shared)  # probe is inside `probed`, so this is |probe & reference|
            union = size + len(probe) - overlap
            if den * overlap >= num * union and (best is None or overlap * best[2] > best[1] * union):
                best = (index, overlap, union)
        if best is not None:
            matches.append(Match(p, best[0], Fraction(best[1], best[2])))
    return matches


def _fraction(threshold: float) -> Fraction:
    """0.7 as 7/10, not as the binary float nearest to it."""
    return Fraction(str(threshold))


def _prefix(probe: frozenset, t: Fraction, frequency: Counter) -> frozenset:
    """The |P| - ceil(t |P|) + 1 members of `probe` rarest in the references (ties: by value)."""
    if not probe:
        return frozenset()
    keep = len(probe) - math.ceil(t * len(probe)) + 1
    return frozenset(sorted(probe, key=lambda member: (frequency[member], member))[:keep])


@dataclass(frozen=True)
class Dropped:
    """One valid or test pair dropped, and the train pair it is too close to."""

    split: str
    url: str
    reason: str  # a name in ACROSS_SPLIT_FILTERS
    train_url: str
    jaccard: float  # rounded to 4 places

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NearDuplicates:
    """What the cross-split filter compared, with which thresholds, and what it dropped."""

    thresholds: dict = field(default_factory=dict)  # code_ngram, code_jaccard, query_jaccard
    removed: dict = field(default_factory=dict)  # split -> reason -> count
    dropped: tuple[Dropped, ...] = ()

    def to_json(self) -> dict:
        return {"reference": REFERENCE_SPLIT, "thresholds": dict(self.thresholds), "compared": dict(COMPARED),
                "removed": {split: dict(counts) for split, counts in self.removed.items()},
                "dropped": [d.to_json() for d in self.dropped]}

    def total(self, reason: str) -> int:
        return sum(counts.get(reason, 0) for counts in self.removed.values())


def thresholds() -> dict:
    """The settings in force, as the manifest records them."""
    return {"code_ngram": CODE_NGRAM, "code_jaccard": CODE_JACCARD, "query_jaccard": QUERY_JACCARD}


def drop_across_splits(splits: dict[str, list[Pair]]) -> tuple[dict[str, list[Pair]], NearDuplicates]:
    """`splits` without the valid and test pairs that near-duplicate a train pair, and the account."""
    train = splits[REFERENCE_SPLIT]
    rules = (
        (ACROSS_SPLIT_FILTERS[0], CODE_JACCARD, lambda pair: code_shingles(pair.code_tokens)),
        (ACROSS_SPLIT_FILTERS[1], QUERY_JACCARD, lambda pair: query_words(pair.query_key)),
    )
    probes = [(split, pair) for split in PROBED_SPLITS for pair in splits[split]]
    removed = {split: dict.fromkeys(ACROSS_SPLIT_FILTERS, 0) for split in PROBED_SPLITS}
    dropped = []
    for reason, threshold, key in rules:
        found = near_duplicates((key(pair) for pair in train), [key(pair) for _, pair in probes], threshold)
        for match in found:
            split, pair = probes[match.probe]
            removed[split][reason] += 1
            dropped.append(Dropped(split, pair.url, reason, train[match.reference].url, round(float(match.jaccard), 4)))
        gone = {match.probe for match in found}
        probes = [probe for index, probe in enumerate(probes) if index not in gone]
    kept = {split: [pair for s, pair in probes if s == split] for split in PROBED_SPLITS}
    result = NearDuplicates(thresholds=thresholds(), removed=removed,
                            dropped=tuple(sorted(dropped, key=lambda d: PROBED_SPLITS.index(d.split))))
    return {split: train if split == REFERENCE_SPLIT else kept[split] for split in splits}, result
