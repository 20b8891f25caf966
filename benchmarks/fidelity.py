"""What each choice of the study's pipeline does to LoRA-64: one baseline, one factor at a time.

The baseline is this project's defaults: LoRA-64 (the `lora64` preset, alpha 4), [CLS] pooling,
LoRA scaled by alpha (the study's Eq. 2.3), random in-batch negatives, CodeXGLUE's tie rule.
Each variant changes one choice:

    pooling    pooler      CodeXGLUE's model.py embeds with the pooler output (frozen W, b)
    scaling    alpha/r     OpenDelta's LoRA, which the study's code ran (64x smaller at r 64)
    batching   bucketed    batches from length-sorted windows: length-matched negatives
    ties       optimistic  evaluation only: the baseline runs' embeddings, ties counted for the query

Every trained configuration runs with the same seeds (the seed-to-seed spread of the baseline
is the noise a difference must exceed), on the same --train-pairs training pairs (one fixed sample),
and is scored on the whole valid and test splits of --data. Each finished run's best delta
embeds both splits once; its ranks are taken under both tie rules (`gold_ranks(..., ties=...)`)
on those same embeddings. The table gives, per row, valid and test MRR as mean ± sample std
over the seeds and the difference of the means from the baseline row.

Runs are kept in --runs-dir (named CHOICE-VALUE-sSEED); a finished run is not trained again, an
unfinished one is resumed. Each run is scored as soon as it finishes, and its MRRs are kept in
--scores (a small file meant to be committed: benchmarks/results/fidelity-scores.json) under a
key of everything that determines them (method and training configs, training pairs, base, the
data's fingerprint); a run whose key is there is neither trained nor scored again, even when its
directory is gone, so the table can be measured a few runs at a time. The table is written to
RUNS_DIR/fidelity.md and RUNS_DIR/fidelity.json once every run has a score.

    python benchmarks/fidelity.py --data runs/data --runs-dir runs/fidelity            # 4,000 pairs, 256 tokens, 2 seeds
    python benchmarks/fidelity.py ... --only batching-bucketed-s123456 scaling-alpha-r-s123457      # two of its runs, in a second process
    python benchmarks/fidelity.py --data D --runs-dir R --train-pairs 64 --max-len 32 --seeds 1 --max-steps 2   # a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from filelock import FileLock

from trainers import methods
from trainers.data import fingerprint, load_split
from records.errors import InterpError
from records.io import write_json, write_text
from trainers.training.evaluate import TIE_RULES, embed_all, gold_ranks, mrr
from trainers.training.loop import TrainConfig
from trainers.training.runs import find_run, read_manifest
from trainers.training.scoring import load_run_model
from trainers.training.splits import tokenize_examples
from trainers.training.train import RunSpec, config_differences, train_run

PRESET = "lora64"
SPLITS = ("valid", "test")


@dataclass(frozen=True)
class Variant:
    """One row: a choice, its value, and what it changes in the baseline's method and training configs."""

    choice: str
    value: str
    method: dict = field(default_factory=dict)  # LoraConfig fields
    train: dict = field(default_factory=dict)  # TrainConfig fields
    ties: str = "codexglue"  # the rule its MRRs are ranked under
    trains_as: str | None = None  # evaluation only: the row whose runs it re-ranks

    @property
    def run_prefix(self) -> str:
        return self.trains_as or f"{self.choice}-{self.value}".replace("/", "-")


BASELINE = Variant("default", "defaults")
VARIANTS = (
    BASELINE,
    Variant("pooling", "pooler", train={"pooling": "pooler"}),
    Variant("scaling", "alpha/r", method={"scaling": "alpha/r"}),
    Variant("batching", "bucketed", train={"batching": "bucketed"}),
    Variant("ties", "optimistic", ties="optimistic", trains_as=BASELINE.run_prefix),
)


def configs(variant: Variant, seed: int, args) -> tuple[RunSpec, TrainConfig]:
    method = dataclasses.replace(methods.get_preset(PRESET), **variant.method)
    spec = RunSpec(name=f"{variant.run_prefix}-s{seed}", method=method, data_dir=args.data, preset=PRESET, base=args.base,
                   train_limit=args.train_pairs)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed, evals_per_epoch=args.evals,
                      max_steps=args.max_steps, max_len=args.max_len, **variant.train)
    return spec, cfg


def train(spec: RunSpec, cfg: TrainConfig, args) -> None:
    """Train the run unless it has finished; resume it if it was interrupted."""
    path = args.runs_dir / spec.name
    manifest = read_manifest(path) if (path / "manifest.json").is_file() else None
    status = manifest.get("status") if manifest else None
    if status == "finished":
        differences = config_differences(TrainConfig.from_dict(manifest["train"]), cfg)
        differences += [("method", manifest["method"], spec.method.to_dict())] if manifest["method"] != spec.method.to_dict() else []
        used = manifest["data"]["train"]["used"]
        differences += [("training pairs", used, args.train_pairs)] if used != min(args.train_pairs, manifest["data"]["train"]["pairs"]) else []
        if differences:
            raise InterpError(f"{path} was trained with other settings ({'; '.join(f'{n} {a!r} there, {b!r} now' for n, a, b in differences)}): "
                              "use another --runs-dir")
        print(f"{spec.name}: finished, kept", flush=True)
        return
    print(f"{spec.name}: {'resuming' if status else 'training'}", flush=True)
    start = time.perf_counter()
    manifest = train_run(spec, cfg, runs_dir=args.runs_dir, device=args.device, resume=status is not None, progress=args.progress)
    print(f"{spec.name}: valid MRR {manifest['metrics']['valid_mrr']:.4f}, test MRR {manifest['metrics']['test_mrr']:.4f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)


def run_key(spec: RunSpec, cfg: TrainConfig, args) -> dict:
    """Everything that determines a run's scores; a cached score counts only under the same key."""
    return {"method": spec.method.to_dict(), "train": dataclasses.asdict(cfg), "train_pairs": args.train_pairs,
            "base": args.base, "data": fingerprint(args.data)}


def same_key(kept: dict | None, key: dict) -> bool:
    """A kept score counts under `key` when it was made with the same configs. A training config kept
    before a field existed is read as the manifest reads it (`TrainConfig.from_dict`: the field at
    the value that reproduces what ran, e.g. precision fp32), so adding a field keeps the scores."""
    if kept is None:
        return False
    try:
        train = dataclasses.asdict(TrainConfig.from_dict(kept["train"]))
    except (KeyError, TypeError, ValueError):
        return False
    return {**kept, "train": train} == key


def score(name: str, key: dict, args, cache: dict) -> dict:
    """{split: {tie rule: MRR}} of the run's best delta: each split embedded once, ranked under every rule."""
    if same_key(cache.get(name, {}).get("key"), key):
        return cache[name]["mrr"]
    run = find_run(args.runs_dir, name)
    trained = run.train_config
    encoder, model = load_run_model(run, base=args.base)
    target = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    model.to(target).eval()
    embed = lambda ids, mask: encoder.embed(ids, mask, model=model, pooling=trained.pooling)  # noqa: E731
    out = {}
    for split in SPLITS:
        tok = tokenize_examples(encoder, load_split(args.data, split), trained.max_len)
        queries, codes = (embed_all(embed, ids, tok.pad_id, batch_size=trained.eval_batch_size, device=target)
                          for ids in (tok.query_ids, tok.code_ids))  # (N, hidden) each
        out[split] = {rule: mrr(gold_ranks(queries, codes, ties=rule)) for rule in TIE_RULES}
    recorded = run.manifest["metrics"]["test_mrr"]
    if abs(out["test"][trained.ties] - recorded) > 1e-6:
        print(f"{name}: warning: re-scored test MRR {out['test'][trained.ties]:.6f} differs from the recorded {recorded:.6f}")
    cache[name] = {"key": key, "mrr": out, "elapsed_s": run.manifest.get("elapsed_s")}
    with FileLock(f"{args.scores}.lock"):  # processes splitting the table (--only) each add their own runs
        kept = json.loads(args.scores.read_text()) if args.scores.is_file() else {}
        write_json(args.scores, {**kept, name: cache[name]})
    print(f"{name}: scored, kept in {args.scores}", flush=True)
    return out


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values),
            "values": values}


def build_table(scores: dict[str, dict], seeds: list[int]) -> list[dict]:
    """One row per variant: {choice, value, valid, test, diff_valid, diff_test}; `scores` by run name."""
    rows = []
    for v in VARIANTS:
        names = [f"{v.run_prefix}-s{seed}" for seed in seeds]
        row = {"choice": v.choice, "value": v.value, "ties": v.ties, "runs": names}
        for split in SPLITS:
            row[split] = summary([scores[n][split][v.ties] for n in names])
        rows.append(row)
    for row in rows:
        for split in SPLITS:
            row[f"diff_{split}"] = row[split]["mean"] - rows[0][split]["mean"]
    return rows


def markdown(rows: list[dict], setup: dict) -> str:
    def cell(s: dict) -> str:
        return f"{s['mean']:.4f} ± {s['std']:.4f}" if s["std"] is not None else f"{s['mean']:.4f}"

    lines = [
        f"LoRA-64 ({setup['preset']}) on {setup['train_pairs']} training pairs of {setup['data']}, {setup['max_len']} tokens, "
        f"{setup['epochs']} epochs, lr {setup['lr']}, batch {setup['batch_size']}, {setup['evals']} evaluations per epoch; "
        f"seeds {', '.join(map(str, setup['seeds']))}; valid and test: the whole splits ({setup['valid_pairs']} and "
        f"{setup['test_pairs']} pairs). MRR: mean ± sample std over seeds; Δ: difference of the means from the default row.",
        "",
        "| choice | value | test MRR | Δ test | valid MRR | Δ valid |",
        "|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows):
        diff = lambda split: "—" if i == 0 else f"{row[f'diff_{split}']:+.4f}"  # noqa: E731
        value = "cls, alpha, random, codexglue" if i == 0 else row["value"]
        lines.append(f"| {row['choice']} | {value} | {cell(row['test'])} | {diff('test')} | {cell(row['valid'])} | {diff('valid')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/data"), help="AdvTest-format data directory (interp data build)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/fidelity"), help="where the runs and the table are kept")
    parser.add_argument("--scores", type=Path, default=Path("benchmarks/results/fidelity-scores.json"),
                        help="where each finished run's MRRs are kept, by run name and key")
    parser.add_argument("--base", default=None, help="encoder directory or hub id (default: all-MiniLM-L6-v2)")
    parser.add_argument("--train-pairs", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per configuration: 123456, 123457, ...")
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--evals", type=int, default=2, help="validations per epoch (the best is tested)")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--max-steps", type=int, default=None, help="stop every run after this many steps (smoke tests)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--only", nargs="+", metavar="RUN", default=None,
                        help="train and score only these runs (to split the table over processes sharing --scores)")
    args = parser.parse_args()
    if args.seeds < 1 or args.train_pairs < args.batch_size:
        raise SystemExit("error: --seeds should be at least 1 and --train-pairs at least one batch")

    seeds = [TrainConfig.seed + i for i in range(args.seeds)]
    names = [f"{v.run_prefix}-s{seed}" for seed in seeds for v in VARIANTS if v.trains_as is None]
    if args.only and set(args.only) - set(names):
        raise SystemExit(f"error: --only: no run {sorted(set(args.only) - set(names))[0]!r} in this table; its runs: {', '.join(names)}")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    cache = json.loads(args.scores.read_text()) if args.scores.is_file() else {}
    start = time.perf_counter()
    scores = {}
    try:
        for seed in seeds:  # seed-major: after the first seed every row has a value
            for v in VARIANTS:
                if v.trains_as is None and (args.only is None or f"{v.run_prefix}-s{seed}" in args.only):
                    spec, cfg = configs(v, seed, args)
                    key = run_key(spec, cfg, args)
                    if not same_key(cache.get(spec.name, {}).get("key"), key):
                        train(spec, cfg, args)
                    else:
                        print(f"{spec.name}: scored before, kept", flush=True)
                    scores[spec.name] = score(spec.name, key, args, cache)
    except InterpError as exc:
        raise SystemExit(f"error: {exc}") from None

    if args.only:
        print(f"scored {', '.join(args.only)} ({time.perf_counter() - start:.0f} s); the table is written by a run without --only")
        return
    setup = {"preset": PRESET, "data": str(args.data), "train_pairs": args.train_pairs, "max_len": args.max_len, "epochs": args.epochs,
             "lr": args.lr, "batch_size": args.batch_size, "evals": args.evals, "max_steps": args.max_steps, "seeds": seeds,
             "valid_pairs": len(load_split(args.data, "valid")), "test_pairs": len(load_split(args.data, "test"))}
    rows = build_table(scores, seeds)
    table = markdown(rows, setup)
    write_text(args.runs_dir / "fidelity.md", table)
    write_json(args.runs_dir / "fidelity.json", {"setup": setup, "rows": rows})
    print(f"\n{table}\n(written to {args.runs_dir / 'fidelity.md'} and fidelity.json; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
