"""Training throughput: a CodeXGLUE-style loop against this project's loop, in one process.

The CodeXGLUE-style loop is what the study ran: fp32, eager attention, every query and code
padded to the maximum length. This project's loop buckets by length, uses SDPA attention, and
bf16 autocast on CUDA. Both train the same method on the same model, data and batch size;
the script prints pairs per second for each and their ratio.

    python benchmarks/train_throughput.py                      # CPU, MiniLM, LoRA-64, batch 16
    python benchmarks/train_throughput.py --base DIR --batch-size 128 --device cuda
    python benchmarks/train_throughput.py --random roberta-base --batch-size 128   # a roberta-base-shaped encoder
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from trainers import methods
from trainers.data import load_split
from trainers.encoders import load_encoder
from trainers.training.batching import epoch_order, iterate_batches
from trainers.training.loop import contrastive_loss
from trainers.training.splits import tokenize_examples


def random_roberta_base(path: Path) -> str:
    """A config-only roberta-base-shaped directory plus the default encoder's tokenizer (timing only)."""
    from transformers import RobertaConfig

    from trainers.encoders import default_base_dir
    from transformers import AutoTokenizer

    RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(default_base_dir()).save_pretrained(path)
    return str(path)


def measure(*, base, preset, tok, batch_size, steps, device, codexglue: bool, max_len: int) -> float:
    """Pairs per second over `steps` optimizer steps (after one warm-up step)."""
    encoder = load_encoder(base, attention="eager" if codexglue else "sdpa")
    model = methods.apply_method(encoder, methods.get_preset(preset)).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = epoch_order(tok, batch_size, seed=0, epoch=0, bucket=not codexglue)[: steps + 1]
    use_bf16 = device.type == "cuda" and not codexglue
    start = None
    for i, batch in enumerate(iterate_batches(tok, batches, pad_to=max_len if codexglue else None)):
        if i == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = batch.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            q = encoder.embed(*batch.query, model=model)
            c = encoder.embed(*batch.code, model=model)
        loss = contrastive_loss(q, c)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/data"), help="AdvTest-format data directory (interp data build)")
    parser.add_argument("--base", default=None, help="encoder directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--random", choices=["roberta-base"], help="time a randomly initialised encoder of this shape")
    parser.add_argument("--preset", default="lora64")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        base = random_roberta_base(Path(tmp)) if args.random else args.base
        encoder = load_encoder(base)
        examples = load_split(args.data, "train")[: args.batch_size * (args.steps + 1) * 8]
        tok = tokenize_examples(encoder, examples, args.max_len)
        del encoder
        common = dict(base=base, preset=args.preset, tok=tok, batch_size=args.batch_size, steps=args.steps, device=device, max_len=args.max_len)
        ours = measure(codexglue=False, **common)
        theirs = measure(codexglue=True, **common)
    print(f"device {device}, preset {args.preset}, batch {args.batch_size}, {args.steps} steps, max_len {args.max_len}")
    print(f"CodeXGLUE-style (fp32, eager, padded to {args.max_len}): {theirs:8.1f} pairs/s")
    print(f"interp (length buckets, SDPA{', bf16' if device.type == 'cuda' else ''}):       {ours:8.1f} pairs/s")
    print(f"speed-up: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
