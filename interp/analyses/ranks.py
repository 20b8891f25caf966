"""Per-query ranks of the gold code, for runs and for the base: read from the run or computed.

A finished run keeps the rank of every test query (runs/NAME/ranks.json). Any other split, any
other file, and the base model are evaluated here.

Ranks follow a tie rule (`ties`, CodeXGLUE's by default), the same for every side of a
comparison: saved ranks made under another rule (older runs ranked ties "optimistic") are
recomputed. A run is embedded with the pooling it was trained with; the base has no pooling of
its own and follows the runs it is compared with (`base_pooling`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from interp.analyses.base import RunRef
from interp.analyses.checks import at_least, check_split
from trainers.data import Example, fingerprint, load_split, read_split
from trainers.devices import DEFAULT_PRECISION
from trainers.encoders import DEFAULT_POOLING, check_pooling, load_encoder
from records.errors import DataError, InterpError
from trainers.training.evaluate import DEFAULT_TIE_RULE, check_tie_rule
from trainers.training.splits import EVAL_SUBSET_SEED, split_fingerprint, subset
from trainers.training.scoring import evaluate_examples, load_run_model, run_data_dir


@dataclass(frozen=True)
class DataRef:
    """The examples an analysis runs over, and their identity."""

    file: Path
    examples: list[Example]
    fingerprint: str

    def describe(self) -> dict:
        return {"file": str(self.file), "fingerprint": self.fingerprint, "examples": len(self.examples)}


def resolve_data(refs: list[RunRef], *, split: str = "test", data_file: Path | None = None, limit: int | None = None) -> DataRef:
    """`--data FILE`, or `--split` of the data the (first non-base) run was trained on."""
    check_split(split, data_file)
    at_least("--limit", limit, 1)
    if data_file is not None:
        file = Path(data_file)
        if not file.is_file():
            raise InterpError(f"--data {file}: {'not a file' if file.exists() else 'no such file'}")
        examples = read_split(file)
    else:
        runs = [r.run for r in refs if r.run is not None]
        if not runs:
            raise InterpError("with only 'base', give --data FILE: there is no run to take the data from")
        data_dir = run_data_dir(runs[0])
        file = data_dir / f"{split}.jsonl"
        if not file.is_file():
            raise InterpError(f"{file}: no such file; run {runs[0].name!r} was trained on data that is no longer there "
                              "(give --data FILE, or rebuild the data where it was)")
        examples = load_split(data_dir, split)
    if not examples:
        raise InterpError(f"{file}: no examples to analyse")
    if limit is not None:
        examples = subset(examples, limit, EVAL_SUBSET_SEED)  # the same sample a run's --eval-limit takes
    return DataRef(file.resolve(), examples, split_fingerprint(fingerprint(file), examples))


def read_saved_ranks(path: Path) -> dict:
    """A run's ranks.json: {"fingerprint": str, "ties": str (optional), "ranks": {idx: rank >= 1}}; DataError if damaged."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg}); the run's ranks are damaged", exc.lineno) from None
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text; the run's ranks are damaged") from None
    except RecursionError:
        raise DataError(path, "nested too deeply to be a run's ranks") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None
    if not isinstance(saved, dict):
        raise DataError(path, f"a JSON {type(saved).__name__}, not an object with 'fingerprint' and 'ranks'")
    for key, kind in (("fingerprint", str), ("ranks", dict)):
        if not isinstance(saved.get(key), kind):
            raise DataError(path, f"{key!r} is {'missing' if key not in saved else 'not a ' + kind.__name__}; the run's ranks are damaged")
    if "ties" in saved and not isinstance(saved["ties"], str):
        raise DataError(path, "'ties' is not a string; the run's ranks are damaged")
    bad = next(((k, v) for k, v in saved["ranks"].items() if isinstance(v, bool) or not isinstance(v, int) or v < 1), None)
    if bad is not None:
        raise DataError(path, f"rank of idx {bad[0]} is {bad[1]!r}, not a whole number >= 1; the run's ranks are damaged")
    return saved


def load_model(ref: RunRef):
    """(encoder, model) for a run (its best delta) or for the base (the bare encoder)."""
    source = ref.base.get("source")
    if isinstance(source, str) and Path(source).is_absolute() and not Path(source).exists():
        whose = f"run {ref.name!r} was" if ref.run is not None else "the runs beside 'base' were"
        raise InterpError(f"{whose} trained on the base model at {source} (base.source in the manifest), which is no "
                          "longer there; put it back to analyse the run")
    if ref.run is not None:
        return load_run_model(ref.run)
    encoder = load_encoder(ref.base["source"])
    if encoder.weights_hash != ref.base["weights_sha256"]:
        raise InterpError(f"the base at {ref.base['source']} no longer has the weights the runs were trained on")
    return encoder, encoder.model


def max_len_of(ref: RunRef, encoder=None, default: int = 256) -> int:
    """The run's training max_len; for the base, the default capped by what its tokenizer allows."""
    if ref.run is not None:
        return ref.run.manifest.train["max_len"]
    if encoder is not None and encoder.tokenizer is not None:
        return min(default, encoder.tokenizer.model_max_length)
    return default


def pooling_of(ref: RunRef, default: str = DEFAULT_POOLING) -> str:
    """The pooling the run was trained with; the base takes `default` (pass the runs' pooling)."""
    return ref.run.train_config.pooling if ref.run is not None else default


def base_pooling(refs: list[RunRef]) -> str:
    """The pooling 'base' is scored with beside `refs`: that of the runs among them (the default with none).

    InterpError when 'base' is among `refs` and the runs were trained with different poolings.
    """
    used = {r.name: pooling_of(r) for r in refs if r.run is not None}
    if len(set(used.values())) > 1 and any(r.is_base for r in refs):
        listed = ", ".join(f"{name} ({pooling})" for name, pooling in used.items())
        raise InterpError(f"'base' is scored with the pooling of the runs beside it, but they differ: {listed}; "
                          "compare 'base' with runs of one pooling at a time")
    return next(iter(used.values()), DEFAULT_POOLING)


def ranks(ref: RunRef, data: DataRef, *, max_len: int = 256, pooling: str = DEFAULT_POOLING, ties: str = DEFAULT_TIE_RULE,
          progress: bool = True, precision: str = DEFAULT_PRECISION) -> dict[str, int]:
    """idx -> 1-based rank of the gold code under `ties`, for every example of `data`.

    A run is scored as it was trained; the base at `max_len` (capped by its tokenizer) with
    `pooling`: pass the runs' (`max_len_of`, `base_pooling`) so that its ranks compare with theirs.
    Saved ranks are used when they cover `data` under `ties` and the run was trained (so tested) at `precision`.
    """
    check_tie_rule(ties)
    check_pooling(pooling)
    if ref.run is not None and (ref.run.path / "ranks.json").is_file():
        saved = read_saved_ranks(ref.run.path / "ranks.json")
        wanted = [str(e.idx) for e in data.examples]
        saved_ties = saved.get("ties", ref.run.train_config.ties)  # before it was written there: the run's own rule
        if saved["fingerprint"] == data.fingerprint and saved_ties == ties and ref.run.train_config.precision == precision:
            missing = [k for k in wanted if k not in saved["ranks"]]
            if missing:
                raise DataError(ref.run.path / "ranks.json", f"no rank for idx {missing[0]} (and {len(missing) - 1} more) "
                                f"although its fingerprint is that of these {len(wanted)} examples; the file is damaged")
            return {k: saved["ranks"][k] for k in wanted}
    encoder, model = load_model(ref)
    result = evaluate_examples(encoder, model, data.examples, max_len=max_len_of(ref, encoder, max_len),
                               pooling=pooling_of(ref, pooling), ties=ties, progress=progress, precision=precision)
    return {str(e.idx): int(r) for e, r in zip(data.examples, result.ranks.tolist())}
