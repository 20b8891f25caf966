"""Render the report: every page through Jinja2 templates (autoescaped), assets beside them.

The site is built in a temporary directory next to OUT and swapped into place only when it is
complete (records.io.atomic_dir), so a half-written site is never
visible and a failed build leaves the previous one intact. Same inputs, same bytes: pages are
rendered in sorted order, plot ids are fixed, and nothing records the time of the build.

    OUT/index.html, OUT/runs/NAME.html, OUT/study/GRID.html, OUT/<analysis kind>/NAME.html,
    OUT/attn-diff/NAME.{a,b}.{query,code}.html (bertviz), OUT/assets/ (plotly, d3, jQuery, CSS)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape

from reports import pages
from records.io import atomic_dir
from reports.collect import Site, collect, group_runs, printable
from reports.kinds import KINDS


@dataclass(frozen=True)
class Report:
    index: Path
    pages: int
    problems: list[str]


def build_report(*, runs_dir: Path, out: Path | None = None) -> Report:
    """Render everything under `runs_dir` into `out` (default RUNS_DIR/report); returns its index."""
    out = Path(out) if out is not None else Path(runs_dir) / "report"
    site = collect(Path(runs_dir))
    rendered = render(site)
    with atomic_dir(out) as tmp:
        write_assets(tmp / "assets")
        for path, text in sorted(rendered.items()):
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    return Report(index=out / "index.html", pages=len(rendered), problems=site.problems)


# What a saved result of another shape than the pages expect raises while its pages are made:
# missing fields, a list where an object was, text where a number was, a template's undefined.
DAMAGED = (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError, jinja2.TemplateError)


def render(site: Site) -> dict[str, str]:
    """Every page's path and HTML. Analyses, studies and runs first, each on its own: one that cannot
    be rendered is dropped and listed in `site.problems` before the index and the run pages link to it."""
    env = environment()
    done: dict[str, str] = {}

    def attempt(make, source: str) -> bool:
        try:
            texts = {path: _render(env, template, context, site) for path, template, context in make()}
            for path, text in texts.items():  # lone surrogates ("\ud800" in the JSON) cannot be written as UTF-8
                path.encode("utf-8"), text.encode("utf-8")
        except DAMAGED as exc:
            site.problems.append(f"{source}: cannot render ({type(exc).__name__}: {printable(str(exc))[:300]})")
            return False
        clash = sorted(set(texts) & set(done))
        if clash:
            site.problems.append(f"{source}: not rendered: its page {printable(clash[0])} is another result's "
                                 "(two names that differ only in characters a file name cannot hold)")
            return False
        done.update(texts)
        return True

    for kind, results in site.analyses.items():
        site.analyses[kind] = [saved for saved in results if attempt(
            lambda: _analysis_pages(kind, saved), printable(str(site.sources.get(id(saved), saved["name"]))))]
    site.studies = [study for study in site.studies if attempt(
        lambda: [pages.study_page(study)], printable(str(site.sources.get(id(study), study.get("grid")))))]
    site.runs = [run for run in site.runs if attempt(
        lambda: [pages.run_page(run, site)], printable(str(site.runs_dir / run.name / "manifest.json")))]
    site.groups = group_runs(site.runs)
    path, template, context = pages.index_page(site, KINDS)
    done[path] = _render(env, template, context, site)
    return done


def _analysis_pages(kind: str, saved: dict) -> list[pages.Page]:
    """A result's own pages, and a dry run of what the index and the run pages take from it."""
    entry = KINDS[kind]
    made = entry.pages(saved)
    entry.summary(saved["result"])
    entry.run_pages(saved["result"])
    return made


def _render(env: jinja2.Environment, template: str, context: dict, site: Site) -> str:
    known = {run.name for run in site.runs}
    root = context["root"]

    def run_link(name: str) -> Markup:
        if name in known:
            return Markup('<a href="{}runs/{}.html">{}</a>').format(root, quote(pages.file_name(name)), name)
        return escape(name)

    return env.get_template(template).render(context, run_link=run_link, runs_dir=str(site.runs_dir))


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pct=pct, percent=percent, thousands=thousands, mean_std=mean_std, mean_only=mean_only,
                       num=num, pvalue=pvalue, plain=plain)
    return env


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pct(value) -> str:
    """An MRR or another fraction in percent, as the study writes MRR: 43.08."""
    return f"{100 * value:.2f}" if _finite(value) else "—"


def percent(value) -> str:
    return f"{100 * value:.2f}%" if _finite(value) else "—"


def thousands(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else ("—" if value in (None, "") else str(value))


def mean_std(summary) -> str:
    if not isinstance(summary, dict) or not _finite(summary.get("mean")):
        return "—"
    return pct(summary["mean"]) + (f" ± {pct(summary['std'])}" if _finite(summary.get("std")) else "")


def mean_only(summary) -> str:
    if not isinstance(summary, dict) or not _finite(summary.get("mean")):
        return "—"
    return f"{summary['mean']:.0f}" if summary.get("n", 1) == 1 or summary["mean"] == int(summary["mean"]) else f"{summary['mean']:.1f}"


def num(value) -> str:
    return f"{value:.4g}" if _finite(value) else ("—" if value is None else str(value))


def pvalue(value) -> str:
    if not _finite(value):
        return "—"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def plain(value) -> str:
    """A config value in one line; the parts of a union as one bracketed group each."""
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, dict) for v in value):
            return " + ".join(f"[{plain(v)}]" for v in value)
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in sorted(value.items()))
    return "—" if value is None else str(value)


def write_assets(folder: Path) -> None:
    """plotly.js, d3 and jQuery (XStatic packages), bertviz's offline loader and the style sheet."""
    import plotly.offline
    import xstatic.pkg.d3
    import xstatic.pkg.jquery

    folder.mkdir(parents=True)
    (folder / "plotly.min.js").write_text(plotly.offline.get_plotlyjs(), encoding="utf-8")
    (folder / "d3.js").write_bytes((Path(xstatic.pkg.d3.BASE_DIR) / "d3.js").read_bytes())
    (folder / "jquery.min.js").write_bytes((Path(xstatic.pkg.jquery.BASE_DIR) / "jquery.min.js").read_bytes())
    static = resources.files("reports").joinpath("static")
    for name in ("bertviz-offline.js", "style.css"):
        (folder / name).write_bytes(static.joinpath(name).read_bytes())
