"""Pages of the analyses: attn-diff (with bertviz pages), attribution, qualitative, compare,
ablation and anatomy. Each takes one saved result ({"kind", "name", "inputs", "result", ...}).
"""

from __future__ import annotations

import math
from urllib.parse import quote

from reports import figures
from reports.bertviz_views import attention_data, views
from reports.pages import Page, ablation_plot, anatomy_run_plot, file_name

GRIDS = (("total_variation", "total variation"), ("js_divergence", "Jensen-Shannon"),
         ("signed_content_difference", "signed content difference"),
         ("mean_abs_difference", "mean |difference| per token (length-dependent, older result)"))
NULL_GRIDS = (("between", "TV between configurations"), ("within", "TV seed to seed"), ("excess", "between − within"))
MARKED = "changed beyond seed noise"
NO_NULL = "no seed-noise null: each side is one run"
RUN_LETTERS = ("a", "b")


def _base(saved: dict, kind: str, title: str) -> dict:
    return {"title": title, "root": "../", "crumbs": [kind, saved["name"]], "plots": True, "r": saved["result"],
            "data": (saved.get("inputs") or {}).get("data", {}).get("file", "")}


def attn_diff_pages(saved: dict) -> list[Page]:
    r, name = saved["result"], saved["name"]
    ctx = _base(saved, "attn-diff", f"attn-diff {r['a']} vs {r['b']}")
    null = r.get("seed_null")
    ctx["null"] = null
    ctx["null_note"] = r.get("null_note") or (None if null else NO_NULL)
    sides = []
    for side in r.get("sides", []):
        stats = r["stats"][side]
        null_side = (null or {}).get("sides", {}).get(side)
        marked = [(h["layer"] - 1, h["head"] - 1) for h in (null_side or {}).get("marked", [])]
        grids = {title: stats[key] for key, title in GRIDS if key in stats}
        entropy = {f"entropy of {r['a']} (bits)": stats["entropy_a"], f"entropy of {r['b']} (bits)": stats["entropy_b"],
                   "entropy change B − A": stats["entropy_change"]}
        sides.append({
            "name": side, "mean_tv": stats.get("mean_total_variation"), "mean_js": stats.get("mean_js_divergence"),
            "heatmaps": figures.heatmaps(grids, diverging={"signed content difference"}, div_id=f"{side}-grids",
                                         marks={"total variation": marked}, mark_text=MARKED),
            "entropy": figures.heatmaps(entropy, diverging={"entropy change B − A"}, div_id=f"{side}-entropy"),
            "tokens": _token_bars(r, side),
            "null": _null_side(null_side, marked, side) if null_side else None,
        })
    ctx["sides"] = sides
    pages: list[Page] = []
    example = r.get("example")
    if example:
        ex_sides = []
        for side, data in example["sides"].items():
            shown = len(data["full_a"][0][0]) if data.get("full_a") else 0
            side_views = []
            for letter in RUN_LETTERS:
                path = f"attn-diff/{file_name(name)}.{letter}.{side}.html"
                side_views.append({"run": _example_run(r, letter), "which": f"side {letter.upper()}",
                                   "href": quote(path.split("/", 1)[1])})
                pages.append(bertviz_page(saved, side, letter, path, data, shown))
            ex_sides.append({
                "name": side, "views": side_views, "shown": shown, "full_tokens": data.get("full_tokens", shown),
                "cropped": data.get("full_tokens", shown) > shown, "tv": data.get("mean_total_variation"),
                "plot": figures.token_heatmap(data["difference"], data["tokens"],
                                              title=f"[CLS] attention B − A at layer {example['layer']}, heads x tokens (Fig. 7.1 / 7.2)",
                                              div_id=f"example-{side}"),
            })
        ctx["example"] = dict(example, sides=ex_sides, runs=[_example_run(r, letter) for letter in RUN_LETTERS])
    pages.insert(0, (f"attn-diff/{file_name(name)}.html", "attn_diff.html", ctx))
    return pages


def _example_run(r: dict, letter: str) -> str:
    """The run whose attention the example shows for side `letter` (the first of a seed group)."""
    runs = r.get("example", {}).get("runs")
    return runs[RUN_LETTERS.index(letter)] if runs else r[letter]


def _token_bars(r: dict, side: str) -> str:
    tokens = r.get("tokens", {}).get(side, [])
    if not tokens:
        return ""
    if "mean_relative_change" in tokens[0]:
        bars = {"mean |change| x length": [t["mean_relative_change"] for t in tokens],
                "mean signed change x length": [t["mean_relative_signed_change"] for t in tokens]}
        yaxis = "change in units of uniform attention 1/length"
    else:  # an older result: raw changes, which favour short sequences
        bars = {"mean |change|": [t["mean_abs_change"] for t in tokens], "mean signed change": [t["mean_signed_change"] for t in tokens]}
        yaxis = "attention"
    return figures.grouped_bars([t["token"] for t in tokens], bars, yaxis=yaxis, div_id=f"{side}-tokens",
                                title=f"tokens whose [CLS] attention changed most at layer {r.get('token_layer')}")


def _null_side(null_side: dict, marked: list[tuple[int, int]], side: str) -> dict:
    grids = {title: null_side[key] for key, title in NULL_GRIDS}
    return {
        "plot": figures.heatmaps(grids, diverging={"between − within"}, div_id=f"{side}-null",
                                 marks={title: marked for title in grids}, mark_text=MARKED),
        "marked": null_side["marked"],
    }


def bertviz_page(saved: dict, side: str, letter: str, path: str, data: dict, shown: int) -> Page:
    r = saved["result"]
    full = data[f"full_{letter}"]
    data_id = f"attention-{letter}-{side}"
    run = _example_run(r, letter)
    return path, "bertviz.html", {
        "title": f"bertviz: {run} on example {r['example']['idx']} ({side})", "root": "../", "plots": False,
        "crumbs": ["attn-diff", saved["name"], f"{run} {side}"], "run": run, "idx": r["example"]["idx"],
        "side": side, "cropped": data.get("full_tokens", shown) > shown, "shown": shown, "full_tokens": data.get("full_tokens", shown),
        "data_id": data_id, "data_json": attention_data(full, data["tokens"][:shown]),
        "views": views(data_id, layers=len(full), heads=len(full[0]), prefix=f"bertviz-{letter}-{side}"),
    }


def _shade(value: float, largest: float) -> str:
    if not largest or not math.isfinite(value):
        return "transparent"
    alpha = min(1.0, abs(value) / largest) * 0.75
    return f"rgba(214,39,40,{alpha:.3f})" if value > 0 else f"rgba(31,119,180,{alpha:.3f})"


def attribute_page(saved: dict) -> Page:
    r = saved["result"]
    ctx = _base(saved, "attribute", f"attribution: {saved['name']}")
    ctx["plots"] = False
    sides = []
    for key, title in (("query_tokens", "query tokens"), ("code_tokens", "code tokens")):
        tokens = r.get(key, [])
        largest = max((abs(t["attribution"]) for t in tokens if not t.get("special")), default=0.0)
        sides.append({"name": title, "tokens": [dict(t, color=_shade(t["attribution"], largest)) for t in tokens]})
    ctx["sides"] = sides
    reference = r.get("reference", "pad")  # results written before the reference was a choice used pad
    ctx["reference"] = reference
    ctx["reference_text"] = {
        "pad": "every non-special token replaced by the pad token (not a neutral point: a pad-only pair usually scores above "
               "the real one, a pad-only code far below the query's mean over other codes)",
        "others": {"joint": "unrelated pairs of the split (the query of one other example, the code of another); the "
                            "attributions are averaged over one path from each",
                   "sides": "for the query side, other queries with this code; for the code side, other codes with this "
                            "query (the competitors a rank counts); averaged over one path from each"}.get(r.get("mode"), ""),
    }.get(reference, reference)
    ctx["paths"] = [dict(p, change=p["score"] - p["reference_score"], uncut_score=p.get("uncut_score"),
                         count=len(p.get("reference_scores") or [None]),
                         low=min(p.get("reference_scores") or [p["reference_score"]]),
                         high=max(p.get("reference_scores") or [p["reference_score"]])) for p in r.get("paths", [])]
    return f"attribute/{file_name(saved['name'])}.html", "attribute.html", ctx


def qualitative_page(saved: dict) -> Page:
    r = saved["result"]
    ctx = _base(saved, "qualitative", f"qualitative: {saved['name']}")
    sets = [s for s in r.get("sets", []) if s.get("stats")]
    attributes = sorted({a for s in sets for a in s["stats"]})
    ctx["means"] = figures.grouped_bars(
        attributes, {s["name"]: [s["stats"].get(a, {}).get("mean") for a in attributes] for s in sets},
        title="mean of each attribute per set (the study's Fig. 5.1)", yaxis="mean", div_id="set-means") if sets else ""
    tests = r.get("tests", [])
    pairs = sorted({f"{t['a']} vs {t['b']}" for t in tests})
    attrs = sorted({t["attribute"] for t in tests})
    p = {(f"{t['a']} vs {t['b']}", t["attribute"]): t["test"].get("p") for t in tests}
    ctx["pvalues"] = figures.grouped_bars(
        attrs, {pair: [-math.log10(max(p[(pair, a)], 1e-300)) if p.get((pair, a)) is not None else None for a in attrs] for pair in pairs},
        title="−log10 p of each Mann-Whitney test, unadjusted (the study's Fig. 5.2)", yaxis="−log10 p", div_id="pvalues",
        hline=-math.log10(0.05), hline_text="p = 0.05") if tests else ""
    return f"qualitative/{file_name(saved['name'])}.html", "qualitative.html", ctx


def compare_page(saved: dict) -> Page:
    ctx = _base(saved, "compare", f"compare: {saved['name']}")
    ctx["plots"] = False
    ctx["stale"] = any("test" not in p for p in saved["result"].get("pairs", []))  # before the headline test was of the mean
    return f"compare/{file_name(saved['name'])}.html", "compare.html", ctx


def ablate_page(saved: dict) -> Page:
    ctx = _base(saved, "ablate", f"ablation: {saved['name']}")
    ctx["plot"] = ablation_plot(saved["result"], "ablation")
    return f"ablate/{file_name(saved['name'])}.html", "ablate.html", ctx


def anatomy_page(saved: dict) -> Page:
    r = saved["result"]
    ctx = _base(saved, "anatomy", f"anatomy: {saved['name']}")
    ctx["run_plots"] = [anatomy_run_plot(entry, f"anatomy-{i}") for i, entry in enumerate(r.get("runs", []))]
    overlaps = r.get("overlaps", [])
    ctx["stale"] = any("output" not in o for o in overlaps)  # before the sides were named: adapters' left / right swapped
    sides = ("left", "right") if ctx["stale"] else ("output", "input")
    x = [f"L{o['layer']} {o['module']}" for o in overlaps]
    bars = {}
    for side in sides:
        bars[side] = [o.get(side) for o in overlaps]
        bars[f"{side}, random"] = [o.get(f"{side}_random") for o in overlaps]
    ctx["overlap_plot"] = figures.grouped_bars(x, bars, title=f"top-{r.get('k')} subspace overlap, mean cos²", yaxis="overlap",
                                               div_id="overlaps") if overlaps else ""
    null = r.get("seed_null")
    rows = [o for o in overlaps if o.get("seed_null")]
    ctx["null"], ctx["null_rows"] = null, rows
    ctx["null_plot"] = figures.grouped_bars(
        [f"L{o['layer']} {o['module']}" for o in rows],
        {f"{side} {which}": [o["seed_null"][side][which] for o in rows] for side in ("output", "input") for which in ("between", "within")},
        title="overlap between the configurations against seed to seed (mean cos²)", yaxis="overlap", div_id="seed-null") if rows else ""
    return f"anatomy/{file_name(saved['name'])}.html", "anatomy.html", ctx
