"""From examples to padded batches: tokenise once, then bucket by length.

Padding every sequence to 256 tokens (the CodeXGLUE way) spends most of the compute on pad
tokens: queries average a dozen tokens. Here each split is tokenised once, and batches are
drawn from length-sorted windows so that each batch is padded only to its own longest member.
The order is a pure function of (seed, epoch), so a resumed run sees the same batches.

With N data-parallel processes the batches stay global: every process draws the same order
and takes its contiguous 1/N slice of each batch (`shard`), so N processes see together
exactly the batches one process would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

WINDOW_BATCHES = 50  # batches per length-sorted window: large enough to bucket, small enough to stay random


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


@dataclass(frozen=True)
class Batch:
    index: list[int]  # positions in the split
    query: tuple[torch.Tensor, torch.Tensor]  # (batch, q_len) ids and mask
    code: tuple[torch.Tensor, torch.Tensor]  # (batch, c_len) ids and mask

    def to(self, device) -> Batch:
        move = lambda pair: tuple(t.to(device, non_blocking=True) for t in pair)  # noqa: E731
        return Batch(self.index, move(self.query), move(self.code))


def epoch_order(tok: Tokenized, batch_size: int, seed: int, epoch: int, bucket: bool = True) -> list[list[int]]:
    """The batches (lists of example positions) of one epoch, a pure function of (seed, epoch).

    Shuffle, cut into windows of WINDOW_BATCHES batches, sort each window by code length, cut
    into batches, shuffle the batches. A last short batch is dropped: with in-batch negatives a
    batch of one has nothing to contrast against.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(tok)))
    rng.shuffle(order)
    if bucket:
        window = batch_size * WINDOW_BATCHES
        order = [i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: len(tok.code_ids[i]))]
    batches = [order[b : b + batch_size] for b in range(0, len(order) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def make_batch(tok: Tokenized, index: list[int], pad_to: int | None = None) -> Batch:
    return Batch(
        index=index,
        query=pad([tok.query_ids[i] for i in index], tok.pad_id, pad_to),
        code=pad([tok.code_ids[i] for i in index], tok.pad_id, pad_to),
    )


def shard(index: list[int], rank: int, world: int) -> list[int]:
    """Process `rank`'s contiguous slice of a global batch; `world` must divide its length."""
    if len(index) % world:
        raise ValueError(f"a batch of {len(index)} does not split evenly over {world} processes")
    size = len(index) // world
    return index[rank * size : (rank + 1) * size]


def iterate_batches(tok: Tokenized, batches: list[list[int]], start: int = 0, pad_to: int | None = None,
                    rank: int = 0, world: int = 1) -> Iterator[Batch]:
    """The batches from `start` on; with `world` > 1, this process's slice of each (padded on its own)."""
    for index in batches[start:]:
        yield make_batch(tok, shard(index, rank, world), pad_to)


def encode_side(ids: list[list[int]], pad_id: int, batch_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Evaluation batches of one side, sorted by length (least padding); yields (positions, ids, mask)."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for b in range(0, len(order), batch_size):
        index = order[b : b + batch_size]
        yield (index, *pad([ids[i] for i in index], pad_id))
