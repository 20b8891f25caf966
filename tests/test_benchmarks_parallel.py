"""benchmarks/parallel_analyses.py at its tiniest: `interp eval` on 1 and 2 CPU processes over 16 mined pairs, tiny RoBERTa runs.

One end-to-end case (two runs trained one step, the command on 1 process and through the launcher
on 2, the table and its file), the tolerance rule of the equality column as a case table, and
bad options refused before anything is trained or written.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from helpers import single_thread  # noqa: F401 (an autouse fixture)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "parallel_analyses.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("parallel_analyses", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_eval_on_one_and_two_processes(bench, mined_data, tiny_roberta_dir, tmp_path):
    out = tmp_path / "parallel.md"
    text = bench.main(["--data", str(mined_data), "--limit", "16", "--base", str(tiny_roberta_dir), "--presets", "lora32,prefix5",
                       "--max-len", "32", "--commands", "eval", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| eval")]
    assert [row[1] for row in rows] == ["1", "2"]  # processes
    assert rows[0][-1] == "- |" and rows[1][-1] == "yes |"  # 2 processes: metrics and predictions equal to 1 process
    assert rows[0][5] == "1.00x" and rows[0][6] == "-"  # 1 process against itself, no bound
    assert rows[1][6].endswith("x") and float(rows[1][6][:-1]) >= 1.0  # the bound of 2 processes
    assert text.startswith("16 pairs of ")
    assert out.read_text().endswith(text) and "--limit 16" in out.read_text().splitlines()[2]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lora32", "prefix5"]  # kept, no analyses in them


def test_busiest_share(bench, tiny_roberta_dir):
    """Hand-countable batches: 4 queries of 3 tokens and 4 codes of 3, 3, 3, 9 tokens ([CLS] ... [SEP] each).

    eval, batches of 64: one batch a side, fewer than 2 processes, so each process embeds everything: 48 of 48.
    attn-diff, batches of 32: one window, the query batch (4 x 3 = 12 tokens) to process 0, the code batch
    (4 x 9 = 36) to process 1: 36 of 48. cka: each side's one batch to process 0, and to process 1 as its shift: 48 of 48."""
    from trainers.data.schema import Example
    from trainers.encoders import load_encoder

    tokenizer = load_encoder(str(tiny_roberta_dir)).tokenizer
    one = tokenizer("a", add_special_tokens=False)["input_ids"]
    assert len(one) == 1
    codes = [("a",), ("a",), ("a",), ("a",) * 7]
    examples = [Example(idx=i, url=f"u{i}", docstring_tokens=("a",), code_tokens=c) for i, c in enumerate(codes)]
    shares = {c: bench.busiest_share(c, examples, tokenizer, processes=2, max_len=32) for c in bench.COMMANDS}
    assert shares == {"eval": 1.0, "attn-diff": 36 / 48, "cka": 1.0}


@pytest.mark.parametrize("a, b, equal", [
    (1.0, 1.0 + 1e-10, True),  # rel 1e-10
    (1.0, 1.0 + 1e-8, False),  # rel 1e-8
    (0.0, 1e-13, True),  # abs 1e-13
    ({"x": [1.0, 2]}, {"x": [1.0, 2]}, True),
    ({"x": [1.0, 2]}, {"x": [1.0]}, False),  # a shorter list
    ({"x": 1.0}, {"y": 1.0}, False),  # other keys
    (float("nan"), float("nan"), True),  # an undefined statistic on both
    (float("nan"), 1.0, False),
    ("head", "head", True),
    (1.0, "1.0", False),
])
def test_close(bench, a, b, equal):
    assert bench.close(a, b) is equal


@pytest.mark.parametrize("argv, message", [
    (["--commands", "eval,ablate"], "--commands: ablate unknown"),
    (["--presets", "lora64"], "two different presets"),
    (["--processes", "1"], "--processes should be at least 2"),
])
def test_bad_options_are_refused_before_anything(bench, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        bench.main([*argv, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "parallel.md")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
