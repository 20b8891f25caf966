"""Retrieval metrics of a split from the gold code's rank per query, as code-retrieval papers report them.

Each query of a code-search split has exactly one relevant code (its own), so every metric is a
function of that code's 1-based rank r (under the tie rule it was ranked with, see `evaluate`):

    mrr         1 / r                                    the study's and CodeXGLUE's metric
    mrr@10      1 / r if r <= 10, else 0                 CoIR, MTEB (MRR at cutoff 10)
    ndcg@10     1 / log2(r + 1) if r <= 10, else 0       binary relevance, one relevant item:
                                                         the ideal DCG is 1 (CoIR's and MTEB's main score)
    recall@k    1 if r <= k, else 0, for k = 1, 5, 10    (= success@k, hit rate)

and a split's value is the mean over its queries. These are the trec_eval definitions (`recip_rank`,
`ndcg_cut_10`, `recall_1/5/10`) evaluated on a ranking where the gold code sits at rank r:
tests/test_metrics.py checks them against pytrec_eval on a case table. They are computed from the
same ranks as MRR, in the same pass, so no metric costs a second scoring of the split.
"""

from __future__ import annotations

import torch

CUTOFF = 10  # the cutoff of mrr@10 and ndcg@10
RECALL_AT = (1, 5, 10)
NAMES = ("mrr", "mrr@10", "ndcg@10", *(f"recall@{k}" for k in RECALL_AT))  # the order they are shown in


def retrieval_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """{name: mean over queries} for every metric in `NAMES`; `ranks`: (queries,) 1-based gold ranks."""
    if ranks.numel() == 0:
        raise ValueError("no ranks: a split with no queries has no metrics")
    r = ranks.double()  # (queries,)
    if not bool((r >= 1).all()):
        raise ValueError(f"ranks are 1-based; got {r.min().item():g}")
    top = r <= CUTOFF
    out = {
        "mrr": (1.0 / r).mean(),
        f"mrr@{CUTOFF}": torch.where(top, 1.0 / r, 0.0).mean(),
        f"ndcg@{CUTOFF}": torch.where(top, 1.0 / torch.log2(r + 1.0), 0.0).mean(),
    }
    out.update({f"recall@{k}": (r <= k).double().mean() for k in RECALL_AT})
    return {name: float(out[name]) for name in NAMES}
