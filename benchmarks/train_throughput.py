"""Training throughput: a CodeXGLUE-style loop against this project's two loops, interleaved in one process.

    codexglue  what the study ran: random batches, fp32, eager attention, every query and code
               padded to --max-len, one pass per side
    random     the default: the same random batches (CodeXGLUE's negatives), SDPA attention,
               each side encoded in length-sorted micro-batches padded to their own longest
    bucketed   opt-in: batches cut from length-sorted windows (length-matched negatives),
               SDPA, one pass per side padded to its longest

Each loop trains its own copy of the same method on the same model, data and batch size. The
CPU may be shared with other work, so the loops are interleaved: every round runs --steps
optimizer steps of each loop, in a rotating order, and pairs per second are summed over the
rounds; the ratios compare loops that saw the same load. Also printed: padded tokens and
forward calls per step, and the batch composition (median code-length range inside a batch,
in tokens) of random against bucketed batches.

    python benchmarks/train_throughput.py --data runs/data               # CPU, MiniLM, LoRA-64, batch 16
    python benchmarks/train_throughput.py --threads 1 --rounds 5         # a busy CPU: one thread spins less
    python benchmarks/train_throughput.py --call-costs 16,64,256,1024    # random loops with other micro-batch rules
    python benchmarks/train_throughput.py --base DIR --batch-size 128 --device cuda
    python benchmarks/train_throughput.py --random roberta-base --batch-size 128   # a roberta-base-shaped encoder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.training.batching import (
    CALL_COST_TOKENS, Tokenized, embed_side, epoch_order, make_batch, median_code_length_range,
)
from trainers.training.loop import contrastive_loss
from trainers.training.splits import tokenize_examples


def random_roberta_base(path: Path) -> str:
    """A config-only roberta-base-shaped directory plus the default encoder's tokenizer (timing only)."""
    from transformers import AutoTokenizer, RobertaConfig

    from trainers.encoders import default_base_dir

    RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_base_dir()).save_pretrained(path)
    return str(path)


@dataclass
class Loop:
    """One training loop being timed: its model, optimizer, batches and running totals."""

    name: str
    batching: str
    call_cost: int
    encoder: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: list[list[int]]
    next_batch: int = 0
    seconds: float = 0.0
    pairs: int = 0
    padded: int = 0  # padded tokens, both sides
    calls: int = 0  # forward calls, both sides
    timed_steps: int = 0
    per_round: list[float] = field(default_factory=list)

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.seconds


def make_loop(name: str, batching: str, *, base, preset, tok, batch_size, steps_needed, device, call_cost=CALL_COST_TOKENS) -> Loop:
    encoder = load_encoder(base, attention="eager" if batching == "codexglue" else "sdpa")
    model = methods.apply_method(encoder, methods.get_preset(preset)).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = epoch_order(tok, batch_size, seed=0, epoch=0, batching=batching)
    if len(batches) < steps_needed:
        raise SystemExit(f"{len(batches)} batches of {batch_size} in the data, {steps_needed} needed: use more --pairs or fewer steps")
    return Loop(name, batching, call_cost, encoder, model, optimizer, batches)


def step(loop: Loop, tok: Tokenized, *, device: torch.device, max_len: int) -> tuple[float, int]:
    """One optimizer step of `loop`, batch making included; (seconds, pairs)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    batch = make_batch(tok, loop.batches[loop.next_batch], loop.batching, max_len=max_len, call_cost=loop.call_cost).to(device)
    loop.next_batch += 1
    use_bf16 = device.type == "cuda" and loop.batching != "codexglue"
    embed = lambda ids, mask: loop.encoder.embed(ids, mask, model=loop.model)  # noqa: E731
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        q = embed_side(embed, batch.query)  # (batch, H)
        c = embed_side(embed, batch.code)  # (batch, H)
    loss = contrastive_loss(q, c)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in loop.model.parameters() if p.requires_grad], 1.0)
    loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    loop.padded += batch.query.padded_tokens + batch.code.padded_tokens
    loop.calls += len(batch.query.parts) + len(batch.code.parts)
    return time.perf_counter() - start, len(batch.index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/data"), help="AdvTest-format data directory (interp data build)")
    parser.add_argument("--base", default=None, help="encoder directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--random", choices=["roberta-base"], help="time a randomly initialised encoder of this shape")
    parser.add_argument("--preset", default="lora64")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each loop per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of interleaved steps")
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=8000, help="training pairs the batches are drawn from")
    parser.add_argument("--call-costs", default="", help="also time random loops with these micro-batch call costs (comma-separated tokens)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps_needed = 1 + args.steps * args.rounds  # one warm-up step each
    with tempfile.TemporaryDirectory() as tmp:
        base = random_roberta_base(Path(tmp)) if args.random else args.base
        tok = tokenize_examples(load_encoder(base), load_split(args.data, "train")[: args.pairs], args.max_len)
        common = dict(base=base, preset=args.preset, tok=tok, batch_size=args.batch_size, steps_needed=steps_needed, device=device)
        loops = [make_loop("codexglue", "codexglue", **common), make_loop("random", "random", **common),
                 make_loop("bucketed", "bucketed", **common)]
        loops += [make_loop(f"random, call cost {c}", "random", call_cost=int(c), **common) for c in args.call_costs.split(",") if c]
        for loop in loops:  # warm-up, not timed
            step(loop, tok, device=device, max_len=args.max_len)
            loop.padded = loop.calls = 0
        for r in range(args.rounds):
            for loop in loops[r % len(loops):] + loops[: r % len(loops)]:
                seconds = pairs = 0
                for _ in range(args.steps):
                    s, p = step(loop, tok, device=device, max_len=args.max_len)
                    seconds, pairs = seconds + s, pairs + p
                loop.seconds, loop.pairs, loop.timed_steps = loop.seconds + seconds, loop.pairs + pairs, loop.timed_steps + args.steps
                loop.per_round.append(pairs / seconds)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{l.name} {l.per_round[-1]:.1f}" for l in loops) + " pairs/s", flush=True)

    ranges = {b: median_code_length_range(tok, epoch_order(tok, args.batch_size, 0, 0, b)) for b in ("random", "bucketed")}
    theirs = loops[0].pairs_per_s
    print(f"\ndevice {device} ({torch.get_num_threads()} threads), preset {args.preset}, batch {args.batch_size}, max_len {args.max_len}, "
          f"{args.rounds} rounds x {args.steps} steps per loop, interleaved; batches from {len(tok)} training pairs of {args.data}")
    print(f"{'loop':28} {'pairs/s':>8} {'x codexglue':>12} {'padded tokens/step':>19} {'calls/step':>11}")
    for loop in loops:
        print(f"{loop.name:28} {loop.pairs_per_s:8.2f} {loop.pairs_per_s / theirs:11.2f}x "
              f"{loop.padded / loop.timed_steps:19.0f} {loop.calls / loop.timed_steps:11.2f}")
    print(f"random / bucketed: {loops[1].pairs_per_s / loops[2].pairs_per_s:.2f}x")
    print(f"median code-length range inside a batch: random {ranges['random']:g} tokens, bucketed {ranges['bucketed']:g} tokens "
          f"(over one epoch of batches of {args.batch_size})")


if __name__ == "__main__":
    main()
