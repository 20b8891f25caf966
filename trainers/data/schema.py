"""AdvTest-format data: one JSON object per line, in `train.jsonl`, `valid.jsonl`, `test.jsonl`.

The fields are CodeXGLUE's (CodeSearchNet's, plus `idx`): `repo`, `path`, `func_name`,
`original_string`, `language`, `code`, `code_tokens`, `docstring`, `docstring_tokens`, `url`,
`idx`. What a model sees follows CodeXGLUE's `run.py` exactly: the code is `code_tokens` joined
by spaces and the query is `docstring_tokens` joined by spaces (`Example.code_text`,
`Example.query`).

The real CodeXGLUE files load as they are: their valid and test lines come from CodeSearchNet's
`test_code.jsonl` and name the code `function` / `function_tokens`, the repository `nwo` and the
function `identifier`, and have no `func_name` or `original_string`; those names are read as
fallbacks, as `run.py` does for `function_tokens`. `id` (Hugging Face's name for `idx`) is read
too. Required in every line: `idx` (an integer, unique in the file), `url` (a string, unique in
the file), non-empty `docstring_tokens` and non-empty `code_tokens` (or `function_tokens`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from records.errors import DataError, InterpError, did_you_mean

SPLITS = ("train", "valid", "test")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Example:
    """One query/code pair."""

    idx: int
    url: str
    docstring_tokens: tuple[str, ...]
    code_tokens: tuple[str, ...]
    repo: str = ""
    path: str = ""
    func_name: str = ""
    original_string: str = ""
    language: str = "python"
    code: str = ""
    docstring: str = ""

    @property
    def query(self) -> str:
        """The query text the model reads (CodeXGLUE: `' '.join(js['docstring_tokens'])`)."""
        return " ".join(self.docstring_tokens)

    @property
    def code_text(self) -> str:
        """The code text the model reads (CodeXGLUE: `' '.join(js['code_tokens'])`)."""
        return " ".join(self.code_tokens)

    def to_record(self) -> dict:
        """The AdvTest line, fields in CodeSearchNet's order."""
        fields = asdict(self)
        order = ("repo", "path", "func_name", "original_string", "language", "code", "code_tokens",
                 "docstring", "docstring_tokens", "url", "idx")
        return {name: list(fields[name]) if name.endswith("_tokens") else fields[name] for name in order}

    @classmethod
    def from_record(cls, record: object) -> Example:
        """Check one parsed line; raises ValueError saying what is wrong with it."""
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        return cls(
            idx=_integer(record, "idx", "id"),
            url=_string(record, "url", required=True),
            docstring_tokens=_tokens(record, "docstring_tokens"),
            code_tokens=_tokens(record, "code_tokens", "function_tokens"),
            repo=_string(record, "repo", "nwo"),
            path=_string(record, "path"),
            func_name=_string(record, "func_name", "identifier"),
            original_string=_string(record, "original_string"),
            language=_string(record, "language") or "python",
            code=_string(record, "code", "function"),
            docstring=_string(record, "docstring"),
        )


def _pick(record: dict, names: tuple[str, ...], required: bool) -> tuple[str, object]:
    for name in names:
        if name in record and record[name] is not None:
            return name, record[name]
    if required:
        either = " or ".join(repr(n) for n in names)
        raise ValueError(f"missing field {either}")
    return names[0], None


def _integer(record: dict, *names: str) -> int:
    name, value = _pick(record, names, required=True)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"field {name!r} should be an integer, got {type(value).__name__} {value!r}")
    return value


def _string(record: dict, *names: str, required: bool = False) -> str:
    """The first of `names` holding a non-empty string, else ''."""
    if required:
        _pick(record, names, required=True)
    for name in names:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"field {name!r} should be a string, got {type(value).__name__}")
        if value:
            return value
    return ""


def _tokens(record: dict, *names: str) -> tuple[str, ...]:
    name, value = _pick(record, names, required=True)
    if not isinstance(value, list) or not all(isinstance(token, str) for token in value):
        raise ValueError(f"field {name!r} should be a list of strings")
    if not value:
        raise ValueError(f"field {name!r} is empty")
    if _SURROGATE.search("".join(value)):
        raise ValueError(f"field {name!r} holds a lone surrogate (an escape such as \\ud800), which is not text a tokenizer can read")
    return tuple(value)


def iter_split(path: str | Path) -> Iterator[Example]:
    """The examples in one jsonl file, each line checked; the first bad line raises `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, _not_a_file(path))
    first_line: dict[str, dict] = {"idx": {}, "url": {}}
    count = 0
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise DataError(path, f"not UTF-8 ({exc.reason} at byte {exc.start})", line=number) from None
            if not line:
                raise DataError(path, "blank line; expected one JSON object per line", line=number)
            try:
                example = Example.from_record(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(path, f"malformed JSON: {exc.msg} at column {exc.colno}", line=number) from None
            except RecursionError:
                raise DataError(path, "JSON nested too deeply; expected one flat object per line", line=number) from None
            except ValueError as exc:
                raise DataError(path, str(exc), line=number) from None
            for key, value in (("idx", example.idx), ("url", example.url)):
                if value in first_line[key]:
                    raise DataError(path, f"duplicate {key} {value!r} (first on line {first_line[key][value]})", line=number)
                first_line[key][value] = number
            count += 1
            yield example
    if count == 0:
        raise DataError(path, "file is empty; expected one JSON object per line")


def _not_a_file(path: Path) -> str:
    if path.is_dir():
        return "is a directory; expected an AdvTest .jsonl file"
    if path.exists():
        return "is not a regular file (a FIFO or a device); expected an AdvTest .jsonl file"
    return "no such file"


def read_split(path: str | Path) -> list[Example]:
    """All examples in one jsonl file; see `iter_split`."""
    return list(iter_split(path))


def split_path(data_dir: str | Path, split: str) -> Path:
    """`data_dir/<split>.jsonl`, for a known split name."""
    if split not in SPLITS:
        raise did_you_mean("split", split, SPLITS)
    data_dir = Path(data_dir)
    try:
        is_dir = data_dir.is_dir()
    except OSError as exc:  # a name too long
        raise InterpError(f"data directory {str(data_dir)!r}: {exc.strerror}") from None
    if not is_dir:
        if data_dir.exists():
            raise InterpError(f"data directory {str(data_dir)!r} is not a directory; give the directory that holds "
                              f"{', '.join(s + '.jsonl' for s in SPLITS)}")
        raise InterpError(f"data directory {str(data_dir)!r} does not exist; build one with `interp data build --out {data_dir}`")
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        problem = _not_a_file(path)
        if problem == "no such file":
            problem += f"; an AdvTest directory holds {', '.join(s + '.jsonl' for s in SPLITS)}"
        raise DataError(path, problem)
    return path


def load_split(data_dir: str | Path, split: str) -> list[Example]:
    """The examples of `split` ("train", "valid" or "test") in `data_dir`."""
    return read_split(split_path(data_dir, split))


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes; for a data directory, sha256 over its three split files' hashes."""
    path = Path(path)
    if path.is_file():
        return _sha256(path)
    lines = "".join(f"{split}.jsonl {_sha256(split_path(path, split))}\n" for split in SPLITS)
    return hashlib.sha256(lines.encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
