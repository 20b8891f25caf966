"""`interp study`: grids as data, resumable runs of presets x seeds, refusals, and the tables."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.study import Grid, Scale, Table, get_grid, load_grid_file, parse_seeds, render_markdown, run_study, table_row
from records.errors import InterpError
from helpers import flat_metrics

TINY = Scale("tiny", (("epochs", 1), ("batch_size", 4), ("max_len", 32), ("evals_per_epoch", 2), ("max_steps", 4), ("pooling", "pooler"),
                      ("lr", 1e-3)), train_limit=40, eval_limit=16)  # a scale may state its pooling; lr last (replaced below)
GRID = Grid("tiny", "two presets", (Table("t1", "LoRA and Adapter-FFN", ("lora32", "adapter-ffn64")),))
SEEDS = (1, 2)
RUNS = ["lora32-s1", "lora32-s2", "adapter-ffn64-s1", "adapter-ffn64-s2"]


def study(runs_dir: Path, data: Path, base: Path, *, grid: Grid = GRID, scale: Scale = TINY, seeds=SEEDS):
    return run_study(grid=grid, seeds=seeds, scale=scale, data_dir=data, runs_dir=runs_dir, base=str(base), device="cpu",
                     progress=False, log=lambda line: None)


def statuses(result) -> dict[str, str]:
    return {o.name: o.status for o in result.outcomes}


def snapshot(runs_dir: Path, names) -> dict[str, tuple[int, bytes]]:
    """Every file of the named run directories: (mtime_ns, content)."""
    return {str(p.relative_to(runs_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for name in names for p in sorted((runs_dir / name).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mined_data, tiny_roberta_dir) -> dict:
    """The tiny grid run in two goes (a sub-grid first, then the whole), then once more: what each go did."""
    runs = tmp_path_factory.mktemp("study-runs")
    first = study(runs, mined_data, tiny_roberta_dir, grid=Grid("tiny", "", (Table("t1", "", ("lora32",)),)))
    lora_files = snapshot(runs, RUNS[:2])
    second = study(runs, mined_data, tiny_roberta_dir)
    lora_files_after = snapshot(runs, RUNS[:2])
    all_files = snapshot(runs, RUNS)
    third = study(runs, mined_data, tiny_roberta_dir)
    return {"runs": runs, "first": first, "second": second, "third": third, "lora_files": (lora_files, lora_files_after),
            "all_files": (all_files, snapshot(runs, RUNS))}


# -- grids as data -----------------------------------------------------------------------------

@pytest.mark.parametrize("grid, presets", [
    ("rq1", ["full", "adapter-h64", "adapter-h128", "adapter-h256", "adapter-h512"]),
    ("rq2", ["full", "lora32", "lora64", "lora128", "lora256", "adapter-attn64", "adapter-attn128", "adapter-attn256",
             "adapter-attn512", "prefix10", "prefix50", "prefix100", "prefix256"]),
    ("rq3", ["full", "lora256", "adapter-h256", "adapter-ffn64", "adapter-ffn128", "adapter-ffn256", "adapter-ffn512",
             "lora32", "lora64", "adapter-h64", "lora128", "adapter-h128"]),
    ("rq4", ["full", "loFF", "LOFF", "LOff"]),
    ("layers", ["lora256", "loFF_9-12"]),
])
def test_grids_hold_the_thesis_tables(grid, presets):
    assert list(get_grid(grid).presets) == presets


def test_all_is_the_union_of_the_research_questions():
    grids = load_grid_file().grids
    union = [t for name in ("rq1", "rq2", "rq3", "rq4", "layers") for t in grids[name].tables]
    assert grids["all"].tables == tuple(union)
    assert [t.id for t in grids["all"].tables] == ["4.3", "4.4", "4.5", "fig4.4", "4.6", "7.1"]


@pytest.mark.parametrize("text, seeds", [("123456,654321,123", (123456, 654321, 123)), ("7", (7,)), (" 1, 2 ", (1, 2))])
def test_seeds_parse(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("args, message", [
    (["study", "rq5"], "unknown grid 'rq5'; did you mean 'rq4'?"),
    (["study", "rq4", "--seeds", "12,x"], "--seeds '12,x': 'x' is not a whole number"),
    (["study", "rq4", "--seeds", "1,1"], "--seeds '1,1': seed 1 is given twice"),
    (["study", "rq4", "--seeds", "-3"], "seeds cannot be negative"),
    (["study", "rq4", "--scale", "dem"], "unknown scale 'dem'; did you mean 'demo'?"),
    (["study"], "give a GRID"),
])
def test_bad_input_names_the_option_and_value(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_list_shows_grids_tables_and_scales():
    result = CliRunner().invoke(app, ["study", "--list"])
    assert result.exit_code == 0, result.output
    assert "rq4:" in result.output and "4.6: full, loFF, LOFF, LOff" in result.output and "scale demo:" in result.output


# -- aggregation, by hand ----------------------------------------------------------------------

def _manifest(status, valid=None, test=None, step=None):
    from records.manifest import Manifest

    metrics = {"valid_mrr": valid, "test_mrr": test, "best_step": step} if status == "finished" else {}
    return Manifest.from_dict({"method": {"method": "union"}, "status": status, "metrics": metrics})


def test_rows_average_finished_runs_and_list_the_missing():
    manifests = {"loFF-s1": _manifest("finished", 0.40, 0.30, 10), "loFF-s2": _manifest("finished", 0.42, 0.36, 20),
                 "loFF-s3": _manifest("running"), "loFF-s4": None}
    row = table_row("loFF", "union", {"trainable": 1234567, "share_of_base": 0.0752}, manifests)
    assert row["runs"] == ["loFF-s1", "loFF-s2"] and row["missing"] == ["loFF-s3", "loFF-s4"]
    assert row["valid_mrr"] == {"mean": pytest.approx(0.41), "std": pytest.approx(0.0141421356), "n": 2}
    assert row["test_mrr"] == {"mean": pytest.approx(0.33), "std": pytest.approx(0.0424264069), "n": 2}
    assert row["best_step"] == {"mean": 15, "n": 2}
    empty = table_row("LOFF", "union", {"trainable": 5, "share_of_base": 0.5}, {"LOFF-s1": None})
    assert empty["test_mrr"] == {"mean": None, "std": None, "n": 0} and empty["missing"] == ["LOFF-s1"]

    doc = {"grid": "g", "scale": "demo", "seeds": [1, 2], "base": {"name": "b", "weights_sha256": "f" * 64},
           "data": {"dir": "d", "fingerprint": "0" * 64}, "train": {"lr": 1e-5},
           "tables": [{"table": "4.6", "title": "LoRA + Adapter-FFN", "rows": [row, empty]}]}
    md = render_markdown(doc)
    assert "## Table 4.6: LoRA + Adapter-FFN" in md
    # test MRR@10, NDCG@10, R@1: '-', these manifests predate them (tests/test_metrics_wiring.py shows them)
    assert "| loFF | union | 1,234,567 (7.52%) | 41.00 ± 1.41 | 33.00 ± 4.24 | - | - | - | 15 | 2 | loFF-s3, loFF-s4 |" in md
    assert "| LOFF | union | 5 (50.00%) | - | - | - | - | - | - | 0 | LOFF-s1 |" in md


# -- running: resumable, never overwriting -----------------------------------------------------

def test_a_study_trains_each_run_once(finished):
    assert statuses(finished["first"]) == {"lora32-s1": "trained", "lora32-s2": "trained"}
    assert statuses(finished["second"]) == {"lora32-s1": "skipped", "lora32-s2": "skipped",
                                            "adapter-ffn64-s1": "trained", "adapter-ffn64-s2": "trained"}
    assert set(statuses(finished["third"]).values()) == {"skipped"}
    before, after = finished["lora_files"]
    assert before == after  # the sub-grid's runs were not touched by the whole grid
    before, after = finished["all_files"]
    assert before == after and len(before) >= 4 * 5  # nor by a third go


def test_tables_follow_the_schema_and_the_manifests(finished):
    runs = finished["runs"]
    doc = json.loads((runs / "study" / "tiny" / "tables.json").read_text())
    assert set(doc) == {"kind", "grid", "scale", "seeds", "base", "data", "train", "tables", "beside", "unscored", "code_version", "versions"}
    assert (doc["beside"], doc["unscored"]) == ([], [])  # no zero-shot result, no imported run
    assert (doc["kind"], doc["grid"], doc["scale"], doc["seeds"]) == ("study", "tiny", "tiny", [1, 2])
    assert "seed" not in doc["train"] and doc["train"]["lr"] == 1e-3 and doc["train"]["max_steps"] == 4
    assert {k: doc["train"][k] for k in ("pooling", "batching", "ties")} == {"pooling": "pooler", "batching": "random", "ties": "codexglue"}
    assert set(doc["data"]) == {"dir", "fingerprint"} and len(doc["data"]["fingerprint"]) == 64
    manifests = {name: json.loads((runs / name / "manifest.json").read_text()) for name in RUNS}
    assert doc["base"] == manifests["lora32-s1"]["base"]
    assert all(m["train"]["pooling"] == "pooler" for m in manifests.values())
    [table] = doc["tables"]
    assert (table["table"], [r["preset"] for r in table["rows"]]) == ("t1", ["lora32", "adapter-ffn64"])
    for row in table["rows"]:
        names = [f"{row['preset']}-s{s}" for s in SEEDS]
        assert set(row) == {"preset", "method", "trainable", "share_of_base", "valid_mrr", "test_mrr", "best_step", "test", "runs", "missing"}
        assert row["runs"] == names and row["missing"] == []
        assert row["trainable"] == manifests[names[0]]["parameters"]["trainable"]
        for key in ("valid_mrr", "test_mrr"):
            values = [manifests[n]["metrics"][key] for n in names]
            assert row[key] == {"mean": pytest.approx(statistics.mean(values)), "std": pytest.approx(statistics.stdev(values)), "n": 2}
        for key in ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10"):  # the test split's other metrics, as recorded
            values = [manifests[n]["metrics"]["test"][key] for n in names]
            assert row["test"][key] == {"mean": pytest.approx(statistics.mean(values)), "std": pytest.approx(statistics.stdev(values)), "n": 2}
    assert "## T1: LoRA and Adapter-FFN" in (runs / "study" / "tiny" / "tables.md").read_text()


def test_beside_the_grid_the_zero_shot_base_and_imported_runs(finished, tmp_path, mined_data, tiny_roberta_dir):
    """An imported run scored on the grid's test examples, one scored on others, one not scored, and `interp eval base`'s
    result: rows beside the grid in tables.json and tables.md, each saying whether its test examples and base are the grid's."""
    runs = tmp_path / "runs"
    shutil.copytree(finished["runs"], runs)
    grid_run = json.loads((runs / "lora32-s1" / "manifest.json").read_text())
    test_fp = grid_run["data"]["test"]["fingerprint"]
    source = {"path": str(tmp_path / "adapter"), "kind": "peft", "copied": False, "base": str(tiny_roberta_dir), "base_from": "--base"}
    imported = {"same": grid_run["metrics"], "other": grid_run["metrics"], "unscored": {}}
    for name, metrics in imported.items():
        data = grid_run["data"] if name == "same" else {"test": {"file": "t.jsonl", "fingerprint": "f" * 64, "pairs": 9, "used": 9}}
        manifest = grid_run | {"name": name, "preset": None, "metrics": metrics, "data": data, "source": source}
        (runs / name).mkdir()
        (runs / name / "manifest.json").write_text(json.dumps(manifest))
    zero = {"kind": "eval", "name": "base-test", "base": {"weights_sha256": grid_run["base"]["weights_sha256"]}, "fingerprint": test_fp,
            "queries": 16, "metrics": {"mrr": 0.25, "mrr@10": 0.2, "ndcg@10": 0.3, "recall@1": 0.125, "recall@5": 0.5, "recall@10": 0.75}}
    (runs / "analyses" / "eval").mkdir(parents=True)
    (runs / "analyses" / "eval" / "base-test.json").write_text(json.dumps(zero))

    result = study(runs, mined_data, tiny_roberta_dir)
    assert set(statuses(result).values()) == {"skipped"}
    doc = json.loads(result.tables_json.read_text())
    rows = {row["name"]: row for row in doc["beside"]}
    assert list(rows) == ["base", "other", "same"] and doc["unscored"] == ["unscored"]
    assert (rows["base"]["kind"], rows["base"]["test_mrr"], rows["base"]["same_test"], rows["base"]["same_base"]) == ("zero-shot", 0.25, True, True)
    assert rows["same"]["test_mrr"] == grid_run["metrics"]["test_mrr"] and rows["same"]["valid_mrr"] == grid_run["metrics"]["valid_mrr"]
    assert rows["same"]["test"]["ndcg@10"] == grid_run["metrics"]["test"]["ndcg@10"] and rows["same"]["same_test"] is True
    assert (rows["other"]["same_test"], rows["other"]["test_pairs"], rows["other"]["kind"]) == (False, 9, "imported")
    md = result.tables_md.read_text()
    assert "## Beside the grid: the base (zero-shot) and imported deltas" in md
    assert "| base | zero-shot | untrained base | 0 (0.00%) | - | 25.00 | 20.00 | 30.00 | 12.50 | the grid's |" in md
    assert f"| same | imported | {grid_run['parameters']['method']} |" in md and "| other (9 pairs) |" in md
    assert "Imported, not scored yet (`interp eval NAME`): unscored." in md

    from reports import build_report

    build_report(runs_dir=runs, out=tmp_path / "report")
    page = " ".join((tmp_path / "report" / "study" / "tiny.html").read_text().split())
    assert "Beside the grid: the base (zero-shot) and imported deltas" in page and "<td>zero-shot</td>" in page
    assert '<td class="num">25.00</td>' in page and "other (9 pairs)" in page and "<td>the grid's</td>" in page


@pytest.mark.parametrize("saved, shown", [
    ({"metrics": {"mrr": 0.5, "mrr@10": "high"}, "base": "x", "queries": None}, {"test_mrr": 0.5, "mrr@10": None, "same_base": False}),
    ({"metrics": {"mrr": "0.5"}}, None), ([1, 2], None), ({"metrics": [0.5]}, None),
])
def test_a_hand_edited_zero_shot_result_is_shown_as_far_as_it_reads(tmp_path, saved, shown):
    """beside_grid reads runs_dir/analyses/eval/base-test.json as far as it holds numbers: anything else is missing, not a failure."""
    from interp.study.runner import Expected
    from interp.study.tables import beside_grid, render_markdown

    (tmp_path / "analyses" / "eval").mkdir(parents=True)
    (tmp_path / "analyses" / "eval" / "base-test.json").write_text(json.dumps(saved))
    rows = beside_grid(tmp_path, Expected(base={"weights_sha256": "a" * 64}, data={"test": {"fingerprint": "b" * 64}}, parameters={}))["beside"]
    if shown is None:
        assert rows == []
        return
    [row] = rows
    assert (row["test_mrr"], row["test"]["mrr@10"], row["same_base"], row["same_test"]) == (
        shown["test_mrr"], shown["mrr@10"], shown["same_base"], False)
    doc = {"grid": "g", "scale": "s", "seeds": [1], "base": {"name": "b", "weights_sha256": "a" * 64}, "data": {"dir": "d", "fingerprint": "f" * 64},
           "train": {}, "tables": [], "beside": rows, "unscored": []}
    assert "| base | zero-shot | untrained base | 0 (0.00%) | - | 50.00 | - | - | - | other (? pairs); another base |" in render_markdown(doc)


def test_an_interrupted_run_is_resumed_and_only_it(finished, tmp_path, mined_data, tiny_roberta_dir):
    runs = tmp_path / "runs"
    shutil.copytree(finished["runs"], runs)
    path = runs / "adapter-ffn64-s2" / "manifest.json"
    done = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in done.items() if k not in ("metrics", "elapsed_s")} | {"status": "running"}))
    untouched = snapshot(runs, RUNS[:3])
    result = study(runs, mined_data, tiny_roberta_dir)
    assert statuses(result) == dict.fromkeys(RUNS[:3], "skipped") | {"adapter-ffn64-s2": "resumed"}
    assert snapshot(runs, RUNS[:3]) == untouched
    again = json.loads(path.read_text())
    assert again["status"] == "finished" and flat_metrics(again["metrics"]) == pytest.approx(flat_metrics(done["metrics"]), abs=1e-6)


@pytest.mark.parametrize("scale, words", [
    (Scale("tiny", TINY.train[:-1] + (("lr", 2e-3),), 40, 16), ["training settings: lr 0.001 there, 0.002 here"]),
    (Scale("tiny", TINY.train, 40, 12), ["data (other files or samples): valid", "test"]),
])
def test_a_run_made_otherwise_is_refused_and_left_intact(finished, mined_data, tiny_roberta_dir, scale, words):
    runs = finished["runs"]
    before = snapshot(runs, RUNS)
    with pytest.raises(InterpError) as err:
        study(runs, mined_data, tiny_roberta_dir, scale=scale)
    message = str(err.value)
    assert "4 run(s)" in message and all(f"{name}:" in message for name in RUNS)
    assert all(w in message for w in words)
    assert snapshot(runs, RUNS) == before


def _as_before(manifest: dict) -> dict:
    """A manifest as the toolkit wrote it before pooling, batching, ties and the LoRA scaling rule were recorded."""
    train = {k: v for k, v in manifest["train"].items() if k not in ("pooling", "batching", "ties")} | {"bucket": True}
    method = manifest["method"]
    if method["method"] == "lora":  # the numeric scale under the name `scaling`
        method = {k: v for k, v in method.items() if k != "scale"} | {"scaling": method["scale"]}
    return manifest | {"train": train, "method": method}


def test_old_manifests_are_read_as_they_were_trained(finished, tmp_path, mined_data, tiny_roberta_dir):
    """No `bucket` or missing-field noise: an old run differs in exactly the choices it was trained with."""
    runs = tmp_path / "runs"
    shutil.copytree(finished["runs"], runs)
    for name in RUNS:
        path = runs / name / "manifest.json"
        path.write_text(json.dumps(_as_before(json.loads(path.read_text()))))
    with pytest.raises(InterpError) as err:
        study(runs, mined_data, tiny_roberta_dir)
    message = str(err.value)
    for name in RUNS:
        [phrase] = [part for part in message.split(" | ") if part.startswith(f"{name}:") or f" {name}:" in part]
        assert phrase.endswith("training settings: pooling 'cls' there, 'pooler' here, batching 'bucketed' there, 'random' here, "
                               "ties 'optimistic' there, 'codexglue' here"), phrase
    as_trained = Scale("tiny", tuple((k, "cls" if k == "pooling" else v) for k, v in TINY.train) + (("batching", "bucketed"), ("ties", "optimistic")),
                       TINY.train_limit, TINY.eval_limit)
    before = snapshot(runs, RUNS)
    assert set(statuses(study(runs, mined_data, tiny_roberta_dir, scale=as_trained)).values()) == {"skipped"}
    assert snapshot(runs, RUNS) == before


def test_a_directory_that_is_not_a_run_is_refused(tmp_path, mined_data, tiny_roberta_dir):
    (tmp_path / "lora32-s1").mkdir()
    (tmp_path / "lora32-s1" / "notes.txt").write_text("mine")
    with pytest.raises(InterpError, match=r"lora32-s1: .*not a run \(no manifest.json\)"):
        study(tmp_path, mined_data, tiny_roberta_dir)
    assert (tmp_path / "lora32-s1" / "notes.txt").read_text() == "mine" and not (tmp_path / "lora32-s2").exists()


def test_a_failing_run_is_reported_and_the_others_go_on(tmp_path, mined_data, tiny_roberta_dir):
    grid = Grid("g", "", (Table("t", "", ("loFF_9-12", "lora32")),))  # the tiny base has 4 layers, not 12
    result = study(tmp_path, mined_data, tiny_roberta_dir, grid=grid, seeds=(1,))
    assert statuses(result) == {"loFF_9-12-s1": "failed", "lora32-s1": "trained"}
    assert "9-12" in result.failed[0].error
    nan = study(tmp_path / "nan", mined_data, tiny_roberta_dir, grid=Grid("g", "", (Table("t", "", ("lora32",)),)), seeds=(1,),
                scale=Scale("tiny", TINY.train[:-1] + (("lr", 1e30),), 40, 16))
    assert statuses(nan) == {"lora32-s1": "failed"} and "loss is" in nan.failed[0].error
    row = json.loads(nan.tables_json.read_text())["tables"][0]["rows"][0]
    assert row["missing"] == ["lora32-s1"] and row["test_mrr"]["mean"] is None


def test_cli_exits_1_when_a_run_failed(tmp_path, mined_data, tiny_roberta_dir):
    args = ["study", "layers", "--scale", "demo", "--seeds", "5", "--data", str(mined_data), "--base", str(tiny_roberta_dir),
            "--runs-dir", str(tmp_path), "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "lora256-s5: trained in" in result.output and "loFF_9-12-s5: failed" in result.output
    assert (tmp_path / "study" / "layers" / "tables.md").is_file()
