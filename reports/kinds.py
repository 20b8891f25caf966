"""One table of the analysis kinds the report knows: one entry per kind, read by collect, the site and the index.

Each entry says, in one place: the kind (the folder under runs/analyses/ and of its pages), the pages
a saved result makes, the one-line summary the index shows, the command that makes one (the index's
empty-state hint), and what the run pages take from it (checked when the result's pages are made).
Adding an analysis to the report is one entry here, its page builder and its template.

Torch-free, like all of reports/: it reads the saved JSON only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reports import analysis_pages, cka_page
from reports.pages import Page, ablation_plot, anatomy_run_plot


@dataclass(frozen=True)
class Kind:
    kind: str  # runs/analyses/<kind>/*.json, and the folder of its pages in the site
    pages: Callable[[dict], list[Page]]  # a saved result -> its pages
    summary: Callable[[dict], str]  # a result -> the index's one line
    command: str  # how to make one: the index's hint when there is none
    run_pages: Callable[[dict], None] = lambda result: None  # what run pages draw from it, made once to check it


def _one(make: Callable[[dict], Page]) -> Callable[[dict], list[Page]]:
    return lambda saved: [make(saved)]


def _attn_diff(r: dict) -> str:
    return f"{r.get('a')} vs {r.get('b')}, {r.get('examples')} examples, {', '.join(r.get('sides', []))}"


def _ablate(r: dict) -> str:
    return f"{r.get('run')}: intact MRR {100 * r.get('intact_mrr', 0):.2f}, base {100 * r.get('base_mrr', 0):.2f}"


def _anatomy(r: dict) -> str:
    return ", ".join(run.get("name", "?") for run in r.get("runs", []))


def _attribute(r: dict) -> str:
    return f"{r.get('run')}{' − ' + r['baseline'] if r.get('baseline') else ''} on example {r.get('example')}"


def _qualitative(r: dict) -> str:
    return f"{', '.join(r.get('runs', []))}: " + ", ".join(f"{s['name']} {s['count']}" for s in r.get("sets", []))


def _compare(r: dict) -> str:
    return f"{', '.join(g['name'] for g in r.get('groups', []))} on {r.get('examples')} examples"


def _anatomy_runs(r: dict) -> None:
    for entry in r.get("runs", []):
        anatomy_run_plot(entry, "check")


KINDS: dict[str, Kind] = {k.kind: k for k in (
    Kind("attn-diff", analysis_pages.attn_diff_pages, _attn_diff, "interp attn-diff RUN_A RUN_B"),
    Kind("ablate", _one(analysis_pages.ablate_page), _ablate, "interp ablate RUN --sweep",
         run_pages=lambda r: ablation_plot(r, "check")),
    Kind("anatomy", _one(analysis_pages.anatomy_page), _anatomy, "interp anatomy RUN_A RUN_B", run_pages=_anatomy_runs),
    Kind("attribute", _one(analysis_pages.attribute_page), _attribute, "interp attribute RUN"),
    Kind("qualitative", _one(analysis_pages.qualitative_page), _qualitative, "interp qualitative --runs A,B,C"),
    Kind("compare", _one(analysis_pages.compare_page), _compare, "interp compare A B"),
    Kind("cka", _one(cka_page.cka_page), cka_page.summary, "interp cka RUN_A RUN_B"),
)}
