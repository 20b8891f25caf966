"""The training loop: small, and it knows nothing about PEFT.

A method prepares the model (only the delta's parameters require gradients); this loop trains
whatever is trainable on the study's objective (its Eq. 4.1): cross-entropy over the in-batch
query x code [CLS] inner products. AdamW, linear warmup then linear decay, gradient-norm
clipping. It evaluates `evals_per_epoch` times per epoch and hands every evaluation to the
`Checkpoints` it was given, which keeps the best delta and the state to resume from.

On N data-parallel processes (see `distributed`) each process trains on its slice of the same
global batch, scores its queries against the codes of the whole batch, and logs the loss of
the whole batch: the curve is the one of a single process.

With `log_with` (accelerate's trackers) the loop also sends each step's loss, learning rate and
gradient norm, and each evaluation's valid MRR, to TensorBoard or W&B, offline, in the run's
`logs/` directory (the accelerator's `logging_dir`; see `tracking`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from trainers.devices import DEFAULT_PRECISION, PRECISIONS, autocast
from trainers.encoders import DEFAULT_POOLING, check_pooling
from records.errors import FieldError, InterpError
from trainers.training.evaluate import DEFAULT_TIE_RULE, NonFiniteError, check_tie_rule
from trainers.training.batching import BATCHINGS, Batch, Tokenized, embed_side, epoch_order, iterate_batches
from trainers.training.distributed import check_batch_split, gather_codes

# How training batches are made (recorded as `batching`; see `batching`): random (the default,
# CodeXGLUE's random in-batch negatives, encoded in length-sorted micro-batches), bucketed
# (length-matched negatives) or codexglue (random, padded to max_len in one pass).


SEED_LIMIT = 2**63  # torch, random and numpy all take seeds below it

# Where `log_with` sends the curves: accelerate's tracker of that name, and the package it needs.
# Both write offline into the run's logs/ (W&B in offline mode unless WANDB_MODE says otherwise).
TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}
TRACKED_PROJECT = "interp"  # accelerate's project name: TensorBoard writes into logs/interp/, W&B's project
# The scalars written, by tag: per optimizer step, and per evaluation.
STEP_TAGS = ("train/loss", "train/learning_rate", "train/grad_norm")
EVAL_TAGS = ("valid/mrr",)
UNCOMPARED = ("log_with",)  # TrainConfig fields that change no number: a run resumed or skipped with another value is the same run


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the defaults are the study's (its Table 7.2)."""

    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-5
    warmup_frac: float = 0.1
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 123456
    evals_per_epoch: int = 10
    max_steps: int | None = None
    max_len: int = 256
    eval_batch_size: int = 64
    pooling: str = DEFAULT_POOLING  # cls | pooler | mean (trainers.encoders)
    batching: str = "random"  # random | bucketed | codexglue (see BATCHINGS)
    ties: str = DEFAULT_TIE_RULE  # codexglue | optimistic: the rank rule of valid and test MRR
    log_with: str = "none"  # none | tensorboard | wandb (TRACKERS): where the curves also go; changes no number
    precision: str = DEFAULT_PRECISION  # fp32 | bf16 (trainers.devices): of the forward passes, training and evaluation

    def __post_init__(self):
        check_pooling(self.pooling)
        if self.precision not in PRECISIONS:
            raise FieldError("precision", f"`precision` should be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.log_with not in TRACKERS:
            raise FieldError("log_with", f"`log_with` should be one of {', '.join(TRACKERS)}, got {self.log_with!r}.")
        check_tie_rule(self.ties)
        if self.batching not in BATCHINGS:
            raise FieldError("batching", f"`batching` should be one of {', '.join(BATCHINGS)}, got {self.batching!r}.")
        for name in ("epochs", "batch_size", "seed", "evals_per_epoch", "max_steps", "max_len", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise FieldError(name, f"`{name}` should be a whole number, got {value!r}.")
        for name in ("lr", "warmup_frac", "adam_eps", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FieldError(name, f"`{name}` should be a finite number, got {value!r}.")
        for name in ("epochs", "batch_size", "evals_per_epoch", "max_len", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"`{name}` should be at least 1, got {getattr(self, name)}.")
        if self.batch_size < 2:
            raise FieldError("batch_size", f"`batch_size` should be at least 2 (in-batch negatives), got {self.batch_size}.")
        for name in ("lr", "adam_eps", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise FieldError(name, f"`{name}` should be positive, got {getattr(self, name)}.")
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"`weight_decay` should be at least 0, got {self.weight_decay}.")
        if not 0 <= self.warmup_frac < 1:
            raise FieldError("warmup_frac", f"`warmup_frac` should be in [0, 1), got {self.warmup_frac}.")
        if not 0 <= self.seed < SEED_LIMIT:
            raise FieldError("seed", f"`seed` should be from 0 to 2**63 - 1, got {self.seed}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise FieldError("max_steps", f"`max_steps` should be at least 1, got {self.max_steps}.")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A config from a manifest's "train" section; older manifests get the choices they were trained with.

        Before these were recorded, runs embedded with [CLS] (`pooling` "cls"), drew
        length-bucketed batches (`bucket` true: "bucketed"; false: "codexglue") and ranked
        ties in the query's favour (`ties` "optimistic"), sent their curves to no tracker (`log_with` "none"),
        and recorded no precision (`precision` "fp32", the default).
        """
        data = dict(data)
        legacy_bucket = data.pop("bucket", True)
        data.setdefault("pooling", "cls")
        data.setdefault("batching", "bucketed" if legacy_bucket else "codexglue")
        data.setdefault("ties", "optimistic")
        data.setdefault("log_with", "none")
        data.setdefault("precision", DEFAULT_PRECISION)
        return cls(**data)

    def schedule(self, train_size: int) -> tuple[int, int, int]:
        """(steps per epoch, total steps, steps between evaluations)."""
        per_epoch = train_size // self.batch_size
        if per_epoch < 1:
            raise InterpError(f"the training split has {train_size} pairs, fewer than one batch of {self.batch_size}")
        total = per_epoch * self.epochs
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        every = max(1, math.ceil(min(per_epoch, total) / self.evals_per_epoch))
        return per_epoch, total, every


@dataclass
class TrainerState:
    """Where a run stands: everything but tensors needed to resume it exactly."""

    step: int = 0
    best_mrr: float = -1.0
    best_step: int = -1
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    grad_norms: list[float] = field(default_factory=list)  # before clipping, one per optimizer step
    valid: list[dict] = field(default_factory=list)  # {"step", "epoch", "mrr"} per evaluation

    def to_dict(self) -> dict:
        return asdict(self)


def check_tracker(name: str) -> str:
    """`name` if it is a tracker of TRACKERS whose package is installed; else InterpError saying which and how to get it."""
    if name not in TRACKERS:
        raise InterpError(f"unknown tracker {name!r}; known: {', '.join(TRACKERS)}")
    package = TRACKERS[name]
    if package is not None and importlib.util.find_spec(package) is None:
        raise InterpError(f"tracker {name!r} needs the package {package!r}, which is not installed (pip install {package})")
    return name


@contextlib.contextmanager
def tracking(accelerator, cfg: TrainConfig, step: int) -> Iterator[None]:
    """accelerate's tracker `cfg.log_with` for the length of the block (nothing when "none"), started at `step`.

    The accelerator must have been made with `log_with=cfg.log_with` and a `project_dir` (the run
    directory; its `logging_dir` is where the logs go). A resumed run (`step` > 0: the steps done
    before) appends: a new TensorBoard event file beside the earlier ones, which hides what they
    logged past the state it resumed from (TensorBoard's `purge_step`: those steps are logged
    again); a new W&B offline run. The trackers
    are finished when the block ends, however it ends; the process group is left to the caller
    (accelerate's `end_training` would destroy it, and the run still tests its best delta on it).
    """
    if cfg.log_with == "none":
        yield
        return
    check_tracker(cfg.log_with)
    if cfg.log_with not in map(str, accelerator.log_with) or accelerator.logging_dir is None:
        raise InterpError(f"log_with {cfg.log_with!r}: the accelerator was made without it, or without a project_dir to log into")
    logs = Path(accelerator.logging_dir)
    if accelerator.is_main_process:
        logs.mkdir(parents=True, exist_ok=True)
    run_name = Path(accelerator.project_dir).name
    init_kwargs = {
        "tensorboard": {"purge_step": step + 1} if step > 0 else {},  # steps after `step` are logged again
        "wandb": {"name": run_name, "dir": str(logs), "mode": os.environ.get("WANDB_MODE", "offline")},
    }
    hparams = {k: v for k, v in asdict(cfg).items() if v is not None}  # trackers take str, int, float and bool
    accelerator.init_trackers(TRACKED_PROJECT, config=hparams, init_kwargs={cfg.log_with: init_kwargs[cfg.log_with]})
    try:
        yield
    finally:
        for tracker in accelerator.trackers:
            tracker.finish()
        accelerator.trackers.clear()


class Checkpoints(Protocol):
    def save_best(self, step: int, mrr: float) -> None: ...
    def save_state(self, state: TrainerState, optimizer: torch.optim.Optimizer, scheduler) -> None: ...


def contrastive_loss(query: torch.Tensor, code: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Eq. 4.1: cross-entropy of each query against every code of the batch. (b, H) x (B, H) -> ()

    The gold code of query i is code `offset + i`: a process holding queries offset..offset+b-1
    of the global batch scores them against all B codes.
    """
    logits = query @ code.T  # (b, B)
    return F.cross_entropy(logits.float(), offset + torch.arange(len(query), device=query.device))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InterpError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_frac * total_steps), total_steps)
    return optimizer, scheduler


def fit(
    model: torch.nn.Module,
    *,
    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train: Tokenized,
    validate: Callable[[], float],
    cfg: TrainConfig,
    accelerator,
    checkpoints: Checkpoints,
    state: TrainerState | None = None,
    optimizer_state: dict | None = None,
    progress: bool = True,
) -> TrainerState:
    """Train from `state` (a fresh run if None) to the configured number of steps.

    `accelerator` (an `accelerate.Accelerator`) owns the device and the processes; `model` must
    already be prepared by it, and `embed` must call the prepared model. The forward passes run at
    `cfg.precision` (`trainers.devices.autocast`); the loss is float32 whatever it is.
    `validate` and `checkpoints` are called on every process. With `cfg.log_with`, the curves
    also go to that tracker (`tracking`).
    """
    check_batch_split(cfg.batch_size, accelerator.num_processes)
    state = state or TrainerState()
    _, total, _ = cfg.schedule(len(train))
    optimizer, scheduler = make_optimizer(model, cfg, total)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state["optimizer"])
        scheduler.load_state_dict(optimizer_state["scheduler"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)

    bar = tqdm(total=total, initial=state.step, desc="train", disable=not (progress and accelerator.is_main_process), dynamic_ncols=True)
    with tracking(accelerator, cfg, state.step):
        _train(model, embed=embed, train=train, validate=validate, cfg=cfg, accelerator=accelerator, checkpoints=checkpoints, state=state,
               optimizer=optimizer, scheduler=scheduler, trainable=trainable, bar=bar)
    bar.close()
    model.eval()
    return state


def _train(model, *, embed, train: Tokenized, validate, cfg: TrainConfig, accelerator, checkpoints: Checkpoints, state: TrainerState,
           optimizer, scheduler, trainable, bar) -> None:
    """The steps from `state.step` to the end of the schedule; `state` is updated in place."""
    rank, world = accelerator.process_index, accelerator.num_processes
    per_epoch, total, every = cfg.schedule(len(train))
    device = accelerator.device
    while state.step < total:
        epoch, position = divmod(state.step, per_epoch)
        batches = epoch_order(train, cfg.batch_size, cfg.seed, epoch, cfg.batching)
        for batch in iterate_batches(train, batches, start=position, batching=cfg.batching, max_len=cfg.max_len, rank=rank, world=world):
            model.train()
            loss = _step(embed, batch.to(device), accelerator, cfg.precision)
            batch_loss = accelerator.reduce(loss.detach(), reduction="mean").item()  # the global batch's loss
            if not math.isfinite(batch_loss):
                kept = f"step {state.best_step}, valid MRR {state.best_mrr:.4f}" if state.best_step >= 0 else "none yet"
                raise InterpError(f"step {state.step + 1}: the loss is {batch_loss}; stopping. Last good checkpoint kept: {kept}")
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step is taken at
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.losses.append(round(batch_loss, 6))
            state.grad_norms.append(float(f"{float(grad_norm):.7g}"))  # 7 significant digits: norms can be small
            bar.update(1)
            accelerator.log(dict(zip(STEP_TAGS, (batch_loss, lr, state.grad_norms[-1]))), step=state.step)  # no tracker: nothing
            if state.step % every == 0 or state.step == total:
                model.eval()
                try:  # a non-finite embedding, score or MRR stops the run: it can never become the best
                    score = validate()
                    if not math.isfinite(score):
                        raise NonFiniteError(f"the valid MRR is {score}")
                except NonFiniteError as exc:
                    kept = f"step {state.best_step}, valid MRR {state.best_mrr:.4f}" if state.best_step >= 0 else "none yet"
                    raise NonFiniteError(f"step {state.step}: {exc}; stopping. Last good checkpoint kept: {kept}") from None
                state.valid.append({"step": state.step, "epoch": state.step / per_epoch, "mrr": score})
                accelerator.log(dict(zip(EVAL_TAGS, (score,))), step=state.step)
                if score > state.best_mrr:
                    checkpoints.save_best(state.step, score)  # refuses a non-finite delta
                    state.best_mrr, state.best_step = score, state.step
                checkpoints.save_state(state, optimizer, scheduler)  # refuses a non-finite delta
            bar.set_postfix(loss=f"{batch_loss:.4f}", valid_mrr=f"{state.valid[-1]['mrr']:.4f}" if state.valid else "-")
            if state.step >= total:
                break


def _step(embed, batch: Batch, accelerator, precision: str = DEFAULT_PRECISION) -> torch.Tensor:
    """This process's share of the loss: its b queries against all B = N * b codes of the global batch.

    Each side may come in several micro-batches (random batching): they are embedded one call
    each and put back into batch order, so the loss, and its gradient, are those of one pass.
    """
    with autocast(precision, accelerator.device):
        query = embed_side(embed, batch.query)  # (b, H)
        code = embed_side(embed, batch.code)  # (b, H)
    query, code = query.float(), code.float()  # the loss, and the gathered codes, in float32
    codes = gather_codes(code)  # (B, H), process 0's codes first
    return contrastive_loss(query, codes, offset=accelerator.process_index * len(query))
