"""Is `interp attribute`'s reference neutral? Its score against the gold pair's, per reference and mode.

Nothing is trained: the base encoder (MiniLM by default) scores the first N pairs of the demo's
test sample (200 pairs of DATA's test split, the sample a run's --eval-limit 200 takes) at the
demo's 96 tokens, with the pooling given. For each pair it computes the reference score of
every mode x reference exactly as `interp attribute` does (`Attribution.compute`, 2 steps: the
reference scores do not depend on the steps) with the references drawn from the 200, and
beside them two neutral levels computed directly: the mean score of the query against the other
199 codes, and the mean score of all unrelated pairs of the 200. It prints, per row, the median
over the N pairs and in how many of them the row scores below the gold pair.

With `--halves K`, for the first K pairs it also integrates the joint path from 16 references
and prints the correlation of the token attributions of references 1-8 with those of 9-16 (how
much the attributions depend on which 8 examples are drawn). Last, the CPU time of one joint
attribution of the first pair at the demo's 32 steps, per reference.

    python benchmarks/attribute_reference.py --data runs/data            # 40 pairs, MiniLM, cls
    python benchmarks/attribute_reference.py --data runs/data --pairs 40 --halves 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

from interp.analyses.attribute import MODES, Attribution
from interp.analyses.attribute_references import REFERENCES, read_side, references
from trainers.data import load_split
from trainers.encoders import POOLINGS, load_encoder
from trainers.training.splits import EVAL_SUBSET_SEED, subset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an AdvTest-format directory (its test split)")
    parser.add_argument("--base", default=None, help="the base encoder (default: MiniLM)")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--sample", type=int, default=200, help="the test sample the pairs and references come from")
    parser.add_argument("--max-len", type=int, default=96)
    parser.add_argument("--pooling", choices=POOLINGS, default="cls")
    parser.add_argument("--halves", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    start = time.perf_counter()

    encoder = load_encoder(args.base) if args.base else load_encoder()
    pool = subset(load_split(args.data, "test"), args.sample, EVAL_SUBSET_SEED)
    attribution = Attribution(encoder, encoder.model, max_len=args.max_len, pooling=args.pooling)
    with torch.no_grad():
        q = encoder.embed(**encoder.tokenize([e.query for e in pool], max_len=args.max_len), pooling=args.pooling)  # (n, hidden)
        c = encoder.embed(**encoder.tokenize([e.code_text for e in pool], max_len=args.max_len), pooling=args.pooling)
    scores = q @ c.T  # (n, n): row i is query i against every code
    n = len(pool)
    unrelated = float((scores.sum() - scores.diag().sum()) / (n * (n - 1)))
    rows: dict[str, list[float]] = {}
    for i, example in enumerate(pool[:args.pairs]):
        for mode in MODES:
            for reference in REFERENCES:
                result = attribution.compute(query=example.query, code=example.code_text, steps=2, mode=mode,
                                             reference=reference, data=pool, example=example.idx)
                for p in result.paths:
                    rows.setdefault(f"{mode:<5} {reference:<6} reference, varying {p.varies}", []).append(p.reference_score)
                    if p.uncut_score is not None:
                        rows.setdefault(f"{mode:<5} {reference:<6} same pairs read whole, varying {p.varies}", []).append(p.uncut_score)
        rows.setdefault("gold pair", []).append(result.score)
        rows.setdefault(f"query against the other {n - 1} codes (mean)", []).append(float((scores[i].sum() - scores[i, i]) / (n - 1)))
        rows.setdefault(f"unrelated pairs of the {n} (mean)", []).append(unrelated)
        print(f"pair {i + 1}/{args.pairs}", file=sys.stderr, flush=True)

    gold = rows.pop("gold pair")
    count = len(gold)
    print(f"{encoder.name}, pooling {args.pooling}, {args.max_len} tokens, first {count} pairs of a {n}-pair test sample of {args.data}")
    print(f"{'':<58} {'median':>7}  below gold")
    print(f"{'gold pair':<58} {statistics.median(gold):>7.2f}")
    for name, values in rows.items():
        print(f"{name:<58} {statistics.median(values):>7.2f}  {sum(v < g for v, g in zip(values, gold)):>3}/{count}")
    for example in pool[:args.halves]:
        print(f"idx {example.idx}: correlation of token attributions, references 1-8 vs 9-16: {_halves(attribution, example, pool):.3f}")
    example = pool[0]
    for reference in REFERENCES:  # the cost of a reference: CPU time of one attribution at the demo's 32 steps
        cpu = time.process_time()
        result = attribution.compute(query=example.query, code=example.code_text, steps=32, reference=reference, data=pool,
                                     example=example.idx)
        print(f"joint, {reference:<6} 32 steps, idx {example.idx} ({len(result.query_tokens)} + {len(result.code_tokens)} tokens): "
              f"{time.process_time() - cpu:.1f} s CPU, one thread, convergence delta {result.paths[0].convergence_delta:.1e}")
    print(f"{time.perf_counter() - start:.0f} s")


def _halves(attribution: Attribution, example, pool: list) -> float:
    from captum.attr import LayerIntegratedGradients

    tokenizer, max_len = attribution.tokenizer, attribution.max_len
    q, c = read_side(tokenizer, example.query, max_len), read_side(tokenizer, example.code_text, max_len)
    paths, _ = references(tokenizer, "others", q, c, mode="joint", pool=pool, count=16, exclude=example.idx, max_len=max_len)
    q_ref, c_ref = paths["both"]  # (16, q_len), (16, c_len)
    k = len(q_ref)
    scorer = attribution.scorers[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Multiple layers provided")
        lig = LayerIntegratedGradients(attribution.forward, [scorer.query, scorer.code])
        parts = lig.attribute(inputs=(torch.tensor([q.ids] * k), torch.tensor([c.ids] * k)), baselines=(q_ref, c_ref),
                              n_steps=32, internal_batch_size=max(16, k))
    per = torch.cat([p.detach().sum(-1) for p in parts], dim=1)  # (k, q_len + c_len)
    half = k // 2
    return float(torch.corrcoef(torch.stack([per[:half].mean(0), per[half:2 * half].mean(0)]))[0, 1])


if __name__ == "__main__":
    main()
