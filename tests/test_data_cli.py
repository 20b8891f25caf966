"""`interp data build` and `interp data check` through the real command line app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from interp.cli import app

CORPUS = Path(__file__).parent / "data" / "corpus"
runner = CliRunner()


def test_build_then_check(tmp_path):
    out = tmp_path / "data"
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--source", str(CORPUS), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "removed duplicate_query" in result.output
    assert f"pairs to {out}/ in" in result.output
    result = runner.invoke(app, ["data", "check", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["manifest_matches"]


def test_errors_are_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["data", "build", "--out", str(tmp_path / "d"), "--source", "nump"])
    assert result.exit_code == 2
    assert "unknown source 'nump'; did you mean 'numpy'?" in result.output
    assert not (tmp_path / "d").exists()
    result = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_check_with_problems_exits_1(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):  # train everywhere: test is not normalised, idx shared
        (data / f"{split}.jsonl").write_text((CORPUS.parent / "advtest" / "train.jsonl").read_text())
    result = runner.invoke(app, ["data", "check", str(data)])
    assert result.exit_code == 1
    assert "problem: valid does not look normalised" in result.output
