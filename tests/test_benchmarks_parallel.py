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
    assert rows[0][5] == "1.00x"  # 1 process against itself
    assert text.startswith("16 pairs of ")
    assert out.read_text().endswith(text) and "--limit 16" in out.read_text().splitlines()[2]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["lora32", "prefix5"]  # kept, no analyses in them


@pytest.mark.parametrize("a, b, equal", [
    (1.0, 1.0 + 1e-10, True),  # rel 1e-10
    (1.0, 1.0 + 1e-8, False),  # rel 1e-8
    (0.0, 1e-13, True),  # abs 1e-13
    ({"x": [1.0, 2]}, {"x": [1.0, 2]}, True),
    ({"x": [1.0, 2]}, {"x": [1.0]}, False),  # a shorter list
    ({"x": 1.0}, {"y": 1.0}, False),  # other keys
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
