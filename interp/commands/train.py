"""`interp train`: make a delta (a preset or a method) and keep the best by valid MRR.

`interp eval` lives in `evaluation.py`, `interp runs` in `listing.py`."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from interp.commands import options
from interp.commands.options import Device
from interp.commands.params import LoraScalingOption


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
