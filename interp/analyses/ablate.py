"""Which layers carry a delta's gain? Switch the delta off per layer at inference and re-score.

The study's App. 7.1.3 trained loFF only in CodeBERT's layers 9-12 (Table 7.1: 2.52% of the
parameters, test MRR 29.75% against LoRA-256's 29.83%). This asks the converse question of a
delta trained everywhere, without retraining: how much of its MRR survives when the delta is
switched off in some layers (`drop`) or everywhere but some layers (`keep`)?

Switching off is `trainers.methods.disabled_layers`, which works for every method: LoRA and
adapters fall back to the wrapped base layer, a prefix leaves the keys and values alone, a
union switches off all its parts in those layers, and full fine-tuning gets the base weights
back in those layers. Two settings anchor every result:

    intact  nothing switched off: the run's own MRR on these examples
    base    every layer switched off: exactly the base model (for `full` the embeddings too)

A setting is reported with its MRR, `change` = MRR - intact MRR, and `retained` = (MRR - base
MRR) / (intact MRR - base MRR), the share of the delta's gain that survives (None when the
delta does not change the MRR at all). For `full`, weights outside the encoder layers (the
embeddings) stay fine-tuned unless every layer is switched off.

`sweep` scores, for an encoder of depth D: each single layer dropped, each single layer kept,
the top-k blocks kept (layers D-k+1..D, k = 1..D) and the bottom-k blocks kept (1..k). The
layer-importance `curve` has one point per layer: the MRR lost when only that layer's delta is
dropped, and the MRR gained over the base when only that layer's delta is kept. Settings that
switch off the same layers are scored once. Layers are 1-based in the result, as in the study.
Every setting embeds with the run's pooling and ranks under the run's tie rule (both recorded
in the result), so `intact` is the run's own MRR on these examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from interp.analyses.base import resolve_runs
from interp.analyses.checks import at_least
from interp.analyses.inputs import data_label
from interp.analyses.ranks import load_model, max_len_of, resolve_data
from interp.analyses.running import Prepared
from trainers import methods
from trainers.devices import DEFAULT_PRECISION, check_device, check_precision, torch_device
from trainers.encoders import DEFAULT_POOLING, check_pooling
from records.errors import InterpError
from records.layers import indices_span
from trainers.training.evaluate import DEFAULT_TIE_RULE, check_tie_rule

MODES = ("drop", "keep")


@dataclass(frozen=True)
class Setting:
    """One ablation: which layers keep their delta, and the MRR that comes out."""

    label: str  # 'drop 9-12', 'keep 3', 'keep top 2 (3-4)', ...
    group: str  # 'given', 'drop one', 'keep one', 'keep top', 'keep bottom'
    mode: str  # 'drop' or 'keep'
    layers: list[int]  # the layers named, 1-based
    active: list[int]  # the layers whose delta stays on, 1-based
    mrr: float
    change: float  # mrr - intact MRR
    retained: float | None  # (mrr - base MRR) / (intact MRR - base MRR); None when intact == base


@dataclass(frozen=True)
class LayerPoint:
    """One layer of the importance curve (a sweep)."""

    layer: int  # 1-based
    has_delta: bool  # whether the method put a delta in this layer at all
    drop_mrr: float  # MRR with only this layer's delta switched off
    drop_loss: float  # intact MRR - drop_mrr: what this layer's delta is worth inside the whole
    keep_mrr: float  # MRR with only this layer's delta switched on
    keep_gain: float  # keep_mrr - base MRR: what this layer's delta is worth on its own


@dataclass(frozen=True)
class AblateResult:
    run: str
    method: str
    depth: int
    delta_layers: list[int]  # 1-based layers where the method has a delta
    examples: int
    intact_mrr: float
    base_mrr: float  # every layer switched off: the base model's MRR on these examples
    settings: list[Setting]
    curve: list[LayerPoint] = field(default_factory=list)  # one point per layer with --sweep, else empty
    evaluations: int = 0  # distinct settings scored (intact and base included)
    pooling: str = DEFAULT_POOLING  # how every setting embeds (the run's pooling)
    ties: str = DEFAULT_TIE_RULE  # the tie rule of every MRR (the run's)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InterpError(f"--mode should be one of {', '.join(MODES)}, got {mode!r}")


def check_choice(mode: str, layers: Any, sweep: bool) -> None:
    """`mode` is drop or keep, and layers are named or a sweep asked for; InterpError naming the option."""
    check_mode(mode)
    if not layers and not sweep:
        raise InterpError("name the layers to ablate (--layers, e.g. 9-12) or ask for a --sweep")


class Ablation:
    """Bound to a run's model; `compute(examples, ...)` scores settings over the examples (tokenised once)."""

    kind: ClassVar[str] = "ablate"

    def __init__(self, encoder, model, *, name: str, config: methods.MethodConfig, max_len: int,
                 pooling: str = DEFAULT_POOLING, ties: str = DEFAULT_TIE_RULE, batch_size: int = 64, device: str = "auto", progress: bool = False,
                 precision: str = DEFAULT_PRECISION):
        self.encoder, self.model, self.name, self.config, self.max_len = encoder, model, name, config, max_len
        self.pooling, self.ties = check_pooling(pooling), check_tie_rule(ties)
        self.depth = encoder.num_layers
        self.batch_size, self.progress = batch_size, progress
        self.device, self.precision = torch_device(device), check_precision(precision)
        self._tokenized: dict[tuple, list] = {}  # the examples' idx -> their tokens
        self._scores: dict[tuple, float] = {}  # (the examples' idx, switched-off layers) -> MRR

    def _tokens(self, examples: Sequence) -> tuple[tuple, list]:
        from trainers.training.splits import tokenize_examples

        key = tuple(e.idx for e in examples)
        if key not in self._tokenized:
            self._tokenized[key] = tokenize_examples(self.encoder, list(examples), self.max_len)
        return key, self._tokenized[key]

    def mrr(self, examples: Sequence, off: frozenset[int]) -> float:
        """MRR over `examples` with the delta switched off in the 0-based layers `off` (each distinct set scored once)."""
        key, tok = self._tokens(examples)
        if (key, off) not in self._scores:
            from trainers.training.evaluate import evaluate

            self.model.to(self.device).eval()
            with methods.disabled_layers(self.model, off):
                embed = lambda ids, mask: self.encoder.embed(ids, mask, model=self.model, pooling=self.pooling)  # noqa: E731
                result = evaluate(embed, tok, batch_size=self.batch_size, device=self.device, progress=self.progress, ties=self.ties,
                                  precision=self.precision)
            self._scores[(key, off)] = result.mrr
        return self._scores[(key, off)]

    def compute(self, examples: Sequence, *, layers: tuple[int, ...] = (), mode: str = "drop", sweep: bool = False) -> AblateResult:
        """Score `mode` over the 0-based `layers` (if any), and with `sweep` the per-layer and block settings."""
        if not examples:
            raise InterpError("no examples to score")
        check_choice(mode, layers, sweep)
        every = frozenset(range(self.depth))
        outside = [i + 1 for i in layers if not 0 <= i < self.depth]
        if outside:
            raise InterpError(f"layers {outside}: the encoder has {self.depth} layers (1-{self.depth})")
        intact, base = self.mrr(examples, frozenset()), self.mrr(examples, every)
        asked: set[frozenset[int]] = {frozenset(), every}

        def setting(label: str, group: str, mode: str, named: tuple[int, ...] | range) -> Setting:
            named = frozenset(named)
            off = named if mode == "drop" else every - named
            asked.add(off)
            score = self.mrr(examples, off)
            gap = intact - base
            return Setting(label, group, mode, [i + 1 for i in sorted(named)], [i + 1 for i in sorted(every - off)],
                           score, score - intact, None if gap == 0 else (score - base) / gap)

        settings = []
        if layers:
            settings.append(setting(f"{mode} {indices_span(layers)}", "given", mode, layers))
        curve = []
        if sweep:
            d = self.depth
            singles = [(setting(f"drop {i + 1}", "drop one", "drop", (i,)), setting(f"keep {i + 1}", "keep one", "keep", (i,))) for i in range(d)]
            top = [setting(f"keep top {k} ({indices_span(range(d - k, d))})", "keep top", "keep", range(d - k, d)) for k in range(1, d + 1)]
            bottom = [setting(f"keep bottom {k} ({indices_span(range(k))})", "keep bottom", "keep", range(k)) for k in range(1, d + 1)]
            settings += [s for pair in singles for s in pair] + top + bottom
            has = set(self.config.layer_indices(d))
            curve = [LayerPoint(i + 1, i in has, drop.mrr, intact - drop.mrr, keep.mrr, keep.mrr - base) for i, (drop, keep) in enumerate(singles)]
        return AblateResult(
            run=self.name, method=self.config.describe(), depth=self.depth,
            delta_layers=[i + 1 for i in self.config.layer_indices(self.depth)], examples=len(examples),
            intact_mrr=intact, base_mrr=base, settings=settings, curve=curve, evaluations=len(asked),
            pooling=self.pooling, ties=self.ties,
        )

    @classmethod
    def prepare(cls, *, runs_dir: Path, name: str, layers: str | None = None, mode: str = "drop", sweep: bool = False,
                split: str = "test", data_file: Path | None = None, limit: int | None = None, device: str = "auto",
                progress: bool = True, precision: str = DEFAULT_PRECISION, foreign=None) -> Prepared:
        """Run `name` on a split or file: runs/analyses/ablate/<name>.<setting>.json; nothing loaded."""
        check_mode(mode)
        check_device(device)
        check_precision(precision)
        at_least("--limit", limit, 1)
        (ref,) = resolve_runs(Path(runs_dir), [name], foreign=foreign)
        if ref.is_base:
            raise InterpError("'base' carries no delta to switch off; name a trained run")
        check_choice(mode, layers, sweep)
        config = methods.read_method(ref.run.path)
        chosen = _parse(layers, ref.base["layers"]) if "layers" in ref.base else None  # fail before loading anything
        data = resolve_data([ref], split=split, data_file=data_file, limit=limit)
        trained = ref.run.train_config
        options = {"layers": chosen, "mode": mode, "sweep": sweep}  # layers: filled in by bind when only the model knows the depth

        def bind() -> Ablation:
            encoder, model = load_model(ref)
            if options["layers"] is None:  # a manifest without the depth: parse against the loaded encoder
                options["layers"] = _parse(layers, encoder.num_layers)
            return cls(encoder, model, name=name, config=config, max_len=max_len_of(ref), pooling=trained.pooling,
                       ties=trained.ties, device=device, progress=progress, precision=precision)

        def result_name(result: AblateResult | None = None) -> str:
            return f"{name}.{settings_label(options['layers'], mode, sweep)}{data_label(split, data_file, limit)}"

        inputs = {"run": ref.fingerprint(), "data": data.describe(), "layers": layers, "mode": mode, "sweep": sweep,
                  "precision": precision}
        return Prepared(name=result_name() if chosen is not None else result_name, bind=bind, data=data.examples,
                        options=options, inputs=inputs)



def settings_label(layers: tuple[int, ...], mode: str, sweep: bool) -> str:
    """What a result's name says was ablated: 'drop9-12', 'keep3.sweep', 'sweep' (0-based `layers`, named 1-based)."""
    return ".".join(([f"{mode}{indices_span(layers)}"] if layers else []) + (["sweep"] if sweep else []))


def _parse(spec: str | None, depth: int) -> tuple[int, ...]:
    """0-based layers of a 1-based `--layers` spec; InterpError (naming the depth) for bad ones."""
    if spec is None:
        return ()
    try:
        return methods.parse_layers(spec, depth)
    except (ValueError, InterpError) as exc:  # a malformed spec, or layers the encoder does not have
        why = str(exc).removeprefix(f"layers {spec}: ")
        if not why.startswith("the encoder has"):
            why += f" The encoder has {depth} layers (1-{depth})."
        raise InterpError(f"--layers {spec}: {why}") from None
