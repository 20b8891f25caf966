"""Where `interp attribute`'s integrated-gradients paths start: the reference inputs.

Integrated gradients explains f(input) - f(reference), so the reference decides the question.

    others (default)  K other examples of the split (8 unless --others), one path from each, the
                      attributions averaged over the paths (expected gradients, Erion et al. 2021;
                      the distribution of baselines of Sturmfels, Lundberg and Lee, Distill
                      2020). Their mean score is the neutral level a rank is measured against.
    pad               every non-special token replaced by the pad token (Captum's BERT tutorial;
                      the only reference before). No neutral point (README): a pad-only pair
                      scores above the gold pair in most examples, so joint attributions measure
                      the distance from a pair that scores higher than the real one; a pad-only
                      code with the real query (sides) scores far below its mean over other codes.

Which other examples, per mode: joint starts from (the query of one other example, the code of
another), an unrelated pair; sides starts the query side from (other query, this code) and the
code side from (this query, other code), the competitors among which the MRR ranks the gold code.

An embedding-level reference tuned so that its score is the mean (one blend parameter solved for)
was not taken: such a point exists on a blend only when the target lies between the blend's ends,
and the usual end, the pad pair, lies above the gold pair; and the tuned point is no text a model
reads. Zero, [MASK] or UNK references have no reason to be neutral either. Real other examples
are text the model reads, and the mean of their scores is the neutral level by definition.

Making another example a reference: a path interpolates position by position under one attention
mask, so a reference has the input's length. The input's special tokens ([CLS]/<s>, [SEP]/</s>)
stay where they are, so they get exactly zero attribution; the other positions take the other
example's tokens in order, cut where it is longer (what the tokenizer reads at that length) and
filled with the pad token where it is shorter. Others at least as long as the input's side come
first (cut, never padded), then the longest of the rest, each group in one fixed seeded order;
examples whose tokens on that side are the input's own (token-identical twins) are skipped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from records.errors import InterpError

REFERENCES = ("others", "pad")
DEFAULT_REFERENCE = "others"
DEFAULT_OTHERS = 8
OTHERS_SEED = 0  # the one fixed order in which other examples are taken


@dataclass(frozen=True)
class OtherPair:
    """The examples one 'others' reference is made of (None: that side is the input's own)."""

    query: int | None  # idx of the example whose query is the reference query
    code: int | None  # idx of the example whose code is the reference code
    padded: bool  # shorter than the input: filled with the pad token


@dataclass(frozen=True)
class Side:
    """One side's token ids as read at max_len, and which positions are special."""

    ids: list[int]
    special: list[bool]

    @property
    def content(self) -> list[int]:
        return [i for i, s in zip(self.ids, self.special) if not s]

    def fill(self, content: list[int], pad: int) -> list[int]:
        """The special tokens where they are; the other positions take `content` in order, then pad."""
        rest = iter(content)
        return [i if s else next(rest, pad) for i, s in zip(self.ids, self.special)]


def read_side(tokenizer, text: str, max_len: int) -> Side:
    ids = tokenizer(text, truncation=True, max_length=max_len)["input_ids"]
    special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
    return Side(ids, [bool(s) for s in special])


def _ordered(tokenizer, pool: list, texts: list[str], side: Side, exclude: int | None, max_len: int) -> list[tuple[int, list[int]]]:
    """(idx, content) of the other examples for one side, in the order they are taken (module docstring)."""
    batch = tokenizer(texts, truncation=True, max_length=max_len, return_special_tokens_mask=True)
    content = [[i for i, s in zip(ids, mask) if not s] for ids, mask in zip(batch["input_ids"], batch["special_tokens_mask"])]
    order = list(range(len(pool)))
    random.Random(OTHERS_SEED).shuffle(order)
    own, free = side.content, len(side.content)
    keep = [i for i in order if pool[i].idx != exclude and content[i] != own]
    keep.sort(key=lambda i: max(0, free - len(content[i])))  # long enough first, then by tokens missing; stable
    return [(pool[i].idx, content[i]) for i in keep]


def references(tokenizer, reference: str, q: Side, c: Side, *, mode: str, pool: list, count: int, exclude: int | None,
               max_len: int) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[OtherPair]]:
    """Per path, keyed by what varies ('both', 'query', 'code'): (query ids, code ids) of its k references,
    each (k, seq); and for 'others' the examples used (per path, in path order)."""
    pad = tokenizer.pad_token_id
    if reference == "pad":
        q_ref, c_ref = torch.tensor([q.fill([], pad)]), torch.tensor([c.fill([], pad)])  # (1, seq) each
        if mode == "joint":
            return {"both": (q_ref, c_ref)}, []
        return {"query": (q_ref, torch.tensor([c.ids])), "code": (torch.tensor([q.ids]), c_ref)}, []
    queries = _ordered(tokenizer, pool, [e.query for e in pool], q, exclude, max_len)
    codes = _ordered(tokenizer, pool, [e.code_text for e in pool], c, exclude, max_len)[:count]
    if mode == "joint":  # an unrelated pair: never the query and the code of one example
        rest, chosen = list(queries), []
        for idx, _ in codes:
            j = next((j for j, (other, _) in enumerate(rest) if other != idx), None)
            if j is None:
                break
            chosen.append(rest.pop(j))
        queries = chosen
    k = min(len(queries), len(codes), count)
    if k == 0:
        raise InterpError(f"--reference others: no other example to take a reference from ({len(pool)} examples)")
    queries, codes = queries[:k], codes[:k]
    q_ref = torch.tensor([q.fill(x, pad) for _, x in queries])  # (k, q_len)
    c_ref = torch.tensor([c.fill(x, pad) for _, x in codes])  # (k, c_len)
    short_q, short_c = [len(x) < len(q.content) for _, x in queries], [len(x) < len(c.content) for _, x in codes]
    if mode == "joint":
        return {"both": (q_ref, c_ref)}, [OtherPair(a, b, sq or sc) for (a, _), (b, _), sq, sc in zip(queries, codes, short_q, short_c)]
    q_in, c_in = torch.tensor([q.ids] * k), torch.tensor([c.ids] * k)  # (k, q_len), (k, c_len)
    pairs = [OtherPair(a, None, s) for (a, _), s in zip(queries, short_q)] + [OtherPair(None, b, s) for (b, _), s in zip(codes, short_c)]
    return {"query": (q_ref, c_in), "code": (q_in, c_ref)}, pairs
