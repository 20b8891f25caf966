"""Helpers shared by the test modules (importable as `helpers`; pytest puts tests/ on the path)."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import typer

from trainers import methods
from trainers.training.loop import TrainConfig
from trainers.training.train import RunSpec, train_run


def json_close(a, b, rel: float, abs_: float) -> bool:
    """Two JSON values are equal, floats within the given relative / absolute tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_close(x, y, rel, abs_) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    return a == b


# -- tiny trained runs and golden results, shared by the analysis tests ----------------------

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = 12  # test queries scored (the runs' --eval-limit sample)
MAX_LEN = 32


def train_tiny(runs_dir: Path, data_dir: Path, base: Path, name: str, config: methods.MethodConfig, **settings) -> Path:
    """A run of `config` on the tiny base: two steps at a high learning rate, so the delta is far from zero.

    `settings`: other TrainConfig fields (pooling, ties, ...).
    """
    spec = RunSpec(name=name, method=config, data_dir=data_dir, base=str(base), train_limit=16, eval_limit=EXAMPLES)
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 4, "max_len": MAX_LEN, "evals_per_epoch": 1, "max_steps": 2, "lr": 5e-2, "seed": 3} | settings)
    train_run(spec, cfg, runs_dir=runs_dir, progress=False)
    return runs_dir / name


def _rounded(value, digits: int = 6):
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def check_golden(path: Path, golden: Path, *, rel: float = 1e-4, abs_: float = 1e-5) -> None:
    """The saved result equals the golden one (kind, name, result; floats rounded to 6 significant
    digits and compared with a tolerance); inputs (tmp paths, fingerprints) and versions are ignored.

    UPDATE_GOLDEN=1 rewrites the golden file instead.
    """
    saved = json.loads(path.read_text())
    got = _rounded({k: saved[k] for k in ("kind", "name", "result")})
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert json_close(got, json.loads(golden.read_text()), rel, abs_), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


def command_app() -> typer.Typer:
    """The three commands mounted as the lead mounts them, with the CLI's error handling."""
    from interp.cli import _Group
    from interp.commands import delta_analyses

    app = typer.Typer(cls=_Group, pretty_exceptions_enable=False)
    for name in ("ablate", "anatomy", "attribute"):
        app.command(name)(getattr(delta_analyses, name))
    return app


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread while these modules run, restored afterwards.

    The models here are tiny (hidden 32; MiniLM on one short pair) and gain nothing from a
    second thread, while on a shared two-core machine two threads that wait for each other
    made these files three to twenty times slower (64 s against 14 s for this one).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the CLI case table: bad input gets one `error:` line, exit status 2, and the disk as it was ----


def snapshot(root: Path) -> dict[str, str | None]:
    """Every path under `root` (hidden ones too): a file's sha256 and mode, None for a directory.

    Two snapshots are equal only if nothing was written, removed, renamed or left behind.
    """
    import hashlib

    found: dict[str, str | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            found[rel] = None if path.is_dir() else f"special {path.lstat().st_mode:o}"
        else:
            found[rel] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mode:o}"
    return found


@functools.cache
def _interp_command():
    """The `interp` command tree, built once (building it is most of a refused case's time)."""
    from typer.main import get_command

    from interp.cli import app

    return get_command(app)


def invoke(args: list[str]):
    """`interp ARGS` in this process, as Typer's CliRunner runs it (stdout and stderr kept apart), on
    the command tree built once."""
    from typer.testing import CliRunner, Result

    runner = CliRunner()
    code, exception, exc_info = 0, None, None
    with runner.isolation() as (out, err, mixed):
        try:
            _interp_command().main(args=[str(a) for a in args], prog_name="interp")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            exception, exc_info = (exc, sys.exc_info()) if code else (None, None)
        except Exception as exc:  # a bug: kept for the assertion to show
            code, exception, exc_info = 1, exc, sys.exc_info()
        sys.stdout.flush(), sys.stderr.flush()
        streams = out.getvalue(), err.getvalue(), mixed.getvalue()
    return Result(runner, *streams, return_value=None, exit_code=code, exception=exception, exc_info=exc_info)


def check_refused(args: list[str], names: tuple[str, ...] | list[str], *, watched: Path) -> str:
    """`interp ARGS` is refused as the README promises; returns the error line.

    Exit status 2, no traceback, exactly one line on stderr that starts with `error:` and
    mentions every one of `names` (the option, file or line at fault), and nothing under
    `watched` created, changed or removed.
    """
    before = snapshot(watched)
    result = invoke(args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    shown = f"interp {' '.join(map(str, args))}\nexit {result.exit_code}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{shown}\n{result.exception!r}"
    assert result.exit_code == 2, shown
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    missing = [name for name in names if str(name) not in lines[0]]
    assert not missing, f"the error line does not name {missing}\n{shown}"
    assert snapshot(watched) == before, f"{shown}\nthe disk changed under {watched}"
    return lines[0]


# -- run directories written by hand: what `compare` and `qualitative` read, no model trained ------

BASE_SHA = "5" * 64  # a base weights hash no model has: enough while only ranks are read


def _code_tokens(code: str) -> list[str]:
    """Python tokens without layout, comments, or the docstring (a string right after the def's ':')."""
    import io
    import tokenize

    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    out: list[str] = []
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        if t.type in layout or (t.type == tokenize.STRING and out[-1:] == [":"] and ":" not in out[:-1]):
            continue
        out.append(t.string)
    return out


def write_split(path: Path, functions: list[tuple[str, str]], first_idx: int = 100) -> Path:
    """An AdvTest-format jsonl: one line per (docstring, code), idx counting from `first_idx`."""
    import re

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for i, (doc, code) in enumerate(functions):
            record = {"repo": "python/cpython", "path": "Lib/x.py", "func_name": f"f{i}", "original_string": code,
                      "language": "python", "code": code, "code_tokens": _code_tokens(code), "docstring": doc,
                      "docstring_tokens": re.findall(r"\w+|[^\w\s]+", doc), "url": f"https://example.org/{i}", "idx": first_idx + i}
            f.write(json.dumps(record) + "\n")
    return path


def make_run(runs_dir: Path, name: str, ranks: list[int], data_file: Path, *, preset: str | None = None, seed: int = 123456,
             max_len: int = 256, pooling: str = "cls", test_fingerprint: str | None = None, base: dict | None = None) -> Path:
    """A finished run directory with the manifest keys the analyses read and a ranks.json.

    `base` is the manifest's base entry (source, weights_sha256): by default the MiniLM directory
    under a hash no model has, which is enough while only ranks are read."""
    from trainers.data import fingerprint, read_split
    from trainers.encoders import default_base_dir
    from trainers.training.splits import split_fingerprint

    examples = read_split(data_file)
    assert len(ranks) == len(examples), "one rank per test example"
    fp = test_fingerprint or split_fingerprint(fingerprint(data_file), examples)
    rr = [1 / r for r in ranks]
    manifest = {
        "name": name, "status": "finished", "preset": preset, "method": {"method": "lora"},
        "train": {"seed": seed, "max_len": max_len, "pooling": pooling, "ties": "codexglue"},
        "base": base or {"source": str(default_base_dir()), "weights_sha256": BASE_SHA},
        "data": {"test": {"file": str(data_file.resolve()), "fingerprint": fp, "pairs": len(examples), "used": len(examples)}},
        "metrics": {"test_mrr": sum(rr) / len(rr), "valid_mrr": 0.0, "best_step": 1},
    }
    path = runs_dir / name
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "ranks.json").write_text(json.dumps({"split": "test", "fingerprint": fp, "ties": "codexglue", "pooling": pooling, "ranks": {str(e.idx): r for e, r in zip(examples, ranks)}}))
    return path


def check_golden_exact(path: Path, golden: Path) -> None:
    """The saved result equals the golden one, floats to 1e-9 (no rounding: results computed from
    hand-written ranks, with no model's float noise); versions and inputs (tmp paths) ignored.

    UPDATE_GOLDEN=1 rewrites the golden file instead. (`check_golden` rounds and allows 1e-4.)
    """
    got = json.loads(path.read_text())
    got = {k: got[k] for k in ("kind", "name", "result")}
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert json_close(got, json.loads(golden.read_text()), 1e-9, 1e-12), f"{path} differs from {golden} (UPDATE_GOLDEN=1 to accept)"


# -- attn-diff on tiny runs, shared by test_attn_diff.py and test_attn_diff_seeds.py --------------


def attn_diff(runs: Path, a: str, b: str, **kw):
    """`run_analysis(AttnDiff, ...)` of a against b over 12 examples, without progress bars (`kw` overrides)."""
    from interp.analyses.attn_diff import AttnDiff
    from interp.analyses.running import run_analysis

    return run_analysis(AttnDiff, runs_dir=runs, a=a, b=b, **({"limit": 12, "progress": False} | kw))


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """A manifest's metrics with the per-split dicts spelled out ("test.mrr@10": ...), for pytest.approx."""
    out = {}
    for key, value in metrics.items():
        out.update(flat_metrics(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def flat(grid) -> list[float]:
    """A (layers, heads) grid's values in one list."""
    return [v for row in grid for v in row]


# -- the analysis commands' case tables (test_cli_cases_analyses.py, test_cli_cases_stats.py) ------

ANALYSIS_PROGRESS = {"attn-diff", "cka", "ablate", "qualitative", "compare"}  # commands with --progress/--no-progress


def analyses_cases_world(cli_world, root: Path):
    """cli_world's runs copied under `root` beside damaged copies of them and odd files; cases may only read it.

    runs/          lora and adapter, and odd things where analyses write their results
    bad-ranks/     adapter, and copies of lora whose ranks.json is damaged (lora-<damage>)
    bad-manifest/  a run whose manifest is truncated; no-data/: a run whose data was moved away
    bad-weights/   a run whose adapter weights are cut short; moved-base/: one whose base model is gone
    analyses-file/ a run beside a file named analyses
    files/         code files, data files (good and damaged), a directory, a plain text file
    """
    import shutil
    from types import SimpleNamespace

    runs = root / "runs"
    shutil.copytree(cli_world.runs, runs)
    ranks = (runs / "lora" / "ranks.json").read_text()
    damages = {
        "trunc": ranks[: len(ranks) // 2],
        "notjson": "ranks\n",
        "empty": "",
        "list": "[1, 2, 3]\n",
        "nokeys": "{}\n",
        "noranks": json.dumps({k: v for k, v in json.loads(ranks).items() if k != "ranks"}),
        "badrank": json.dumps(json.loads(ranks) | {"ranks": {k: "first" for k in json.loads(ranks)["ranks"]}}),
        "fewranks": json.dumps(json.loads(ranks) | {"ranks": {}}),
        "binary": "\udcff",
    }
    bad_ranks = root / "bad-ranks"  # apart, so that the cases on runs/ list two runs, not eleven
    shutil.copytree(runs / "adapter", bad_ranks / "adapter")
    for damage, text in damages.items():
        shutil.copytree(runs / "lora", bad_ranks / f"lora-{damage}")
        (bad_ranks / f"lora-{damage}" / "ranks.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    (runs / "analyses" / "compare").mkdir(parents=True)
    (runs / "analyses" / "compare" / "lora-vs-adapter.json").mkdir()  # a directory where compare's result goes
    (runs / "analyses" / "qualitative").mkdir(parents=True)
    (runs / "analyses" / "qualitative" / "lora+adapter.json").write_text('{"mine": "notes"}\n')  # not a result
    (runs / "analyses" / "anatomy").mkdir(parents=True)
    (runs / "analyses" / "anatomy" / "adapter.json").write_text('{"kind": "anatomy", "name": "adap')  # truncated

    (runs / "analyses" / "ablate").mkdir(parents=True)
    (runs / "analyses" / "ablate" / "lora.drop1.json").symlink_to(runs / "lora" / "manifest.json")  # a link to a run's manifest
    analyses_file = root / "analyses-file"
    shutil.copytree(cli_world.runs / "lora", analyses_file / "lora")
    (analyses_file / "analyses").write_text("not a folder\n")

    bad_manifest = root / "bad-manifest"
    shutil.copytree(cli_world.runs / "lora", bad_manifest / "lora")
    text = (bad_manifest / "lora" / "manifest.json").read_text()
    (bad_manifest / "lora" / "manifest.json").write_text(text[: len(text) // 2])
    no_data = root / "no-data"
    shutil.copytree(cli_world.runs / "lora", no_data / "lora")
    manifest = json.loads((no_data / "lora" / "manifest.json").read_text())
    for info in manifest["data"].values():
        if isinstance(info, dict) and "file" in info:
            info["file"] = str(root / "moved" / Path(info["file"]).name)
    (no_data / "lora" / "manifest.json").write_text(json.dumps(manifest, indent=2))

    bad_weights = root / "bad-weights"
    shutil.copytree(cli_world.runs / "lora", bad_weights / "lora")
    weights = (bad_weights / "lora" / "adapter_model.safetensors").read_bytes()
    (bad_weights / "lora" / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    moved_base = root / "moved-base"
    shutil.copytree(cli_world.runs / "lora", moved_base / "lora")
    manifest = json.loads((moved_base / "lora" / "manifest.json").read_text())
    manifest["base"]["source"] = str(root / "moved-base-model")
    (moved_base / "lora" / "manifest.json").write_text(json.dumps(manifest, indent=2))

    files = root / "files"
    files.mkdir()
    (files / "code.py").write_text("def add(a, b):\n    return a + b\n")
    (files / "empty.py").write_text("")
    (files / "binary.py").write_bytes(b"\xff\xfe\x00def")
    (files / "broken.py").write_text("def f(:\n  '''\n")
    (files / "notes.txt").write_text("keep me\n")
    (files / "folder").mkdir()
    os.mkfifo(files / "fifo.jsonl")  # nothing ever writes to it: reading it would wait for ever
    os.mkfifo(files / "fifo.py")
    test_lines = (cli_world.data / "test.jsonl").read_text().splitlines()
    (files / "small.jsonl").write_text("\n".join(test_lines[:6]) + "\n")
    (files / "badline.jsonl").write_text("\n".join(test_lines[:2] + ["{not json"] + test_lines[3:5]) + "\n")
    (files / "empty.jsonl").write_text("")
    (files / "nested.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    idx = json.loads(test_lines[0])["idx"]
    return SimpleNamespace(root=root, runs=runs, files=files, data=cli_world.data, idx=idx, cli_world=cli_world,
                           shared=snapshot(cli_world.root))


def fill_analysis_args(args: list[str], world) -> list[str]:
    """The case's arguments with the world's paths, and --no-progress where the command has it (bars are not errors)."""
    quiet = ["--no-progress"] if args and args[0] in ANALYSIS_PROGRESS and "--bogus" not in args else []
    return [a.format(runs=world.runs, files=world.files, data=world.data, root=world.root, idx=world.idx) for a in args] + quiet


def analysis_case(*args: str, names: tuple[str, ...] = (), marks=()):
    """One refused case: `interp ARGS` and what its error line must name; its id is the command line, abridged."""
    return pytest.param(list(args), names, id=" ".join(args).replace("{runs}", "R").replace("{files}/", "").replace("{root}/", "")[:90],
                        marks=marks)
