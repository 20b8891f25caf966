"""Memory and speed of attn-diff over a whole split: peak RSS must not grow with the split.

Compares the base encoder with the same base plus a freshly applied, untrained delta (nothing
to train; an untrained prefix already moves the [CLS] attention, an untrained LoRA does not),
over N pairs of a data directory, both sides, and prints wall time, examples per second and
the process's peak RSS (getrusage ru_maxrss). The target is at most 2 GB over the 19,210
pairs of an AdvTest-sized test split.

With `--seeds K` both sides are seed groups: K copies of the untrained delta each, initialised
with seeds 0..K-1 (side A) and K..2K-1 (side B), so the seed-noise null is computed as well
(its sums are (pairs of runs, layers, heads); each run holds its own encoder, so memory grows
with 2K, not with the split).

    python benchmarks/attn_diff_memory.py                          # runs/data/test.jsonl, MiniLM, prefix10
    python benchmarks/attn_diff_memory.py --data /tmp/d --limit 2000 --batch-size 32
    python benchmarks/attn_diff_memory.py --preset lora64 --device cuda
    python benchmarks/attn_diff_memory.py --seeds 2 --limit 1000

Run it at two sizes (e.g. --limit 1000 and all pairs): the peak should stay flat.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from interp.analyses.attn_diff import SIDES, AttnDiff, BoundRun
from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.training.splits import EVAL_SUBSET_SEED, subset


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("runs/data"), help="A data directory (its test.jsonl is used).")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="Only this many pairs (a fixed sample); default all.")
    parser.add_argument("--base", default=None, help="Base encoder (default: MiniLM).")
    parser.add_argument("--preset", default="prefix10", help="The untrained delta compared with the base.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=("cpu", "auto"))
    parser.add_argument("--seeds", type=int, default=0, help="K >= 2: K untrained copies of the delta a side (the null).")
    args = parser.parse_args()

    examples = subset(load_split(args.data, args.split), args.limit, EVAL_SUBSET_SEED)

    def untrained(seed: int) -> BoundRun:
        encoder = load_encoder(args.base)
        torch.manual_seed(seed)
        return BoundRun(f"{args.preset}-s{seed}", encoder, methods.apply_method(encoder, methods.get_preset(args.preset)))

    if args.seeds >= 2:
        side_a, side_b = [untrained(s) for s in range(args.seeds)], [untrained(args.seeds + s) for s in range(args.seeds)]
        labels = (f"{args.preset} x{args.seeds}", f"{args.preset} x{args.seeds}")
    else:
        base = load_encoder(args.base)
        side_a, side_b, labels = [BoundRun("base", base, base.model)], [untrained(0)], ("base", args.preset)
    analysis = AttnDiff(a=side_a, b=side_b, labels=labels, max_len=args.max_len, device=args.device)
    before = peak_rss_mb()
    start = time.perf_counter()
    result = analysis.compute(examples, sides=SIDES, batch_size=args.batch_size, progress=True)
    wall = time.perf_counter() - start
    top = result.top_heads("code", "js_divergence", 1)[0]
    print(f"{len(examples)} pairs of {args.data / (args.split + '.jsonl')}, both sides, {labels[0]} vs untrained {labels[1]}, "
          f"batch {args.batch_size}, max_len {args.max_len}, {analysis.device}")
    print(f"wall {wall:.1f} s, {len(examples) / wall:.1f} examples/s (each: query and code, {len(side_a) + len(side_b)} models)")
    print(f"peak RSS {peak_rss_mb():.0f} MiB (after loading the models: {before:.0f} MiB)")
    size = len(json.dumps(asdict(result))) / 2**20
    print(f"sanity: largest code-side JS divergence L{top.layer}H{top.head} = {top.value:.3g}; result JSON {size:.1f} MiB")
    if result.seed_null is not None:
        marked = sum(len(s.marked) for s in result.seed_null.sides.values())
        print(f"seed-noise null: {result.seed_null.labellings} relabellings, {marked} of {result.seed_null.tested} cells marked "
              f"(identical configurations: expect none)")


if __name__ == "__main__":
    main()
