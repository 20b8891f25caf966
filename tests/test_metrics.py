"""Retrieval metrics from gold ranks: hand-computed case table, and trec_eval (pytrec_eval) as the reference."""

from __future__ import annotations

import math

import pytest
import torch

from trainers.training.metrics import NAMES, retrieval_metrics

# ranks -> expected {metric: value}, by hand: 1/r; 1/r within 10; 1/log2(r+1) within 10; r <= k
HAND = [
    ([1], {"mrr": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0, "recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0}),
    ([3], {"mrr": 1 / 3, "mrr@10": 1 / 3, "ndcg@10": 0.5, "recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0}),
    ([7], {"mrr": 1 / 7, "mrr@10": 1 / 7, "ndcg@10": 1 / 3, "recall@1": 0.0, "recall@5": 0.0, "recall@10": 1.0}),
    ([10], {"mrr": 0.1, "mrr@10": 0.1, "ndcg@10": 1 / math.log2(11), "recall@1": 0.0, "recall@5": 0.0, "recall@10": 1.0}),
    ([11], {"mrr": 1 / 11, "mrr@10": 0.0, "ndcg@10": 0.0, "recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0}),
    ([1, 3], {"mrr": 2 / 3, "mrr@10": 2 / 3, "ndcg@10": 0.75, "recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0}),
    ([1, 2, 5, 20], {"mrr": (1 + 0.5 + 0.2 + 0.05) / 4, "mrr@10": (1 + 0.5 + 0.2) / 4,
                     "ndcg@10": (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4,
                     "recall@1": 0.25, "recall@5": 0.75, "recall@10": 0.75}),
]


@pytest.mark.parametrize(("ranks", "expected"), HAND, ids=[str(r) for r, _ in HAND])
def test_metrics_by_hand(ranks, expected):
    got = retrieval_metrics(torch.tensor(ranks))
    assert list(got) == list(NAMES)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("ranks", [[], [0], [2, -1]], ids=["empty", "zero", "negative"])
def test_metrics_refuse_ranks_that_are_not_ranks(ranks):
    with pytest.raises(ValueError, match="ranks"):
        retrieval_metrics(torch.tensor(ranks, dtype=torch.long))


def trec_eval(ranks: list[int], docs: int) -> dict[str, float]:
    """The same metrics from trec_eval: each query's gold code placed at its rank among `docs` scored codes."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels = {f"q{i}": {f"q{i}-gold": 1} for i in range(len(ranks))}
    run, top10 = {}, {}
    for i, r in enumerate(ranks):
        others = [f"q{i}-d{j}" for j in range(docs - 1)]
        order = others[: r - 1] + [f"q{i}-gold"] + others[r - 1:]  # best first
        run[f"q{i}"] = {doc: float(docs - pos) for pos, doc in enumerate(order)}  # distinct scores: no ties
        top10[f"q{i}"] = {doc: float(docs - pos) for pos, doc in enumerate(order[:10])}  # trec_eval -M 10
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank", "ndcg_cut.10", "recall.1,5,10"}).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    mean = lambda measure, table=per_query: sum(q[measure] for q in table.values()) / len(table)  # noqa: E731
    return {"mrr": mean("recip_rank"), "mrr@10": mean("recip_rank", cut), "ndcg@10": mean("ndcg_cut_10"),
            "recall@1": mean("recall_1"), "recall@5": mean("recall_5"), "recall@10": mean("recall_10")}


REFERENCE = [
    [1],
    [2],
    [10],
    [11],
    [1, 1, 1],
    [4, 9, 10, 11, 12],
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 30],
    torch.randint(1, 40, (50,), generator=torch.Generator().manual_seed(0)).tolist(),
]


@pytest.mark.parametrize("ranks", REFERENCE, ids=[f"{len(r)}q-max{max(r)}" for r in REFERENCE])
def test_metrics_match_trec_eval(ranks):
    assert retrieval_metrics(torch.tensor(ranks)) == pytest.approx(trec_eval(ranks, docs=40), abs=1e-6)


@pytest.mark.parametrize(("queries", "codes", "expected_ranks"), [
    ([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], [1, 1]),  # each query's own code scores highest
    ([[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [2, 1]),  # query 0 prefers code 1
    ([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0]] * 3, [3, 3, 3]),  # constant: CodeXGLUE's ties count against
])
def test_evaluation_metrics_come_from_its_ranks(queries, codes, expected_ranks):
    from trainers.training.evaluate import Evaluation, gold_ranks, mrr

    q, c = torch.tensor(queries), torch.tensor(codes)
    ranks = gold_ranks(q, c)
    assert ranks.tolist() == expected_ranks
    evaluation = Evaluation(mrr=mrr(ranks), ranks=ranks, query_emb=q, code_emb=c)
    assert evaluation.metrics == retrieval_metrics(torch.tensor(expected_ranks))
    assert evaluation.metrics["mrr"] == pytest.approx(evaluation.mrr)
