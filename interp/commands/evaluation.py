"""`interp eval`: re-evaluate a run (or the untrained base) on any split or AdvTest-format file; CodeXGLUE predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.options import Device


def eval_(
    name: Annotated[str, typer.Argument(help="A run under RUNS_DIR, or a directory (a name with '/', such as ./adapter): a peft "
                                        "adapter or a fine-tuned model directory.")],
    split: Annotated[str, typer.Option(help="train, valid or test of the run's data.")] = "test",
    data: Annotated[Path | None, typer.Option("--data", exists=True, dir_okay=False, help="Any AdvTest-format jsonl instead of --split.")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Write CodeXGLUE-format predictions here.")] = None,
    top_k: Annotated[int, typer.Option(help="Answers per query in the predictions.")] = 1000,
    ties: Annotated[str | None, typer.Option(
        help="Tie rule: codexglue (other codes scoring >= the gold one rank ahead of it, CodeXGLUE's run.py) or optimistic "
             "(only those scoring higher). Default: the rule the run was trained with (optimistic for runs that predate it). "
             "It also orders tied codes in --predictions.", callback=options.choice)] = None,
    device: Annotated[Device, typer.Option()] = Device.auto,
    precision: options.Precision = "fp32",
    runs_dir: options.RunsDir = Path("runs"),
    progress: options.Progress = True,
    base: options.ForeignBase = None,
    pooling: options.ForeignPooling = None,
    max_len: options.ForeignMaxLen = None,
    num_processes: options.NumProcesses = None,
) -> None:
    """Re-evaluate a run's best delta on any split or AdvTest-format file (MRR, MRR@10, NDCG@10, Recall@1/5/10, optional
    predictions); fp32 unless --precision bf16. `base` evaluates the untrained base (zero-shot) and saves the result for the report."""
    from interp.commands.launching import on_processes
    from records.errors import InterpError
    from trainers.parallel import is_main
    from trainers.training.runs import find_run, record_evaluation, writing_into
    from trainers.training.scoring import evaluate_run, write_predictions
    from trainers.foreign import ForeignOptions, is_path_name

    if name == BASE_NAME:
        return eval_base(split=split, data=data, ties=ties, device=device, precision=precision, runs_dir=runs_dir, progress=progress,
                         base=base, pooling=pooling, max_len=max_len, predictions=predictions, num_processes=num_processes)
    if not is_path_name(name):  # a directory needs no RUNS_DIR (only for its default data, RUNS_DIR/data)
        options.existing_dir("--runs-dir", runs_dir)
    if data is None and split not in options.SPLITS:
        raise InterpError(f"--split {split}: should be one of {', '.join(options.SPLITS)}")
    options.at_least("--top-k", top_k)
    if predictions is not None:
        predictions_target(predictions)
        sidecar = metrics_file(predictions)
        if sidecar.is_dir() or (sidecar.exists() and not _our_metrics(sidecar)):
            raise InterpError(f"--predictions {predictions}: its metrics go to {sidecar}, which holds something else; refusing to overwrite it")
    options.device(device.value)
    options.at_least("--max-len", max_len)
    run = find_run(runs_dir, name, foreign=ForeignOptions(base=base, pooling=pooling, max_len=max_len))
    if on_processes(num_processes, device=device.value, command="eval"):
        return  # launched processes scored it
    main = is_main()  # of several processes, process 0 alone writes (all score, each its share of the batches)
    with writing_into(run, predictions if main else None):  # a file written into the run: not while a process trains it
        result = evaluate_run(run, data_file=data, split=split, ties=ties, device=device.value, progress=progress, precision=precision)
        typer.echo(f"{name} on {result.file}: MRR {result.evaluation.mrr:.4f} over {len(result.urls)} queries "
                   f"(ties {result.ties}{'' if ties else ', as trained'}; pooling {result.pooling}; {precision})")
        typer.echo(metrics_line(result.evaluation.metrics))
        if predictions is not None and main:
            write_predictions(result, predictions, top_k)
            typer.echo(f"predictions (top {top_k}) -> {predictions}")
            record_metrics(predictions, name, result, precision)
    if main and (note := record_evaluation(run, result, split=split, precision=precision, data_file=data)) is not None:
        typer.echo(note)  # an imported run: its metrics, where a trained run's are


BASE_NAME = "base"  # `interp eval base`: the untrained encoder, as the analyses name it (interp/analyses/base.py)
METRIC_LABELS = {"mrr": "MRR", "mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10"}


def metrics_line(metrics: dict[str, float]) -> str:
    """'  MRR 0.3120  MRR@10 0.3050  NDCG@10 0.3400  R@1 0.2000  R@5 0.4500  R@10 0.5500'."""
    return "  " + "  ".join(f"{METRIC_LABELS.get(k, k)} {v:.4f}" for k, v in metrics.items())


def metrics_file(predictions: Path) -> Path:
    """Where --predictions FILE's metrics go: FILE with its suffix replaced by .metrics.json (predictions.metrics.json)."""
    return predictions.with_name(f"{predictions.stem}.metrics.json")


def _our_metrics(path: Path) -> bool:
    """`path` is a metrics file `record_metrics` wrote (replaced by the next one)."""
    import json

    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(saved, dict) and {"name", "file", "queries", "metrics"} <= set(saved)


def record_metrics(predictions: Path, name: str, result, precision: str) -> Path:
    """The metrics of an `interp eval --predictions` run beside its predictions file (`metrics_file`)."""
    from records.io import write_json

    out = metrics_file(predictions)
    write_json(out, {"name": name, "file": str(result.file), "queries": len(result.urls), "ties": result.ties,
                     "pooling": result.pooling, "precision": precision, "metrics": result.evaluation.metrics})
    typer.echo(f"metrics -> {out}")
    return out


def eval_base(*, split: str, data: Path | None, ties: str | None, device: Device, precision: str, runs_dir: Path, progress: bool,
              base: str | None, pooling: str | None, max_len: int | None, predictions: Path | None,
              num_processes: int | None = None) -> None:
    """`interp eval base`: the untrained encoder (--base, else the base of RUNS_DIR's runs, as analyses resolve `base`) with
    the default pooling (or --pooling), scored on a split of the runs' data (else RUNS_DIR/data) or --data; the result goes
    to RUNS_DIR/analyses/eval/base-<label>.json (label: the split, or the --data file's stem), the report's zero-shot row.
    On the runs' data, the examples are the runs' own (their --eval-limit sample, drawn as they drew it; `fingerprint` as theirs),
    at the runs' max_len unless --max-len (else the foreign deltas' default, 256 or the base's longest input)."""
    from interp.commands.launching import on_processes
    from trainers.parallel import is_main
    from trainers.data import load_split, read_split
    from trainers.encoders import load_encoder
    from records.errors import InterpError
    from trainers.foreign import ForeignOptions
    from records.io import write_json
    from trainers.training.evaluate import DEFAULT_TIE_RULE, check_tie_rule
    from trainers.training.runs import list_runs
    from trainers.training.scoring import evaluate_examples, run_data_dir
    from trainers.training.splits import EVAL_SUBSET_SEED, split_fingerprint, subset
    from trainers.data import fingerprint

    if predictions is not None:
        raise InterpError("--predictions: not for `interp eval base` (its metrics are saved under RUNS_DIR/analyses/eval)")
    if data is None and split not in options.SPLITS:
        raise InterpError(f"--split {split}: should be one of {', '.join(options.SPLITS)}")
    options.existing_dir("--runs-dir", runs_dir)
    options.device(device.value)
    options.at_least("--max-len", max_len)
    runs = [run for run in list_runs(runs_dir) if run.finished]
    if base is None:
        if not runs:
            raise InterpError(f"base: no --base and no finished run in {runs_dir} to take the base model from")
        base = runs[0].manifest.base["source"]
    if data is not None:
        examples, file, label = read_split(data), Path(data), Path(data).stem
    else:
        data_dir = run_data_dir(runs[0]) if runs else runs_dir / "data"
        examples, file, label = load_split(data_dir, split), data_dir / f"{split}.jsonl", split
        recorded = (runs[0].manifest.data.get(split) or {}) if runs else {}
        if isinstance(recorded.get("used"), int) and recorded["used"] < len(examples):  # the runs' --eval-limit sample, as they drew it
            examples = subset(examples, recorded["used"], EVAL_SUBSET_SEED if split != "train" else runs[0].manifest.seed)
    drawn = split_fingerprint(fingerprint(file), examples)
    ties = check_tie_rule(ties) if ties is not None else DEFAULT_TIE_RULE
    if max_len is None and runs and isinstance(runs[0].manifest.train.get("max_len"), int):
        max_len = runs[0].manifest.train["max_len"]  # beside the runs: their length
    if on_processes(num_processes, device=device.value, command="eval"):
        return  # launched processes scored it
    encoder = load_encoder(base)
    chosen = ForeignOptions(pooling=pooling, max_len=max_len).resolved(runs_dir, encoder.shape.positions)  # foreign deltas' defaults
    pooling, max_len = chosen["pooling"], chosen["max_len"]
    evaluation = evaluate_examples(encoder, encoder.model, examples, max_len=max_len, pooling=pooling, ties=ties,
                                   device=device.value, progress=progress, precision=precision)
    out = runs_dir / "analyses" / "eval" / f"{BASE_NAME}-{label}.json"
    if not is_main():  # of several processes, process 0 writes and prints
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"kind": "eval", "name": f"{BASE_NAME}-{label}", "base": {"source": encoder.source,
                     "weights_sha256": encoder.weights_hash}, "file": str(file), "fingerprint": drawn, "queries": len(examples), "ties": ties,
                     "pooling": pooling, "precision": precision, "max_len": max_len,
                     "metrics": evaluation.metrics})
    typer.echo(f"base (zero-shot, {encoder.source}) on {file}: MRR {evaluation.mrr:.4f} over {len(examples)} queries "
               f"(ties {ties}; pooling {pooling}; {precision})")
    typer.echo(metrics_line(evaluation.metrics))
    typer.echo(f"-> {out}")


def predictions_target(path: Path) -> Path:
    """--predictions: a new file in an existing directory, or a predictions file this command wrote before.

    Anything else already there (a run's manifest, a data split, a directory) is refused, naming what it is.
    """
    import json

    from records.errors import InterpError

    if path.is_dir():
        raise InterpError(f"--predictions {path}: is a directory; give a file name such as {path / 'predictions.jsonl'}")
    if not path.parent.is_dir():
        raise InterpError(f"--predictions {path}: no directory {path.parent} to write it in")
    if not path.exists():
        return path
    if not path.is_file():
        raise InterpError(f"--predictions {path}: exists and is not a regular file")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    first = head.split(b"\n", 1)[0].strip()
    if not first:
        return path  # an empty file: nothing to lose
    record = None
    for text in (head, first):  # a whole JSON file (a manifest), else the first line of a jsonl file
        try:
            record = json.loads(text)
            break
        except ValueError:
            continue
    if isinstance(record, dict) and set(record) == {"url", "answers"}:
        return path  # predictions written by `interp eval`: replaced
    keys = set(record) if isinstance(record, dict) else set()
    if "method" in keys or path.name == "manifest.json":
        what = "a run's manifest" if "method" in keys else "a manifest"
    elif keys & {"code", "code_tokens", "docstring", "docstring_tokens", "original_string"}:
        what = "a data split"
    else:
        what = "a file that is not predictions"
    raise InterpError(f"--predictions {path}: holds {what}, not predictions from `interp eval`; refusing to overwrite it")
