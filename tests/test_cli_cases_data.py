"""`data build`, `data check` and `demo` refuse bad input as the README promises (issue 12).

Output paths that are empty, not directories, unwritable, or hold what the project did not make
as data (a run, the runs directory, a report, analysis results, AdvTest files with no build
manifest, a model); sources that do not exist or are of the wrong kind; worker counts out of
range; data directories and split files that are missing, of the wrong kind, or damaged line by
line (nesting 200,000 deep, not an object, wrong types, missing keys, invalid UTF-8, empty,
duplicates); damaged data manifests; demo runs directories it cannot use. Each case: exit 2, one
`error:` line naming the option, file or line at fault, no traceback, nothing changed on disk
(`helpers.check_refused`, and the cases' own files snapshotted too). Every case is refused before
anything is mined or loaded, so the table runs in seconds. Positive controls close it.

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider tests/test_cli_cases_data.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import check_refused, invoke, snapshot

ADVTEST = Path(__file__).parent / "data" / "advtest"  # three tiny valid splits
CORPUS = Path(__file__).parent / "data" / "corpus"  # six small stdlib modules: a build takes a fraction of a second
GOOD_LINES = (ADVTEST / "train.jsonl").read_text().splitlines()[:2]
LINUX = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")

# train.jsonl line 3 -> what the error line names besides `train.jsonl:3`
DAMAGED_LINES = {
    "deep": ("[" * 200_000, "nested too deeply"),
    "deep-object": ('{"idx": ' + "[" * 200_000, "nested too deeply"),
    "array": ("[1, 2]", "expected a JSON object"),
    "string": ('"text"', "expected a JSON object"),
    "number": ("42", "expected a JSON object"),
    "null": ("null", "expected a JSON object"),
    "truncated": ('{"idx": 3, "url": ', "malformed JSON"),
    "trailing": ('{"idx": 3} {"idx": 4}', "malformed JSON"),
    "nan": ('{"idx": NaN, "url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'idx'"),
    "idx-string": ('{"idx": "3", "url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'idx'"),
    "idx-float": ('{"idx": 1.5, "url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'idx'"),
    "idx-bool": ('{"idx": true, "url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'idx'"),
    "idx-huge": ('{"idx": ' + "9" * 5000 + ', "url": "u"}', "digits"),
    "url-number": ('{"idx": 3, "url": 5, "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'url'"),
    "tokens-string": ('{"idx": 3, "url": "u", "docstring_tokens": "a b", "code_tokens": ["b"]}', "'docstring_tokens'"),
    "tokens-numbers": ('{"idx": 3, "url": "u", "docstring_tokens": ["a"], "code_tokens": [1, 2]}', "'code_tokens'"),
    "tokens-empty": ('{"idx": 3, "url": "u", "docstring_tokens": ["a"], "code_tokens": []}', "'code_tokens' is empty"),
    "no-idx": ('{"url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'idx'"),
    "no-url": ('{"idx": 3, "docstring_tokens": ["a"], "code_tokens": ["b"]}', "'url'"),
    "no-query": ('{"idx": 3, "url": "u", "code_tokens": ["b"]}', "'docstring_tokens'"),
    "no-code": ('{"idx": 3, "url": "u", "docstring_tokens": ["a"]}', "'code_tokens'"),
    "repo-number": ('{"idx": 3, "url": "u", "docstring_tokens": ["a"], "code_tokens": ["b"], "repo": 7}', "'repo'"),
    "surrogate": ('{"idx": 3, "url": "u", "docstring_tokens": ["a\\ud800"], "code_tokens": ["b"]}', "lone surrogate"),
    "blank": ("   ", "blank line"),
    "duplicate-idx": (GOOD_LINES[0], "duplicate idx"),
}


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world (data/, base/, runs/ with lora and adapter) and a folder of odd inputs, `files/`:

    notes.txt; empty/; loop (a link to itself); dangling (a link to nothing); report/ (index.html, assets/); analyses/ (an analysis result); advtest/ (splits, no
    manifest); NAMEmanifest/ (a damaged manifest.json: a list, nested deep, empty, a field of the
    wrong type, not UTF-8); one data directory per
    damaged train.jsonl (`bad-NAME/`) and per other damage; sources: pyless/ (no Python files),
    fifo-only/ (its only x.py is a FIFO), two-files/ (too few files to split); runs directories
    for the demo whose data/ is a file, holds a run, or holds AdvTest files no build made.
    """
    files = tmp_path_factory.mktemp("data-cases")
    (files / "notes.txt").write_text("keep me\n")
    (files / "empty").mkdir()
    (files / "loop").symlink_to(files / "loop")
    (files / "dangling").symlink_to(files / "nowhere")
    (files / "report").mkdir()
    (files / "report" / "index.html").write_text("<html></html>\n")
    (files / "report" / "assets").mkdir()
    (files / "analyses" / "attn_diff").mkdir(parents=True)
    (files / "analyses" / "attn_diff" / "a.json").write_text('{"kind": "attn_diff", "name": "a", "result": {}}\n')
    _splits(files / "advtest")
    typed = json.dumps({"format": "codexglue-advtest-jsonl", "seed": 0, "removed": {}, "near_duplicates": []})
    for name, text in (("listmanifest", "[]"), ("deepmanifest", "[" * 200_000), ("emptymanifest", "{}"), ("typedmanifest", typed)):
        _splits(files / name)
        (files / name / "manifest.json").write_text(text)
    for name, (line, _) in DAMAGED_LINES.items():
        _splits(files / f"bad-{name}", train="\n".join([*GOOD_LINES, line]) + "\n")
    _splits(files / "utf8manifest")
    (files / "utf8manifest" / "manifest.json").write_bytes(b'{"format": "\xff"}')
    _splits(files / "bad-utf8")
    (files / "bad-utf8" / "train.jsonl").write_bytes(("\n".join(GOOD_LINES) + "\n").encode() + b'{"idx": "\xff\xfe"}\n')
    _splits(files / "bad-bom", train="\ufeff" + "\n".join(GOOD_LINES) + "\n")
    _splits(files / "empty-train", train="")
    _splits(files / "bad-valid", valid="{}\n")
    _splits(files / "dir-train")
    (files / "dir-train" / "train.jsonl").unlink()
    (files / "dir-train" / "train.jsonl").mkdir()
    _splits(files / "fifo-train")
    (files / "fifo-train" / "train.jsonl").unlink()
    os.mkfifo(files / "fifo-train" / "train.jsonl")
    _splits(files / "no-valid")
    (files / "no-valid" / "valid.jsonl").unlink()
    (files / "pyless").mkdir()
    (files / "pyless" / "README").write_text("no code here\n")
    (files / "fifo-only").mkdir()
    os.mkfifo(files / "fifo-only" / "x.py")
    (files / "two-files").mkdir()
    for name in ("bisect.py", "colorsys.py"):
        (files / "two-files" / name).write_text((CORPUS / name).read_text())
    (files / "runs-data-file").mkdir()
    (files / "runs-data-file" / "data").write_text("not a directory\n")
    (files / "runs-data-run" / "data" / "lora").mkdir(parents=True)
    (files / "runs-data-run" / "data" / "lora" / "manifest.json").write_text(json.dumps({"method": {"method": "lora"}}))
    _splits(files / "runs-data-advtest" / "data")
    return SimpleNamespace(root=cli_world.root, data=cli_world.data, base=cli_world.base, runs=cli_world.runs, files=files)


def _splits(folder: Path, **texts: str) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (folder / f"{split}.jsonl").write_text(texts.get(split, (ADVTEST / f"{split}.jsonl").read_text()))


def fill(args: list[str], world) -> list[str]:
    return [a.format(data=world.data, base=world.base, runs=world.runs, files=world.files, root=world.root, corpus=CORPUS)
            for a in args]


def case(*args: str, names: tuple[str, ...] = (), marks=()):
    shown = " ".join(args).replace("{files}/", "").replace("{corpus}", "CORPUS")[:100]
    return pytest.param(list(args), names, id=shown, marks=marks)


NEW = "{files}/new-data"  # a valid --out: a case that is wrongly accepted writes here, and the snapshot fails
B = ["data", "build", "--no-progress", "--source", "{corpus}"]
BO = ["data", "build", "--no-progress", "--out", NEW]

BUILD = [
    case(*B, "--out", "", names=("--out", "empty path")),
    case(*B, "--out", "   ", names=("--out", "empty path")),
    case(*B, "--out", "{runs}/lora", names=("--out", "lora", "a run")),
    case(*B, "--out", "{runs}/adapter", names=("--out", "adapter", "a run")),
    case(*B, "--out", "{runs}", names=("--out", "runs (adapter, lora)")),
    case(*B, "--out", "{files}/report", names=("--out", "report", "index.html")),
    case(*B, "--out", "{runs}/lora/data", names=("--out", "inside the run", "lora")),
    case(*B, "--out", "{runs}/lora/x/y", names=("--out", "inside the run", "lora")),
    case(*B, "--out", "{files}/report/data", names=("--out", "inside the report")),
    case(*B, "--out", "{files}/analyses/attn_diff", names=("--out", "analysis results")),
    case(*B, "--out", "{files}/advtest", names=("--out", "advtest", "no manifest.json")),
    case(*B, "--out", "{files}/listmanifest", names=("--out", "not a data manifest")),
    case(*B, "--out", "{files}/deepmanifest", names=("--out", "not a data manifest")),
    case(*B, "--out", "{files}/emptymanifest", names=("--out", "not a data manifest")),
    case(*B, "--out", "{files}/utf8manifest", names=("--out", "not a data manifest")),
    case(*B, "--out", "{base}", names=("--out", "config.json")),
    case(*B, "--out", "{root}", names=("--out", "files the project did not make")),
    case(*B, "--out", "{files}/notes.txt", names=("--out", "notes.txt", "not a directory")),
    case(*B, "--out", "{files}/notes.txt/data", names=("--out", "notes.txt is not a directory")),
    case(*B, "--out", "{data}/train.jsonl", names=("--out", "train.jsonl", "not a directory")),
    case(*B, "--out", "{files}/loop", names=("--out", "loops")),
    case(*B, "--out", "{files}/loop/data", names=("--out", "loops")),
    case(*B, "--out", "{files}/dangling", names=("--out", "dangling", "not a directory")),
    case(*B, "--out", "{files}/dangling/data", names=("--out", "dangling is not a directory")),
    case(*B, "--out", "/dev/null", names=("--out", "/dev/null", "not a directory")),
    case(*B, "--out", "/dev/null/data", names=("--out", "/dev/null is not a directory")),
    case(*B, "--out", "/proc/interp-data", names=("--out", "/proc is not writable"), marks=LINUX),
    case(*B, "--out", "{files}/" + "x" * 300, names=("--out", "too long")),
    case(*B, "--out", "{files}/a\0b", names=("--out", "NUL")),
    case(*BO, "--source", "nump", names=("--source", "'nump'", "did you mean 'numpy'")),
    case(*BO, "--source", "", names=("--source", "''")),
    case(*BO, "--source", " ", names=("--source", "' '")),
    case(*BO, "--source", "./no/such/dir", names=("--source", "./no/such/dir", "does not exist")),
    case(*BO, "--source", "{files}/notes.txt", names=("--source", "notes.txt", "not a directory")),
    case(*BO, "--source", "/dev/null", names=("--source", "/dev/null", "not a directory")),
    case(*BO, "--source", "{files}/loop", names=("--source", "loop")),
    case(*BO, "--source", "{files}/dangling", names=("--source", "dangling", "does not exist")),
    case(*BO, "--source", "{files}/a\0b", names=("--source",)),
    case(*BO, "--source", "{files}/" + "y" * 300, names=("--source", "too long")),
    case(*BO, "--source", "sys", names=("--source", "'sys'", "no Python source")),
    case(*BO, "--source", "json.nosuch", names=("--source", "'json.nosuch'")),
    case(*BO, "--source", "this.that", names=("--source", "'this.that'")),  # found without importing `this`
    case(*BO, "--source", "{corpus}", "--source", "{corpus}", names=("--source", "both named 'corpus'")),
    case(*BO, "--source", "{files}/pyless", names=("no Python files", "pyless")),
    case(*BO, "--source", "{files}/fifo-only", names=("no Python files", "fifo-only")),
    case(*BO, "--source", "{files}/two-files", names=("source file(s) gave pairs", "at least 3")),
    case(*B, "--out", NEW, "--workers", "0", names=("--workers 0",)),
    case(*B, "--out", NEW, "--workers", "-1", names=("--workers -1",)),
    case(*B, "--out", NEW, "--workers", "100000", names=("--workers 100000", "per CPU")),
    case(*B, "--out", NEW, "--workers", "9" * 30, names=("--workers", "per CPU")),
]

C = ["data", "check"]
CHECK = [
    case(*C, "{files}/nosuch", names=("nosuch", "does not exist")),
    case(*C, "{files}/notes.txt", names=("notes.txt", "not a directory")),
    case(*C, "{data}/train.jsonl", names=("train.jsonl", "not a directory")),
    case(*C, "/dev/null", names=("/dev/null", "not a directory")),
    case(*C, "{files}/" + "z" * 300, names=("z" * 20, "too long")),
    case(*C, "{files}/empty", names=("train.jsonl", "no such file")),
    case(*C, "{files}/no-valid", names=("valid.jsonl", "no such file")),
    case(*C, "{files}/dir-train", names=("train.jsonl", "is a directory")),
    case(*C, "{files}/fifo-train", names=("train.jsonl", "not a regular file")),
    case(*C, "{files}/empty-train", names=("train.jsonl", "empty")),
    case(*C, "{files}/bad-utf8", names=("train.jsonl:3", "not UTF-8")),
    case(*C, "{files}/bad-bom", names=("train.jsonl:1", "BOM")),
    case(*C, "{files}/bad-valid", names=("valid.jsonl:1", "missing field")),
    case(*C, "{files}/listmanifest", names=("manifest.json", "not a data manifest")),
    case(*C, "{files}/deepmanifest", names=("manifest.json", "nested too deeply")),
    case(*C, "{files}/emptymanifest", names=("manifest.json", "missing field 'removed'")),
    case(*C, "{files}/typedmanifest", names=("manifest.json", "'near_duplicates' should be dict")),
    case(*C, "{files}/utf8manifest", names=("manifest.json", "not a data manifest")),
    *[case(*C, "--json", f"{{files}}/bad-{name}", names=("train.jsonl:3", what)) for name, (_, what) in DAMAGED_LINES.items()],
]

D = ["demo", "--no-progress"]
DEMO = [
    case(*D, "--runs-dir", "{files}/notes.txt", names=("--runs-dir", "notes.txt", "not a directory")),
    case(*D, "--runs-dir", "{files}/notes.txt/runs", names=("--runs-dir", "notes.txt is not a directory")),
    case(*D, "--runs-dir", "/dev/null", names=("--runs-dir", "/dev/null", "not a directory")),
    case(*D, "--runs-dir", "{files}/loop/runs", names=("--runs-dir", "loops")),
    case(*D, "--runs-dir", "{files}/dangling/runs", names=("--runs-dir", "dangling is not a directory")),
    case(*D, "--runs-dir", "/dev/null/runs", names=("--runs-dir", "/dev/null is not a directory")),
    case(*D, "--runs-dir", "/proc/interp-runs", names=("--runs-dir", "/proc is not writable"), marks=LINUX),
    case(*D, "--runs-dir", "{files}/" + "r" * 300, names=("--runs-dir", "too long")),
    case(*D, "--runs-dir", "{runs}/lora", names=("--runs-dir", "lora", "a run")),
    case(*D, "--runs-dir", "{data}", names=("--runs-dir", "a data directory")),
    case(*D, "--runs-dir", "{files}/report", names=("--runs-dir", "a report")),
    case(*D, "--runs-dir", "{runs}/adapter/runs", names=("--runs-dir", "inside the run", "adapter")),
    case(*D, "--runs-dir", "{files}/runs-data-file", names=("--runs-dir", "runs-data-file/data", "not a directory")),
    case(*D, "--runs-dir", "{files}/runs-data-run", names=("--runs-dir", "runs-data-run/data", "runs (lora)")),
    case(*D, "--runs-dir", "{files}/runs-data-advtest", names=("--runs-dir", "no manifest.json")),
]


@pytest.mark.parametrize(("args", "names"), BUILD + CHECK + DEMO)
def test_refused(world, args, names):
    before = snapshot(world.files)
    check_refused(fill(args, world), names, watched=world.root)
    assert snapshot(world.files) == before, "the cases' own files changed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_unwritable_places_are_refused(world, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        check_refused(["data", "build", "--out", locked / "data", "--source", CORPUS], ("--out", "not writable"), watched=tmp_path)
        check_refused(["demo", "--runs-dir", locked / "runs"], ("--runs-dir", "not writable"), watched=tmp_path)
    finally:
        locked.chmod(0o700)


def test_source_is_found_without_importing_it(world):
    import sys

    check_refused(fill([*BO, "--source", "antigravity.x"], world), ("'antigravity.x'",), watched=world.files)
    assert "antigravity" not in sys.modules  # importing it would open a web browser


# -- positive controls: what the guards must still let through --------------------------------------


def _build(out: Path, *extra: str):
    result = invoke(["data", "build", "--no-progress", "--out", out, "--source", CORPUS, *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def test_builds_into_new_empty_and_earlier_build_directories(tmp_path):
    first = _build(tmp_path / "new" / "data", "--workers", "1")
    (tmp_path / "empty").mkdir()
    assert _build(tmp_path / "empty")["fingerprint"] == first["fingerprint"]
    (tmp_path / "empty" / "notes.txt").write_text("mine\n")
    again = _build(tmp_path / "empty", "--workers", str(os.cpu_count() or 1))  # over an earlier build; notes kept
    assert again["fingerprint"] == first["fingerprint"] and (tmp_path / "empty" / "notes.txt").read_text() == "mine\n"
    assert first["skipped_files"] == {} and first["limits"]["max_file_bytes"] == 2 * 1024 * 1024


def test_check_accepts_good_data(world):
    result = invoke(["data", "check", world.data])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("ok")


def test_demo_accepts_a_runs_directory_with_an_earlier_build(world, tmp_path, monkeypatch):
    """The guard passes an ordinary runs directory: the demo goes on to check the data it finds there
    (mining is stopped at its first step, so nothing heavy runs)."""
    from interp.commands import demo
    from records.errors import InterpError

    def stop(data_dir: Path) -> bool:
        raise InterpError(f"stopped after the guard at {data_dir}")

    monkeypatch.setattr(demo, "_data_is_current", stop)
    result = invoke(["demo", "--no-progress", "--runs-dir", world.runs])
    assert result.exit_code == 2 and "stopped after the guard" in result.stderr, result.output
