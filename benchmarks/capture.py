"""What capturing the [CLS] attention rows costs over plain inference, and that it equals the eager capture.

On the default MiniLM (all-MiniLM-L6-v2 from its package) with an untrained LoRA delta whose
weights are nudged off zero (so the delta moves the attention), over a few batches of
`--batch-size` x `--tokens` token ids (random ids from the vocabulary, [CLS] ... [SEP], lengths
drawn from [tokens - 32, tokens] with a fixed seed, so the batches carry padding as attn-diff's
length-sorted batches do), it times three ways of running the same forward passes:

    plain    SDPA inference, no capture: `encoder.embed(ids, mask, model=model)`
    capture  the same inside `capture_attention` (interp/analyses/attention.py), reading the rows
    eager    the former capture, `capture_attention_eager`: eager attention and a hook per layer

Interleaved repeats: every batch runs the three variants back to back (A B C, then B C A on the
next batch, C A B, ...), so a load that comes and goes on the machine hits every variant alike;
the seconds per batch are medians over every (repeat, batch), and each ratio is the median of
the per-batch ratios (each compares passes run seconds apart). After each batch it also times attn-diff's
statistics of a pair of runs on that batch's rows (`_SideSums.add`), so the cost of attn-diff
itself is estimated: two captures and the statistics against two plain passes. It also prints the max |new - eager| over
every layer, head, row and token, and the bytes the capture keeps per batch.

    OMP_NUM_THREADS=1 python benchmarks/capture.py                        # 3 batches of 32 x 256, 5 repeats
    OMP_NUM_THREADS=1 python benchmarks/capture.py --batches 2 --repeats 3 --preset lora256

Then, unless --no-memory, the peak RSS growth of one batch of each variant, each in a fresh
process, counted from the RSS after the model is loaded (Linux: /proc/self/clear_refs resets
the peak), so the capture's memory can be compared with plain inference and the former capture.
The children run with MALLOC_MMAP_THRESHOLD_=65536: without it glibc keeps some freed blocks in
its heap and the figure wanders by +-40 MiB from run to run; with it, it is the same every run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from interp.analyses.attention import capture_attention, capture_attention_eager
from interp.analyses.attn_diff import _SideSums
from trainers import methods
from trainers.encoders import load_encoder

VARIANTS = ("plain", "capture", "eager")


def make_batches(encoder, *, batches: int, batch_size: int, tokens: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Random-id batches, each (batch_size, tokens) with right padding; rows sorted by length."""
    tok = encoder.tokenizer
    special = set(tok.all_special_ids)
    vocab = torch.tensor([i for i in range(len(tok)) if i not in special])
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        lengths = torch.randint(max(tokens - 32, 3), tokens + 1, (batch_size,), generator=g).sort().values
        ids = torch.full((batch_size, tokens), tok.pad_token_id)
        mask = torch.zeros(batch_size, tokens, dtype=torch.long)
        for row, n in enumerate(lengths.tolist()):
            body = vocab[torch.randint(len(vocab), (n - 2,), generator=g)]
            ids[row, :n] = torch.cat([torch.tensor([tok.cls_token_id]), body, torch.tensor([tok.sep_token_id])])
            mask[row, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def run(variant: str, encoder, model, batch) -> tuple[float, torch.Tensor | None]:
    """Seconds for one batch, and its [CLS] rows (layers, batch, heads, k_len); None for plain."""
    start = time.perf_counter()
    with torch.inference_mode():
        if variant == "plain":
            encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
            return time.perf_counter() - start, None
        capture = capture_attention if variant == "capture" else capture_attention_eager
        with capture(encoder) as captured:
            encoder.embed(batch["input_ids"], batch["attention_mask"], model=model)
        rows = captured.cls_rows()
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="lora64", help="The LoRA (or any) preset applied to MiniLM.")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="Skip the peak-memory runs (one process per variant).")
    parser.add_argument("--peak-of", choices=VARIANTS, help=argparse.SUPPRESS)  # a child: one batch of one variant
    args = parser.parse_args()

    encoder = load_encoder()
    torch.manual_seed(args.seed)
    model = methods.apply_method(encoder, methods.get_preset(args.preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)  # LoRA's B starts at zero: nudge it, so the delta moves attention
    batches = make_batches(encoder, batches=args.batches, batch_size=args.batch_size, tokens=args.tokens, seed=args.seed)
    if args.peak_of:
        before = reset_peak_rss()  # loading the model peaked higher than a forward pass does: start the count here
        run(args.peak_of, encoder, model, batches[0])
        print(f"{status_mib('VmHWM') - before:.0f}")
        return
    print(f"MiniLM ({encoder.source}) + {args.preset} (weights nudged off zero), {args.batches} batches of "
          f"{args.batch_size} x {args.tokens} tokens (padded; lengths {args.tokens - 32}-{args.tokens}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    run("capture", encoder, model, batches[0])  # warm-up: allocator, kernels
    times = {v: [] for v in (*VARIANTS, "statistics")}  # per (repeat, batch), in the same order for every variant
    sums = _SideSums(encoder.num_layers, encoder.num_heads, len(encoder.tokenizer), 1, 1, torch.device("cpu"))
    specials = torch.tensor(encoder.tokenizer.all_special_ids)
    difference, turn = 0.0, 0
    for r in range(args.repeats):
        for batch in batches:
            order = VARIANTS[turn % 3:] + VARIANTS[: turn % 3]
            turn += 1
            rows = {}
            for variant in order:
                seconds, rows[variant] = run(variant, encoder, model, batch)
                times[variant].append(seconds)
            difference = max(difference, float((rows["capture"] - rows["eager"]).abs().max()))
            start = time.perf_counter()  # attn-diff's per-batch statistics of a pair of runs (here: the two captures' rows)
            sums.add([rows["capture"], rows["eager"]], batch["input_ids"], batch["attention_mask"].bool(),
                     torch.isin(batch["input_ids"], specials))
            times["statistics"].append(time.perf_counter() - start)
        print(f"  repeat {r + 1}: " + ", ".join(f"{v} {sum(times[v][-len(batches):]):.2f} s" for v in VARIANTS), flush=True)
    kept = rows["capture"].numel() * rows["capture"].element_size()

    per_batch = {v: statistics.median(times[v]) for v in VARIANTS}
    ratio = {v: statistics.median(t / p for t, p in zip(times[v], times["plain"])) for v in ("capture", "eager")}
    print(f"interleaved: each batch runs the three variants back to back, in an order that rotates from batch to batch, so "
          f"load on the machine hits all alike; medians over {len(times['plain'])} batch runs (ratios: of the paired ratios):")
    for v in VARIANTS:
        print(f"  {v:8s} {per_batch[v]:.3f} s per batch" + ("" if v == "plain" else f"   {ratio[v]:.3f}x plain"))
    print(f"capture / plain = {ratio['capture']:.3f}x (target <= 1.15x); eager / plain = {ratio['eager']:.3f}x; "
          f"capture is {ratio['eager'] / ratio['capture']:.2f}x faster than eager")
    statistics_share = statistics.median(t / p for t, p in zip(times["statistics"], times["plain"]))
    print(f"attn-diff of two runs, per batch: 2 captures + its statistics ({statistics.median(times['statistics']):.3f} s, "
          f"{statistics_share:.3f}x one plain pass) against 2 plain passes: about {ratio['capture'] + statistics_share / 2:.3f}x")
    print(f"max |capture - eager| over every [CLS] row: {difference:.2e} (tolerance 1e-5): {'equal' if difference <= 1e-5 else 'DIFFERENT'}")
    print(f"kept per batch: {kept / 2**20:.2f} MiB of [CLS] rows (layers x batch x heads x tokens, fp32); the eager capture "
          f"also materialises one {args.batch_size} x heads x {args.tokens}^2 weight matrix per layer")
    if not args.no_memory:
        child = [sys.executable, __file__, "--preset", args.preset, "--batch-size", str(args.batch_size), "--tokens",
                 str(args.tokens), "--batches", "1", "--seed", str(args.seed), "--peak-of"]
        env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}  # large blocks mmapped, freed at once: RSS follows live tensors
        growth = {v: subprocess.run([*child, v], check=True, capture_output=True, text=True, env=env).stdout.split()[-1]
                  for v in VARIANTS}
        print("peak RSS growth over one batch, one fresh process per variant (from the RSS after loading the model; glibc "
              "told to mmap blocks >= 64 KiB, so freed tensors leave the RSS at once): "
              + ", ".join(f"{v} +{growth[v]} MiB" for v in VARIANTS))


def status_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process from /proc/self/status, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**10
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> float:
    """Hand freed heap back to the OS, reset the peak RSS to the current RSS (Linux: clear_refs 5); the RSS now, MiB."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return status_mib("VmRSS")


if __name__ == "__main__":
    main()
