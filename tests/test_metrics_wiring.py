"""The retrieval metrics (MRR@10, NDCG@10, Recall@1/5/10) from training to every place a run's score is shown:
the manifest, `interp eval`, `interp runs`, the study table, the report; and the untrained base as a zero-shot row.

Every expected value is `retrieval_metrics` of ranks read back from what the command wrote (the run's
ranks.json, the predictions file) or computed by plain transformers, never a number typed in.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from helpers import MAX_LEN, invoke, make_run
from trainers.data import read_split
from records.manifest import Manifest
from trainers.training.evaluate import gold_ranks
from trainers.training.metrics import NAMES, retrieval_metrics


def _saved_ranks(run_dir) -> torch.Tensor:
    saved = json.loads((run_dir / "ranks.json").read_text())
    return torch.tensor(list(saved["ranks"].values()))


@pytest.fixture(scope="module")
def world(cli_world, tmp_path_factory):
    """cli_world's runs copied (commands here write into them), and `old`: a manifest from before the metrics."""
    root = tmp_path_factory.mktemp("metrics-wiring")
    runs = root / "runs"
    shutil.copytree(cli_world.runs, runs)
    test = cli_world.data / "test.jsonl"
    count = sum(1 for line in test.read_text().splitlines() if line.strip())
    for name in ("old", "older", "stale"):
        make_run(runs, name, [1 + i % 7 for i in range(count)], test)
    (runs / "older" / "ranks.json").unlink()  # nothing to derive the metrics from
    ranks = json.loads((runs / "stale" / "ranks.json").read_text())
    (runs / "stale" / "ranks.json").write_text(json.dumps(ranks | {"fingerprint": "0" * 64}))  # not this run's test sample
    return cli_world, runs


@pytest.mark.parametrize("name", ["lora", "adapter"])
def test_manifest_metrics_are_those_of_the_saved_ranks(world, name):
    cli_world, _ = world
    m = Manifest.read(cli_world.runs / name)
    assert sorted(m.metrics["test"]) == sorted(NAMES)  # written with sorted keys
    assert m.metrics["test"] == retrieval_metrics(_saved_ranks(cli_world.runs / name))
    assert m.metrics["test"]["mrr"] == m.metrics["test_mrr"]
    assert m.metrics["valid"]["mrr"] == m.metrics["valid_mrr"]  # the best delta's valid metrics, from its own evaluation
    assert m.split_metrics("test") == m.metrics["test"]


def test_an_older_manifest_reads_with_its_mrr_or_its_own_ranks_metrics(world):
    _, runs = world
    for name in ("old", "older", "stale"):
        m = Manifest.read(runs / name)
        assert m.split_metrics("test") == {"mrr": m.metrics["test_mrr"]} and m.split_metrics("valid") == {"mrr": 0.0}
        derived = m.split_metrics("test", runs / name)
        if name == "old":  # its ranks.json is the one its test MRR came from: the plain-Python metrics of those ranks
            assert derived == pytest.approx(retrieval_metrics(_saved_ranks(runs / name)), rel=1e-12)
        else:  # none, or another sample's: the MRR alone
            assert derived == {"mrr": m.metrics["test_mrr"]}


def test_eval_prints_and_records_the_metrics_of_its_predictions(world, tmp_path):
    _, runs = world
    out = tmp_path / "predictions.jsonl"
    result = invoke(["eval", "lora", "--runs-dir", runs, "--predictions", out, "--top-k", 100000, "--no-progress"])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # every gold code is listed (top-k covers the split): its 1-based position is its rank
    examples = read_split(Manifest.read(runs / "lora").data["test"]["file"])
    assert [row["url"] for row in lines] == [e.url for e in examples]
    ranks = torch.tensor([row["answers"].index(e.idx) + 1 for row, e in zip(lines, examples)])
    expected = retrieval_metrics(ranks)
    recorded = json.loads((tmp_path / "predictions.metrics.json").read_text())
    assert recorded["metrics"] == pytest.approx(expected, abs=1e-12) and recorded["queries"] == len(lines)
    shown = dict(re.findall(r"(MRR@10|NDCG@10|MRR|R@1|R@5|R@10) (\d\.\d{4})", result.stdout.splitlines()[1]))
    labels = {"mrr": "MRR", "mrr@10": "MRR@10", "ndcg@10": "NDCG@10", "recall@1": "R@1", "recall@5": "R@5", "recall@10": "R@10"}
    assert {key: float(shown[label]) for key, label in labels.items()} == {k: round(v, 4) for k, v in expected.items()}


def test_runs_shows_the_test_metrics_and_a_dash_for_an_old_run(world):
    _, runs = world
    result = invoke(["runs", "--runs-dir", runs])
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[-5:] == ["MRR", "MRR@10", "NDCG@10", "R@1", "status"]
    by_name = {row.split()[0]: row.split() for row in rows}
    test = Manifest.read(runs / "lora").metrics["test"]
    assert by_name["lora"][-4:-1] == [f"{test[k]:.4f}" for k in ("mrr@10", "ndcg@10", "recall@1")]
    old = retrieval_metrics(_saved_ranks(runs / "old"))  # from its ranks.json
    assert by_name["old"][-4:-1] == [f"{old[k]:.4f}" for k in ("mrr@10", "ndcg@10", "recall@1")]
    for name in ("older", "stale"):
        assert by_name[name][-4:-1] == ["-", "-", "-"]
        assert by_name[name][-5] == f"{Manifest.read(runs / name).metrics['test_mrr']:.4f}"  # its test MRR is still shown


def test_study_table_shows_them_and_no_mean_when_a_seed_lacks_them(world):
    from interp.study.tables import render_markdown, table_row

    _, runs = world
    lora, adapter, old = (Manifest.read(runs / n) for n in ("lora", "adapter", "older"))
    row = table_row("p", "lora", {"trainable": 10, "share_of_base": 0.1}, {"lora": lora, "adapter": adapter})
    for key in ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10"):
        assert row["test"][key]["mean"] == pytest.approx((lora.metrics["test"][key] + adapter.metrics["test"][key]) / 2, abs=1e-12)
        assert row["test"][key]["n"] == 2
    mixed = table_row("q", "lora", {"trainable": 10, "share_of_base": 0.1}, {"lora": lora, "older": old},
                      {"lora": runs / "lora", "older": runs / "older"})
    assert mixed["test"]["ndcg@10"] == {"mean": None, "std": None, "n": 0}
    derived = table_row("r", "lora", {}, {"old": Manifest.read(runs / "old")}, {"old": runs / "old"})  # from its ranks.json
    assert derived["test"]["ndcg@10"]["mean"] == pytest.approx(retrieval_metrics(_saved_ranks(runs / "old"))["ndcg@10"], rel=1e-12)
    doc = {"grid": "g", "scale": "s", "seeds": [1, 2], "base": {"name": "b", "weights_sha256": "0" * 64},
           "data": {"dir": "d", "fingerprint": "0" * 64}, "train": {}, "tables": [{"table": "1", "title": "t", "rows": [row, mixed]}]}
    text = render_markdown(doc).splitlines()
    head = next(i for i, line in enumerate(text) if line.startswith("| Model"))
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(text[head])[5:8] == ["Test MRR@10 (%)", "Test NDCG@10 (%)", "Test R@1 (%)"]
    assert cells(text[head + 2])[5:8] == [f"{100 * row['test'][k]['mean']:.2f} ± {100 * row['test'][k]['std']:.2f}"
                                   for k in ("mrr@10", "ndcg@10", "recall@1")]
    assert cells(text[head + 3])[5:8] == ["-", "-", "-"]


def test_eval_base_equals_plain_transformers_and_the_report_shows_it(world, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from reports.site import build_report

    from trainers.training.splits import EVAL_SUBSET_SEED, subset

    cli_world, runs = world
    test = cli_world.data / "test.jsonl"
    tokenizer, model = AutoTokenizer.from_pretrained(cli_world.base), AutoModel.from_pretrained(cli_world.base).eval()

    def embed(texts):
        batch = tokenizer(texts, truncation=True, max_length=MAX_LEN, padding=True, return_tensors="pt")
        with torch.no_grad():
            return model(**batch).last_hidden_state[:, 0]  # (n, hidden) [CLS]

    def reference(examples):
        return retrieval_metrics(gold_ranks(embed([e.query for e in examples]), embed([e.code_text for e in examples]), ties="codexglue"))

    lora = Manifest.read(runs / "lora")
    whole, sample = read_split(test), subset(read_split(test), lora.data["test"]["used"], EVAL_SUBSET_SEED)
    # --data: every example of the file; no --data: the runs' own test sample (their --eval-limit), same fingerprint
    for args, examples in ((["--data", test], whole), ([], sample)):
        result = invoke(["eval", "base", "--runs-dir", runs, *args, "--max-len", MAX_LEN, "--no-progress"])
        assert result.exit_code == 0, result.stderr
        expected = reference(examples)
        assert float(re.search(r"MRR (\d\.\d{4})", result.stdout).group(1)) == pytest.approx(expected["mrr"], abs=5e-5)
        saved = json.loads((runs / "analyses" / "eval" / "base-test.json").read_text())
        assert (saved["pooling"], saved["ties"], saved["max_len"], saved["queries"]) == ("cls", "codexglue", MAX_LEN, len(examples))
        assert saved["metrics"] == pytest.approx(expected, abs=1e-6)
    assert len(sample) < len(whole) and saved["fingerprint"] == lora.fingerprints["test"]

    report = build_report(runs_dir=runs, out=tmp_path / "site")
    html = report.index.read_text()
    zero = re.search(r'<tr class="zero-shot">(.*?)</tr>', html, re.S).group(1)
    assert "base (zero-shot)" in zero and f'<td title="{saved["base"]["source"]}">untrained</td><td>zero-shot</td>' in zero
    assert [f"{100 * expected[k]:.2f}" for k in ("mrr", "mrr@10", "ndcg@10", "recall@1")] == re.findall(r"\d+\.\d\d(?!%)", zero)[-4:]
    lora = Manifest.read(runs / "lora").metrics["test"]
    row = re.search(r'<tr><td><a href="runs/lora.html">.*?</tr>', html, re.S).group(0)
    for key in ("mrr@10", "ndcg@10", "recall@1"):
        assert f'<td class="num">{100 * lora[key]:.2f}</td>' in row
    old = re.search(r'<tr><td><a href="runs/old.html">.*?</tr>', html, re.S).group(0)
    derived = retrieval_metrics(_saved_ranks(runs / "old"))
    for key in ("mrr@10", "ndcg@10", "recall@1"):
        assert f'<td class="num">{100 * derived[key]:.2f}</td>' in old
    older = re.search(r'<tr><td><a href="runs/older.html">.*?</tr>', html, re.S).group(0)
    cells = re.findall(r'<td class="num">(.*?)</td>', older)  # trainable, share, valid MRR, test MRR, MRR@10, NDCG@10, R@1, step, seeds
    assert cells[4:7] == ["—", "—", "—"] and cells[3] == f"{100 * Manifest.read(runs / 'older').metrics['test_mrr']:.2f}"


def test_eval_base_refuses_predictions(world, tmp_path):
    from helpers import check_refused

    _, runs = world
    check_refused(["eval", "base", "--runs-dir", runs, "--predictions", tmp_path / "p.jsonl"], ["--predictions"], watched=runs)


def test_eval_predictions_never_overwrites_another_file_with_its_metrics(world, tmp_path):
    from helpers import check_refused

    _, runs = world
    (tmp_path / "p.metrics.json").write_text('{"mine": 1}')
    check_refused(["eval", "lora", "--runs-dir", runs, "--predictions", tmp_path / "p.jsonl"], ["--predictions", "p.metrics.json"],
                  watched=tmp_path)
