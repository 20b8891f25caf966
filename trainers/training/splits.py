"""The three splits of a data directory, tokenised once for one encoder."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from trainers.data import Example, fingerprint, load_split
from trainers.encoders import Encoder
from trainers.training.batching import Tokenized, tokenize_pairs

EVAL_SUBSET_SEED = 0  # valid/test subsets do not depend on the run's seed, so runs stay comparable


def subset(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """A deterministic sample of `limit` examples, in file order (all of them if limit is None)."""
    if limit is None or limit >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def tokenize_examples(encoder: Encoder, examples: list[Example], max_len: int) -> Tokenized:
    return tokenize_pairs(encoder.tokenizer, [e.query for e in examples], [e.code_text for e in examples], max_len)


def split_fingerprint(file_fingerprint: str, examples: list[Example]) -> str:
    """Identity of the examples actually used: the file's hash and, for a subset, which idx."""
    digest = hashlib.sha256(file_fingerprint.encode())
    digest.update(",".join(str(e.idx) for e in examples).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SplitData:
    train: Tokenized
    valid: Tokenized
    test: Tokenized
    test_idx: list
    files: dict  # split -> {"file", "fingerprint", "pairs", "used"}

    @property
    def test_fingerprint(self) -> str:
        return self.files["test"]["fingerprint"]

    def describe(self) -> dict:
        return self.files


def load_split_data(encoder: Encoder, data_dir: Path, *, max_len: int, train_limit: int | None = None, eval_limit: int | None = None, seed: int = 0) -> SplitData:
    tokenized, files, test_idx = {}, {}, []
    for split, limit, sub_seed in (("train", train_limit, seed), ("valid", eval_limit, EVAL_SUBSET_SEED), ("test", eval_limit, EVAL_SUBSET_SEED)):
        path = (Path(data_dir) / f"{split}.jsonl").resolve()
        examples = load_split(data_dir, split)
        used = subset(examples, limit, sub_seed)
        tokenized[split] = tokenize_examples(encoder, used, max_len)
        files[split] = {
            "file": str(path),
            "pairs": len(examples),
            "used": len(used),
            "fingerprint": split_fingerprint(fingerprint(path), used),
        }
        if split == "test":
            test_idx = [e.idx for e in used]
    return SplitData(tokenized["train"], tokenized["valid"], tokenized["test"], test_idx, files)
