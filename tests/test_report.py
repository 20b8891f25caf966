"""`interp report`: pages, escaping, determinism, atomic rebuilds, missing sections, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_site import HOSTILE, save
from typer.testing import CliRunner

from interp.cli import app
from reports import build_report

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs_dir(report_runs) -> Path:
    return report_runs


@pytest.fixture(scope="module")
def site(runs_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "report"
    report = build_report(runs_dir=runs_dir, out=out)
    assert report.problems == []
    return out


def pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html"))}


@pytest.mark.parametrize("page", [
    "index.html", "runs/lora2.html", "runs/lora2-s2.html", "runs/loff.html", "study/tiny.html",
    "attn-diff/lora2-vs-loff.html", "attn-diff/lora2-vs-loff.a.query.html", "attn-diff/lora2-vs-loff.b.query.html",
    "qualitative/all.html", "attribute/loff.example500.html", "compare/lora2-vs-loff.html",
    "ablate/loff.sweep.html", "anatomy/lora2-vs-loff.html", "cka/lora2-vs-loff.html",
])
def test_every_page_is_written(site, page):
    assert (site / page).is_file()


@pytest.mark.parametrize("page", sorted([
    "attn-diff/lora2-vs-loff.html", "attn-diff/lora2-vs-loff.a.query.html", "qualitative/all.html",
    "attribute/loff.example500.html", "study/tiny.html", "cka/lora2-vs-loff.html",
]))
def test_hostile_text_is_escaped(site, page):
    html = (site / page).read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html or "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)" in html


def test_the_cka_page_shows_its_matrix_curve_and_null(site):
    """Per side a layers x layers heatmap (undefined cells greyed) and the diagonal with the seed null's band and marks;
    the index gives its one line."""
    html = (site / "cka/lora2-vs-loff.html").read_text(encoding="utf-8")
    assert html.count('class="plotly-graph-div"') == 2  # the query side: heatmap and curve
    assert "CKA at the same layer" in html and "seed to seed (lowest to highest pair)" in html and "#d0d0d0" in html
    assert "Estimator <b>biased</b>" in html and "Layers that do not vary, CKA undefined: embeddings" in html
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "8 examples (cls, biased): query lowest 0.535 at layer 3" in index


def test_code_keeps_its_whitespace(site):
    html = (site / "qualitative/all.html").read_text(encoding="utf-8")
    assert "<pre>def f():\n    \t  return &#39;&lt;/script&gt;" in html


def test_no_page_refers_to_the_network(site):
    for name, html in pages(site).items():
        for marker in ("http://", "https://", "//cdn"):
            lines = [line for line in html.splitlines() if marker in line and "plotly-graph-div" not in line]
            assert not any("src=" in line or "href=" in line for line in lines), (name, marker)


def test_assets_are_shipped(site):
    assets = {p.name: p.stat().st_size for p in (site / "assets").iterdir()}
    assert set(assets) == {"plotly.min.js", "d3.js", "jquery.min.js", "bertviz-offline.js", "style.css"}
    assert assets["plotly.min.js"] > 1_000_000


def test_seeds_of_a_config_are_one_group(site, runs_dir):
    html = (site / "index.html").read_text(encoding="utf-8")
    mrrs = [json.loads((runs_dir / n / "manifest.json").read_text())["metrics"]["test_mrr"] for n in ("lora2", "lora2-s2")]
    mean = 100 * sum(mrrs) / 2
    std = 100 * abs(mrrs[0] - mrrs[1]) / 2 ** 0.5
    assert f"{mean:.2f} ± {std:.2f}" in html


def test_the_study_numbers_are_labelled_as_the_studys(site):
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "The study's published numbers (CodeBERT)" in html
    assert "39.19 ± 0.55" in html  # loFF, valid, Table 4.6
    assert "2,359,296" in html  # LoRA-64 on a CodeBERT-shaped encoder


def test_a_rebuild_is_byte_identical(runs_dir, site, tmp_path):
    again = tmp_path / "again"
    build_report(runs_dir=runs_dir, out=again)
    first = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_a_failed_build_leaves_the_old_site(runs_dir, tmp_path, monkeypatch):
    out = tmp_path / "report"
    build_report(runs_dir=runs_dir, out=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(folder):
        folder.mkdir(parents=True)
        (folder / "partial.js").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr("reports.site.write_assets", broken)
    with pytest.raises(OSError, match="disk full"):
        build_report(runs_dir=runs_dir, out=out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temporary directory left behind


def test_empty_runs_dir_says_what_is_missing(tmp_path):
    report = build_report(runs_dir=tmp_path, out=tmp_path / "report")
    html = report.index.read_text(encoding="utf-8")
    assert "No runs yet" in html and "No study tables yet" in html
    for kind in ("attn-diff", "ablate", "anatomy", "attribute", "qualitative", "compare", "cka"):
        assert f"No {kind} results yet" in html
    assert "interp cka RUN_A RUN_B" in html


@pytest.mark.parametrize("content, problem", [
    ("{not json", "Expecting property name"),
    ('{"kind": "ablate", "name": "x"}', "not an interp attn-diff result"),
    ('{"kind": "attn-diff", "name": "x", "result": {"a": "p"}}', "cannot render (KeyError"),
])
def test_unreadable_results_are_listed_not_fatal(runs_dir, tmp_path, content, problem):
    bad = tmp_path / "runs"
    subprocess.run(["cp", "-r", str(runs_dir), str(bad)], check=True)
    (bad / "analyses" / "attn-diff" / "x.json").write_text(content)
    report = build_report(runs_dir=bad, out=tmp_path / "report")
    assert len(report.problems) == 1 and problem in report.problems[0] and "x.json" in report.problems[0]
    index = report.index.read_text(encoding="utf-8")
    assert "x.json" in index and "lora2-vs-loff" in index  # listed; the good result still there
    assert not (tmp_path / "report" / "attn-diff" / "x.html").exists()


def test_building_never_imports_torch(runs_dir, tmp_path):
    code = ("import sys; from pathlib import Path; from reports import build_report; "
            f"build_report(runs_dir=Path({str(runs_dir)!r}), out=Path({str(tmp_path / 'r')!r})); "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'captum') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


runner = CliRunner()


def test_cli_builds_and_prints_the_path(runs_dir, tmp_path):
    result = runner.invoke(app, ["report", "--runs-dir", str(runs_dir), "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "site" / "index.html") in result.output


@pytest.mark.parametrize("args, message", [
    (["--runs-dir", "{tmp}/nope"], "--runs-dir {tmp}/nope: no such directory"),
    (["--out", "{tmp}/file.txt"], "--out {tmp}/file.txt: exists and is not a directory"),
    (["--out", "{tmp}/mine"], "--out {tmp}/mine: a non-empty directory that is not a report"),
])
def test_cli_bad_input_names_it_and_leaves_files(runs_dir, tmp_path, args, message):
    (tmp_path / "file.txt").write_text("keep")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("keep")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--runs-dir" not in args:
        args += ["--runs-dir", str(runs_dir)]
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message.format(tmp=tmp_path) in result.output
    assert (tmp_path / "file.txt").read_text() == "keep" and (tmp_path / "mine" / "notes.md").read_text() == "keep"


def test_a_hostile_result_name_stays_a_file_name(runs_dir, tmp_path):
    bad = tmp_path / "runs"
    subprocess.run(["cp", "-r", str(runs_dir), str(bad)], check=True)
    save(bad, "compare", "a&b<i>", json.loads((runs_dir / "analyses/compare/lora2-vs-loff.json").read_text())["result"])
    report = build_report(runs_dir=bad, out=tmp_path / "report")
    assert (tmp_path / "report" / "compare" / "a&b<i>.html").is_file()
    index = report.index.read_text(encoding="utf-8")
    assert 'href="compare/a%26b%3Ci%3E.html"' in index and "a&amp;b&lt;i&gt;" in index
    assert HOSTILE not in index


@pytest.mark.parametrize("name, value, shown", [
    ("pct", 0.43077, "43.08"),
    ("pct", None, "—"),
    ("pct", float("nan"), "—"),
    ("percent", 0.10406, "10.41%"),
    ("thousands", 2359296, "2,359,296"),
    ("thousands", None, "—"),
    ("mean_std", {"mean": 0.4633, "std": 0.0011, "n": 2}, "46.33 ± 0.11"),
    ("mean_std", {"mean": 0.4633, "std": None, "n": 1}, "46.33"),
    ("mean_std", {"mean": None, "std": None, "n": 0}, "—"),
    ("mean_only", {"mean": 22.5, "n": 2}, "22.5"),
    ("mean_only", {"mean": 30.0, "n": 2}, "30"),
    ("pvalue", 0.0004, "4.00e-04"),
    ("pvalue", 0.118, "0.118"),
    ("plain", {"parts": [{"method": "lora", "r": 64}, {"method": "adapter", "r": 384}]},
     "parts=[method=lora, r=64] + [method=adapter, r=384]"),
    ("plain", [1, 2], "1, 2"),
])
def test_filters(name, value, shown):
    from reports import site
    assert getattr(site, name)(value) == shown


def test_every_analysis_kind_has_one_report_entry():
    """The kinds the analyses save (their `kind`) are the kinds the report's one table (reports.kinds) renders."""
    from interp.analyses.ablate import Ablation
    from interp.analyses.anatomy import Anatomy
    from interp.analyses.attn_diff import AttnDiff
    from interp.analyses.attribute import Attribution
    from interp.analyses.cka import CKA
    from interp.analyses.compare import Compare
    from interp.analyses.qualitative import Qualitative
    from reports.kinds import KINDS

    analyses = (Ablation, Anatomy, AttnDiff, Attribution, CKA, Compare, Qualitative)
    assert sorted(a.kind for a in analyses) == sorted(KINDS)
    assert all(callable(a.prepare) and callable(a.compute) for a in analyses)


@pytest.mark.parametrize("parts", [("prefix",), ("prefix", "lora")], ids=["prefix", "union"])
def test_a_runs_modules_count_its_trainable_parameters(tmp_path, tiny_roberta_dir, parts):
    """The run page's per-module table (collect._modules, from the delta's safetensors header) sums to the method's trainable
    count: a prefix's initial values (alone, or in a union, whose keys read 'union_kv_prefix_init_key') are not counted."""
    from reports.collect import _modules
    from trainers.encoders import load_encoder
    from trainers.methods import LoraConfig, PrefixConfig, UnionConfig, apply_method, count_parameters, save_delta

    made = {"prefix": PrefixConfig(length=2), "lora": LoraConfig(r=2)}
    config = made["prefix"] if parts == ("prefix",) else UnionConfig(parts=tuple(made[p] for p in parts))
    encoder = load_encoder(tiny_roberta_dir)
    save_delta(apply_method(encoder, config), config, tmp_path)
    problems: list[str] = []
    rows = _modules(tmp_path, problems=problems)
    assert problems == [] and not any("init" in row["module"] for row in rows)
    assert sum(row["parameters"] for row in rows) == count_parameters(encoder, config).trainable
