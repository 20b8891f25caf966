"""What a place on disk is (records.places), decided alike by training and the report."""

from __future__ import annotations

import json
import re

import pytest

from reports import target
from reports.collect import collect
from trainers.data.outdir import check_out, enclosing
from records.errors import InterpError
from records.places import NOT_RUNS, is_report, is_run, manifest_kind
from trainers.training.runs import check_run_name, scan_runs

RUN_MANIFEST = {"method": {"method": "lora"}, "train": {"seed": 1}, "status": "finished", "metrics": {}}


@pytest.mark.parametrize("name", sorted(NOT_RUNS))
def test_a_name_that_is_not_a_run_is_refused_and_skipped_by_both(name, tmp_path):
    with pytest.raises(InterpError, match=f"'{name}' is reserved"):
        check_run_name(name)
    for folder in (name, "lora"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "manifest.json").write_text(json.dumps(RUN_MANIFEST))
    assert [r.name for r in collect(tmp_path).runs] == ["lora"]
    runs, damaged = scan_runs(tmp_path)  # this manifest is too small for training's check: "lora" is damaged
    assert [r.name for r in runs] == [] and len(damaged) == 1 and "/lora/manifest.json" in str(damaged[0])


# -- what a folder's manifest says it is, and the two output checks that read it ------------------------------------

MANIFESTS = {
    "run": ('{"method": {"method": "lora"}}', "run"),
    "data": ('{"format": "codexglue-advtest-jsonl", "splits": {}}', "data"),
    "other": ('{"format": "something else", "splits": {}}', None),
    "damaged": ('{"method": ', None),
    "a list": ('["method"]', None),
    "missing": (None, None),
}


@pytest.mark.parametrize("case", MANIFESTS)
def test_manifest_kind(case, tmp_path):
    text, kind = MANIFESTS[case]
    if text is not None:
        (tmp_path / "manifest.json").write_text(text)
    assert manifest_kind(tmp_path / "manifest.json") == kind
    assert is_run(tmp_path) == (kind == "run")


@pytest.mark.parametrize("case, build, report", [
    ("run", "holds a run (its manifest.json names a method)", "a run (its manifest.json names a method)"),
    ("data", None, "a data directory (its manifest.json is a data build's)"),
    ("other", "holds a manifest.json that is not a data manifest", "a non-empty directory that is not a report (manifest.json)"),
])
def test_the_build_and_the_report_read_a_folder_alike(case, build, report, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(MANIFESTS[case][0])
    if build is None:
        check_out(out, "--out")
    else:
        with pytest.raises(InterpError, match=re.escape(build)):
            check_out(out, "--out")
    assert target.problem(out, tmp_path / "runs").startswith(report)


def test_inside_a_run_or_a_report_is_refused_by_both(tmp_path):
    run, site = tmp_path / "lora", tmp_path / "site"
    run.mkdir()
    (run / "manifest.json").write_text(MANIFESTS["run"][0])
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")
    assert is_report(site) and not is_report(run)
    assert enclosing(run / "data").startswith("is inside the run") and enclosing(site / "data").startswith("is inside the report")
    assert target.problem(run / "site", tmp_path / "runs").startswith(f"inside {run}, a run")
    assert target.problem(site, tmp_path / "runs") is None  # an earlier report is replaced
