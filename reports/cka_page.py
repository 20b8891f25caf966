"""The page of a CKA result (interp/analyses/cka.py): per side a layers x layers heatmap and the diagonal as a curve.

Reads the saved JSON only. Cells without a value (a layer that does not vary, e.g. the embeddings'
[CLS] state) are None in the result and show grey, never as a number.
"""

from __future__ import annotations

from reports import figures
from reports.pages import Page, file_name

BLANK = "#d0d0d0"  # behind the heatmap: where CKA is undefined (None)
MARKED = "CKA across below seed to seed (q ≤ alpha)"


def summary(r: dict) -> str:
    """The index's line: per side the layer where the two sides' representations differ most."""
    names = r.get("layer_names", [])
    parts = []
    for side in r.get("sides", []):
        cells = [(v, k) for k, v in enumerate(r["stats"][side]["diagonal"]) if v is not None]
        if not cells:
            parts.append(f"{side}: no layer defined")
            continue
        value, layer = min(cells)
        parts.append(f"{side} lowest {value:.3f} at layer {names[layer] if layer < len(names) else layer}")
    return f"{r.get('a')} vs {r.get('b')}, {r.get('examples')} examples ({r.get('tokens')}, {r.get('estimator')}): " + "; ".join(parts)


def _within_band(r: dict, side: str) -> tuple[list, list] | None:
    """Per layer the lowest and highest seed-to-seed CKA (pairs of runs of one side), or None without seeds."""
    runs_a, runs_b = set(r.get("runs_a", [])), set(r.get("runs_b", []))
    rows = []
    for pair, values in r["stats"][side].get("pair_cka", {}).items():
        x, y = pair.split(" | ")
        if {x, y} <= runs_a or {x, y} <= runs_b:
            rows.append(values)
    if not rows:
        return None
    columns = list(zip(*rows))
    low = [None if any(v is None for v in c) else min(c) for c in columns]
    high = [None if any(v is None for v in c) else max(c) for c in columns]
    return low, high


def cka_page(saved: dict) -> Page:
    r, name = saved["result"], saved["name"]
    names = r["layer_names"]
    null = r.get("seed_null")
    first_a, first_b = r["matrix_runs"]
    sides = []
    for side in r["sides"]:
        stats = r["stats"][side]
        heatmap = figures.heatmaps({f"{side}: CKA, layer of {first_a} (rows) x layer of {first_b} (columns)": stats["matrix"]},
                                   diverging=set(), div_id=f"{side}-matrix", x_title=f"layer of {first_b}",
                                   y_title=f"layer of {first_a}", x_labels=names, y_labels=names, blank=BLANK,
                                   height=220 + 26 * len(names))
        null_side = (null or {}).get("sides", {}).get(side)
        series = {"CKA across (A vs B, the diagonal)": stats["diagonal"]}
        bands, marks = {}, {}
        if null_side:
            series["seed to seed (mean)"] = null_side["within"]
            band = _within_band(r, side)
            if band:
                bands["seed to seed (lowest to highest pair)"] = band
            marks["CKA across (A vs B, the diagonal)"] = null_side["marked"]
        curve = figures.lines(names, series, title=f"{side}: CKA at the same layer", xaxis="layer", yaxis="CKA",
                              div_id=f"{side}-diagonal", bands=bands, marks=marks, mark_text=MARKED)
        sides.append({"name": side, "stats": stats, "heatmap": heatmap, "curve": curve,
                      "marked": [names[k] for k in (null_side or {}).get("marked", [])],
                      "constant": sorted({names[k] for k in stats["constant_a"] + stats["constant_b"]})})
    ctx = {"title": f"CKA {r['a']} vs {r['b']}", "root": "../", "crumbs": ["cka", name], "plots": True, "r": r,
           "data": (saved.get("inputs") or {}).get("data", {}).get("file", ""), "sides": sides, "null": null}
    return f"cka/{file_name(name)}.html", "cka.html", ctx
