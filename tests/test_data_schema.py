"""Reading AdvTest jsonl: round trips, the real CodeXGLUE line shapes, and bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from trainers.data import Example, fingerprint, load_split, read_split
from records.errors import DataError, InterpError

ADVTEST = Path(__file__).parent / "data" / "advtest"

EXAMPLE = Example(
    idx=7, url="corpus/shapes.py#L3-L5", docstring_tokens=("Return", "the", "area", "."),
    code_tokens=("def", "Func", "(", "arg_0", ")", ":", "return", "arg_0", "**", "2"),
    repo="corpus", path="shapes.py", func_name="area", original_string='def area(side):\n    """Return the area."""\n    return side ** 2',
    code="def Func(arg_0):\n    return arg_0 ** 2", docstring="Return the area.",
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_round_trip(tmp_path):
    other = Example(**{**EXAMPLE.__dict__, "idx": 8, "url": "corpus/shapes.py#L7-L9"})
    path = write_lines(tmp_path / "test.jsonl", [json.dumps(e.to_record()) for e in (EXAMPLE, other)])
    assert read_split(path) == [EXAMPLE, other]


def test_what_the_model_reads_follows_codexglue():
    # run.py: code=' '.join(js['code_tokens']), nl=' '.join(js['docstring_tokens'])
    assert EXAMPLE.query == "Return the area ."
    assert EXAMPLE.code_text == "def Func ( arg_0 ) : return arg_0 ** 2"


def test_real_codexglue_lines_load(tmp_path):
    train, valid, test = (load_split(ADVTEST, split) for split in ("train", "valid", "test"))
    assert [e.idx for e in train + valid + test] == [0, 1, 2, 3, 4]
    # train: CodeSearchNet's final/jsonl line (+ idx); sha and partition are ignored
    assert train[0].func_name == "Circle.area" and train[0].repo == "example/geometry"
    assert train[0].query == "Return the area of the circle ."
    # valid/test: test_code.jsonl's shape, with function/function_tokens, nwo and identifier
    assert valid[0].code_tokens[:2] == ("def", "Func") and valid[0].code.startswith("def Func(arg_0)")
    assert (valid[0].repo, valid[0].func_name, valid[0].original_string) == ("example/textkit", "count_words", "")
    assert test[1].code_text.startswith("def Func ( arg_0 ) : return ' ' . join")


def test_hugging_face_id_is_read_as_idx(tmp_path):
    record = EXAMPLE.to_record()
    record["id"] = record.pop("idx")
    assert read_split(write_lines(tmp_path / "x.jsonl", [json.dumps(record)]))[0].idx == 7


GOOD = json.dumps(EXAMPLE.to_record())


def with_(**changes) -> str:
    record = EXAMPLE.to_record() | changes
    return json.dumps({k: v for k, v in record.items() if v is not ...})


BAD = [
    # (lines, line number in the error, message)
    ([GOOD, '{"idx": 1, "url": '], 2, "malformed JSON"),
    (["[1, 2]"], 1, "expected a JSON object, got list"),
    ([with_(url=...)], 1, "missing field 'url'"),
    ([with_(idx=...)], 1, "missing field 'idx' or 'id'"),
    ([with_(code_tokens=...)], 1, "missing field 'code_tokens' or 'function_tokens'"),
    ([with_(idx="7")], 1, "field 'idx' should be an integer, got str '7'"),
    ([with_(idx=True)], 1, "field 'idx' should be an integer"),
    ([with_(docstring_tokens="Return the area")], 1, "field 'docstring_tokens' should be a list of strings"),
    ([with_(code_tokens=["def", 1])], 1, "field 'code_tokens' should be a list of strings"),
    ([with_(docstring_tokens=[])], 1, "field 'docstring_tokens' is empty"),
    ([with_(repo=3)], 1, "field 'repo' should be a string, got int"),
    ([GOOD, with_(url="other")], 2, "duplicate idx 7 (first on line 1)"),
    ([GOOD, with_(idx=8)], 2, "duplicate url 'corpus/shapes.py#L3-L5' (first on line 1)"),
    ([GOOD, "", with_(idx=8, url="b")], 2, "blank line"),
]


@pytest.mark.parametrize(("lines", "line", "message"), BAD, ids=[m for _, _, m in BAD])
def test_bad_lines_name_file_and_line(tmp_path, lines, line, message):
    path = write_lines(tmp_path / "valid.jsonl", lines)
    with pytest.raises(DataError) as caught:
        read_split(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)
    assert caught.value.line == line


def test_empty_file(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="test.jsonl: file is empty"):
        read_split(tmp_path / "test.jsonl")


def test_not_utf8(tmp_path):
    (tmp_path / "test.jsonl").write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"test.jsonl:2: not UTF-8"):
        read_split(tmp_path / "test.jsonl")


@pytest.mark.parametrize(("split", "error", "message"), [
    ("validation", InterpError, "unknown split 'validation'; did you mean 'valid'?"),
    ("dev", InterpError, "unknown split 'dev'; known: test, train, valid"),
])
def test_unknown_split(split, error, message):
    with pytest.raises(error, match=message.replace("?", r"\?")):
        load_split(ADVTEST, split)


def test_missing_split_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="train.jsonl: no such file; an AdvTest directory holds"):
        load_split(tmp_path, "train")
    with pytest.raises(InterpError, match="does not exist; build one with `interp data build"):
        load_split(tmp_path / "nowhere", "train")


def test_fingerprint_of_file_and_directory(tmp_path):
    assert fingerprint(ADVTEST / "train.jsonl") == hashlib.sha256((ADVTEST / "train.jsonl").read_bytes()).hexdigest()
    digest = fingerprint(ADVTEST)
    assert len(digest) == 64 and digest == fingerprint(ADVTEST)
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.jsonl").write_bytes((ADVTEST / f"{split}.jsonl").read_bytes())
    (tmp_path / "notes.txt").write_text("not part of the data")
    assert fingerprint(tmp_path) == digest
    (tmp_path / "test.jsonl").write_bytes((ADVTEST / "valid.jsonl").read_bytes())
    assert fingerprint(tmp_path) != digest
