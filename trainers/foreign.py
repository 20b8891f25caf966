"""Deltas from anywhere: a peft adapter or a fully fine-tuned model directory, used as a run.

The path rule. Wherever a run name is accepted, a directory is accepted too. An argument is a
path when it holds a path separator ('/', and the OS's own) or is '.' or '..'; anything else is
a run name under RUNS_DIR. Run names can hold no separator (`check_run_name`), so the two never
meet: `lora64` is the run, `./lora64`, `adapters/lora64`, `/data/x` and `~/x` are directories.

What a directory is (`delta_kind`):

    manifest.json naming a method      "run"    a run of this project, wherever it lives
    method.json (save_delta's)         "interp" the project's own delta: `load_delta` as ever
    adapter_config.json                "peft"   any peft method plain peft loads (LoRA, IA3, ...):
                                                `peft.PeftModel.from_pretrained` on the base
    config.json + *.safetensors        "full"   a fully fine-tuned encoder: transformers loads it,
                                                and it is compared with its base (full fine-tuning)

What such a delta lacks comes from options with these defaults (--base, --pooling, --max-len on eval,
import and every analysis command: `ForeignOptions`), and is written into the run's manifest ("source",
"train") and so into every result's inputs (`RunRef.fingerprint`):

    base      --base; else adapter_config.json's base_model_name_or_path (a directory, or a hub id
              that is cached or reachable); a model directory always needs --base
    pooling   --pooling, default cls (TrainConfig's)
    max_len   --max-len, default 256 (TrainConfig's), or the base's longest input where that is shorter
    data      --data DIR, default RUNS_DIR/data (`interp data build`'s); valid and test fingerprinted whole
    ties      codexglue (CodeXGLUE's evaluator), precision fp32

A delta saved on a model with a task head (keys under the base's `base_model_prefix`) loads as the
encoder under it, the head left out and listed; a sentence-transformers directory pools as its
Pooling module says (`trainers.foreign_heads`). The manifest: `trainers.foreign_record`.

Weights are read from safetensors only (a pickled adapter_model.bin is refused, not loaded).
`trainers.training.runs.import_run` registers a foreign delta as runs/NAME: a manifest whose "source" names the
directory, the weights referenced where they are (or copied, `copy=True`).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from records.errors import InterpError
from trainers.methods.base import MethodConfig
from records.places import MANIFEST

PEFT_CONFIG, PEFT_WEIGHTS, PEFT_PICKLE = "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"
METHOD_FILE = "method.json"  # trainers.methods.state's; read here without importing torch
COPIED = (PEFT_CONFIG, "config.json", METHOD_FILE)  # with every *.safetensors: what `import --copy` copies
SOURCE = "source"  # the manifest key of an imported delta: where it is, what it is, what was assumed
_TUNERS = {"LORA": "lora", "IA3": "ia3"}  # peft types whose layers a project tuner dissects (anatomy)
_GENERIC = "ia3"  # any other peft type: a PeftTuner (switch off per layer, parameters) that finds no matrix of it


def is_path_name(name: str) -> bool:
    """Whether a run argument names a directory (the path rule above) rather than a run under RUNS_DIR."""
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return name in (".", "..") or any(s in name for s in seps)


@dataclass(frozen=True)
class ForeignOptions:
    """What a foreign delta lacks (module docstring); None: the default."""

    base: str | None = None
    pooling: str | None = None
    max_len: int | None = None
    data_dir: Path | None = None

    def resolved(self, runs_dir: Path, positions: int) -> dict:
        """The choices as recorded: defaults filled in, max_len within the base's `positions`."""
        from trainers.encoders import check_pooling
        from trainers.training.loop import TrainConfig

        defaults = TrainConfig()
        if self.max_len is not None and not 1 <= self.max_len <= positions:
            raise InterpError(f"--max-len {self.max_len}: should be from 1 to {positions}, the base's longest input")
        return {"pooling": check_pooling(self.pooling or defaults.pooling), "max_len": self.max_len or min(defaults.max_len, positions),
                "data_dir": str(Path(self.data_dir or Path(runs_dir) / "data").expanduser().resolve())}


@dataclass(frozen=True)
class PeftAdapterConfig(MethodConfig):
    """A peft adapter as its adapter_config.json describes it (not trainable by `interp train`).

    `method` is the registry name of the project tuner that handles its layers: peft's layers
    are generic to switch off and to list, and the LoRA and (IA)3 tuners also dissect theirs.
    On disk (`to_dict`) it is "peft", with peft's own type.
    """

    peft_type: str
    r: int | None = None
    alpha: float | None = None
    targets: tuple[str, ...] | str | None = None  # target_modules: names, or one regex
    layers: str | None = None  # layers_to_transform, 1-based; None: wherever the targets match

    @property
    def method(self) -> str:  # type: ignore[override]
        return _TUNERS.get(self.peft_type, _GENERIC)

    @classmethod
    def read(cls, directory: Path) -> PeftAdapterConfig:
        return cls.of(read_adapter_config(directory))

    @classmethod
    def of(cls, data: dict) -> PeftAdapterConfig:
        """From an adapter_config.json's fields (or a live model's `peft_config[name].to_dict()`)."""
        targets = data.get("target_modules")
        targets = tuple(sorted(targets)) if isinstance(targets, (list, tuple, set)) else targets
        chosen = data.get("layers_to_transform")
        chosen = [chosen] if isinstance(chosen, int) else chosen
        layers = ",".join(str(i + 1) for i in sorted(chosen)) if chosen else None
        alpha = data.get("lora_alpha", data.get("alpha"))
        return cls(peft_type=str(data["peft_type"]), r=data.get("r") if isinstance(data.get("r"), int) else None,
                   alpha=alpha if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None,
                   targets=targets if isinstance(targets, (str, tuple)) else None, layers=layers)

    def to_dict(self) -> dict:
        return {"method": "peft", "peft_type": self.peft_type, "r": self.r, "alpha": self.alpha,
                "targets": list(self.targets) if isinstance(self.targets, tuple) else self.targets, "layers": self.layers}

    def roles(self) -> tuple[str, ...]:
        return ()

    def formula(self, shape) -> None:
        return None

    def describe(self) -> str:
        sizes = "".join(f" {k}={v:g}" for k, v in (("r", self.r), ("alpha", self.alpha)) if v is not None)
        on = f" on {', '.join(self.targets)}" if isinstance(self.targets, tuple) else f" on /{self.targets}/" if self.targets else ""
        return f"peft {self.peft_type}{sizes}{on}" + self.layers_note()


# -- what a directory is --------------------------------------------------------------------------


def read_adapter_config(directory: Path) -> dict:
    path = Path(directory) / PEFT_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise InterpError(f"{path}: not a readable adapter config ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("peft_type"), str):
        raise InterpError(f"{path}: not a peft adapter config (no 'peft_type')")
    return data


def delta_kind(directory: Path) -> str:
    """"run", "interp", "peft" or "full" (module docstring); InterpError naming the directory otherwise."""
    from records.places import is_run

    d = Path(directory)
    if not d.is_dir():
        raise InterpError(f"{d}: {'not a directory' if d.exists() else 'no such directory'} (a name with '/' is a path: "
                          "a peft adapter or a model directory)")
    if is_run(d):
        return "run"
    if (d / METHOD_FILE).is_file():
        return "interp"
    if (d / PEFT_CONFIG).is_file():
        if not (d / PEFT_WEIGHTS).is_file():
            pickled = (d / PEFT_PICKLE).is_file()
            raise InterpError(f"{d}: an adapter_config.json but no {PEFT_WEIGHTS}" + (
                f" ({PEFT_PICKLE} is pickle, not loaded: save the adapter with safe_serialization=True)" if pickled else ""))
        return "peft"
    if (d / "config.json").is_file() and any(d.glob("*.safetensors")):
        return "full"
    from trainers.foreign_heads import st_transformer_dir

    if (inner := st_transformer_dir(d)) is not None:
        raise InterpError(f"{d}: a sentence-transformers model whose transformer is in {inner}/; give {d / inner}")
    raise InterpError(f"{d}: neither a peft adapter (adapter_config.json + {PEFT_WEIGHTS}) nor a Hugging Face model "
                      "directory (config.json + *.safetensors)")


def delta_location(run_dir: Path) -> Path:
    """Where the delta files of the run at `run_dir` are: the directory itself, or the one an import references."""
    source = _source_of(Path(run_dir))
    if source is None or source.get("copied"):
        return Path(run_dir)
    where = Path(source["path"])
    if not where.is_dir():
        raise InterpError(f"{run_dir}: its delta is at {where} ({SOURCE}.path in its manifest), which is no longer there; "
                          "put it back, or import it again (--copy keeps a copy)")
    return where


def _source_of(run_dir: Path) -> dict | None:
    from records.places import read_json

    manifest = read_json(run_dir / MANIFEST)
    source = manifest.get(SOURCE) if isinstance(manifest, dict) else None
    return source if isinstance(source, dict) and isinstance(source.get("path"), str) else None


def foreign_method(run_dir: Path) -> MethodConfig | None:
    """The method of a foreign delta at `run_dir` (or referenced by the run there); None: not a foreign one."""
    from trainers.methods.full.config import FullConfig

    from records.places import is_run

    run_dir = Path(run_dir)
    source = _source_of(run_dir)
    if source is None and is_run(run_dir):
        return None  # a run `interp train` wrote: its method.json, and nothing else, says what it is
    kind = (source or {}).get("kind")
    where = delta_location(run_dir)
    if kind is None:
        kind = ("interp" if (where / METHOD_FILE).is_file() else "peft" if (where / PEFT_CONFIG).is_file()
                else "full" if (where / "config.json").is_file() else None)
    if kind == "peft":
        return PeftAdapterConfig.read(where)
    if kind == "full":
        return FullConfig()
    if kind == "interp":
        return read_method_file(where)
    return None


def read_method_file(directory: Path) -> MethodConfig:
    """The method config in directory/method.json (what save_delta wrote); InterpError naming the file."""
    from trainers.methods.registry import method_from_dict

    path = Path(directory) / METHOD_FILE
    try:
        return method_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise InterpError(f"{path}: not a method config: {exc}") from exc


# -- loading --------------------------------------------------------------------------------------


def load_foreign(encoder, run_dir: Path, *, trainable: bool = False):
    """`encoder` with the foreign delta at (or referenced by) `run_dir`; InterpError naming the delta and the base if they
    do not fit. (The project's own delta, even where an import references it, is `load_delta`'s.)"""
    where = delta_location(run_dir)
    config = foreign_method(run_dir)
    if config is None or (where / METHOD_FILE).is_file():
        raise InterpError(f"{Path(run_dir) / METHOD_FILE}: not found; is {run_dir} a run, a peft adapter or a model directory?")
    if isinstance(config, PeftAdapterConfig):
        model = _load_peft(encoder, where, config)
    else:
        model = _load_full(encoder, where, config)
    if not trainable:
        model.requires_grad_(False)
        model.eval()
    return model


def _mismatch(directory: Path, encoder, why: str) -> InterpError:
    why = " ".join(why.split())
    return InterpError(f"the delta at {directory} does not fit the base {encoder.source}: {why[:400]}")


def _load_peft(encoder, directory: Path, config: PeftAdapterConfig):
    """Plain `peft.PeftModel.from_pretrained` on the base; every tensor in the file must have found its place. An adapter
    saved on a task model (keys under the base's `base_model_prefix`, a head in modules_to_save) is loaded into the bare
    encoder the same way (peft's own `set_peft_model_state_dict`), its head left out (`trainers.foreign_heads`)."""
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

    from trainers.foreign_heads import PEFT_WRAPPER, encoder_keys
    from trainers.methods.apply import APPLIED, transformers_model
    from trainers.methods.state import read_safetensors

    state = read_safetensors(directory / PEFT_WEIGHTS)
    renamed, head = encoder_keys(state, getattr(encoder.model, "base_model_prefix", ""), wrapper=PEFT_WRAPPER)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if head or any(k != v for k, v in renamed.items()):  # saved on a task model (a head kept, or not)
                state = {renamed[k]: v for k, v in state.items() if k in renamed}
                peft_config = PeftConfig.from_pretrained(str(directory))
                peft_config.modules_to_save, peft_config.task_type, peft_config.inference_mode = None, None, True
                model = PeftModel(encoder.model, peft_config)
                set_peft_model_state_dict(model, state)
            else:
                model = PeftModel.from_pretrained(encoder.model, str(directory), is_trainable=False)
            expected = set(get_peft_model_state_dict(model))  # warns when the recorded base is a hub id not at hand
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        shown = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(exc).__name__)
        raise _mismatch(directory, encoder, shown) from None
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        said = ([f"the base has no place for {', '.join(extra[:2])}"] if extra else []) + (
            [f"the file lacks {', '.join(missing[:2])}"] if missing else [])
        raise _mismatch(directory, encoder, "; ".join(said))
    setattr(transformers_model(model), APPLIED, config)
    return model


_SHAPE = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def _load_full(encoder, directory: Path, config):
    """The fine-tuned weights (transformers' AutoModel) over the base, as full fine-tuning: the base kept beside them."""
    import torch
    from transformers import AutoConfig, AutoModel

    from trainers.methods.apply import apply_method

    try:
        tuned_config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InterpError(f"{directory}/config.json: cannot be read ({' '.join(str(exc).split())[:200]})") from None
    differ = [f"{k} {getattr(tuned_config, k, None)!r} vs {getattr(encoder.config, k, None)!r}" for k in _SHAPE
              if getattr(tuned_config, k, None) != getattr(encoder.config, k, None)]
    if differ:
        raise _mismatch(directory, encoder, "; ".join(differ))
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists a task head's keys: the manifest records them (source.ignored)
    try:
        tuned, info = AutoModel.from_pretrained(str(directory), local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _mismatch(directory, encoder, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    finally:
        hf_logging.set_verbosity(level)
    model = apply_method(encoder, config)  # keeps the base weights beside the model (FullTuner)
    loaded = tuned.state_dict()
    kept = set(info.get("missing_keys", ()))  # weights the directory lacks (a pooler): the base's stay
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in loaded and name not in kept:
                if loaded[name].shape != p.shape:
                    raise _mismatch(directory, encoder, f"{name} has shape {tuple(loaded[name].shape)} there, {tuple(p.shape)} in the base")
                p.copy_(loaded[name])
    return model


__all__ = ["COPIED", "ForeignOptions", "PeftAdapterConfig", "delta_kind", "delta_location", "foreign_method",
           "is_path_name", "load_foreign", "read_method_file"]
