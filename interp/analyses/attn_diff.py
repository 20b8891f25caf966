"""Where does a delta move the [CLS] attention? Two runs, or two seed groups, compared head by head (App. 7.1).

Both sides read the same token sequences (they share a base, so a tokenizer); for each example
and each side (query and / or code) the [CLS] row of every layer's attention is captured for
every run (interp/analyses/attention.py; real tokens only, padding masked out). A side is one
run or a seed group (interp/analyses/seeds.py). Per layer x head, over the A x B pairs of runs
(one pair for two single runs), with d = B - A over the real tokens of one example:

    total_variation            the headline: mean over examples and pairs of TV(A, B) = 1/2 sum
                               |d| over the tokens and the prefix's mass (attention.py), in
                               [0, 1]: the share of the attention mass that moved. Length-
                               invariant, unlike the mean over tokens of |d| (= 2 TV / length),
                               which is no longer reported.
    js_divergence              the same for the Jensen-Shannon divergence (base 2, in [0, 1])
    max_abs_difference         max over examples, pairs and tokens of |d|
    signed_content_difference  mean of sum_{content tokens} d: the mass B moves onto content
                               tokens (> 0) or off them (< 0), from or to the special tokens
                               ([CLS]/<s>, [SEP]/</s>) and a prefix
    content_mass_a / _b        mean mass on content tokens (averaged over a side's runs)
    outside_mass_a / _b        mean mass on a prefix, 1 - sum over real tokens (0 without one)
    entropy_a / _b / _change   mean entropy (bits) of the row renormalised over the real tokens

Arrays are [layer][head] from 0; `--layer` and messages count from 1, as the study does. All is
accumulated per batch in (layers, heads) sums: memory does not grow with the split. On several
processes each sums its share of the batches and the sums are added (`AttnDiff.compute`). The
forward passes run at `precision` (fp32 or bf16 autocast, recorded in the result's inputs); the
rows are float32 and the sums float64 either way.

The seed-noise null (both sides seed groups): per side, layer and head, D(r, r') = mean over
examples of TV between runs r and r', for every pair of runs; between-side against within-side
(seed-to-seed) D with a permutation p-value over relabellings of the runs and Benjamini-
Hochberg q-values across every side x layer x head (seeds.py says exactly what is tested).

Tokens: at `token_layer` (default the last), each occurrence of a content token in a sequence
of L real tokens contributes its head-averaged |d| and d times L, the change relative to
uniform attention 1/L (1 = moved by as much as a uniform share; averaged over a row's tokens
it is 2 TV), so short sequences do not dominate; occurrences are pooled by token string ('Ġpath'
and 'path' are one), tokens seen fewer than MIN_TOKEN_COUNT times are ignored, and the
TOP_TOKENS with the largest mean relative |d| are kept (raw means beside them). Memory: layers
x vocabulary.

One example (`example`, an idx of the data; default the first), for the first run of each
side: the heads x tokens [CLS] difference at `layer` (Fig. 7.1 / 7.2), both rows, the tokens,
and for bertviz both runs' full attention [layer][head][query][key] over at most FULL_CAP
tokens (`full_tokens` says how many there were), rounded to FULL_DECIMALS decimals.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from interp.analyses.attention import capture_attention, entropy, jensen_shannon, total_variation
from interp.analyses.attn_result import (DEFINITIONS, FULL_CAP, FULL_DECIMALS, MIN_TOKEN_COUNT, AttnDiffResult,
                                         ExampleAttention, ExampleSide, SeedNull, SideStats, TokenChange, seed_null)
from interp.analyses.base import depth_of
from interp.analyses.checks import at_least, check_layer
from interp.analyses.inputs import data_label, find_example, parse_idx
from interp.analyses.ranks import load_model, max_len_of, pooling_of, resolve_data
from interp.analyses.running import Prepared
from interp.analyses.seeds import null_note, resolve_sides, run_pairs
from trainers.devices import DEFAULT_PRECISION, autocast, check_device, check_precision, torch_device
from trainers.encoders import DEFAULT_POOLING, Encoder
from trainers.parallel import deal, is_main, reduce_max, reduce_sum
from records.errors import InterpError

SIDES = ("query", "code")
TOP_TOKENS = 25
WINDOW_BATCHES = 16  # batches per length-sorted window: less padding, bounded memory
STATS = ("total_variation", "js_divergence", "max_abs_difference", "signed_content_difference", "content_mass_a",
         "content_mass_b", "outside_mass_a", "outside_mass_b", "entropy_a", "entropy_b", "entropy_change")
_SUMMED = tuple(s for s in STATS if s not in ("max_abs_difference", "entropy_change"))
_TOKEN_SUMS = ("relative_abs", "relative_signed", "abs", "signed")

# Batches of every length make glibc keep large freed blocks in its heap instead of unmapping
# them, so without a trim after each batch the peak RSS creeps up with the number of batches
# (MiniLM: +800 MB over 240 batches of random lengths); with it, it levels off. None: not glibc.
try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _MALLOC_TRIM = None


@dataclass(frozen=True)
class BoundRun:
    """One run bound for capture: its encoder, its model (the delta applied), and its pooling."""

    name: str
    encoder: Encoder
    model: nn.Module
    pooling: str = DEFAULT_POOLING


class _SideSums:
    """Running (layers, heads) sums for one side, (pairs, layers, heads) for the null, (layers, vocab) for tokens."""

    def __init__(self, layers: int, heads: int, vocab: int, m: int, n: int, device: torch.device):
        grid = lambda *lead: torch.zeros(*lead, layers, heads, dtype=torch.float64, device=device)  # noqa: E731
        self.m, self.between = m, [(i, m + j) for i in range(m) for j in range(n)]
        self.pairs = run_pairs(m + n) if m > 1 and n > 1 else []  # every pair of runs, for the seed-noise null
        self.sums = {name: grid() for name in _SUMMED}
        self.max_abs = grid()
        self.pair_tv = grid(len(self.pairs))
        self.examples = self.tokens = 0
        self.token_count = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.token_sums = {k: torch.zeros(layers, vocab, dtype=torch.float64, device=device) for k in _TOKEN_SUMS}

    def add(self, rows: list[torch.Tensor], ids: torch.Tensor, real: torch.Tensor, special: torch.Tensor) -> None:
        """rows: per run, A's first, (layers, batch, heads, k_len) [CLS] rows; ids, real, special (batch, k_len)."""
        rows = [r.double() * real[None, :, None] for r in rows]  # padding columns -> 0
        content = (real & ~special)[None, :, None].double()  # (1, batch, 1, k_len)
        length = real.sum(-1).double()[None, :, None]  # (1, batch, 1): L, the real tokens of each sequence
        s = self.sums
        for letter, members in (("a", rows[: self.m]), ("b", rows[self.m :])):
            for r in members:
                s[f"content_mass_{letter}"] += (r * content).sum(-1).sum(1) / len(members)
                s[f"outside_mass_{letter}"] += (1 - r.sum(-1)).clamp(0, 1).sum(1) / len(members)
                s[f"entropy_{letter}"] += entropy(r).sum(1) / len(members)
        tv = {pair: total_variation(rows[pair[0]], rows[pair[1]]) for pair in self.pairs}  # (layers, batch, heads)
        for k, pair in enumerate(self.pairs):
            self.pair_tv[k] += tv[pair].sum(1)
        keep = real & ~special  # (batch, k_len)
        token_ids = ids[keep]  # (n,)
        self.token_count.index_add_(0, token_ids, torch.ones_like(token_ids, dtype=torch.float64))
        w = 1 / len(self.between)
        for i, j in self.between:
            a, b = rows[i], rows[j]
            d = b - a  # (layers, batch, heads, k_len)
            pair_tv = tv[(i, j)] if (i, j) in tv else total_variation(a, b)
            s["total_variation"] += w * pair_tv.sum(1)
            s["js_divergence"] += w * jensen_shannon(a, b).sum(1)
            s["signed_content_difference"] += w * (d * content).sum(-1).sum(1)
            self.max_abs = torch.maximum(self.max_abs, d.abs().amax(dim=(1, 3)))
            per_token = {"abs": d.abs().mean(2), "signed": d.mean(2)}  # (layers, batch, k_len): head-averaged
            per_token |= {"relative_abs": per_token["abs"] * length, "relative_signed": per_token["signed"] * length}
            for key, values in per_token.items():
                self.token_sums[key].index_add_(1, token_ids, w * values[:, keep])  # (layers, n) occurrences
        self.examples += real.shape[0]
        self.tokens += int(real.sum())

    def reduce(self) -> None:
        """Every sum summed, max_abs maxed, over the processes (trainers.parallel; nothing changes on one process)."""
        for t in [*self.sums.values(), self.pair_tv, self.token_count, *self.token_sums.values()]:
            if t.numel():
                reduce_sum(t)
        reduce_max(self.max_abs)
        counts = reduce_sum(torch.tensor([self.examples, self.tokens], dtype=torch.float64, device=self.max_abs.device))
        self.examples, self.tokens = (int(c) for c in counts.tolist())

    def stats(self) -> SideStats:
        n = max(self.examples, 1)
        mean = {k: v / n for k, v in self.sums.items()}
        mean["entropy_change"] = mean["entropy_b"] - mean["entropy_a"]
        mean["max_abs_difference"] = self.max_abs
        return SideStats(self.examples, self.tokens, len(self.between), float(mean["total_variation"].mean()),
                         float(mean["js_divergence"].mean()), **{k: mean[k].cpu().tolist() for k in STATS})

    def distances(self) -> np.ndarray:
        """(pairs, layers, heads): D, the mean TV over examples of every pair of runs."""
        return (self.pair_tv / max(self.examples, 1)).cpu().numpy()

    def top_tokens(self, layer: int, tokenizer, k: int = TOP_TOKENS, min_count: int = MIN_TOKEN_COUNT) -> list[TokenChange]:
        count = self.token_count.cpu()
        sums = {key: v[layer].cpu() for key, v in self.token_sums.items()}
        seen = torch.nonzero(count).flatten().tolist()
        pooled: dict[str, list[float]] = {}
        for token_id, token in zip(seen, tokenizer.convert_ids_to_tokens(seen)):
            text = tokenizer.convert_tokens_to_string([token]).strip() or token
            acc = pooled.setdefault(text, [0.0] * (1 + len(_TOKEN_SUMS)))
            acc[0] += float(count[token_id])
            for i, key in enumerate(_TOKEN_SUMS, start=1):
                acc[i] += float(sums[key][token_id])
        rows = [TokenChange(t, int(c), *(v / c for v in rest)) for t, (c, *rest) in pooled.items() if c >= min_count]
        return sorted(rows, key=lambda r: (-r.mean_relative_change, r.token))[:k]


def _grid(t: torch.Tensor, decimals: int | None = None) -> list:
    t = t.cpu().double()
    return (t.round(decimals=decimals) if decimals is not None else t).tolist()


class AttnDiff:
    """Bound to side A's runs and side B's runs (each one run, or two or more seeds of one configuration)."""

    kind: ClassVar[str] = "attn-diff"

    def __init__(self, *, a: Sequence[BoundRun], b: Sequence[BoundRun], labels: tuple[str, str] = ("A", "B"),
                 max_len: int = 256, device: str = "auto"):
        if not a or not b:
            raise InterpError("attn-diff needs at least one run on each side")
        first = a[0]
        for run in [*a, *b][1:]:
            if run.encoder.tokenizer.get_vocab() != first.encoder.tokenizer.get_vocab():
                raise InterpError(f"runs {first.name!r} and {run.name!r} use different tokenizers; their attention cannot be compared token by token")
            if (run.encoder.num_layers, run.encoder.num_heads) != (first.encoder.num_layers, first.encoder.num_heads):
                raise InterpError(f"runs {first.name!r} and {run.name!r} have differently shaped encoders")
        self.device = torch_device(device)
        for run in [*a, *b]:
            run.model.to(self.device).eval()
        self.a, self.b, self.labels, self.max_len = list(a), list(b), labels, max_len
        self.tokenizer = first.encoder.tokenizer
        self.layers, self.heads = first.encoder.num_layers, first.encoder.num_heads

    def check_layer(self, layer: int | None) -> int:
        """0-based index of a 1-based `layer` (None: the last)."""
        if layer is None:
            return self.layers - 1
        if not 1 <= layer <= self.layers:
            raise InterpError(f"--layer {layer}: the encoder has {self.layers} layers (1-{self.layers})")
        return layer - 1

    def _tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt",
                               return_special_tokens_mask=True)
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask", "special_tokens_mask")}

    @torch.inference_mode()
    def _rows(self, batch: dict[str, torch.Tensor], runs: Sequence[BoundRun], *, full: bool = False,
              precision: str = DEFAULT_PRECISION) -> list[torch.Tensor]:
        """Per run, (layers, batch, heads, k_len) [CLS] rows, or with `full` (layers, batch, heads, q_len, k_len);
        float32 whatever the forward passes' `precision` (attention.py computes the rows with autocast off)."""
        out = []
        for run in runs:
            with capture_attention(run.encoder, full=full) as captured, autocast(precision, self.device):
                run.encoder.embed(batch["input_ids"], batch["attention_mask"], model=run.model, pooling=run.pooling)
            out.append(captured.full_weights() if full else captured.cls_rows())
        return out

    @torch.no_grad()
    def compute(self, examples: Sequence, *, sides: Sequence[str] = SIDES, example: int | str | None = None,
                layer: int | None = None, batch_size: int = 32, progress: bool = False,
                precision: str = DEFAULT_PRECISION) -> AttnDiffResult:
        """The statistics over `examples` (see the module docstring), the forward passes at `precision` (fp32 or bf16;
        rows and sums are float32 / float64 either way).

        On several processes (trainers.parallel) the batches one process makes (length-sorted windows, each side's
        batches) are dealt out in turn, so every batch is cut as on one process; the
        float64 sums are then summed (max |d| maxed) over the processes: one process's result up to the order of
        addition. The example is computed on every process (the same answer); `seconds` is this process's."""
        if not examples:
            raise InterpError("no examples to compare attention on")
        if batch_size < 1:
            raise InterpError(f"--batch-size should be at least 1, got {batch_size}")
        bad = [s for s in sides if s not in SIDES]
        if bad or not sides:
            raise InterpError(f"--side should be query, code or both, got {', '.join(bad) or 'nothing'}")
        check_precision(precision)
        chosen_layer = self.check_layer(layer)
        chosen = self.find(examples, example)
        m, n = len(self.a), len(self.b)
        sums = {s: _SideSums(self.layers, self.heads, len(self.tokenizer), m, n, self.device) for s in sides}
        start = time.perf_counter()
        batches = text_batches(examples, sides, batch_size)
        mine = [batches[b] for b in deal(len(batches))]  # this process's batches, dealt in turn
        bar = tqdm(total=sum(len(texts) for _, texts in mine), desc="attn-diff", unit="seq", disable=not progress or not is_main(),
                   leave=False)
        for side, texts in mine:
            batch = self._tokenize(texts)
            rows = self._rows(batch, [*self.a, *self.b], precision=precision)
            real, special = batch["attention_mask"].bool(), batch["special_tokens_mask"].bool()
            sums[side].add(rows, batch["input_ids"], real, special)
            bar.update(len(real))
            del batch, rows
            if _MALLOC_TRIM is not None:
                _MALLOC_TRIM(0)  # hand the freed heap back to the OS (see above)
        bar.close()
        for acc in sums.values():
            acc.reduce()
        seconds = time.perf_counter() - start
        return AttnDiffResult(
            a=self.labels[0], b=self.labels[1], runs_a=[r.name for r in self.a], runs_b=[r.name for r in self.b],
            sides=list(sides), examples=len(examples), layers=self.layers, heads=self.heads, max_len=self.max_len,
            stats={s: acc.stats() for s, acc in sums.items()}, token_layer=chosen_layer + 1, min_token_count=MIN_TOKEN_COUNT,
            tokens={s: acc.top_tokens(chosen_layer, self.tokenizer) for s, acc in sums.items()},
            example=self.example(chosen, sides, chosen_layer, precision=precision), seed_null=self.seed_null(sums),
            null_note=null_note((self.labels[0], m), (self.labels[1], n)), seconds=seconds,
            examples_per_second=len(examples) / seconds if seconds > 0 else math.inf, definitions=DEFINITIONS,
        )

    def seed_null(self, sums: dict[str, _SideSums]) -> SeedNull | None:
        """Between-side against seed-to-seed TV per side, layer and head; None unless both sides have 2+ runs."""
        m, n = len(self.a), len(self.b)
        if m < 2 or n < 2:
            return None
        return seed_null({side: acc.distances() for side, acc in sums.items()}, [r.name for r in [*self.a, *self.b]], m)

    @staticmethod
    def find(examples: Sequence, idx: int | str | None):
        """The example of AdvTest idx `idx` (an int, or its text as given to --example); the first one for None."""
        return find_example(examples, parse_idx("--example", idx))

    @classmethod
    def prepare(cls, *, runs_dir: Path, a: str, b: str, seeds: bool = False, split: str = "test", data_file: Path | None = None,
                limit: int | None = None, example: int | str | None = None, layer: int | None = None,
                side: str = "both", batch_size: int = 32, device: str = "auto", precision: str = DEFAULT_PRECISION,
                progress: bool = True, foreign=None) -> Prepared:
        """Sides `a` and `b` (run names or comma lists of a seed group's runs; with `seeds`, preset names, each standing for
        every run of that preset in `runs_dir`) and the data; runs/analyses/attn-diff/<name>.json; nothing loaded."""
        sides = sides_of(side)
        check_device(device)
        check_precision(precision)
        at_least("--batch-size", batch_size, 1)
        at_least("--limit", limit, 1)
        side_a, side_b, refs = resolve_sides(Path(runs_dir), a, b, seeds=seeds, foreign=foreign)
        check_layer("--layer", layer, depth_of(refs))
        data = resolve_data(refs, split=split, data_file=data_file, limit=limit)
        example = cls.find(data.examples, example).idx  # a bad --example fails before any model loads
        trained = [r for r in refs if not r.is_base]
        default_pooling = pooling_of(trained[0]) if trained else DEFAULT_POOLING  # 'base' takes the runs' pooling
        held: dict[str, Any] = {}

        def bind() -> AttnDiff:
            bound = []
            for ref in refs:
                encoder, model = load_model(ref)
                bound.append(BoundRun(ref.name, encoder, model, pooling_of(ref, default_pooling)))
            lengths = [max_len_of(r) for r in trained]  # the runs' own truncation; 'base' follows them
            max_len = max(lengths) if lengths else min(max_len_of(refs[0]), bound[0].encoder.tokenizer.model_max_length)
            held.update(pooling={r.name: r.pooling for r in bound}, max_len=max_len)
            m = len(side_a.refs)
            return cls(a=bound[:m], b=bound[m:], labels=(side_a.label, side_b.label), max_len=max_len, device=device)

        def inputs(result: AttnDiffResult) -> dict:
            return {"runs": [r.fingerprint() for r in refs], "runs_a": side_a.runs, "runs_b": side_b.runs,
                    "seeds_a": side_a.seeds, "seeds_b": side_b.seeds, "seeds_option": seeds, "pooling": held["pooling"],
                    "data": data.describe(), "side": side, "limit": limit, "max_len": held["max_len"],
                    "example": result.example.idx, "layer": result.example.layer, "precision": precision}

        pooled = len(side_a.refs) > 1 or len(side_b.refs) > 1
        name = result_name(side_a.label, side_b.label, split=split, data_file=data_file, limit=limit, side=side, seeds=pooled)
        options = {"sides": sides, "example": example, "layer": layer, "batch_size": batch_size, "progress": progress,
                   "precision": precision}
        return Prepared(name=name, bind=bind, data=data.examples, options=options, inputs=inputs)

    def example(self, e, sides: Sequence[str], layer: int, *, precision: str = DEFAULT_PRECISION) -> ExampleAttention:
        """One example's attention for the first run of each side: the [CLS] difference at `layer` (0-based), full weights
        (float32 from forward passes at `precision`)."""
        out = {}
        for side in sides:
            batch = self._tokenize([_text(e, side)])
            full_a, full_b = (f[:, 0] for f in self._rows(batch, [self.a[0], self.b[0]], full=True, precision=precision))  # (layers, heads, len, len)
            cls_a, cls_b = full_a[layer, :, 0], full_b[layer, :, 0]  # (heads, len)
            d = cls_b - cls_a
            tv = total_variation(cls_a.double(), cls_b.double())  # (heads,)
            cap = min(full_a.shape[-1], FULL_CAP)
            out[side] = ExampleSide(
                tokens=self.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()),
                cls_a=_grid(cls_a), cls_b=_grid(cls_b), difference=_grid(d), total_variation=_grid(tv),
                mean_total_variation=float(tv.mean()), max_abs_difference=float(d.abs().max()), full_tokens=full_a.shape[-1],
                full_a=_grid(full_a[..., :cap, :cap], FULL_DECIMALS), full_b=_grid(full_b[..., :cap, :cap], FULL_DECIMALS),
            )
        return ExampleAttention(idx=e.idx, query=e.query, code=e.code_text, layer=layer + 1, runs=[self.a[0].name, self.b[0].name],
                                sides=out)


def text_batches(examples: Sequence, sides: Sequence[str], batch_size: int) -> list[tuple[str, list[str]]]:
    """(side, texts) of every batch, in one process's order: windows of WINDOW_BATCHES batches of examples, and in each
    window every side's texts sorted by length (less padding) and cut into batches of `batch_size`."""
    window, out = batch_size * WINDOW_BATCHES, []
    for w in range(0, len(examples), window):
        for side in sides:
            texts = sorted((_text(e, side) for e in examples[w : w + window]), key=len)
            out += [(side, texts[b : b + batch_size]) for b in range(0, len(texts), batch_size)]
    return out


def _text(example, side: str) -> str:
    return example.query if side == "query" else example.code_text


def sides_of(side: str) -> tuple[str, ...]:
    if side == "both":
        return SIDES
    if side not in SIDES:
        raise InterpError(f"--side should be query, code or both, got {side!r}")
    return (side,)


def result_name(a: str, b: str, *, split: str = "test", data_file: Path | None = None, limit: int | None = None,
                side: str = "both", seeds: bool = False) -> str:
    """'A-vs-B', '.seeds' when a side is a seed group, then suffixes for a non-default split or file, a limit, one side."""
    return f"{a}-vs-{b}" + (".seeds" if seeds else "") + data_label(split, data_file, limit) + ("" if side == "both" else f".{side}")
