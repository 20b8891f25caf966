"""Ranking under a tie rule: gold_ranks and top_k against a brute-force loop, non-finite input, predictions.

CodeXGLUE's `run.py` ranks the gold code of query i as 1 + the number of other codes j with
scores[i, j] >= scores[i, i] ("codexglue"); the rule this project used before counted only codes
scoring strictly higher ("optimistic"). Every case is a small score matrix written out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainers.training.batching import Tokenized
from trainers.training.evaluate import NonFiniteError, TIE_RULES, evaluate, gold_ranks, mrr, top_k


def brute_force_ranks(q: torch.Tensor, c: torch.Tensor, ties: str) -> list[int]:
    """CodeXGLUE run.py's double loop (codexglue), or its strict variant (optimistic)."""
    scores = (q.double() @ c.double().T).tolist()
    ranks = []
    for i, row in enumerate(scores):
        ahead = sum(1 for j, s in enumerate(row) if j != i and (s >= row[i] if ties == "codexglue" else s > row[i]))
        ranks.append(1 + ahead)
    return ranks


def codexglue_evaluator(answers: list[list[int]]) -> list[float]:
    """CodeXGLUE's evaluator.py: 1 / (first position of the gold idx in the answers), 0 when absent; gold of query i is i."""
    return [1 / (row.index(i) + 1) if i in row else 0.0 for i, row in enumerate(answers)]


E = torch.eye(3)
CASES = {
    # name: (queries, codes, ranks under codexglue, ranks under optimistic)
    "distinct": (torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]),
                 [2, 3, 1], [2, 2, 1]),  # q1 scores [0, 0, 3]: its gold (code 1) ties with code 0
    "all equal": (torch.ones(4, 2), torch.ones(4, 2), [4, 4, 4, 4], [1, 1, 1, 1]),  # constant embeddings
    "zero vectors": (torch.zeros(3, 2), torch.zeros(3, 2), [3, 3, 3], [1, 1, 1]),
    "identity": (E, E, [1, 1, 1], [1, 1, 1]),
    "twin pairs": (torch.stack([E[0], E[0], E[2]]), torch.stack([E[0], E[0], E[2]]), [2, 2, 1], [1, 1, 1]),  # pairs 0 and 1 are twins
    "twin codes": (E, torch.stack([E[0], E[0], E[2]]), [2, 3, 1], [1, 1, 1]),  # q1 scores 0 against every code
    "three-way tie": (torch.tensor([[1.0, 0.0]] * 4), torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 0.0]]),
                      [4, 4, 4, 1], [2, 2, 2, 1]),
    "negative": (torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]),
                 [3, 3, 3], [3, 3, 3]),
}


@pytest.mark.parametrize("ties", TIE_RULES)
@pytest.mark.parametrize("case", CASES)
def test_gold_ranks_match_the_brute_force_loop(case, ties):
    q, c, codexglue, optimistic = CASES[case]
    expected = {"codexglue": codexglue, "optimistic": optimistic}[ties]
    assert brute_force_ranks(q, c, ties) == expected  # the table is right
    for chunk in (1, 2, 1024):  # chunking does not change the ranks
        assert gold_ranks(q, c, chunk=chunk, ties=ties).tolist() == expected


@pytest.mark.parametrize("ties", TIE_RULES)
def test_gold_ranks_match_the_brute_force_loop_on_random_ties(ties):
    """Embeddings on a coarse integer grid, with duplicated rows: many ties, some with the gold code."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randint(-2, 3, (60, 4), generator=gen).float()
    c = torch.randint(-2, 3, (60, 4), generator=gen).float()
    c[10:20] = c[0]  # ten twins of code 0
    expected = brute_force_ranks(q, c, ties)
    assert gold_ranks(q, c, chunk=7, ties=ties).tolist() == expected
    assert len(set(expected)) > 5  # not a degenerate case


@pytest.mark.parametrize("bad, where", [
    ("query nan", "query embeddings"), ("query inf", "query embeddings"), ("code nan", "code embeddings"),
    ("code -inf", "code embeddings"), ("overflow", "scores"),
])
@pytest.mark.parametrize("ties", TIE_RULES)
def test_non_finite_embeddings_or_scores_raise(bad, where, ties):
    q, c = torch.eye(3), torch.eye(3)
    side, value = bad.split()[0], bad.split()[-1]
    if bad == "overflow":  # finite embeddings, infinite score: 1e20 * 1e20 overflows float32
        q, c = q * 1e20, c * 1e20
    else:
        (q if side == "query" else c)[1, 0] = float(value)
    with pytest.raises(NonFiniteError, match=where):
        gold_ranks(q, c, ties=ties)
    with pytest.raises(NonFiniteError, match=where):
        top_k(q, c, 2, ties=ties)


@pytest.mark.parametrize("ties", TIE_RULES)
@pytest.mark.parametrize("case", CASES)
def test_top_k_puts_the_gold_code_at_its_rank(case, ties):
    """The gold code's position in its row is its rank, so CodeXGLUE's evaluator gives our MRR."""
    q, c, *_ = CASES[case]
    ranks = gold_ranks(q, c, ties=ties)
    rows = top_k(q, c, len(c), ties=ties).tolist()
    assert [row.index(i) + 1 for i, row in enumerate(rows)] == ranks.tolist()
    assert sum(codexglue_evaluator(rows)) / len(rows) == pytest.approx(mrr(ranks))
    for i, row in enumerate(rows):  # best first
        scores = (q[i] @ c.T)[row].tolist()
        assert scores == sorted(scores, reverse=True)


def test_top_k_orders_tied_codes_deterministically():
    """All codes tie: the split's order, with the gold code last (codexglue) or first (optimistic)."""
    q, c = torch.ones(4, 2), torch.ones(4, 2)
    assert top_k(q, c, 4, ties="codexglue").tolist() == [[1, 2, 3, 0], [0, 2, 3, 1], [0, 1, 3, 2], [0, 1, 2, 3]]
    assert top_k(q, c, 4, ties="optimistic").tolist() == [[0, 1, 2, 3], [1, 0, 2, 3], [2, 0, 1, 3], [3, 0, 1, 2]]
    assert top_k(q, c, 2, ties="codexglue").tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]  # the gold falls off the list


@pytest.mark.parametrize("ties", TIE_RULES)
def test_top_k_is_the_same_in_any_chunking(ties):
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(-2, 3, (50, 4), generator=gen).float()
    c = torch.randint(-2, 3, (50, 4), generator=gen).float()
    whole = top_k(q, c, 10, ties=ties)
    assert torch.equal(whole, top_k(q, c, 10, chunk=7, ties=ties))
    in_list = [min(row.index(i) + 1, 11) if i in row else 11 for i, row in enumerate(whole.tolist())]
    assert in_list == [min(r, 11) for r in gold_ranks(q, c, ties=ties).tolist()]


@pytest.mark.parametrize("ties, expected", [("codexglue", 1 / 40), ("optimistic", 1.0)])
def test_constant_embeddings_score_one_over_n_under_codexglue(ties, expected):
    """An encoder that maps everything to one vector (a collapsed model) ranks the gold last, not first."""
    tok = Tokenized([[0, 5 + i % 3] for i in range(40)], [[0, 7, 8 + i % 5] for i in range(40)], pad_id=1)
    constant = lambda ids, mask: torch.ones(len(ids), 8)  # noqa: E731
    result = evaluate(constant, tok, batch_size=16, device=torch.device("cpu"), ties=ties)
    assert result.mrr == pytest.approx(expected)
    assert result.ranks.tolist() == [40 if ties == "codexglue" else 1] * 40


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_evaluate_refuses_a_diverged_encoder(value):
    tok = Tokenized([[0, 5]] * 6, [[0, 7]] * 6, pad_id=1)
    diverged = lambda ids, mask: torch.full((len(ids), 4), value)  # noqa: E731
    with pytest.raises(NonFiniteError, match="not finite"):
        evaluate(diverged, tok, batch_size=4, device=torch.device("cpu"))


def test_unknown_tie_rule_is_named():
    from records.errors import InterpError

    with pytest.raises(InterpError, match="tie rule .* got 'pessimistic'"):
        gold_ranks(torch.eye(2), torch.eye(2), ties="pessimistic")
