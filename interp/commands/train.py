"""`interp train`, `interp eval` and `interp runs`: make deltas, score them, list them."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.params import LoraScalingOption


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Placement(str, Enum):
    attn = "attn"
    ffn = "ffn"
    both = "both"


# config field -> the option that sets it, for --method
METHOD_OPTIONS = {"r": "--r", "alpha": "--alpha", "length": "--length", "placement": "--placement", "layers": "--layers",
                  "scaling": "--lora-scaling"}


def _option_methods() -> list[str]:
    """The registered methods that --method and its options can build: each required field of
    their config is an option (a union's `parts` is not, so unions come from presets)."""
    from trainers.methods.registry import REGISTRY

    def buildable(config) -> bool:
        required = [f.name for f in dataclasses.fields(config)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        return all(name in METHOD_OPTIONS for name in required)

    return [name for name, (config, _) in REGISTRY.items() if buildable(config)]


Method = Enum("Method", [(name, name) for name in _option_methods()], type=str)  # a registry line adds a choice


def method_config(preset: str | None, method: Method | None, r: int | None, alpha: float | None, length: int | None,
                  placement: Placement | None, layers: str | None, lora_scaling: str | None = None, shape=None):
    """The method config named by --preset, or built from --method and its options.

    --lora-scaling sets the rule of every LoRA part, a preset's too (the manifest records both);
    --layers restricts a preset to those layers (each part of a union). With `shape` (the base's
    `BaseShape`) the config is also checked to fit the base. A bad value is an InterpError naming
    the option that set it (a preset's own fields: the preset).
    """
    from trainers import methods
    from records.errors import FieldError, InterpError
    from trainers.methods.lora.config import lora_parts, with_lora_scaling

    if (preset is None) == (method is None):
        raise InterpError("give exactly one of --preset or --method")
    if lora_scaling is not None and not (lora_parts(methods.get_preset(preset)) if preset else method.value == "lora"):
        raise InterpError(f"--lora-scaling {lora_scaling}: {f'preset {preset}' if preset else f'--method {method.value}'} has no LoRA part")
    fields = {"r": r, "alpha": alpha, "length": length, "placement": placement.value if placement else None, "layers": layers,
              "scaling": lora_scaling}
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        if preset is not None:
            if any(v is not None for v in (r, alpha, length, placement)):
                raise InterpError("--r, --alpha, --length and --placement go with --method, not --preset")
            config = methods.get_preset(preset)
            config = config if lora_scaling is None else with_lora_scaling(config, lora_scaling)
            config = config if layers is None else config.with_layers(layers)
        else:
            own = {f.name for f in dataclasses.fields(methods.METHODS[method.value])}
            for field in given:
                if field not in own:
                    takes = ", ".join(METHOD_OPTIONS[f] for f in METHOD_OPTIONS if f in own)
                    raise InterpError(f"{METHOD_OPTIONS[field]} does not apply to --method {method.value} (it takes {takes})")
            config = methods.method_from_dict({"method": method.value} | given)
        if shape is not None:
            config.check_fits(shape)
    except FieldError as exc:
        if exc.field == "layers" and layers is not None:
            culprit = f"--layers {layers}"
        elif preset is not None:
            culprit = f"--preset {preset}" + (f" --lora-scaling {lora_scaling}" if exc.field == "scaling" else "")
        else:
            option = METHOD_OPTIONS.get(exc.field)
            value = given.get(exc.field)
            culprit = f"--method {method.value}" if option is None else option if value is None else f"{option} {value}"
        raise InterpError(f"{culprit}: {exc}") from exc
    return config


def tracker_choice(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Callback of --log-with: a tracker the library knows (`loop.TRACKERS`), else InterpError naming the option."""
    if value is not None:
        check_log_with(value)
    return value


def check_log_with(value: str) -> str:
    """--log-with VALUE: known, and its package installed; InterpError naming the option otherwise (before anything is written)."""
    from records.errors import InterpError
    from trainers.training.loop import check_tracker

    try:
        return check_tracker(value)
    except InterpError as exc:
        raise InterpError(f"--log-with {value}: {exc}") from None


LogWithOption = Annotated[str | None, typer.Option(
    "--log-with",
    help="Also send the loss, learning rate, gradient norm and valid MRR to a tracker, offline, into RUNS_DIR/NAME/logs: "
         "tensorboard (event files) or wandb (offline mode unless WANDB_MODE says otherwise); none sends them nowhere. "
         "Default none; with --resume, the run's own (its logs are appended to).",
    callback=tracker_choice)]


def train(
    name: Annotated[str, typer.Option("--name", help="Run name: the checkpoint goes to RUNS_DIR/NAME.")],
    preset: Annotated[str | None, typer.Option(help="A preset of the study, e.g. lora64, adapter-ffn256, loFF (see `interp params`).")] = None,
    method: Annotated[Method | None, typer.Option(help="A single method, configured by the options below.")] = None,
    r: Annotated[int | None, typer.Option("--r", help="LoRA rank or adapter bottleneck.")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA's alpha (default 4); the factor applied follows --lora-scaling.", callback=options.finite)] = None,
    lora_scaling: LoraScalingOption = None,
    length: Annotated[int | None, typer.Option("--length", help="Prefix length l.")] = None,
    placement: Annotated[Placement | None, typer.Option(help="Adapter placement: attn, ffn or both (Adapter-H).")] = None,
    layers: Annotated[str | None, typer.Option(help="Restrict the delta to layers: '9-12' (1-based, inclusive) or 'last:4'.")] = None,
    data: options.DataDir = Path("runs/data"),
    base: options.Base = None,
    epochs: Annotated[int, typer.Option(help="Epochs over the training split.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch (in-batch negatives); with several processes, the global batch.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).", callback=options.finite)] = 1e-5,
    warmup_frac: Annotated[float, typer.Option(help="Share of steps with linear warmup.", callback=options.finite)] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 123456,
    evals_per_epoch: Annotated[int, typer.Option(help="Validation MRR evaluations per epoch; the best delta is kept.")] = 10,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    max_len: Annotated[int, typer.Option(help="Truncate queries and codes to this many tokens.")] = 256,
    pooling: Annotated[str | None, typer.Option(
        help="Sequence embedding: cls (final hidden state of [CLS], the study's text), pooler (the model's pooler "
             "output, CodeXGLUE's model.py) or mean (masked mean, sentence-transformers). Default cls; with --resume, the run's own.",
        callback=options.choice)] = None,
    batching: Annotated[str | None, typer.Option(
        help="Training batches: random (CodeXGLUE's random in-batch negatives), bucketed (length-matched negatives) or "
             "codexglue (random, padded to --max-len). Default random; with --resume, the run's own.",
        callback=options.choice)] = None,
    ties: Annotated[str | None, typer.Option(
        help="Tie rule of valid and test MRR: codexglue (other codes scoring >= the gold one rank ahead of it) or "
             "optimistic (only those scoring higher). Default codexglue; with --resume, the run's own.",
        callback=options.choice)] = None,
    train_limit: Annotated[int | None, typer.Option(help="Use only this many training pairs (a fixed sample).")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Use only this many valid and test pairs (a fixed sample).")] = None,
    log_with: LogWithOption = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", callback=options.precision,
        help=options.PRECISION_HELP + "Default fp32; with --resume, the run's own (a run resumes at the precision it was trained at).")] = None,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when there is one.")] = Device.auto,
    runs_dir: options.RunsDir = Path("runs"),
    resume: Annotated[bool, typer.Option(help="Continue RUNS_DIR/NAME from its last saved state.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="If another process is writing RUNS_DIR/NAME, wait for it to finish instead of stopping.")] = False,
    num_processes: Annotated[int | None, typer.Option(
        help="Data-parallel processes (one per GPU; CPU processes talk through gloo), started through accelerate. "
             "Each takes an equal share of every --batch-size batch. Default: those `accelerate launch` started, else 1.")] = None,
    progress: options.Progress = True,
) -> None:
    """Train a delta on the code-search objective and save the best one (by valid MRR) with its manifest."""
    from records.errors import FieldError, InterpError
    from trainers.training.distributed import process_rank
    from trainers.training.loop import check_tracker
    from trainers.training.train import RunSpec, train_config, train_run

    # every option is checked here, before a model, a data file or a run directory is touched
    check_name(name)
    for option, value in (("--train-limit", train_limit), ("--eval-limit", eval_limit), ("--num-processes", num_processes)):
        options.at_least(option, value)
    options.creatable_dir("--runs-dir", runs_dir)
    options.data_dir("--data", data)
    shape = options.base_shape(base)
    config = method_config(preset, method, r, alpha, length, placement, layers, lora_scaling, shape=shape)
    try:
        cfg = train_config(runs_dir / name if resume else None, epochs=epochs, batch_size=batch_size, lr=lr, warmup_frac=warmup_frac,
                           seed=seed, evals_per_epoch=evals_per_epoch, max_steps=max_steps, max_len=max_len, pooling=pooling,
                           batching=batching, ties=ties, log_with=log_with, precision=precision)
    except FieldError as exc:
        raise InterpError(f"{options.option_name(exc.field)}: {exc}") from exc
    if log_with is None and cfg.log_with != "none":  # the resumed run's own tracker (a given one was checked as parsed)
        try:
            check_tracker(cfg.log_with)
        except InterpError as exc:
            raise InterpError(f"--resume: run {name!r} logs with {cfg.log_with} (--log-with none resumes it without): {exc}") from None
    if cfg.max_len > shape.positions:
        raise InterpError(f"--max-len {cfg.max_len}: the base takes at most {shape.positions} tokens")
    if not resume and train_limit is not None and train_limit < cfg.batch_size:
        raise InterpError(f"--batch-size {cfg.batch_size}: larger than the training set, --train-limit {train_limit}")
    if not resume and (pairs := count_lines(data / "train.jsonl", stop=cfg.batch_size)) < cfg.batch_size:
        raise InterpError(f"--batch-size {cfg.batch_size}: larger than the training set, {data / 'train.jsonl'} ({pairs} lines)")
    options.device(device.value)
    spec = RunSpec(name=name, method=config, data_dir=data, preset=preset, base=base, train_limit=train_limit, eval_limit=eval_limit)
    manifest = train_run(spec, cfg, runs_dir=runs_dir, device=device.value, resume=resume, progress=progress, num_processes=num_processes,
                         wait=wait)
    if process_rank() != 0:  # under `accelerate launch`, the main process reports
        return
    m = manifest["metrics"]
    typer.echo(f"{name}: best valid MRR {m['valid_mrr']:.4f} at step {m['best_step']}, test MRR {m['test_mrr']:.4f} "
               f"(pooling {cfg.pooling}, ties {cfg.ties}, {cfg.precision}) -> {runs_dir / name}")


def check_name(name: str) -> str:
    """--name: a plain directory name of at most `NAME_LIMIT` characters, not one reserved under runs/."""
    from records.errors import InterpError
    from trainers.training.runs import check_run_name

    try:
        return check_run_name(name)
    except InterpError as exc:
        raise InterpError(f"--name: {exc}") from exc


def count_lines(path: Path, stop: int) -> int:
    """Lines of a file up to about `stop`, read in blocks without parsing: an upper bound on a split's pairs."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while count < stop and (block := f.read(1 << 16)):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


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
    base: Annotated[str | None, typer.Option("--base", help="For a directory: its base encoder (default: the adapter's "
                                             "base_model_name_or_path; a model directory needs it).")] = None,
    pooling: Annotated[str | None, typer.Option("--pooling", callback=options.choice, help="For a directory: cls (default), pooler or mean.")] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", help="For a directory: tokens per query or code (default 256).")] = None,
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


RUNS_TEST_COLUMNS = {"mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1"}  # the test split's, beside its MRR


def runs(runs_dir: options.RunsDir = Path("runs")) -> None:
    """List the runs: method, trainable parameters, share of base, pooling, tie rule, valid and test MRR, and the test
    split's MRR@10, NDCG@10 and Recall@1 ('-' for runs that predate them)."""
    from records.errors import InterpError
    from trainers.training.runs import scan_runs

    options.existing_dir("--runs-dir", runs_dir)
    rows = [("run", "preset", "method", "trainable", "share", "pooling", "ties", "valid MRR", "test MRR", *RUNS_TEST_COLUMNS.values(),
             "status")]
    found, damaged = scan_runs(runs_dir)
    for exc in damaged:  # listed, not fatal: the other runs are still shown (exit status 0)
        typer.echo(f"warning: skipped a damaged run: {exc}", err=True)
    for run in found:
        m, p = run.manifest, run.manifest.get("parameters", {})
        metrics = m.get("metrics", {})
        fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
        try:
            cfg = run.train_config
            pooling, tie_rule = cfg.pooling, cfg.ties
        except (InterpError, KeyError, TypeError):  # a manifest without a readable "train" section
            pooling = tie_rule = "?"
        test = run.manifest.split_metrics("test", run.path)
        rows.append((run.name, m.get("preset") or "-", m["method"]["method"], f"{p.get('trainable', 0):,}",
                     f"{100 * p.get('share_of_base', 0):.2f}%", pooling, tie_rule, fmt(metrics.get("valid_mrr")),
                     fmt(metrics.get("test_mrr")), *(fmt(test.get(key)) for key in RUNS_TEST_COLUMNS), m.get("status", "?")))
    if len(rows) == 1:
        typer.echo(f"no runs in {runs_dir}" + (f" that can be read ({len(damaged)} damaged)" if damaged else ""))
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
