"""What a place on disk is (trainers.places), decided alike by training and the report."""

from __future__ import annotations

import json

import pytest

from reports.collect import collect
from trainers.errors import InterpError
from trainers.places import NOT_RUNS
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
