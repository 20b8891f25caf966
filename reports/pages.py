"""What each page shows: plain data from `collect` turned into template contexts and figures.

Every function returns (relative path, template name, context). Paths are relative to the
site's root; `root` in a context leads back to it ("" or "../").
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote

from records.layers import layer_span
from reports import figures

# Runs and sites are reports.collect's `Run` and `Site`, and kinds reports.kinds' `Kind`; not imported here, not even
# for their types: collect reads the kinds' table, whose page builders read this module (no import cycle).
Site = Run = Kind = Any

Page = tuple[str, str, dict]


MAX_NAME_BYTES = 160  # of a page's name: room for '.a.query.html' within a file system's 255


def file_name(name: str) -> str:
    """A result or run name as one path segment (names are file names already; keep them so).

    Separators and characters a file name cannot or should not hold (NUL, newlines, other control
    characters, lone surrogates) become '_'; a name too long for a file system is cut and given a
    short hash of the whole name, so that two long names stay two pages.
    """
    safe = "".join("_" if c in "/\\" or not c.isprintable() else c for c in str(name))
    if len(safe.encode("utf-8")) > MAX_NAME_BYTES:
        digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = safe.encode("utf-8")[: MAX_NAME_BYTES - 13].decode("utf-8", "ignore") + "-" + digest
    return safe


def href(kind: str, name: str) -> str:
    return f"{kind}/{quote(file_name(name))}.html"


def study_reference() -> dict:
    return json.loads(resources.files("reports").joinpath("data/study_results.json").read_text(encoding="utf-8"))


def _mean_std_pct(pair: list[float]) -> str:
    return f"{pair[0]:.2f} ± {pair[1]:.2f}"


def index_page(site: Site, kinds: Mapping[str, Kind]) -> Page:
    """The index: runs, groups, the study, and per analysis kind (`kinds`, reports.kinds.KINDS) its results or how to make one."""
    study = study_reference()
    tables: dict[str, list[dict]] = defaultdict(list)
    study_series: dict[str, list[dict]] = defaultdict(list)
    for run in study["runs"]:
        if "valid" in run:
            row = dict(run, valid=_mean_std_pct(run["valid"]), test=_mean_std_pct(run["test"]))
            study_series[run["method"]].append({"x": run["trainable"], "mean": run["test"][0], "std": run["test"][1], "name": run["name"]})
        else:
            row = dict(run, valid="—", test=f"best {run['test_best']:.2f} ({run.get('note', '')})", seeds="")
        tables[run["table"]].append(row)
    series: dict[str, list[dict]] = defaultdict(list)
    for g in site.groups:
        if g.trainable and g.test["mean"] is not None:
            std = None if g.test["std"] is None else 100 * g.test["std"]
            series[g.group].append({"x": g.trainable, "mean": 100 * g.test["mean"], "std": std, "name": g.label})
    analyses = [(kind, [{"name": s["name"], "href": href(kind, s["name"]), "summary": kinds[kind].summary(s["result"])}
                        for s in results]) for kind, results in site.analyses.items()]
    return "index.html", "index.html", {
        "title": "Runs and analyses", "root": "", "crumbs": [], "plots": True,
        "groups": site.groups, "zero_shot": site.zero_shot, "problems": site.problems, "studies": site.studies,
        "budget": figures.budget(series, title="These runs: budget against test MRR", div_id="budget") if series else "",
        "study": study, "study_tables": [{"table": t, "rows": rows} for t, rows in sorted(tables.items())],
        "study_budget": figures.budget(study_series, title="The study (CodeBERT): budget against test MRR (its Fig. 4.3 / 4.4)",
                                       div_id="study-budget"),
        "analyses": analyses, "commands": {kind: k.command for kind, k in kinds.items()},
    }


def run_page(run: Run, site: Site) -> Page:
    m = run.manifest
    layers = sorted({row["layer"] for row in run.modules if row["layer"] is not None})
    kinds = sorted({row["module"] for row in run.modules})
    per_kind = {k: [sum(r["parameters"] for r in run.modules if r["module"] == k and r["layer"] == layer) for layer in layers] for k in kinds}
    module_rows = [{"module": k, "parameters": sum(r["parameters"] for r in run.modules if r["module"] == k),
                    "layers": layer_span([r["layer"] for r in run.modules if r["module"] == k and r["layer"] is not None], sep=", ")} for k in kinds]
    curves = ""
    if run.curves and (run.curves.get("loss") or run.curves.get("valid")):
        curves = figures.curves(run.curves.get("loss", []), run.curves.get("valid", []), div_id="curves",
                                grad_norm=run.curves.get("grad_norm"))
    ablations = [{"name": s["name"], "plot": ablation_plot(s["result"], f"ablate-{i}")}
                 for i, s in enumerate(site.analyses.get("ablate", [])) if s["result"].get("run") == run.name]
    anatomies = [{"name": s["name"], "plot": anatomy_run_plot(entry, f"anatomy-{i}")}
                 for i, s in enumerate(site.analyses.get("anatomy", []))
                 for entry in s["result"].get("runs", []) if entry.get("name") == run.name]
    return f"runs/{file_name(run.name)}.html", "run.html", {
        "title": f"Run {run.name}", "root": "../", "crumbs": ["runs", run.name], "plots": True, "name": run.name, "m": m,
        "curves": curves, "modules": run.modules, "module_rows": module_rows,
        "module_plot": figures.stacked_bars(layers, per_kind, title="trainable parameters per layer", xaxis="layer",
                                            yaxis="parameters", div_id="modules") if layers else "",
        "ablations": ablations, "anatomies": anatomies,
    }


def ablation_plot(r: dict, div_id: str) -> str:
    curve = r.get("curve", [])
    x = [c["layer"] for c in curve]
    series = {"keep only this layer": [c.get("keep_mrr") and 100 * c["keep_mrr"] for c in curve],
              "drop only this layer": [c.get("drop_mrr") and 100 * c["drop_mrr"] for c in curve]}
    return figures.lines(x, series, title=f"{r.get('run')}: MRR with the delta on in one layer, or off in one", xaxis="layer",
                         yaxis="MRR (%)", div_id=div_id,
                         hlines={"intact": 100 * r.get("intact_mrr", 0), "base": 100 * r.get("base_mrr", 0)})


def anatomy_run_plot(entry: dict, div_id: str) -> str:
    matrices = entry.get("matrices", [])
    layers = sorted({m["layer"] for m in matrices})
    modules = sorted({f"{m['module']} ({m['kind']})" for m in matrices})
    grids = {}
    for stat in ("frobenius", "effective_rank"):
        grid = [[None] * len(layers) for _ in modules]
        for m in matrices:
            grid[modules.index(f"{m['module']} ({m['kind']})")][layers.index(m["layer"])] = m.get(stat)
        grids[f"{entry.get('name')}: {stat.replace('_', ' ')}"] = grid
    return figures.heatmaps(grids, diverging=set(), div_id=div_id, x_title="layer", y_title="matrix",
                            x_labels=layers, y_labels=modules, height=160 + 28 * len(modules))


def study_page(study: dict) -> Page:
    beside, unscored = study.get("beside"), study.get("unscored")  # rows beside the grid (interp.study.tables.beside_grid)
    beside = [r | {"test": r["test"] if isinstance(r.get("test"), dict) else {}} for r in beside
              if isinstance(r, dict) and isinstance(r.get("name"), str)] if isinstance(beside, list) else []
    unscored = [name for name in unscored if isinstance(name, str)] if isinstance(unscored, list) else []
    return f"study/{file_name(study['grid'])}.html", "study.html", {
        "title": f"Study grid {study['grid']}", "root": "../", "crumbs": ["study", study["grid"]], "plots": False,
        "s": study | {"beside": beside, "unscored": unscored},
    }

