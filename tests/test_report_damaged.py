"""The report given damaged or hostile analysis files, runs and studies (issue 12): each is rendered
or listed on the index (and printed, one line each), and the rest renders; a full disk keeps the
previous site. No model: the results are the analyses' golden files, saved as interp saves them.

    OMP_NUM_THREADS=1 python -m pytest -q -p no:cacheprovider tests/test_report_damaged.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from markupsafe import escape

from helpers import check_refused, invoke, snapshot
from reports.pages import file_name

GOLDEN_FILES = {"attn-diff": "attn_diff.json", "ablate": "ablate.json", "anatomy": "anatomy.json",
                "attribute": "attribute.json", "compare": "compare.json", "qualitative": "qualitative.json"}


def saved_result(kind: str, name: str, result: dict | None = None) -> dict:
    from report_site import golden

    return {"kind": kind, "name": name, "inputs": {}, "result": golden(GOLDEN_FILES[kind])["result"] if result is None else result,
            "versions": {}, "code_version": "test"}


def put(runs: Path, kind: str, file: str | bytes, content: str | bytes | dict) -> None:
    """Write `content` (a dict as JSON) to runs/analyses/KIND/FILE, FILE as bytes where it is not UTF-8."""
    import os

    folder = runs / "analyses" / kind
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps(content) if isinstance(content, dict) else content  # lone surrogates as \\ud800 escapes
    data = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    with open(os.path.join(os.fsencode(folder), os.fsencode(file) if isinstance(file, str) else file), "wb") as f:
        f.write(data)


def rendered(runs: Path):
    """(site, pages) of `runs` as the report renders them, without writing a site."""
    from reports.collect import collect
    from reports.site import render

    site = collect(runs)
    return site, render(site)


HOSTILE_FILES = [  # (kind, file name, content, shown): the file is rendered (True) or listed as a problem (False)
    ("compare", "long.json", saved_result("compare", "n" * 300), True),
    ("compare", "nul.json", saved_result("compare", "a\0b"), True),
    ("compare", "newline.json", saved_result("compare", "a\nb\r\x1b[31m"), True),
    ("compare", "slash.json", saved_result("compare", "../../../etc/x"), True),
    ("compare", "surrogate-name.json", saved_result("compare", "a\ud800b"), False),
    ("compare", "number-name.json", saved_result("compare", 12), False),
    ("compare", "no-name.json", {k: v for k, v in saved_result("compare", "x").items() if k != "name"}, False),
    ("compare", "wrong-kind.json", saved_result("ablate", "x"), False),
    ("compare", "list.json", "[1, 2]", False),
    ("compare", "truncated.json", json.dumps(saved_result("compare", "t"), indent=1)[:500], False),
    ("compare", "empty.json", "", False),
    ("compare", "latin1.json", b'{"kind": "compare", "name": "\xe9"}', False),
    ("compare", "nested.json", "[" * 100_000 + "]" * 100_000, False),
    ("compare", "digits.json", '{"kind": "compare", "name": "d", "result": {"seed": ' + "9" * 5000 + "}}", False),
    ("compare", "a\nb.json", saved_result("compare", "newline-file"), True),
    ("compare", b"\xff\xfe.json", saved_result("compare", "undecodable-file"), True),
    ("compare", "surrogate-text.json", saved_result("compare", "s") | {"result": {"groups": [{"name": "\udcff\ud800"}]}}, False),
    ("ablate", "mrr-text.json", saved_result("ablate", "m", saved_result("ablate", "")["result"] | {"intact_mrr": "high"}), False),
    ("ablate", "curve-nulls.json", saved_result("ablate", "c", saved_result("ablate", "")["result"] | {"curve": [None]}), False),
    ("anatomy", "runs-text.json", saved_result("anatomy", "r", {"runs": "lora"}), False),
    ("attribute", "tokens-list.json", saved_result("attribute", "t", saved_result("attribute", "")["result"] | {"query_tokens": [[1]]}), False),
    ("attn-diff", "example-list.json", saved_result("attn-diff", "e", saved_result("attn-diff", "")["result"] | {"example": []}), True),
    ("qualitative", "sets-text.json", saved_result("qualitative", "s", saved_result("qualitative", "")["result"] | {"sets": "all"}), False),
]


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory) -> Path:
    """A runs directory with one good result of each kind (the golden ones) and no runs."""
    runs = tmp_path_factory.mktemp("report-cases") / "runs"
    for kind in GOLDEN_FILES:
        put(runs, kind, "good.json", saved_result(kind, f"good-{kind}"))
    return runs


@pytest.fixture(scope="module")
def hostile_site(good_runs, tmp_path_factory):
    """The good results and every HOSTILE_FILES file in one runs directory, rendered once: (site, pages)."""
    runs = tmp_path_factory.mktemp("report-hostile") / "runs"
    shutil.copytree(good_runs, runs)
    for kind, file, content, _ in HOSTILE_FILES:
        put(runs, kind, file, content)
    os.mkfifo(runs / "analyses" / "compare" / "fifo.json")  # never written to: reading it would wait for ever
    (runs / "analyses" / "compare" / "folder.json").mkdir()
    return rendered(runs)


@pytest.mark.parametrize("file", ["fifo.json", "folder.json"])
def test_a_result_that_is_not_a_file_is_listed(hostile_site, file):
    site, _ = hostile_site
    assert sum(f"/compare/{file}: cannot be read" in p for p in site.problems) == 1, site.problems


def test_the_good_results_render_beside_hostile_ones(hostile_site):
    site, pages = hostile_site
    for k in GOLDEN_FILES:  # every good result still has its page and its line on the index
        assert any(s["name"] == f"good-{k}" for s in site.analyses[k]) and f"{k}/good-{k}.html" in pages
        assert f'href="{k}/good-{k}.html"' in pages["index.html"]
    for path, text in pages.items():
        assert "\0" not in path and len(path.split("/")[-1].encode()) <= 200, path
        text.encode("utf-8")  # writable as UTF-8
    assert all(p.isprintable() for p in site.problems), site.problems  # one line each, nothing a terminal obeys


@pytest.mark.parametrize("kind, file, content, shown", HOSTILE_FILES, ids=[repr(c[1])[:40] for c in HOSTILE_FILES])
def test_a_hostile_or_damaged_result_is_rendered_or_listed(hostile_site, kind, file, content, shown):
    site, pages = hostile_site
    shown_name = repr(os.fsdecode(file))[1:-1]  # as the problem line writes a file name: escapes for \n, \xff
    listed = [p for p in site.problems if p.split(":")[0].endswith(f"/analyses/{kind}/{shown_name}")]
    rendered_names = [s["name"] for s in site.analyses[kind]]
    if shown:
        assert not listed and content["name"] in rendered_names, site.problems
        page = f"{kind}/{file_name(content['name'])}.html"
        assert page in pages and f'href="{quote(page)}"' in pages["index.html"]
    else:
        assert len(listed) == 1, (shown_name, site.problems)
        assert str(escape(listed[0])) in pages["index.html"]


def test_two_names_for_one_page_keep_both_results_apart(good_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(good_runs, runs)
    put(runs, "compare", "one.json", saved_result("compare", "a/b"))
    put(runs, "compare", "two.json", saved_result("compare", "a_b"))
    site, pages = rendered(runs)
    assert len(site.analyses["compare"]) == 2 and "compare/a_b.html" in pages
    assert len(site.problems) == 1 and "two.json" in site.problems[0] and "another result's" in site.problems[0]


def test_a_result_of_any_shape_is_rendered_or_listed(tmp_path):
    """Every field of each kind's good result replaced by values of the wrong type (all at once, one type at
    a time), and an empty result: each is rendered or listed, and the report is made."""
    runs = tmp_path / "runs"
    for kind in GOLDEN_FILES:
        good = saved_result(kind, "")["result"]
        for i, value in enumerate([None, "x", -1, [], {}, [None], float("nan")]):
            put(runs, kind, f"bad{i}.json", saved_result(kind, f"bad{i}", {key: value for key in good}))
        put(runs, kind, "empty.json", saved_result(kind, "empty", {}))
    site, pages = rendered(runs)
    for kind in GOLDEN_FILES:
        listed = [p for p in site.problems if f"/analyses/{kind}/" in p]
        assert len(site.analyses[kind]) + len(listed) == 8, (kind, site.problems)
    assert all("cannot render" in p for p in site.problems), site.problems


def test_damaged_runs_and_studies_are_listed(tmp_path, good_runs):
    runs = tmp_path / "runs"
    shutil.copytree(good_runs, runs)
    for name, manifest in {"m-text": {"method": "lora"}, "m-metrics": {"method": {"method": "lora"}, "metrics": {"test_mrr": "high"}},
                           "m-list": [1], "m-data": {"method": {"method": "lora"}, "data": {"test": 3}}}.items():
        (runs / name).mkdir()
        (runs / name / "manifest.json").write_text(json.dumps(manifest))
    (runs / "curves").mkdir()
    (runs / "curves" / "manifest.json").write_text(json.dumps({"method": {"method": "lora"}, "train": {}, "base": {}, "data": {}}))
    (runs / "curves" / "curves.json").write_text("[1, 2]")
    (runs / "curves" / "adapter_model.safetensors").write_bytes((12).to_bytes(8, "little") + b'{"a": [1, 2]}')
    (runs / "study" / "grid").mkdir(parents=True)
    (runs / "study" / "grid" / "tables.json").write_text(json.dumps({"kind": "study", "tables": [{"rows": 3}], "grid": ["x"]}))
    site, pages = rendered(runs)
    assert [r.name for r in site.runs] == ["curves"] and "runs/curves.html" in pages, site.problems
    for needle in ("m-text", "m-metrics", "m-list", "m-data", "curves.json", "adapter_model.safetensors", "tables.json"):
        assert sum(needle in p for p in site.problems) == 1, (needle, site.problems)


def test_the_command_renders_the_rest_and_warns_one_line_each(good_runs, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(good_runs, runs)
    put(runs, "compare", "a\nb.json", "{")
    put(runs, "attribute", "nul.json", saved_result("attribute", "x\0y"))
    put(runs, "ablate", "long.json", saved_result("ablate", "n" * 300))
    result = invoke(["report", "--runs-dir", runs, "--out", tmp_path / "site"])
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped ") and "a\\nb.json" in warnings[0], result.stderr
    pages = {p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("*.html")}
    assert "attribute/x_y.html" in pages and any(p.startswith("ablate/nnnn") and len(p) < 200 for p in pages)
    assert "a\\nb.json" in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_a_full_disk_keeps_the_previous_site_and_says_so(good_runs, tmp_path, monkeypatch):
    import errno

    runs = tmp_path / "runs"
    shutil.copytree(good_runs, runs)
    assert invoke(["report", "--runs-dir", runs]).exit_code == 0
    before = snapshot(tmp_path)

    def full(folder):
        folder.mkdir(parents=True)
        (folder / "plotly.min.js").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("reports.site.write_assets", full)
    check_refused(["report", "--runs-dir", runs], ["No space left on device", "report", "kept"], watched=tmp_path)
    assert snapshot(tmp_path) == before


def test_an_interrupted_writes_temporary_directory_is_no_run(cli_world, tmp_path):
    """A kill during a run's directory swap leaves `.NAME.XXXX.tmp/` with a manifest: never a run on the site."""
    runs = tmp_path / "runs"
    shutil.copytree(cli_world.runs, runs)
    shutil.copytree(runs / "lora", runs / ".lora.k2j4.tmp")
    site, pages = rendered(runs)
    assert [r.name for r in site.runs] == ["adapter", "lora"], site.problems
    assert not any(".lora" in page for page in pages) and not site.problems


def test_damaged_rows_beside_a_study_grid_are_left_out(tmp_path):
    """A study's rows beside the grid (zero-shot base, imported runs) that are not rows are left out; the rest render."""
    runs = tmp_path / "runs"
    (runs / "study" / "g").mkdir(parents=True)
    study = {"kind": "study", "grid": "g", "scale": "demo", "seeds": [1], "base": {"name": "b"}, "data": {"fingerprint": "f" * 64},
             "train": {}, "tables": [],
             "beside": [{"name": ["x"]}, "row", {"name": "ok-run", "kind": "imported", "test": 3, "test_mrr": "high", "same_test": True,
                                                 "same_base": True}],
             "unscored": [1, "later-run"]}
    (runs / "study" / "g" / "tables.json").write_text(json.dumps(study))
    site, pages = rendered(runs)
    assert site.problems == []
    page = " ".join(pages["study/g.html"].split())
    assert "<td>ok-run</td><td>imported</td>" in page and "later-run" in page and "['x']" not in page
