"""MRR over a whole split: every query ranked against every code of the split.

Embeddings are computed once per side (length-sorted batches, no padding to 256), then the
score matrix is formed a chunk of queries at a time, so memory stays at chunk x N floats
whatever the split's size.

The rank of the gold code follows a tie rule (`TIE_RULES`), recorded with every result:

    codexglue   1 + the number of *other* codes scoring >= the gold one: CodeXGLUE's
                `run.py` (`scores[i, j] >= score` over j != i). Ties count against the query,
                so a constant or degenerate embedding cannot score well. The default.
    optimistic  1 + the number of codes scoring strictly higher: ties count for the query
                (this project's rule before the tie rule was recorded; old runs used it).

Embeddings and scores must be finite: a NaN scores neither higher nor lower than anything, so
it would rank first under both rules. `NonFiniteError` is raised instead.

On N processes (data-parallel training, or an analysis under `--num-processes` / `accelerate
launch`) each embeds the batches one process would make, dealt out in turn, and the embeddings
are gathered once: every example is embedded exactly once, in the batch it has on one process, so
every process gets the embeddings, ranks and MRR of one process, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from trainers.devices import DEFAULT_PRECISION, autocast
from records.errors import InterpError
from trainers import parallel
from trainers.training.batching import Tokenized, encode_side, length_order
from trainers.training.metrics import retrieval_metrics


class NonFiniteError(InterpError):
    """An embedding or a score is NaN or infinite: the model has diverged."""


def check_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor`, or NonFiniteError naming `what` and how many entries are not finite."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        raise NonFiniteError(f"{int(bad.sum())} of {tensor.numel()} values of {what} are not finite (NaN or inf): the model has diverged")
    return tensor


def check_tie_rule(ties: str) -> str:
    if ties not in TIE_RULES:
        raise InterpError(f"the tie rule should be one of {', '.join(TIE_RULES)}, got {ties!r}")
    return ties

TIE_RULES = ("codexglue", "optimistic")
DEFAULT_TIE_RULE = "codexglue"
QUERY_CHUNK = 1024  # queries scored at once: 1024 x N float32 scores


def autocast_for(device: torch.device, precision: str = DEFAULT_PRECISION):
    """The forward passes' context at `precision` (`trainers.devices.autocast`: bf16 autocast, or nothing for fp32)."""
    return autocast(precision, device)


@torch.no_grad()
def embed_all(
    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: list[list[int]],
    pad_id: int,
    *,
    batch_size: int,
    device: torch.device,
    desc: str | None = None,
    precision: str = DEFAULT_PRECISION,
) -> torch.Tensor:
    """(N, hidden) float32 embeddings of one side, in the split's order.

    On several processes (a process group is running: training's accelerator, `accelerate launch`,
    `--num-processes`), the batches one process would make (length-sorted, `batch_size` each) are
    dealt out whole in turn (`parallel.deal`: batch r, r + P, ... to process r), and every process
    gets the whole matrix back (`parallel.gather_rows`). Each embedding is computed in the batch,
    with the padding, it has on one process, so the matrix is the one-process matrix, bit for bit
    (with as many batches as processes or more; fewer: every process embeds everything).
    Every process must call this (a collective). `embed` must not call a DDP-wrapped model (the
    processes make different numbers of calls): give it the unwrapped one. `precision`: the forward
    passes' (`autocast_for`); the embeddings come back float32 whatever it is.
    """
    world, _ = parallel.world()
    order = length_order(ids)
    batches = -(-len(ids) // batch_size)
    if world == 1 or batches < world:
        return _embed_positions(embed, ids, pad_id, batch_size=batch_size, device=device, desc=desc, precision=precision)
    def positions(batch_numbers) -> list[int]:  # the split's positions in these batches, batch after batch
        return [i for b in batch_numbers for i in order[b * batch_size : (b + 1) * batch_size]]

    # This process's batches, dealt in turn (parallel.deal): a length-sorted list of whole batches (only the split's
    # last batch can be short, and it comes last), which encode_side cuts into the same batches again.
    rows = _embed_positions(embed, [ids[i] for i in positions(parallel.deal(batches))], pad_id, batch_size=batch_size,
                            device=device, desc=desc, precision=precision)  # (n_mine, hidden)
    gathered = parallel.gather_rows(rows)  # (N, hidden): every process's rows, rank after rank
    out = torch.empty_like(gathered)
    out[torch.tensor(positions(parallel.dealt_order(batches)), device=gathered.device)] = gathered
    return out


def _embed_positions(embed, ids: list[list[int]], pad_id: int, *, batch_size: int, device: torch.device, desc: str | None,
                     precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    out: torch.Tensor | None = None
    batches = encode_side(ids, pad_id, batch_size)
    total = -(-len(ids) // batch_size)
    for index, input_ids, mask in tqdm(batches, total=total, desc=desc, disable=desc is None, leave=False):
        with autocast_for(device, precision):
            vectors = embed(input_ids.to(device), mask.to(device))
        vectors = vectors.float()  # (batch, hidden): float32 out of the forward pass, whatever its precision
        if out is None:
            out = torch.empty((len(ids), vectors.shape[-1]), dtype=torch.float32, device=device)
        out[torch.tensor(index, device=device)] = vectors
    if out is None:
        raise ValueError("nothing to embed: the split is empty")
    return out


def _score_chunks(queries: torch.Tensor, codes: torch.Tensor, chunk: int):
    """(start, (rows, N) scores of queries start..start+rows-1 against every code), finite or NonFiniteError.

    gold_ranks and top_k both score through here, in the same chunks, so they see the same floats.
    """
    if queries.shape[0] != codes.shape[0]:
        raise ValueError(f"query i's gold is code i: {queries.shape[0]} queries but {codes.shape[0]} codes")
    check_finite(queries, "the query embeddings")
    check_finite(codes, "the code embeddings")
    for start in range(0, len(queries), chunk):
        yield start, check_finite(queries[start : start + chunk] @ codes.T, "the scores")  # (chunk, N)


def gold_ranks(queries: torch.Tensor, codes: torch.Tensor, chunk: int = QUERY_CHUNK, ties: str = DEFAULT_TIE_RULE) -> torch.Tensor:
    """1-based rank of code i for query i, for every i. (N, hidden) x (N, hidden) -> (N,) int64.

    `ties`: "codexglue" counts every other code scoring >= the gold one; "optimistic" only
    those scoring strictly higher. Non-finite embeddings or scores raise NonFiniteError.
    """
    check_tie_rule(ties)
    ranks = []
    for start, scores in _score_chunks(queries, codes, chunk):
        rows = torch.arange(scores.shape[0], device=scores.device)
        gold = scores[rows, rows + start].unsqueeze(1)  # (chunk, 1)
        if ties == "codexglue":
            ahead = (scores >= gold).sum(dim=1) - 1  # the gold code itself is >= itself
        else:
            ahead = (scores > gold).sum(dim=1)
        ranks.append(ahead + 1)
    return torch.cat(ranks).cpu()


SORT_ROWS = 128  # rows of a score chunk sorted at once by top_k


def top_k(queries: torch.Tensor, codes: torch.Tensor, k: int, chunk: int = QUERY_CHUNK, ties: str = DEFAULT_TIE_RULE) -> torch.Tensor:
    """(N, min(k, N)) positions of the best-scoring codes for each query, best first.

    Codes with equal scores are ordered deterministically, consistently with `ties`: the gold
    code (code i for query i) comes after the codes tied with it under "codexglue" and before
    them under "optimistic"; other tied codes keep their order in the split. So the gold code's
    1-based position in row i is exactly its `gold_ranks` rank, and CodeXGLUE's evaluator (which
    scores a query by the position of the first occurrence of its gold idx in the list, 0 when
    absent) gives our MRR whenever the gold is listed. (CodeXGLUE's `run.py` orders its own
    predictions with numpy's unstable quicksort, so there tied codes fall in arbitrary order.)
    """
    check_tie_rule(ties)
    k = min(k, len(codes))
    n = len(codes)
    out = []
    for start, scores in _score_chunks(queries, codes, chunk):
        for offset in range(0, scores.shape[0], SORT_ROWS):
            block = scores[offset : offset + SORT_ROWS]  # (rows, N)
            rows = torch.arange(block.shape[0], device=block.device)
            tiebreak = torch.arange(n, device=block.device).repeat(block.shape[0], 1)  # (rows, N) position in the split
            tiebreak[rows, rows + start + offset] = n if ties == "codexglue" else -1  # the gold code last / first
            perm = tiebreak.argsort(dim=1)  # (rows, N) the codes in tie-break order
            best = block.gather(1, perm).sort(dim=1, descending=True, stable=True).indices[:, :k]  # (rows, k)
            out.append(perm.gather(1, best).cpu())
    return torch.cat(out)


def mrr(ranks: torch.Tensor) -> float:
    return float((1.0 / ranks.double()).mean())


@dataclass(frozen=True)
class Evaluation:
    mrr: float
    ranks: torch.Tensor  # (N,) 1-based rank of the gold code per query
    query_emb: torch.Tensor  # (N, hidden)
    code_emb: torch.Tensor  # (N, hidden)

    @property
    def metrics(self) -> dict[str, float]:
        """MRR, MRR@10, NDCG@10, Recall@1/5/10 from the same ranks (`trainers.training.metrics`)."""
        return retrieval_metrics(self.ranks)


def evaluate(
    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tok: Tokenized,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    ties: str = DEFAULT_TIE_RULE,
    precision: str = DEFAULT_PRECISION,
) -> Evaluation:
    """Embed both sides of a split and rank every query against every code (under `ties`).

    `precision`: of the forward passes (fp32 or bf16); embeddings, scores and ranks are float32 either way.
    On several processes the embedding is shared among them (see `embed_all`); all get the result.
    """
    progress = progress and parallel.is_main()
    shared = {"batch_size": batch_size, "device": device, "precision": precision}
    q = embed_all(embed, tok.query_ids, tok.pad_id, desc="queries" if progress else None, **shared)
    c = embed_all(embed, tok.code_ids, tok.pad_id, desc="codes" if progress else None, **shared)
    ranks = gold_ranks(q, c, ties=ties)
    return Evaluation(mrr=mrr(ranks), ranks=ranks, query_emb=q, code_emb=c)
