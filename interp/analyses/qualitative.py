"""Which queries does a delta get right, and what do they look like? (The study's Sec. 5.1.)

A query is *correct* for a run when its gold code is ranked first (rank 1; the study's
Table 7.4). Over the runs of `--runs`:

    easy   correct for every run          hard   wrong for every run

and for a `--baseline` / `--candidate` pair (the study's LoRA-256 / loFF, Table 7.5):

    fixed         wrong for the baseline, correct for the candidate
    regressed     correct for the baseline, wrong for the candidate
    both_correct  correct for both          both_wrong  wrong for both

(the last four partition the examples).

Each set is described by tokenizer tokens of the base's tokenizer, on the text the model reads
(`Example.query`, `Example.code_text`), truncated to the runs' `max_len` as in training, special
tokens ([CLS]/<s>, [SEP]/</s>) not counted:

    query_len        tokens of the query
    code_len         tokens of the code, as truncated (what the model sees)
    code_len_full    tokens of the code before truncation
    unique_tokens    distinct token types in the (truncated) code
    repeated_tokens  distinct token types occurring at least twice in the (truncated) code

`repeated_tokens` counts types, not occurrences, as the study does: its fixed example (App.
7.8) "contains 256 tokens in total, with 8 repeated normalized variable names", and exactly
eight names of that listing (arg_0, arg_1, arg_2, arg_4, arg_7, arg_8, arg_9, arg_11) occur
more than once. The study does not define the measure further; here it is counted over
tokenizer tokens. So a code `a b a c a b` has 6 tokens, 3 unique tokens (a, b, c) and 2
repeated tokens (a, b); unique minus repeated is the number of tokens that occur once.

Sets are compared with two-sided Mann-Whitney U tests on every attribute, for the pairs the
study compares (`PAIRS`): easy vs hard (Fig. 5.1); fixed vs both_correct and fixed vs
both_wrong (Fig. 5.2); regressed vs fixed and regressed vs both_correct (App. 7.5: the
regressed examples "lie between the Both Correct and the Fixed categories"). Holm's adjustment
over all the tests of one result is given beside each p. A Mann-Whitney test compares whole
distributions: its null is P(x > y) + P(x = y) / 2 = 1/2 for x from one set and y from the
other (stochastic equality), not equal means or medians; that probability is stored beside the
p (`superiority`), and the means and medians shown with the sets are descriptions, not what
the p is about.

Ranks of `base` are computed as the runs were trained (their max_len and pooling; see
`interp.analyses.compare.BaseScoring`), and the token statistics are truncated at the runs'
max_len (the longest, if the runs differ and `base` is not among them).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from interp.analyses.base import resolve_runs
from interp.analyses.checks import at_least, check_split, distinct
from interp.analyses.inputs import BaseScoring, RankTable, data_label, load_rank_table
from interp.analyses.ranks import max_len_of
from interp.analyses.running import Prepared
from interp.analyses.stats import MannWhitney, Summary, holm, mann_whitney, summary
from trainers.devices import DEFAULT_PRECISION, check_precision
from records.errors import InterpError
from trainers.training.evaluate import DEFAULT_TIE_RULE

ATTRIBUTES = ("query_len", "code_len", "code_len_full", "unique_tokens", "repeated_tokens")
SETS = ("easy", "hard", "fixed", "regressed", "both_correct", "both_wrong")
PAIRS = (("easy", "hard"), ("fixed", "both_correct"), ("fixed", "both_wrong"), ("regressed", "fixed"), ("regressed", "both_correct"))


def token_attributes(tokenizer, queries: Sequence[str], codes: Sequence[str], max_len: int) -> dict[str, np.ndarray]:
    """The five attributes of every (query, code), each an (n,) int array."""
    budget = max_len - tokenizer.num_special_tokens_to_add(pair=False)  # content tokens the model reads

    def ids(texts: Sequence[str]) -> list[list[int]]:
        return tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    query_ids, code_ids = ids(queries), ids(codes)
    seen = [Counter(c[:budget]) for c in code_ids]
    return {
        "query_len": np.array([min(len(q), budget) for q in query_ids], dtype=np.int64),
        "code_len": np.array([min(len(c), budget) for c in code_ids], dtype=np.int64),
        "code_len_full": np.array([len(c) for c in code_ids], dtype=np.int64),
        "unique_tokens": np.array([len(s) for s in seen], dtype=np.int64),
        "repeated_tokens": np.array([sum(1 for k in s.values() if k > 1) for s in seen], dtype=np.int64),
    }


@dataclass(frozen=True)
class RunCorrect:
    correct: int  # gold code ranked first
    wrong: int
    mrr: float


@dataclass(frozen=True)
class Sample:
    idx: int
    url: str
    docstring: str  # verbatim from the data file
    code: str  # verbatim (`code`, else the code text the model reads)
    query: str  # the query text the model reads
    ranks: dict[str, int]
    attributes: dict[str, int]


@dataclass(frozen=True)
class SetResult:
    name: str
    definition: str
    count: int
    idx: list[int]  # the members, in the data's order
    stats: dict[str, Summary]  # attribute -> count, mean, median
    samples: list[Sample]


@dataclass(frozen=True)
class SetTest:
    a: str
    b: str
    attribute: str
    test: MannWhitney  # a against b; effect > 0 when a tends to be larger
    p_holm: float | None


@dataclass(frozen=True)
class QualitativeResult:
    examples: int
    runs: list[str]  # easy / hard are over these
    baseline: str | None
    candidate: str | None
    max_len: int
    per_run: dict[str, RunCorrect]  # the study's Table 7.4
    sets: list[SetResult]  # the study's Table 7.5, with statistics and samples
    tests: list[SetTest]  # Mann-Whitney U: stochastic dominance, not a difference of the means in `sets`
    base: BaseScoring | None = None  # how 'base' was scored, when it is among the runs
    ties: str = DEFAULT_TIE_RULE  # the tie rule of the ranks: what "ranked first" means under ties


class Qualitative:
    """Bound to the ranks of some runs over `examples` (same order) and the base's tokenizer.

    Through the one face, binding is where the ranks are read (or computed, loading each run's model).
    """

    kind: ClassVar[str] = "qualitative"

    def __init__(self, ranks: Mapping[str, Sequence[int]], examples: Sequence, tokenizer, *, runs: Sequence[str],
                 baseline: str | None = None, candidate: str | None = None, max_len: int = 256, base: BaseScoring | None = None,
                 ties: str = DEFAULT_TIE_RULE):
        if (baseline is None) != (candidate is None):
            raise InterpError("give both --baseline and --candidate, or neither")
        if baseline is not None and baseline == candidate:
            raise InterpError(f"--baseline and --candidate are both {baseline!r}; name two different runs")
        if not runs:
            raise InterpError("give --runs, or --baseline and --candidate")
        needed = list(runs) + [n for n in (baseline, candidate) if n is not None]
        missing = [n for n in needed if n not in ranks]
        if missing:
            raise ValueError(f"`ranks` has no ranks for {missing}.")
        if any(len(ranks[n]) != len(examples) for n in needed):
            raise ValueError("every run's ranks should follow `examples`, one rank per example.")
        self.ranks = {n: np.asarray(ranks[n], dtype=np.int64) for n in dict.fromkeys(needed)}
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.runs, self.baseline, self.candidate, self.max_len = list(runs), baseline, candidate, max_len
        self.base, self.ties = base, ties

    def sets(self) -> dict[str, tuple[np.ndarray, str]]:
        """Set name -> (boolean mask over the examples, definition)."""
        ok = {n: r == 1 for n, r in self.ranks.items()}
        names = ", ".join(self.runs)
        out = {
            "easy": (np.logical_and.reduce([ok[n] for n in self.runs]), f"gold ranked first by every run of {names}"),
            "hard": (np.logical_and.reduce([~ok[n] for n in self.runs]), f"gold not ranked first by any run of {names}"),
        }
        if self.baseline is not None:
            b, c = ok[self.baseline], ok[self.candidate]
            out |= {
                "fixed": (~b & c, f"wrong for {self.baseline}, correct for {self.candidate}"),
                "regressed": (b & ~c, f"correct for {self.baseline}, wrong for {self.candidate}"),
                "both_correct": (b & c, f"correct for both {self.baseline} and {self.candidate}"),
                "both_wrong": (~b & ~c, f"wrong for both {self.baseline} and {self.candidate}"),
            }
        return out

    def compute(self, data: None = None, *, samples: int = 3, seed: int = 0) -> QualitativeResult:
        """The sets and their tests over the bound ranks (`data` is None: the ranks and examples are bound with the runs)."""
        if data is not None:
            raise InterpError("qualitative's inputs are the ranks it is bound to; it takes no other data")
        at_least("--samples", samples, 0)
        attrs = token_attributes(self.tokenizer, [e.query for e in self.examples], [e.code_text for e in self.examples], self.max_len)
        masks = self.sets()
        sets = [self._set(name, mask, definition, attrs, samples, seed) for name, (mask, definition) in masks.items()]
        pairs = [(a, b, attr, mann_whitney(attrs[attr][masks[a][0]], attrs[attr][masks[b][0]]))
                 for a, b in PAIRS if a in masks and b in masks for attr in ATTRIBUTES]
        adjusted = holm([t.p for *_, t in pairs])
        per_run = {n: RunCorrect(int((r == 1).sum()), int((r != 1).sum()), float((1.0 / r).mean())) for n, r in self.ranks.items()}
        return QualitativeResult(
            examples=len(self.examples), runs=self.runs, baseline=self.baseline, candidate=self.candidate,
            max_len=self.max_len, per_run=per_run, sets=sets,
            tests=[SetTest(a, b, attr, t, q) for (a, b, attr, t), q in zip(pairs, adjusted)], base=self.base, ties=self.ties,
        )

    @classmethod
    def prepare(cls, *, runs_dir: Path, runs: Sequence[str] | None = None, baseline: str | None = None,
                candidate: str | None = None, split: str = "test", data_file: Path | None = None,
                limit: int | None = None, samples: int = 3, progress: bool = True,
                precision: str = DEFAULT_PRECISION, foreign=None) -> Prepared:
        """Easy/hard (and fixed/regressed) examples of some runs: runs/analyses/qualitative/<name>.json; nothing scored."""
        if (baseline is None) != (candidate is None):
            raise InterpError("give both --baseline and --candidate, or neither")
        if baseline is not None and baseline == candidate:
            raise InterpError(f"--baseline and --candidate: run {baseline!r} is named twice; fixed and regressed need two different runs")
        distinct("--runs", list(runs or []))
        at_least("--samples", samples, 0)
        check_split(split, data_file)
        at_least("--limit", limit, 1)
        check_precision(precision)
        set_runs = list(runs) if runs else [n for n in (baseline, candidate) if n is not None]
        if not set_runs:
            raise InterpError("give --runs, or --baseline and --candidate")
        names = list(dict.fromkeys(set_runs + [n for n in (baseline, candidate) if n is not None]))
        resolve_runs(Path(runs_dir), names, foreign=foreign)  # unknown names first
        held: dict[str, RankTable] = {}

        def bind() -> Qualitative:
            table = held["table"] = load_rank_table(Path(runs_dir), names, split=split, data_file=data_file, limit=limit,
                                                    progress=progress, precision=precision, foreign=foreign)
            trained = [max_len_of(r) for r in table.refs if not r.is_base]  # 'base' is scored at the runs' length
            max_len = max(trained) if trained else table.base.max_len
            return cls(table.ranks, table.data.examples, load_tokenizer(table.refs[0].base["source"]), runs=set_runs,
                       baseline=baseline, candidate=candidate, max_len=max_len, base=table.base, ties=table.ties)

        def inputs(result: QualitativeResult) -> dict:
            table = held["table"]
            return table.inputs() | {"tokenizer": table.refs[0].base["source"], "samples": samples}

        return Prepared(name=result_name(set_runs, baseline, candidate) + data_label(split, data_file, limit), bind=bind,
                        options={"samples": samples}, inputs=inputs)

    def _set(self, name: str, mask: np.ndarray, definition: str, attrs: dict[str, np.ndarray], k: int, seed: int) -> SetResult:
        members = np.flatnonzero(mask).tolist()
        chosen = sorted(random.Random(f"{seed}:{name}").sample(members, min(k, len(members))))
        samples = []
        for i in chosen:
            e = self.examples[i]
            samples.append(Sample(
                idx=e.idx, url=e.url, docstring=e.docstring, code=e.code or e.code_text, query=e.query,
                ranks={n: int(r[i]) for n, r in self.ranks.items()}, attributes={a: int(v[i]) for a, v in attrs.items()},
            ))
        stats = {a: summary(v[mask]) for a, v in attrs.items()}
        return SetResult(name, definition, len(members), [self.examples[i].idx for i in members], stats, samples)


def load_tokenizer(source: str):
    """The base's tokenizer alone (no weights): a local directory, or a hub id already cached."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir())


def result_name(runs: Sequence[str], baseline: str | None, candidate: str | None) -> str:
    if baseline is None:
        return "+".join(runs)
    pair = f"{baseline}-vs-{candidate}"
    return pair if list(runs) == [baseline, candidate] else f"{'+'.join(runs)}.{pair}"
