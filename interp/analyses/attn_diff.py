"""Where does a delta move the [CLS] attention? Two runs compared head by head (the study's App. 7.1).

Both runs read the same token sequences (they share a base, so a tokenizer); for each example
and each side (query and / or code) the [CLS] row of every layer's attention is captured for
run A and run B (interp/analyses/attention.py; real tokens only, padding masked out). With
d = B - A over the real tokens of one example, per layer x head:

    mean_abs_difference        mean over examples of (mean over tokens of |d|)
    max_abs_difference         max over examples and tokens of |d|
    signed_content_difference  mean over examples of sum_{content tokens} d: the attention
                               mass B moves onto content tokens (> 0) or off them (< 0), away
                               from or onto the special tokens ([CLS]/<s>, [SEP]/</s>) and a
                               prefix. (The plain mean of d is trivially ~0: both rows sum to 1;
                               the study's "mean absolute difference" of 9.31e-10 for one
                               example, App. 7.1.1, is of that size.)
    content_mass_a / _b        mean over examples of the mass on content tokens
    outside_mass_a / _b        mean mass on a prefix, 1 - sum over real tokens (0 without one)
    entropy_a / _b / _change   mean Shannon entropy (bits) of the row, renormalised over the
                               real tokens; the change is mean H(B) - H(A)
    js_divergence              mean Jensen-Shannon divergence (base 2, in [0, 1]) between the
                               two renormalised rows

Arrays are [layer][head] from 0; `--layer` and messages count from 1, as the study does. All is
accumulated per batch in (layers, heads) sums: memory does not grow with the split.

Tokens: at `token_layer` (default the last), each occurrence of a content token contributes
its head-averaged |d| and d; occurrences are pooled by token string (the tokenizer's text for
the token, so 'Ġpath' and 'path' are one), tokens seen fewer than MIN_TOKEN_COUNT times are
ignored, and the TOP_TOKENS with the largest mean |d| are kept. Memory: layers x vocabulary.

One example (`example`, an idx of the data; default the first): the heads x tokens [CLS]
difference at `layer` (the study's Fig. 7.1 / 7.2), both runs' rows, the token strings, and
for bertviz's head and model views both runs' full attention for all layers, [layer][head]
[query][key], over at most FULL_CAP tokens (longer sequences are cropped to their first
FULL_CAP rows and columns; `full_tokens` says how many there were), rounded to
FULL_DECIMALS decimals.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from interp.analyses.attention import capture_attention
from interp.analyses.base import resolve_runs, save_result
from interp.analyses.compare import data_label
from interp.analyses.ranks import load_model, max_len_of, resolve_data
from trainers.encoders import Encoder
from trainers.errors import InterpError

SIDES = ("query", "code")
MIN_TOKEN_COUNT = 5
TOP_TOKENS = 25
FULL_CAP = 128
FULL_DECIMALS = 5
WINDOW_BATCHES = 16  # batches per length-sorted window: less padding, bounded memory
STATS = ("mean_abs_difference", "max_abs_difference", "signed_content_difference", "content_mass_a", "content_mass_b",
         "outside_mass_a", "outside_mass_b", "entropy_a", "entropy_b", "entropy_change", "js_divergence")

Grid = list[list[float]]  # [layer][head]

# Batches of every length make glibc keep large freed blocks in its heap instead of unmapping
# them, so without a trim after each batch the peak RSS creeps up with the number of batches
# (MiniLM: +800 MB over 240 batches of random lengths); with it, it levels off. None: not glibc.
try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _MALLOC_TRIM = None

DEFINITIONS = {  # carried in the result, so a report can say what it shows without this module
    "difference": "d = B - A, the [CLS] attention row of run B minus that of run A, over the real tokens",
    "mean_abs_difference": "mean over examples of the mean over tokens of |d|",
    "max_abs_difference": "max over examples and tokens of |d|",
    "signed_content_difference": "mean over examples of the sum of d over content (non-special) tokens: "
                                 "mass moved onto content tokens (> 0) or off them (< 0)",
    "content_mass": "mean over examples of the attention mass on content tokens",
    "outside_mass": "mean mass on a prefix: 1 - the sum over the real tokens (0 without a prefix)",
    "entropy": "mean Shannon entropy in bits of the row renormalised over the real tokens; change = H(B) - H(A)",
    "js_divergence": "mean Jensen-Shannon divergence, base 2, between the two renormalised rows",
    "tokens": f"content tokens at token_layer pooled by token text; per occurrence the head-averaged |d| and d; "
              f"tokens seen fewer than {MIN_TOKEN_COUNT} times ignored; the {TOP_TOKENS} largest mean |d| kept",
    "example": f"heads x tokens [CLS] rows at the example's layer; full attention [layer][head][query][key] "
               f"over at most the first {FULL_CAP} tokens, rounded to {FULL_DECIMALS} decimals",
    "indices": "arrays are [layer][head] from 0; `layer`, `token_layer` and printed L/H labels count from 1",
}


@dataclass(frozen=True)
class SideStats:
    """Per layer x head statistics over every example of one side (see the module docstring)."""

    examples: int
    tokens: int  # real tokens seen, special tokens included
    mean_abs_difference: Grid
    max_abs_difference: Grid
    signed_content_difference: Grid
    content_mass_a: Grid
    content_mass_b: Grid
    outside_mass_a: Grid
    outside_mass_b: Grid
    entropy_a: Grid
    entropy_b: Grid
    entropy_change: Grid
    js_divergence: Grid


@dataclass(frozen=True)
class TokenChange:
    token: str
    count: int  # occurrences over the side's examples
    mean_abs_change: float  # mean over occurrences of the head-averaged |B - A|
    mean_signed_change: float  # mean over occurrences of the head-averaged B - A


@dataclass(frozen=True)
class ExampleSide:
    tokens: list[str]
    cls_a: Grid  # [head][token] at the example's layer
    cls_b: Grid
    difference: Grid  # B - A, [head][token]: the study's Fig. 7.1 / 7.2
    max_abs_difference: float
    mean_abs_difference: float
    full_tokens: int  # tokens of the sequence; full_a / full_b cover min(full_tokens, FULL_CAP)
    full_a: list[list[Grid]]  # [layer][head][query][key], rounded
    full_b: list[list[Grid]]


@dataclass(frozen=True)
class ExampleAttention:
    idx: int | str
    query: str
    code: str
    layer: int  # 1-based
    sides: dict[str, ExampleSide]


@dataclass(frozen=True)
class HeadRank:
    layer: int  # 1-based
    head: int  # 1-based
    value: float


@dataclass(frozen=True)
class AttnDiffResult:
    a: str
    b: str
    sides: list[str]
    examples: int
    layers: int
    heads: int
    max_len: int
    stats: dict[str, SideStats]
    token_layer: int  # 1-based
    min_token_count: int
    tokens: dict[str, list[TokenChange]]
    example: ExampleAttention
    seconds: float
    examples_per_second: float
    definitions: dict[str, str]

    def top_heads(self, side: str, stat: str = "mean_abs_difference", k: int = 5) -> list[HeadRank]:
        grid = getattr(self.stats[side], stat)
        cells = [HeadRank(li + 1, hi + 1, v) for li, row in enumerate(grid) for hi, v in enumerate(row)]
        return sorted(cells, key=lambda c: -abs(c.value))[:k]


class _SideSums:
    """Running (layers, heads) sums for one side, and (layers, vocab) sums for its tokens."""

    def __init__(self, layers: int, heads: int, vocab: int, device: torch.device):
        grid = lambda: torch.zeros(layers, heads, dtype=torch.float64, device=device)  # noqa: E731
        self.sums = {name: grid() for name in STATS if name != "max_abs_difference" and name != "entropy_change"}
        self.max_abs = grid()
        self.examples = self.tokens = 0
        self.token_count = torch.zeros(vocab, dtype=torch.float64, device=device)
        self.token_abs = torch.zeros(layers, vocab, dtype=torch.float64, device=device)
        self.token_signed = torch.zeros(layers, vocab, dtype=torch.float64, device=device)

    def add(self, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor, real: torch.Tensor, special: torch.Tensor) -> None:
        """a, b (layers, batch, heads, k_len) [CLS] rows; ids, real, special (batch, k_len)."""
        a, b = a.double() * real[None, :, None], b.double() * real[None, :, None]  # padding columns -> 0
        content = (real & ~special)[None, :, None].double()  # (1, batch, 1, k_len)
        n_real = real.sum(-1).double()[None, :, None]  # (1, batch, 1)
        d = b - a  # (layers, batch, heads, k_len)
        s = self.sums
        s["mean_abs_difference"] += (d.abs().sum(-1) / n_real).sum(1)
        self.max_abs = torch.maximum(self.max_abs, d.abs().amax(dim=(1, 3)))
        s["signed_content_difference"] += (d * content).sum(-1).sum(1)
        for name, rows in (("a", a), ("b", b)):
            s[f"content_mass_{name}"] += (rows * content).sum(-1).sum(1)
            s[f"outside_mass_{name}"] += (1 - rows.sum(-1)).clamp(0, 1).sum(1)
        p, q = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)  # renormalised over the real tokens
        s["entropy_a"] += _entropy(p).sum(1)
        s["entropy_b"] += _entropy(q).sum(1)
        m = (p + q) / 2
        js = (_kl(p, m) + _kl(q, m)) / 2
        s["js_divergence"] += js.clamp_min(0).sum(1)
        self.examples += a.shape[1]
        self.tokens += int(real.sum())
        keep = real & ~special  # (batch, k_len)
        token_ids = ids[keep]  # (n,)
        self.token_count.index_add_(0, token_ids, torch.ones_like(token_ids, dtype=torch.float64))
        per_token = d.mean(2)[:, keep]  # (layers, n): head-averaged change of each occurrence
        abs_token = d.abs().mean(2)[:, keep]
        self.token_abs.index_add_(1, token_ids, abs_token)
        self.token_signed.index_add_(1, token_ids, per_token)

    def stats(self) -> SideStats:
        n = max(self.examples, 1)
        mean = {k: v / n for k, v in self.sums.items()}
        mean["entropy_change"] = mean["entropy_b"] - mean["entropy_a"]
        mean["max_abs_difference"] = self.max_abs
        return SideStats(self.examples, self.tokens, **{k: mean[k].cpu().tolist() for k in STATS})

    def top_tokens(self, layer: int, tokenizer, k: int = TOP_TOKENS, min_count: int = MIN_TOKEN_COUNT) -> list[TokenChange]:
        count, abs_sum, signed_sum = self.token_count.cpu(), self.token_abs[layer].cpu(), self.token_signed[layer].cpu()
        seen = torch.nonzero(count).flatten().tolist()
        pooled: dict[str, list[float]] = {}
        for token_id, token in zip(seen, tokenizer.convert_ids_to_tokens(seen)):
            text = tokenizer.convert_tokens_to_string([token]).strip() or token
            acc = pooled.setdefault(text, [0.0, 0.0, 0.0])
            acc[0] += float(count[token_id])
            acc[1] += float(abs_sum[token_id])
            acc[2] += float(signed_sum[token_id])
        rows = [TokenChange(t, int(c), a / c, s / c) for t, (c, a, s) in pooled.items() if c >= min_count]
        return sorted(rows, key=lambda r: (-r.mean_abs_change, r.token))[:k]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p)).sum(-1)


def _kl(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * (torch.log2(p) - torch.log2(m)), torch.zeros_like(p)).sum(-1)


def _grid(t: torch.Tensor, decimals: int | None = None) -> list:
    t = t.cpu().double()
    return (t.round(decimals=decimals) if decimals is not None else t).tolist()


class AttnDiff:
    """Bound to two models on one base: run A (`encoder_a`, `model_a`) and run B."""

    def __init__(self, *, encoder_a: Encoder, model_a: nn.Module, encoder_b: Encoder, model_b: nn.Module,
                 names: tuple[str, str] = ("A", "B"), max_len: int = 256, device: str = "auto"):
        if encoder_a.tokenizer.get_vocab() != encoder_b.tokenizer.get_vocab():
            raise InterpError(f"runs {names[0]!r} and {names[1]!r} use different tokenizers; their attention cannot be compared token by token")
        if (encoder_a.num_layers, encoder_a.num_heads) != (encoder_b.num_layers, encoder_b.num_heads):
            raise InterpError(f"runs {names[0]!r} and {names[1]!r} have differently shaped encoders")
        self.device = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
        self.runs = [(encoder_a, model_a.to(self.device).eval()), (encoder_b, model_b.to(self.device).eval())]
        self.names, self.max_len = names, max_len
        self.tokenizer = encoder_a.tokenizer
        self.layers, self.heads = encoder_a.num_layers, encoder_a.num_heads

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
    def _rows(self, batch: dict[str, torch.Tensor], *, full: bool = False) -> list[torch.Tensor]:
        """Per run, (layers, batch, heads, k_len) [CLS] rows, or with `full` (layers, batch, heads, q_len, k_len)."""
        out = []
        for encoder, model in self.runs:
            with capture_attention(encoder, full=full) as captured:
                encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
            out.append(captured.full_weights() if full else captured.cls_rows())
        return out

    @torch.no_grad()
    def compute(self, examples: Sequence, *, sides: Sequence[str] = SIDES, example: int | str | None = None,
                layer: int | None = None, batch_size: int = 32, progress: bool = False) -> AttnDiffResult:
        if not examples:
            raise InterpError("no examples to compare attention on")
        if batch_size < 1:
            raise InterpError(f"--batch-size should be at least 1, got {batch_size}")
        bad = [s for s in sides if s not in SIDES]
        if bad or not sides:
            raise InterpError(f"--side should be query, code or both, got {', '.join(bad) or 'nothing'}")
        chosen_layer = self.check_layer(layer)
        chosen = self.find(examples, example)
        sums = {s: _SideSums(self.layers, self.heads, len(self.tokenizer), self.device) for s in sides}
        start = time.perf_counter()
        window = batch_size * WINDOW_BATCHES
        bar = tqdm(total=len(examples) * len(sides), desc="attn-diff", unit="seq", disable=not progress, leave=False)
        for w in range(0, len(examples), window):
            part = examples[w : w + window]
            for side in sides:
                texts = sorted((_text(e, side) for e in part), key=len)
                for b in range(0, len(texts), batch_size):
                    batch = self._tokenize(texts[b : b + batch_size])
                    rows_a, rows_b = self._rows(batch)
                    real, special = batch["attention_mask"].bool(), batch["special_tokens_mask"].bool()
                    sums[side].add(rows_a, rows_b, batch["input_ids"], real, special)
                    bar.update(len(real))
                    del batch, rows_a, rows_b
                    if _MALLOC_TRIM is not None:
                        _MALLOC_TRIM(0)  # hand the freed heap back to the OS (see above)
        bar.close()
        seconds = time.perf_counter() - start
        return AttnDiffResult(
            a=self.names[0], b=self.names[1], sides=list(sides), examples=len(examples), layers=self.layers,
            heads=self.heads, max_len=self.max_len, stats={s: acc.stats() for s, acc in sums.items()},
            token_layer=chosen_layer + 1, min_token_count=MIN_TOKEN_COUNT,
            tokens={s: acc.top_tokens(chosen_layer, self.tokenizer) for s, acc in sums.items()},
            example=self.example(chosen, sides, chosen_layer), seconds=seconds,
            examples_per_second=len(examples) / seconds if seconds > 0 else math.inf, definitions=DEFINITIONS,
        )

    @staticmethod
    def find(examples: Sequence, idx: int | str | None):
        if idx is None:
            return examples[0]
        for e in examples:
            if str(e.idx) == str(idx):
                return e
        shown = ", ".join(str(e.idx) for e in examples[:5])
        raise InterpError(f"--example {idx}: no example with that idx in the data ({len(examples)} examples; idx such as {shown})")

    def example(self, e, sides: Sequence[str], layer: int) -> ExampleAttention:
        """One example's attention, per side: the [CLS] difference at `layer` (0-based) and the full weights."""
        out = {}
        for side in sides:
            batch = self._tokenize([_text(e, side)])
            full_a, full_b = (f[:, 0] for f in self._rows(batch, full=True))  # (layers, heads, len, len)
            cls_a, cls_b = full_a[layer, :, 0], full_b[layer, :, 0]  # (heads, len)
            d = cls_b - cls_a
            n = min(full_a.shape[-1], FULL_CAP)
            out[side] = ExampleSide(
                tokens=self.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()),
                cls_a=_grid(cls_a), cls_b=_grid(cls_b), difference=_grid(d),
                max_abs_difference=float(d.abs().max()), mean_abs_difference=float(d.abs().mean()),
                full_tokens=full_a.shape[-1],
                full_a=_grid(full_a[..., :n, :n], FULL_DECIMALS), full_b=_grid(full_b[..., :n, :n], FULL_DECIMALS),
            )
        return ExampleAttention(idx=e.idx, query=e.query, code=e.code_text, layer=layer + 1, sides=out)


def _text(example, side: str) -> str:
    return example.query if side == "query" else example.code_text


def sides_of(side: str) -> tuple[str, ...]:
    if side == "both":
        return SIDES
    if side not in SIDES:
        raise InterpError(f"--side should be query, code or both, got {side!r}")
    return (side,)


def result_name(a: str, b: str, *, split: str = "test", data_file: Path | None = None, limit: int | None = None,
                side: str = "both") -> str:
    """'A-vs-B', with suffixes for a non-default split or file, a limit and a single side."""
    return f"{a}-vs-{b}" + data_label(split, data_file, limit) + ("" if side == "both" else f".{side}")


def run_attn_diff(*, runs_dir: Path, a: str, b: str, split: str = "test", data_file: Path | None = None,
                  limit: int | None = None, example: int | str | None = None, layer: int | None = None,
                  side: str = "both", batch_size: int = 32, device: str = "auto",
                  progress: bool = True) -> tuple[AttnDiffResult, Path]:
    """Compare the [CLS] attention of runs `a` and `b`; saves runs/analyses/attn-diff/<name>.json."""
    sides = sides_of(side)
    refs = resolve_runs(Path(runs_dir), [a, b])
    data = resolve_data(refs, split=split, data_file=data_file, limit=limit)
    AttnDiff.find(data.examples, example)  # a bad --example fails before any model loads
    (enc_a, model_a), (enc_b, model_b) = load_model(refs[0]), load_model(refs[1])
    trained = [max_len_of(r) for r in refs if not r.is_base]  # the runs' own truncation; 'base' follows them
    max_len = max(trained) if trained else min(max_len_of(refs[0]), enc_a.tokenizer.model_max_length)
    analysis = AttnDiff(encoder_a=enc_a, model_a=model_a, encoder_b=enc_b, model_b=model_b, names=(a, b),
                        max_len=max_len, device=device)
    result = analysis.compute(data.examples, sides=sides, example=example, layer=layer, batch_size=batch_size, progress=progress)
    inputs = {"runs": [r.fingerprint() for r in refs], "data": data.describe(), "side": side, "limit": limit,
              "max_len": max_len, "example": result.example.idx, "layer": result.example.layer}
    name = result_name(a, b, split=split, data_file=data_file, limit=limit, side=side)
    return result, save_result(Path(runs_dir), "attn-diff", name, result, inputs)
