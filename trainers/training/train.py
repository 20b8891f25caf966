"""One training run, end to end: load, apply the method, fit, test the best delta, write the run.

This is where the parts meet: the data, the base encoder, the method (which prepares the
model), the loop (which trains what is trainable) and the run directory (which keeps the best
delta, the state to resume from and the manifest).

A run may be data parallel over several processes (`num_processes`, or `accelerate launch`;
see `distributed`): every process trains and evaluates its share, only the main process
writes, and the others wait for it.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from trainers import methods
from trainers.data import load_split
from trainers.devices import DEFAULT_PRECISION, check_device, mixed_precision
from trainers.encoders import Encoder, load_encoder
from records.errors import InterpError, did_you_mean
from records.io import DiskFullError, atomic_dir, disk_full, write_json
from trainers.locks import held_by_parent, hold, lend_to_children, run_lock_path
from records.manifest import Manifest, described, differences
from trainers.training.batching import Tokenized, tokenize_pairs
from trainers.training.distributed import check_batch_split, check_single_launch, launch, launched_processes, process_rank
from trainers.training.evaluate import NonFiniteError, evaluate
from trainers.training.loop import UNCOMPARED, TrainConfig, TrainerState, fit
from trainers.training.runs import LOGS_DIR, check_run_name, code_version, half_made, package_versions, read_manifest, recover_run
from trainers.training.splits import SplitData, load_split_data


@dataclass(frozen=True)
class RunSpec:
    """What to train: a name, a method, the data and the base."""

    name: str
    method: methods.MethodConfig
    data_dir: Path
    preset: str | None = None
    base: str | None = None
    train_limit: int | None = None  # use only this many training pairs (the demo)
    eval_limit: int | None = None  # and this many valid / test pairs


def make_accelerator(device: str, *, precision: str = DEFAULT_PRECISION, log_with: str = "none", run_dir: Path | None = None):
    """Device, mixed precision (`precision`: fp32 or bf16, on the CPU too), and the processes (one unless launched as several).

    split_batches: the batch size is the global one, so the scheduler steps once per optimizer step.
    find_unused_parameters: a trainable parameter may play no part in the [CLS] embedding (the
    pooler, when everything is trained); DDP must not wait for its gradient.
    log_with: accelerate's tracker (`loop.TRACKERS`), logging into `run_dir`/logs (`loop.tracking`).
    """
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
    from accelerate.utils import ProjectConfiguration

    use_cuda = check_device(device)
    tracked = log_with != "none" and run_dir is not None
    return Accelerator(cpu=not use_cuda, mixed_precision=mixed_precision(precision),
                       dataloader_config=DataLoaderConfiguration(split_batches=True),
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
                       log_with=log_with if tracked else None,
                       project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / LOGS_DIR)) if tracked else None)


class RunCheckpoints:
    """Keeps the best delta in the run directory and the last state in runs/NAME/state/.

    Called on every process (each keeps the best delta in memory, to test it); the main
    process writes, and the others wait until it has.
    """

    def __init__(self, path: Path, model: torch.nn.Module, config: methods.MethodConfig, accelerator=None):
        self.path, self.model, self.config, self.accelerator = path, model, config, accelerator
        self.best: dict[str, torch.Tensor] | None = None
        self.best_step, self.best_mrr = -1, float("nan")  # of the best delta on disk

    @property
    def writer(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    def _wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def save_best(self, step: int, mrr: float) -> None:
        delta = check_finite_weights(methods.delta_state(self.model), f"step {step}: the delta")
        self.best = {k: v.detach().clone() for k, v in delta.items()}
        if self.writer:
            with disk_full(f"the best delta (step {step}) into {self.path}"):
                methods.save_delta(self.model, self.config, self.path)
        self.best_step, self.best_mrr = step, mrr
        self._wait()

    def save_state(self, state: TrainerState, optimizer, scheduler) -> None:
        delta = check_finite_weights(methods.delta_state(self.model), f"step {state.step}: the delta")
        check_finite_weights(_tensors(optimizer.state_dict()["state"]), f"step {state.step}: the optimizer state")
        rng = self.rng_states()  # every process takes part
        if self.writer:
            with disk_full(f"the state of step {state.step} into {self.path / 'state'}"), atomic_dir(self.path / "state") as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in delta.items()}, tmp / "delta.safetensors")
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
                if self.best is not None:
                    save_file({k: v.cpu().contiguous() for k, v in self.best.items()}, tmp / "best.safetensors")
                save_file(rng, tmp / "rng.safetensors")
                write_json(tmp / "trainer_state.json", state.to_dict())
        self._wait()

    def rng_states(self) -> dict[str, torch.Tensor]:
        """'cpu' (and 'cuda' on a GPU) of this process; of several, also 'cpu:RANK' of each of them."""
        acc = self.accelerator
        mine = {"cpu": torch.get_rng_state()}
        if acc is not None and acc.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(acc.device)
        if acc is None or acc.num_processes == 1:
            return mine
        states = dict(mine)
        for kind, tensor in mine.items():
            every = acc.gather(tensor.to(acc.device)).cpu().view(acc.num_processes, -1)  # (processes, state bytes)
            states |= {f"{kind}:{rank}": every[rank].contiguous() for rank in range(acc.num_processes)}
        return states

    def restore_rng(self, states: dict[str, torch.Tensor]) -> None:
        rank = self.accelerator.process_index if self.accelerator is not None else 0
        torch.set_rng_state(states.get(f"cpu:{rank}", states["cpu"]))
        if "cuda" in states and self.accelerator is not None and self.accelerator.device.type == "cuda":
            torch.cuda.set_rng_state(states.get(f"cuda:{rank}", states["cuda"]), self.accelerator.device)


def check_finite_weights(weights: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """`weights`, or NonFiniteError naming the tensors with NaN or inf entries: such a state is never saved."""
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()}
    if bad:
        listed = ", ".join(f"{name} ({n} of {weights[name].numel()})" for name, n in list(bad.items())[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteError(f"{what} has non-finite weights: {listed}{more}; not saved, the run has diverged")
    return weights


def _tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a nested dict / list (an optimizer's state), by dotted path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in _tensors(value, f"{prefix}.{key}" if prefix else str(key)).items()}


def load_state(path: Path, checkpoints: RunCheckpoints) -> tuple[TrainerState, dict]:
    """Put the model, the RNG and the best delta back where the last saved state left them."""
    state_dir = path / "state"
    methods.load_delta_state(checkpoints.model, load_file(state_dir / "delta.safetensors"))
    if (state_dir / "best.safetensors").is_file():
        checkpoints.best = load_file(state_dir / "best.safetensors")
    checkpoints.restore_rng(load_file(state_dir / "rng.safetensors"))
    optimizer_state = torch.load(state_dir / "optimizer.pt", weights_only=True)
    return TrainerState(**json.loads((state_dir / "trainer_state.json").read_text())), optimizer_state


def train_run(spec: RunSpec, cfg: TrainConfig, *, runs_dir: Path, device: str = "auto", resume: bool = False, progress: bool = True,
              num_processes: int | None = None, wait: bool = False) -> Manifest:
    """Train `spec` and write runs/NAME/; returns the manifest.

    `num_processes`: data-parallel processes sharing each global batch of `cfg.batch_size`.
    None: as many as this process was launched among (`accelerate launch`), else 1. Above 1
    in a process that was not launched: start them through accelerate's launcher and wait.

    The run's lock is held throughout (`trainers.locks`): another process writing the run is
    refused with LockedError naming it, or waited for with `wait`. A run that fails before it
    saved a checkpoint leaves nothing behind; one that saved one keeps it, resumable.
    """
    check_run_name(spec.name)
    runs_dir = Path(runs_dir)
    launched = launched_processes()
    if num_processes is None:
        check_single_launch()
    elif launched > 1 and num_processes != launched:
        raise InterpError(f"--num-processes {num_processes}, but this process was launched as one of {launched}")
    processes = launched if num_processes is None else num_processes
    check_batch_split(cfg.batch_size, processes)
    if resume and launched == 1 and not (runs_dir / spec.name).exists():  # nothing to continue: not a fresh start in disguise
        from trainers.training.runs import list_runs

        unknown = did_you_mean("run", spec.name, [r.name for r in list_runs(runs_dir)], where=str(runs_dir))
        raise InterpError(f"--resume: {unknown}; nothing to continue (leave out --resume to start it)")
    lock = run_lock_path(runs_dir, spec.name)
    if launched > 1 and (process_rank() != 0 or held_by_parent(lock)):  # the parent, or process 0, holds the lock
        return _train_run(spec, cfg, runs_dir=runs_dir, device=device, resume=resume, progress=progress, processes=processes, lock=lock)
    with hold(lock, f"run {spec.name!r} in {runs_dir}", wait=wait):
        recover_run(runs_dir / spec.name)  # nobody else writes it now: finish or undo what a killed process left
        return _train_run(spec, cfg, runs_dir=runs_dir, device=device, resume=resume, progress=progress, processes=processes, lock=lock)


def _train_run(spec: RunSpec, cfg: TrainConfig, *, runs_dir: Path, device: str, resume: bool, progress: bool, processes: int,
               lock: Path) -> Manifest:
    path = runs_dir / spec.name
    launched = launched_processes()
    if launched == 1 and half_made(path):  # a run that never saved a checkpoint: retried as if it were not there
        shutil.rmtree(path)
    if path.exists() and not resume:
        raise InterpError(f"run {spec.name!r} already exists in {runs_dir}; use --resume to continue it, or another --name")
    if resume and path.exists() and read_manifest(path).finished:
        raise InterpError(f"run {spec.name!r} in {runs_dir} has already finished; nothing to resume")
    if processes > 1 and launched == 1:
        check_device(device)
        with lend_to_children(lock):
            launch(spec, cfg, runs_dir=runs_dir, device=device, resume=resume, progress=progress, num_processes=processes)
        return read_manifest(path)

    encoder = load_encoder(spec.base)
    data = load_split_data(encoder, spec.data_dir, max_len=cfg.max_len, train_limit=spec.train_limit, eval_limit=spec.eval_limit)
    cfg.schedule(len(data.train))  # refuses a batch larger than the training split before anything is written
    if resume and path.exists():
        _check_same_run(read_manifest(path), spec, cfg, encoder, data, processes)

    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    accelerator = make_accelerator(device, precision=cfg.precision, log_with=cfg.log_with, run_dir=path)
    model = methods.apply_method(encoder, spec.method)
    model = accelerator.prepare(model)  # DDP when there are several processes
    unwrapped = accelerator.unwrap_model(model)
    embed = lambda ids, mask: encoder.embed(ids, mask, model=model, pooling=cfg.pooling)  # noqa: E731
    # Evaluation: the same weights without DDP, whose every call is a collective.
    eval_embed = lambda ids, mask: encoder.embed(ids, mask, model=unwrapped, pooling=cfg.pooling)  # noqa: E731
    main = accelerator.is_main_process

    manifest = _manifest(spec, cfg, encoder, data, accelerator, methods.count_parameters(encoder, spec.method))
    checkpoints = RunCheckpoints(path, unwrapped, spec.method, accelerator)
    state = optimizer_state = None
    if resume and (path / "state" / "trainer_state.json").is_file():
        state, optimizer_state = load_state(path, checkpoints)
        checkpoints.best_step, checkpoints.best_mrr = state.best_step, state.best_mrr
    accelerator.wait_for_everyone()  # every process has checked and read before the main one writes
    start = time.perf_counter()
    evaluate_split = lambda tok, progress=False: evaluate(  # noqa: E731
        eval_embed, tok, batch_size=cfg.eval_batch_size, device=accelerator.device, progress=progress,
        ties=cfg.ties, precision=cfg.precision)
    try:
        if main:
            with disk_full(f"{path / 'manifest.json'}"):
                path.mkdir(parents=True, exist_ok=True)
                manifest.write(path)
        seen = len(state.valid) if state is not None else 0  # evaluations before this process (resumed)
        valid_metrics: list[dict[str, float]] = []  # this process's evaluations, in the order fit records them

        def validate() -> float:
            evaluation = evaluate_split(data.valid)
            valid_metrics.append(evaluation.metrics)
            return evaluation.mrr

        state = fit(
            model, embed=embed, train=data.train, validate=validate, cfg=cfg, accelerator=accelerator,
            checkpoints=checkpoints, state=state, optimizer_state=optimizer_state, progress=progress,
        )
        # Test the best delta, not the last one.
        methods.load_delta_state(checkpoints.model, checkpoints.best)
        test = evaluate_split(data.test, progress=progress)
        best_valid = next((mets for entry, mets in zip(state.valid[seen:], valid_metrics) if entry["step"] == state.best_step), None)
        if best_valid is None:  # the best delta was validated before a resume: score it again (same weights, same ranks)
            best_valid = evaluate_split(data.valid).metrics

        manifest = manifest.replace(status="finished", elapsed_s=round((manifest.elapsed_s or 0) + time.perf_counter() - start, 1), metrics={
            "best_step": state.best_step,
            "valid_mrr": state.best_mrr,
            "test_mrr": test.mrr,
            "steps": state.step,
            "evaluations": len(state.valid),
            "valid": best_valid,  # every retrieval metric of the best delta (`trainers.training.metrics`), same ranks as the MRR
            "test": test.metrics,
        })
        if main:  # the state goes last: until the manifest says finished, --resume can finish the run
            with disk_full(f"the results of the finished run into {path}"):
                write_json(path / "curves.json", {"loss": state.losses, "grad_norm": state.grad_norms, "valid": state.valid})
                write_json(path / "ranks.json", {"split": "test", "fingerprint": data.test_fingerprint, "ties": cfg.ties,
                                                 "pooling": cfg.pooling, "ranks": dict(zip(map(str, data.test_idx), test.ranks.tolist()))})
                manifest.write(path)
            shutil.rmtree(path / "state", ignore_errors=True)
            recover_run(path)  # the run is finished: what interrupted writes of it left can go
    except BaseException as exc:
        if not main:
            raise
        kept = _after_failure(path, manifest, checkpoints, exc)
        if isinstance(exc, DiskFullError):
            raise DiskFullError(f"{exc}; kept: {kept}") from None
        raise
    accelerator.wait_for_everyone()
    return manifest


def _after_failure(path: Path, manifest: Manifest, checkpoints: RunCheckpoints, exc: BaseException) -> str:
    """Leave the run as a failure should (nothing if no checkpoint was saved; else the last good one, and why it
    stopped); returns what was kept, in words."""
    if not path.exists() or half_made(path) or (path.is_dir() and not any(path.iterdir())):
        shutil.rmtree(path, ignore_errors=True)
        return f"nothing (no checkpoint had been saved; {path} was removed, and the run can be started again under its name)"
    if isinstance(exc, InterpError) and path.is_dir():  # a non-finite loss, embedding, score or delta among them
        with contextlib.suppress(OSError):  # a full disk: the manifest stays "running", which --resume continues as well
            manifest.replace(status="stopped", error=str(exc)).write(path)
    if checkpoints.best_step >= 0:
        return (f"the last good checkpoint (step {checkpoints.best_step}, valid MRR {checkpoints.best_mrr:.4f}) and the last saved state "
                f"in {path}; continue with --resume")
    return f"the run's earlier contents in {path}"


def _manifest(spec: RunSpec, cfg: TrainConfig, encoder: Encoder, data: SplitData, accelerator, params) -> Manifest:
    return Manifest(
        name=spec.name,
        status="running",
        preset=spec.preset,
        method=spec.method.to_dict(),
        parameters=asdict(params),
        base=encoder.describe() | {"weights_sha256": encoder.weights_hash},
        data=data.describe(),
        train=asdict(cfg),
        device=str(accelerator.device),
        mixed_precision=accelerator.mixed_precision,
        num_processes=accelerator.num_processes,
        versions=package_versions(),
        code_version=code_version(),
    )


def _check_same_run(old: Manifest, spec: RunSpec, cfg: TrainConfig, encoder: Encoder, data: SplitData, processes: int) -> None:
    """--resume must continue the same run (`records.manifest.differences`: preset, method, base, data,
    training settings, seed) on as many processes."""
    if old.weights_sha256 != encoder.weights_hash:
        raise InterpError(
            f"run {spec.name!r} was trained on base {str(old.weights_sha256)[:12]} but --base gives "
            f"{encoder.weights_hash[:12]} ({encoder.source})"
        )
    if old.num_processes != processes:
        raise InterpError(
            f"run {spec.name!r} was started on {old.num_processes} processes; resume it with "
            f"--num-processes {old.num_processes}, not {processes} (each process keeps its own random state)"
        )
    now = Manifest(preset=spec.preset, method=spec.method.to_dict(), base={"weights_sha256": encoder.weights_hash}, data=data.describe(), train=asdict(cfg))
    diffs = differences(old, now)
    if diffs:
        raise InterpError(f"run {spec.name!r}: --resume with other settings than the run was started with: "
                          + "; ".join(described(diffs, here="now")))


def config_differences(before: TrainConfig, now: TrainConfig) -> list[tuple[str, object, object]]:
    """(field, before, now) for every training setting that differs; older manifests read through `TrainConfig.from_dict`."""
    old, new = asdict(before), asdict(now)
    return [(name, old[name], new[name]) for name in new if name not in UNCOMPARED and old[name] != new[name]]


RECORDED_CHOICES = ("pooling", "batching", "ties", "log_with", "precision")  # left None: the defaults, or the resumed run's own


def train_config(resumed: Path | None = None, **settings) -> TrainConfig:
    """A TrainConfig from `settings`; a choice of RECORDED_CHOICES left None is the default for a new run,
    and what the run at `resumed` (if it exists) was trained with, so an older run resumes as it was trained."""
    recorded = None
    if resumed is not None and (resumed / "manifest.json").is_file():
        recorded = TrainConfig.from_dict(read_manifest(resumed).train)
    for name in RECORDED_CHOICES:
        if settings.get(name) is None:
            settings.pop(name, None)
            if recorded is not None:
                settings[name] = getattr(recorded, name)
    return TrainConfig(**settings)
