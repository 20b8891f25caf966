"""Plotly figures for the report: each builder `x_figure(...)` returns a `go.Figure`, and `x(..., div_id)`
the HTML fragment (a div and its script) the report's pages embed, made from that same figure.

The plotly.js bundle is not in the fragments: the site ships it once (assets/plotly.min.js).
Div ids are given, so the same inputs give the same bytes. Plotly escapes '<' and '/' in the
JSON it writes, but renders a subset of HTML inside labels ('<b>', '<br>', '<s>' ...), so
every label that comes from data goes through `label()` first and shows as written.

`collected()` hands back the figures themselves: inside it every fragment a page builder makes is
also kept as its `go.Figure` under its div id, so a notebook gets exactly the figures the report
draws for a result (interp.api's `.figures()`), without a copy of the pages' choices.
"""

from __future__ import annotations

import contextlib
import contextvars
import html
import math
from collections.abc import Iterator, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12))


def label(text: object) -> str:
    return html.escape(str(text), quote=False)


def labels(texts: Sequence[object]) -> list[str]:
    return [label(t) for t in texts]


_COLLECTED: contextvars.ContextVar[dict[str, go.Figure] | None] = contextvars.ContextVar("collected", default=None)


def styled(fig: go.Figure, height: int = 380) -> go.Figure:
    """The report's look (LAYOUT) and `height` in pixels, set on `fig`, which is returned."""
    return fig.update_layout(**LAYOUT, height=height)


def fragment(fig: go.Figure, div_id: str, height: int | None = None) -> str:
    """`fig` as a div and its script (no plotly.js); styled first when `height` is given."""
    if height is not None:
        styled(fig, height)
    collected = _COLLECTED.get()
    if collected is not None:
        collected[div_id] = go.Figure(fig)  # a copy: the caller owns it
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


@contextlib.contextmanager
def collected() -> Iterator[dict[str, go.Figure]]:
    """Within the block, every fragment made is also kept here, div id -> its `go.Figure` (in the order made)."""
    figures: dict[str, go.Figure] = {}
    token = _COLLECTED.set(figures)
    try:
        yield figures
    finally:
        _COLLECTED.reset(token)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def budget_figure(series: dict[str, list[dict]], *, title: str) -> go.Figure:
    """MRR against trainable parameters, one line per method group, mean with a +-std band.

    series: group -> [{"x": trainable, "mean": MRR %, "std": std % or None, "name": label}].
    """
    fig = go.Figure()
    for i, (group, points) in enumerate(sorted(series.items())):
        points = sorted(points, key=lambda p: p["x"])
        color = COLORS[i % len(COLORS)]
        banded = [p for p in points if p["std"] is not None]
        if banded:
            xs = [p["x"] for p in banded]
            fig.add_trace(go.Scatter(
                x=xs + xs[::-1], y=[p["mean"] + p["std"] for p in banded] + [p["mean"] - p["std"] for p in banded[::-1]],
                fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0), hoverinfo="skip",
                showlegend=False, legendgroup=group))
        fig.add_trace(go.Scatter(
            x=[p["x"] for p in points], y=[p["mean"] for p in points], mode="lines+markers", name=label(group),
            legendgroup=group, line=dict(color=color), text=labels(p["name"] for p in points),
            customdata=[p["std"] if p["std"] is not None else float("nan") for p in points],
            hovertemplate="%{text}<br>%{x:,} parameters<br>MRR %{y:.2f} ± %{customdata:.2f}<extra></extra>"))
    fig.update_layout(title=label(title), xaxis_title="trainable parameters (log scale)", yaxis_title="test MRR (%)")
    fig.update_xaxes(type="log")
    return styled(fig, 420)


def budget(*args, div_id: str, **kwargs) -> str:
    """`budget_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(budget_figure(*args, **kwargs), div_id)


def curves_figure(loss: list[float], valid: list[dict], *, grad_norm: list[float] | None = None) -> go.Figure:
    """Training loss per step, valid MRR per evaluation (the study's Fig. 7.9), and the gradient norm
    before clipping per step when the run recorded it."""
    titles = ("training loss", "valid MRR (%)") + (("gradient norm before clipping",) if grad_norm else ())
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    steps = list(range(1, len(loss) + 1))
    fig.add_trace(go.Scatter(x=steps, y=loss, mode="lines", name="loss", line=dict(color=COLORS[0])), 1, 1)
    fig.add_trace(go.Scatter(x=[v["step"] for v in valid], y=[100 * v["mrr"] for v in valid], mode="lines+markers",
                             name="valid MRR", line=dict(color=COLORS[1])), 1, 2)
    if grad_norm:
        fig.add_trace(go.Scatter(x=list(range(1, len(grad_norm) + 1)), y=grad_norm, mode="lines", name="gradient norm",
                                 line=dict(color=COLORS[2])), 1, 3)
    fig.update_xaxes(title_text="step")
    fig.update_layout(showlegend=False)
    return styled(fig, 340)


def curves(*args, div_id: str, **kwargs) -> str:
    """`curves_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(curves_figure(*args, **kwargs), div_id)


def stacked_bars_figure(x: Sequence[object], stacks: dict[str, list[float]], *, title: str, xaxis: str,
                        yaxis: str) -> go.Figure:
    fig = go.Figure([go.Bar(x=labels(x), y=values, name=label(name), marker_color=COLORS[i % len(COLORS)])
                     for i, (name, values) in enumerate(stacks.items())])
    fig.update_layout(barmode="stack", title=label(title), xaxis_title=xaxis, yaxis_title=yaxis)
    fig.update_xaxes(type="category")
    return styled(fig, 340)


def stacked_bars(*args, div_id: str, **kwargs) -> str:
    """`stacked_bars_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(stacked_bars_figure(*args, **kwargs), div_id)


def grouped_bars_figure(x: Sequence[object], groups: dict[str, list[float | None]], *, title: str, yaxis: str,
                        hline: float | None = None, hline_text: str = "") -> go.Figure:
    fig = go.Figure([go.Bar(x=labels(x), y=values, name=label(name), marker_color=COLORS[i % len(COLORS)])
                     for i, (name, values) in enumerate(groups.items())])
    fig.update_layout(barmode="group", title=label(title), yaxis_title=yaxis)
    fig.update_xaxes(type="category")
    if hline is not None:
        fig.add_hline(y=hline, line_dash="dash", line_color="#555", annotation_text=label(hline_text))
    return styled(fig, 360)


def grouped_bars(*args, div_id: str, **kwargs) -> str:
    """`grouped_bars_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(grouped_bars_figure(*args, **kwargs), div_id)


def heatmaps_figure(grids: dict[str, list[list[float]]], *, diverging: set[str], x_title: str = "head",
                    y_title: str = "layer", x_labels: Sequence[object] | None = None, y_labels: Sequence[object] | None = None,
                    height: int = 360, marks: dict[str, list[tuple[int, int]]] | None = None, mark_text: str = "marked",
                    blank: str | None = None) -> go.Figure:
    """One heatmap per named grid side by side; rows [y][x], 1-based axes unless labels are given.

    marks: grid name -> 0-based (y, x) cells drawn with an "x" over the heatmap (hover: `mark_text`).
    blank: the colour behind the heatmaps, where cells without a value (None) show; white when not given.
    """
    names = list(grids)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=labels(names), horizontal_spacing=0.12)
    for col, name in enumerate(names, start=1):
        domain = fig.layout["xaxis" if col == 1 else f"xaxis{col}"].domain
        z = grids[name]
        xs = labels(x_labels) if x_labels is not None else [str(i + 1) for i in range(len(z[0]) if z else 0)]
        ys = labels(y_labels) if y_labels is not None else [str(i + 1) for i in range(len(z))]
        bound = max((abs(v) for row in z for v in row if v is not None and math.isfinite(v)), default=1.0) or 1.0
        colorbar = dict(x=domain[1] + 0.008, xanchor="left", len=0.9, thickness=10)
        trace = go.Heatmap(z=z, x=xs, y=ys, colorbar=colorbar, hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.4g}}<extra></extra>",
                           **(dict(colorscale="RdBu", zmid=0, zmin=-bound, zmax=bound, reversescale=True) if name in diverging
                              else dict(colorscale="Viridis")))
        fig.add_trace(trace, 1, col)
        cells = (marks or {}).get(name, [])
        if cells:
            fig.add_trace(go.Scatter(x=[xs[x] for _, x in cells], y=[ys[y] for y, _ in cells], mode="markers", showlegend=False,
                                     marker=dict(symbol="x-thin-open", size=12, color="#000", line=dict(width=2)),
                                     hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: {label(mark_text)}<extra></extra>"), 1, col)
        fig.update_xaxes(title_text=x_title, type="category", row=1, col=col)
        fig.update_yaxes(title_text=y_title, type="category", autorange="reversed" if y_labels is not None else True, row=1, col=col)
    if blank is not None:
        fig.update_layout(plot_bgcolor=blank)
    return styled(fig, height)


def heatmaps(*args, div_id: str, **kwargs) -> str:
    """`heatmaps_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(heatmaps_figure(*args, **kwargs), div_id)


def token_heatmap_figure(z: list[list[float]], tokens: Sequence[str], *, title: str) -> go.Figure:
    """Heads x tokens (the study's Fig. 7.1 / 7.2); tokens shown as written, numbered to keep repeats apart."""
    xs = [f"{i}:{label(t)}" for i, t in enumerate(tokens)]
    bound = max((abs(v) for row in z for v in row), default=1.0) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=[str(h + 1) for h in range(len(z))], colorscale="RdBu", reversescale=True,
                               zmid=0, zmin=-bound, zmax=bound, hovertemplate="head %{y}, token %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(title=label(title), xaxis_title="token", yaxis_title="head")
    fig.update_xaxes(type="category", tickangle=-60)
    fig.update_yaxes(type="category")
    return styled(fig, 380)


def token_heatmap(*args, div_id: str, **kwargs) -> str:
    """`token_heatmap_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(token_heatmap_figure(*args, **kwargs), div_id)


def lines_figure(x: Sequence[object], series: dict[str, list[float | None]], *, title: str, xaxis: str, yaxis: str,
                 hlines: dict[str, float] | None = None, bands: dict[str, tuple[list, list]] | None = None,
                 marks: dict[str, list[int]] | None = None, mark_text: str = "marked") -> go.Figure:
    """One line per series over the categories `x`.

    bands: name -> (low, high) per x, a shaded band behind the lines (None values leave a gap).
    marks: series name -> 0-based positions on that line drawn with an "x" (hover: `mark_text`).
    """
    xs = labels(x)
    fig = go.Figure()
    for i, (name, (low, high)) in enumerate((bands or {}).items()):
        color = COLORS[(i + 2) % len(COLORS)]
        fig.add_trace(go.Scatter(x=xs, y=high, mode="lines", line=dict(width=0, color=color), hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=xs, y=low, mode="lines", line=dict(width=0, color=color), fill="tonexty",
                                 fillcolor=_rgba(color, 0.2), name=label(name), hoverinfo="skip"))
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=xs, y=values, mode="lines+markers", name=label(name), line=dict(color=COLORS[i % len(COLORS)])))
        cells = [k for k in (marks or {}).get(name, []) if 0 <= k < len(values) and values[k] is not None]
        if cells:
            fig.add_trace(go.Scatter(x=[xs[k] for k in cells], y=[values[k] for k in cells], mode="markers", showlegend=False,
                                     marker=dict(symbol="x-thin-open", size=14, color="#000", line=dict(width=2)),
                                     hovertemplate=f"%{{x}}: {label(mark_text)}<extra></extra>"))
    for i, (name, value) in enumerate((hlines or {}).items()):
        fig.add_hline(y=value, line_dash="dot", line_color=COLORS[(i + 5) % len(COLORS)], annotation_text=label(name))
    fig.update_layout(title=label(title), xaxis_title=xaxis, yaxis_title=yaxis)
    fig.update_xaxes(type="category")
    return styled(fig, 360)


def lines(*args, div_id: str, **kwargs) -> str:
    """`lines_figure(*args, **kwargs)` as the report's HTML fragment, in a div of id `div_id`."""
    return fragment(lines_figure(*args, **kwargs), div_id)
