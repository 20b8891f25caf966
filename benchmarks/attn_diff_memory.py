"""Memory and speed of attn-diff over a whole split: peak RSS must not grow with the split.

Compares the base encoder with the same base plus a freshly applied, untrained delta (nothing
to train; an untrained prefix already moves the [CLS] attention, an untrained LoRA does not),
over N pairs of a data directory, both sides, and prints wall time, examples per second and
the process's peak RSS (getrusage ru_maxrss). The target is at most 2 GB over the 19,210
pairs of an AdvTest-sized test split.

    python benchmarks/attn_diff_memory.py                          # runs/data/test.jsonl, MiniLM, prefix10
    python benchmarks/attn_diff_memory.py --data /tmp/d --limit 2000 --batch-size 32
    python benchmarks/attn_diff_memory.py --preset lora64 --device cuda

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

from interp.analyses.attn_diff import SIDES, AttnDiff
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
    args = parser.parse_args()

    examples = subset(load_split(args.data, args.split), args.limit, EVAL_SUBSET_SEED)
    base = load_encoder(args.base)
    delta = load_encoder(args.base)
    model = methods.apply_method(delta, methods.get_preset(args.preset))
    analysis = AttnDiff(encoder_a=base, model_a=base.model, encoder_b=delta, model_b=model, names=("base", args.preset),
                        max_len=args.max_len, device=args.device)
    before = peak_rss_mb()
    start = time.perf_counter()
    result = analysis.compute(examples, sides=SIDES, batch_size=args.batch_size, progress=True)
    wall = time.perf_counter() - start
    top = result.top_heads("code", "js_divergence", 1)[0]
    print(f"{len(examples)} pairs of {args.data / (args.split + '.jsonl')}, both sides, base vs untrained {args.preset}, "
          f"batch {args.batch_size}, max_len {args.max_len}, {analysis.device}")
    print(f"wall {wall:.1f} s, {len(examples) / wall:.1f} examples/s (each: query and code, two models)")
    print(f"peak RSS {peak_rss_mb():.0f} MiB (after loading the models: {before:.0f} MiB)")
    size = len(json.dumps(asdict(result))) / 2**20
    print(f"sanity: largest code-side JS divergence L{top.layer}H{top.head} = {top.value:.3g}; result JSON {size:.1f} MiB")


if __name__ == "__main__":
    main()
