"""From examples to padded batches: tokenise once, draw the batches, encode them with little padding.

Padding every sequence to 256 tokens (the CodeXGLUE way) spends most of the compute on pad
tokens: queries average a dozen tokens. Each split is tokenised once, and how a training batch
is made is a recorded choice (`BATCHINGS`):

    random     the pairs that share a loss (the in-batch negatives of Eq. 4.1) are drawn at
               random, as CodeXGLUE draws them. Each side of a batch is encoded in
               length-sorted micro-batches, each padded only to its own longest member
               (`micro_batches`); the embeddings are put back into batch order before the
               loss, so the loss and its gradient are those of one pass over the whole batch.
    bucketed   batches cut from length-sorted windows, one pass per side: length-matched
               negatives (a batch's codes differ by a few tokens), so an easier objective
    codexglue  the random batches, padded to `max_len` in one pass (CodeXGLUE's loop; benchmarks)

The order is a pure function of (seed, epoch), so a resumed run sees the same batches; random
and codexglue draw the same batches. With N data-parallel processes the batches stay global:
every process draws the same order and takes its contiguous 1/N slice of each batch (`shard`),
so N processes see together exactly the batches one process would.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

BATCHINGS = ("random", "bucketed", "codexglue")
WINDOW_BATCHES = 50  # batches per length-sorted window (bucketed): large enough to bucket, small enough to stay random
# One more forward-backward call costs about as much as this many more (padded) tokens: MiniLM
# with LoRA-64 on 2 CPU cores, measured by fitting time = a + b * tokens (see the README's Speed).
CALL_COST_TOKENS = 256


@dataclass(frozen=True)
class Tokenized:
    """Token ids of the queries and codes of one split, unpadded, in the split's order."""

    query_ids: list[list[int]]
    code_ids: list[list[int]]
    pad_id: int

    def __len__(self) -> int:
        return len(self.query_ids)


def tokenize_pairs(tokenizer, queries: Sequence[str], codes: Sequence[str], max_len: int) -> Tokenized:
    """Tokenise both sides once, truncated to `max_len` tokens (special tokens included)."""

    def ids(texts: Sequence[str]) -> list[list[int]]:
        return tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)["input_ids"]

    return Tokenized(ids(queries), ids(codes), tokenizer.pad_token_id)


def pad(seqs: Sequence[Sequence[int]], pad_id: int, to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest) or (batch, `to`)."""
    width = to or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def check_batching(batching: str) -> str:
    if batching not in BATCHINGS:
        raise ValueError(f"`batching` should be one of {', '.join(BATCHINGS)}, got {batching!r}.")
    return batching


def epoch_order(tok: Tokenized, batch_size: int, seed: int, epoch: int, batching: str = "random") -> list[list[int]]:
    """The batches (lists of example positions) of one epoch, a pure function of (seed, epoch).

    Shuffle; for "bucketed", cut into windows of WINDOW_BATCHES batches and sort each window by
    code length; cut into batches, shuffle the batches. A last short batch is dropped: with
    in-batch negatives a batch of one has nothing to contrast against.
    """
    check_batching(batching)
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(tok)))
    rng.shuffle(order)
    if batching == "bucketed":
        window = batch_size * WINDOW_BATCHES
        order = [i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: len(tok.code_ids[i]))]
    batches = [order[b : b + batch_size] for b in range(0, len(order) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def code_length_ranges(tok: Tokenized, batches: list[list[int]]) -> list[int]:
    """Longest minus shortest code (tokens) in each batch: how length-matched its negatives are."""
    return [max(len(tok.code_ids[i]) for i in b) - min(len(tok.code_ids[i]) for i in b) for b in batches]


def median_code_length_range(tok: Tokenized, batches: list[list[int]]) -> float:
    return statistics.median(code_length_ranges(tok, batches))


# -- micro-batches ------------------------------------------------------------------------------

def micro_batches(lengths: Sequence[int], call_cost: int = CALL_COST_TOKENS, groups: int | None = None) -> list[list[int]]:
    """Positions 0..n-1 sorted by length and cut into contiguous groups, each padded to its own longest.

    The cut minimises the padded tokens plus `call_cost` tokens per group; with `groups`, it is
    the cut into exactly that many groups with the fewest padded tokens. Exact: dynamic
    programming over the sorted order.
    """
    n = len(lengths)
    if groups is not None and not 1 <= groups <= n:
        raise ValueError(f"`groups` should be in [1, {n}], got {groups}.")
    order = sorted(range(n), key=lambda i: lengths[i])
    width = np.array([lengths[i] for i in order], dtype=np.float64)  # (n,) ascending
    rows = np.arange(n, dtype=np.float64)

    def cheapest(prev: np.ndarray | None, cost: float) -> tuple[np.ndarray, np.ndarray]:
        """best[j]: the cheapest cut of the first j sorted positions; its last group is cut[j]..j-1.

        The groups before the last are cut as in `prev` (a layer with one group fewer), or, with
        `prev` None, as in this very layer (any number of groups).
        """
        best, cut = np.full(n + 1, np.inf), np.zeros(n + 1, dtype=np.int64)
        best[0] = 0.0 if prev is None else np.inf
        for j in range(1, n + 1):
            before = (best if prev is None else prev)[:j]
            total = before + (j - rows[:j]) * width[j - 1] + cost  # (j,) over the last group's start
            cut[j] = int(np.argmin(total))
            best[j] = total[cut[j]]
        return best, cut

    if groups is None:
        cuts = [cheapest(None, call_cost)[1]] * n  # the same layer at every step back
    else:
        cuts, prev = [], np.concatenate([[0.0], np.full(n, np.inf)])
        for _ in range(groups):
            prev, cut = cheapest(prev, 0.0)
            cuts.append(cut)
    out, j = [], n
    for cut in reversed(cuts):
        if j == 0:
            break
        out.append(order[int(cut[j]) : j])
        j = int(cut[j])
    return out[::-1]


@dataclass(frozen=True)
class Side:
    """One side (queries or codes) of a batch, as padded micro-batches.

    parts[k] is (ids, mask), each (rows_k, width_k). `restore` (batch,) puts the concatenated
    rows back into batch order: cat(rows)[restore]; None when they already are in it.
    """

    parts: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    restore: torch.Tensor | None = None

    def to(self, device) -> Side:
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Side(tuple((move(i), move(m)) for i, m in self.parts), None if self.restore is None else move(self.restore))

    @property
    def padded_tokens(self) -> int:
        return sum(ids.numel() for ids, _ in self.parts)


def embed_side(embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], side: Side) -> torch.Tensor:
    """(batch, hidden) embeddings in batch order: one `embed` call per micro-batch, differentiable."""
    rows = torch.cat([embed(ids, mask) for ids, mask in side.parts])  # (batch, hidden), sorted by length
    return rows if side.restore is None else rows[side.restore]


def side_of(seqs: Sequence[Sequence[int]], pad_id: int, groups: list[list[int]] | None = None, pad_to: int | None = None) -> Side:
    """`seqs` in one padded part, or in the `groups` (positions into seqs) given."""
    if groups is None:
        return Side((pad(seqs, pad_id, pad_to),))
    parts = tuple(pad([seqs[i] for i in g], pad_id) for g in groups)
    restore = torch.empty(len(seqs), dtype=torch.long)
    restore[torch.tensor([i for g in groups for i in g])] = torch.arange(len(seqs))
    return Side(parts, restore)


@dataclass(frozen=True)
class Batch:
    index: list[int]  # positions in the split (this process's slice of the global batch)
    query: Side
    code: Side

    def to(self, device) -> Batch:
        return Batch(self.index, self.query.to(device), self.code.to(device))


def shard(index: list[int], rank: int, world: int) -> list[int]:
    """Process `rank`'s contiguous slice of a global batch; `world` must divide its length."""
    if len(index) % world:
        raise ValueError(f"a batch of {len(index)} does not split evenly over {world} processes")
    size = len(index) // world
    return index[rank * size : (rank + 1) * size]


def shard_groups(lengths: Sequence[int], rank: int, world: int, call_cost: int = CALL_COST_TOKENS) -> list[list[int]]:
    """Micro-batches of process `rank`'s slice of a global batch whose sequences have `lengths`.

    Every process cuts its slice into the same number of micro-batches (the most any slice's
    cheapest cut has): under DDP each forward call is a collective, so all processes must make
    the same number of calls. Positions are into the slice.
    """
    if world == 1:
        return micro_batches(lengths, call_cost)
    count = max(len(micro_batches(shard(list(lengths), r, world), call_cost)) for r in range(world))
    return micro_batches(shard(list(lengths), rank, world), groups=count)


def make_batch(tok: Tokenized, index: list[int], batching: str = "random", max_len: int | None = None,
               rank: int = 0, world: int = 1, call_cost: int = CALL_COST_TOKENS) -> Batch:
    """This process's slice of the global batch `index`, padded as `batching` says.

    codexglue pads to `max_len` (which it needs).
    """
    check_batching(batching)
    if batching == "codexglue" and max_len is None:
        raise ValueError("codexglue batches are padded to `max_len`; give it")
    mine = shard(index, rank, world)
    sides = []
    for ids in (tok.query_ids, tok.code_ids):
        seqs = [ids[i] for i in mine]
        if batching == "random":
            groups = shard_groups([len(ids[i]) for i in index], rank, world, call_cost)
            sides.append(side_of(seqs, tok.pad_id, groups))
        else:
            sides.append(side_of(seqs, tok.pad_id, pad_to=max_len if batching == "codexglue" else None))
    return Batch(mine, *sides)


def iterate_batches(tok: Tokenized, batches: list[list[int]], start: int = 0, batching: str = "random", max_len: int | None = None,
                    rank: int = 0, world: int = 1, call_cost: int = CALL_COST_TOKENS) -> Iterator[Batch]:
    """The batches from `start` on; with `world` > 1, this process's slice of each."""
    for index in batches[start:]:
        yield make_batch(tok, index, batching, max_len, rank=rank, world=world, call_cost=call_cost)


def length_order(ids: list[list[int]]) -> list[int]:
    """Positions of `ids` by length, shortest first, ties in their order: the order `encode_side` batches them in."""
    return sorted(range(len(ids)), key=lambda i: len(ids[i]))


def encode_side(ids: list[list[int]], pad_id: int, batch_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Evaluation batches of one side, sorted by length (least padding); yields (positions, ids, mask)."""
    order = length_order(ids)
    for b in range(0, len(order), batch_size):
        index = order[b : b + batch_size]
        yield (index, *pad([ids[i] for i in index], pad_id))
