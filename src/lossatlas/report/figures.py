"""Plotly figures of the report as plain dicts (``{"data": [...], "layout": {...}}``).

Pure functions of arrays: no file access, no loss evaluation. Text that comes from
the run (labels, names) must be passed through :func:`lossatlas.report.html.esc`
by the caller before it lands in hover text or tick labels (plotly renders a
small subset of HTML in them and decodes entities, so escaped text shows
literally). Colour scales are viridis / cividis (readable in grey-scale print);
categorical colours are the Okabe-Ito palette plus distinct marker symbols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .labels import place_labels, to_pixels

__all__ = [
    "PALETTE",
    "SYMBOLS",
    "grid_field",
    "landscape_figure",
    "label_size",
    "minima_traces",
    "surface_figure",
    "merge_tree_layout",
    "merge_tree_figure",
    "persistence_figure",
    "training_figure",
    "change_point_traces",
    "curve_figure",
    "contour_figure",
    "heatmap_figure",
    "scatter_compare_figure",
    "per_model_figure",
]

PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000"]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "triangle-down", "cross", "x",
           "pentagon", "star", "hexagon"]
_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif", "size": 12}


def _layout(title: str, **kw: Any) -> dict:
    out = {"title": {"text": title, "x": 0.01, "font": {"size": 14}}, "font": _FONT,
           "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "autosize": True,
           "template": None, "paper_bgcolor": "#fff", "plot_bgcolor": "#fff",
           "hoverlabel": {"namelength": -1}}
    out.update(kw)
    return out


def _axis(title: str, **kw: Any) -> dict:
    return {"title": {"text": title}, "showline": True, "linecolor": "#444", "mirror": True,
            "gridcolor": "#e6e6e6", "zeroline": False, **kw}


def _list(a: Any) -> list:
    """Array to list with NaN/inf as None (JSON null: a gap for plotly)."""
    arr = np.asarray(a, dtype=np.float64)
    out = arr.tolist()
    if not np.isfinite(arr).all():
        mask = ~np.isfinite(arr)

        def fix(x: Any, m: Any) -> Any:
            if isinstance(x, list):
                return [fix(xi, mi) for xi, mi in zip(x, m, strict=True)]
            return None if m else x

        out = fix(out, mask.tolist())
    return out


def style(i: int) -> tuple[str, str]:
    """(colour, marker symbol) of the ``i``-th category."""
    return PALETTE[i % len(PALETTE)], SYMBOLS[i % len(SYMBOLS)]


# ------------------------------------------------------------------ landscape
def grid_field(coords: np.ndarray, values: np.ndarray, resolution: int = 160,
               lo: Sequence[float] | None = None, hi: Sequence[float] | None = None,
               method: str = "linear") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scattered 2-D samples on a regular grid (scipy ``griddata``; no evaluation).

    coords : float [n, 2]; values : float [n] (non-finite samples are left out).
    Returns (x [R], y [R], z [R, R]) with z[j, i] at (x[i], y[j]); NaN outside the hull.
    """
    from scipy.interpolate import griddata

    coords = np.asarray(coords, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values) & np.isfinite(coords).all(1)
    lo = np.asarray(lo if lo is not None else coords[ok].min(0), dtype=np.float64)
    hi = np.asarray(hi if hi is not None else coords[ok].max(0), dtype=np.float64)
    x = np.linspace(lo[0], hi[0], resolution)
    y = np.linspace(lo[1], hi[1], resolution)
    xx, yy = np.meshgrid(x, y)
    z = griddata(coords[ok], values[ok], (xx, yy), method=method)
    return x, y, z


def landscape_figure(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    samples: np.ndarray,
    sample_values: np.ndarray,
    models: Sequence[Mapping[str, Any]],
    basin_grid: np.ndarray | None = None,
    minima: Sequence[Mapping[str, Any]] = (),
    trajectories: Sequence[Sequence[int]] = (),
    overlays: Sequence[Mapping[str, Any]] = (),
    title: str = "Latent landscape",
) -> dict:
    """Contours of log10 loss on the latent map, samples, basins, models and overlays.

    grid : (x, y, z) from :func:`grid_field` of log10 loss
    samples : [n, 2] refined sample coordinates; sample_values : [n] log10 loss
    models : one group per variant: {"name", "x", "y", "text" (escaped HTML per model),
        "index" (model ids), "basin" (basin per model)}; drawn as traces with
        ``meta.role == "models"`` and ``customdata = [[model, basin], ...]``
    basin_grid : basin label on the same grid (nearest sample) or None
    minima : {"x", "y", "text"} per basin minimum
    trajectories : model indices of each training run in order (into the model arrays
        given by the ``models`` groups, via their "index")
    overlays : {"name", "x", "y", "text"} projected points (curves, re-basined models)
    """
    x, y, z = grid
    data: list[dict] = [{
        "type": "contour", "x": _list(x), "y": _list(y), "z": _list(z), "name": "log10 loss",
        "colorscale": "Viridis", "ncontours": 24, "line": {"width": 0.3, "color": "#333"},
        "colorbar": {"title": {"text": "log10 loss"}, "thickness": 14},
        "hovertemplate": "z0 %{x:.3f}<br>z1 %{y:.3f}<br>log10 loss %{z:.3f}<extra></extra>",
        "connectgaps": False,
    }]
    if basin_grid is not None:
        labels = np.unique(basin_grid[np.isfinite(basin_grid)])
        for b in labels if len(labels) > 1 else []:
            ind = (basin_grid == b).astype(float)
            data.append({
                "type": "contour", "x": _list(x), "y": _list(y), "z": _list(ind),
                "contours": {"coloring": "none", "start": 0.5, "end": 0.5, "size": 1},
                "line": {"color": "#000", "width": 1.6}, "showscale": False,
                "hoverinfo": "skip", "showlegend": b == labels[0], "name": "basin boundaries",
                "legendgroup": "basins",
            })
    data.append({
        "type": "scattergl" if len(samples) > 4000 else "scatter", "mode": "markers",
        "x": _list(samples[:, 0]), "y": _list(samples[:, 1]), "name": "field samples",
        "marker": {"size": 3, "color": "rgba(255,255,255,0.55)",
                   "line": {"width": 0.3, "color": "#333"}},
        "customdata": _list(sample_values), "visible": "legendonly",
        "hovertemplate": "sample<br>log10 loss %{customdata:.3f}<extra></extra>",
    })
    xs = {}
    for g in models:
        for k, i in enumerate(g["index"]):
            xs[i] = (g["x"][k], g["y"][k])
    for run in trajectories:
        pts = [xs[i] for i in run if i in xs]
        if len(pts) > 1:
            data.append({
                "type": "scatter", "mode": "lines", "x": [p[0] for p in pts],
                "y": [p[1] for p in pts], "line": {"color": "rgba(255,255,255,0.85)",
                                                   "width": 1.2},
                "hoverinfo": "skip", "showlegend": False, "name": "trajectory",
            })
    if minima:  # below the models: a minimum's cross never hides a model's marker
        marks = [np.column_stack([np.asarray(g["x"], float), np.asarray(g["y"], float)])
                 for g in (*models, *overlays)]
        data += minima_traces(minima, np.concatenate(marks) if marks else np.zeros((0, 2)),
                              (float(x[0]), float(x[-1])), (float(y[0]), float(y[-1])))
    for k, g in enumerate(models):
        color, symbol = style(k)
        data.append({
            "type": "scatter", "mode": "markers", "name": g["name"],
            "x": _list(g["x"]), "y": _list(g["y"]), "text": list(g["text"]),
            "customdata": [[int(i), int(b)] for i, b in zip(g["index"], g["basin"],
                                                              strict=True)],
            "hovertemplate": "%{text}<extra></extra>", "meta": {"role": "models"},
            "marker": {"size": 10, "color": color, "symbol": symbol,
                       "line": {"width": 1, "color": "#000"}},
            "selected": {"marker": {"size": 14}},
            "unselected": {"marker": {"opacity": 0.15}},
        })
    for k, o in enumerate(overlays):
        color, symbol = style(k + len(models))
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": o["name"],
            "x": _list(o["x"]), "y": _list(o["y"]), "text": list(o["text"]),
            "hovertemplate": "%{text}<extra></extra>",
            "line": {"color": color, "width": 1.5, "dash": "dot"},
            "marker": {"size": 6, "color": color, "symbol": symbol,
                       "line": {"width": 0.6, "color": "#000"}},
        })
    layout = _layout(
        title, xaxis=_axis("latent z0", range=[float(x[0]), float(x[-1])]),
        yaxis=_axis("latent z1", range=[float(y[0]), float(y[-1])]),
        legend={"orientation": "h", "y": -0.17, "x": 0, "yanchor": "top"}, hovermode="closest",
        margin={"l": 60, "r": 20, "t": 40, "b": 70}, clickmode="event",
    )
    return {"data": data, "layout": layout}


#: nominal plot area (pixels) of the report's map at its smallest layout: labels placed
#: without overlap there stay apart on any larger screen
MAP_AREA = (640.0, 430.0)
_CHAR_PX, _LABEL_PX = 6.6, 15.0  # width of a character and height of a line, 11 px font


def label_size(text: str) -> tuple[float, float]:
    """(width, height) in pixels of a one-line label in the map's 11 px font."""
    return _CHAR_PX * len(text) + 4.0, _LABEL_PX


def minima_traces(minima: Sequence[Mapping[str, Any]], markers: np.ndarray,
                  xrange: tuple[float, float], yrange: tuple[float, float],
                  area: tuple[float, float] = MAP_AREA) -> list[dict]:
    """Basin minima as crosses, labelled where :func:`~lossatlas.report.labels.place_labels`
    finds room (no overlap with each other or with the ``markers`` [m, 2], data
    coordinates); each minimum without room gets its own coloured cross and a legend
    entry instead.

    minima : {"x", "y", "label" (raw text), "text" (escaped hover HTML)}, deepest first
    Returns plotly traces; the labelled one has ``meta = {"role": "basin-labels",
    "boxes": [[x0, y0, x1, y1] px, ...], "area": area}``.
    """
    pts = to_pixels([[m["x"], m["y"]] for m in minima], xrange, yrange, area)
    obstacles = to_pixels(markers, xrange, yrange, area)
    placed = place_labels(pts, [label_size(m["label"]) for m in minima], obstacles, area)
    cross = {"symbol": "x-thin", "size": 12, "line": {"width": 2.5, "color": "#fff"}}
    traces: list[dict] = []
    on = [i for i, p in enumerate(placed) if p is not None]
    if on:
        traces.append({
            "type": "scatter", "mode": "markers+text", "name": "basin minima",
            "x": [minima[i]["x"] for i in on], "y": [minima[i]["y"] for i in on],
            "text": [minima[i]["label"] for i in on],
            "textposition": [placed[i].position for i in on],
            "hovertext": [minima[i]["text"] for i in on],
            "hovertemplate": "%{hovertext}<extra></extra>",
            "textfont": {"color": "#fff", "size": 11}, "cliponaxis": False, "marker": cross,
            "meta": {"role": "basin-labels", "boxes": [list(placed[i].box) for i in on],
                     "area": list(area)},
        })
    for k, i in enumerate(i for i, p in enumerate(placed) if p is None):
        color = PALETTE[(k + 1) % len(PALETTE)]
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{minima[i]['label']} (minimum)",
            "x": [minima[i]["x"]], "y": [minima[i]["y"]], "hovertext": [minima[i]["text"]],
            "hovertemplate": "%{hovertext}<extra></extra>", "legendgroup": "minima",
            "meta": {"role": "basin-legend"},
            "marker": {**cross, "line": {"width": 2.5, "color": color}},
        })
    return traces


def surface_figure(grid: tuple[np.ndarray, np.ndarray, np.ndarray],
                   points: Sequence[Mapping[str, Any]] = (),
                   title: str = "Latent landscape in 3-D") -> dict:
    """A 3-D surface of the gridded log10 loss with the models as points above it.

    points : per group {"name", "x", "y", "z" (log10 loss), "text"}
    """
    x, y, z = grid
    data: list[dict] = [{
        "type": "surface", "x": _list(x), "y": _list(y), "z": _list(z), "colorscale": "Viridis",
        "colorbar": {"title": {"text": "log10 loss"}, "thickness": 14}, "name": "log10 loss",
        "hovertemplate": "z0 %{x:.3f}<br>z1 %{y:.3f}<br>log10 loss %{z:.3f}<extra></extra>",
    }]
    for k, g in enumerate(points):
        color, _ = style(k)
        data.append({
            "type": "scatter3d", "mode": "markers", "name": g["name"], "x": _list(g["x"]),
            "y": _list(g["y"]), "z": _list(g["z"]), "text": list(g["text"]),
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"size": 4, "color": color, "line": {"width": 0.5, "color": "#000"}},
        })
    scene = {"xaxis": {"title": {"text": "z0"}}, "yaxis": {"title": {"text": "z1"}},
             "zaxis": {"title": {"text": "log10 loss"}}, "aspectmode": "manual",
             "aspectratio": {"x": 1, "y": 1, "z": 0.6}}
    return {"data": data, "layout": _layout(title, scene=scene,
                                            margin={"l": 0, "r": 0, "t": 40, "b": 0},
                                            legend={"orientation": "h", "y": 0})}


# ------------------------------------------------------------------ merge tree
def merge_tree_layout(parent: Sequence[int], n_leaves: int) -> np.ndarray:
    """x position of every node of a merge tree (leaves 0..k-1 then saddles).

    Leaves are placed left to right in depth-first order from each root (so no edges
    cross); a saddle sits at the mean of its children.
    """
    parent = np.asarray(parent, dtype=np.int64)
    n = len(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    for node, p in enumerate(parent):
        if p >= 0:
            children[int(p)].append(node)
    x = np.zeros(n)
    nxt = [0.0]

    def place(node: int) -> float:
        stack = [(node, False)]
        while stack:
            v, done = stack.pop()
            if not children[v]:
                x[v] = nxt[0]
                nxt[0] += 1
            elif done:
                x[v] = float(np.mean([x[c] for c in children[v]]))
            else:
                stack.append((v, True))
                for c in sorted(children[v], reverse=True):
                    stack.append((c, False))
        return x[node]

    for root in [i for i in range(n) if parent[i] < 0]:
        place(root)
    return x


def merge_tree_figure(parent: Sequence[int], node_values: Sequence[float], n_leaves: int,
                      leaf_text: Sequence[str], leaf_models: Sequence[int],
                      title: str = "Merge tree") -> dict:
    """The merge tree with loss (log axis) vertical; leaves are clickable basins.

    parent : [k + s] parent node (-1 at roots); node_values : [k + s] log10 loss
    leaf_text : escaped hover HTML per leaf; leaf_models : models per leaf (marker size)
    Leaves carry ``customdata = basin`` (the leaf index) for the click handler.
    """
    parent = np.asarray(parent, dtype=np.int64)
    vals = np.asarray(node_values, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    top = float(finite.max()) if len(finite) else 0.0
    span = float(np.ptp(finite)) if len(finite) else 1.0
    vals = np.where(np.isfinite(vals), vals, top + 0.1 * max(span, 0.1))
    x = merge_tree_layout(parent, n_leaves)
    lx: list[float | None] = []
    ly: list[float | None] = []
    for node, p in enumerate(parent):
        y0 = 10 ** vals[node]
        if p >= 0:
            y1 = 10 ** vals[p]
            lx += [x[node], x[node], x[p], None]
            ly += [y0, y1, y1, None]
        else:
            lx += [x[node], x[node], None]
            ly += [y0, 10 ** (top + 0.08 * max(span, 0.1)), None]
    k = n_leaves
    saddles = list(range(k, len(parent)))
    data = [
        {"type": "scatter", "mode": "lines", "x": lx, "y": ly, "name": "tree",
         "line": {"color": "#444", "width": 1.5}, "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "mode": "markers", "name": "saddles",
         "x": [float(x[s]) for s in saddles], "y": [float(10 ** vals[s]) for s in saddles],
         "marker": {"symbol": "diamond", "size": 8, "color": "#888",
                    "line": {"width": 1, "color": "#000"}},
         "hovertemplate": "saddle<br>loss %{y:.4g} nats<extra></extra>"},
        {"type": "scatter", "mode": "markers+text", "name": "basins (click)",
         "x": [float(x[i]) for i in range(k)], "y": [float(10 ** vals[i]) for i in range(k)],
         "text": [str(i) for i in range(k)], "textposition": "bottom center",
         "hovertext": list(leaf_text), "hovertemplate": "%{hovertext}<extra></extra>",
         "customdata": list(range(k)),
         "marker": {"size": [8 + 2 * min(int(m), 10) for m in leaf_models],
                    "color": [PALETTE[0] if m else "#bbb" for m in leaf_models],
                    "line": {"width": 1, "color": "#000"}}},
    ]
    layout = _layout(title, xaxis=_axis("basin (leaf)", showticklabels=False, showgrid=False),
                     yaxis=_axis("loss (nats, log scale)", type="log"),
                     showlegend=False, hovermode="closest", clickmode="event")
    return {"data": data, "layout": layout}


def persistence_figure(pairs: np.ndarray, threshold: float | None,
                       title: str = "Persistence diagram") -> dict:
    """Birth vs death (log10 loss) of the sublevel-set components; inf deaths on top.

    pairs : float [m, 2] (birth, death) in log10 loss; threshold in decades
    """
    pairs = np.asarray(pairs, dtype=np.float64).reshape(-1, 2)
    b, d = pairs[:, 0], pairs[:, 1]
    fin = np.isfinite(d)
    vals = np.concatenate([b[np.isfinite(b)], d[fin]]) if len(pairs) else np.zeros(1)
    lo, hi = float(vals.min()), float(vals.max())
    pad = 0.05 * max(hi - lo, 0.1)
    inf_y = hi + 3 * pad
    pers = d - b
    keep = ~fin | (pers > (threshold or 0.0))
    data: list[dict] = [
        {"type": "scatter", "mode": "lines", "x": [lo - pad, inf_y], "y": [lo - pad, inf_y],
         "line": {"color": "#999", "dash": "dash"}, "name": "diagonal", "hoverinfo": "skip"},
    ]
    if threshold:
        data.append({"type": "scatter", "mode": "lines", "x": [lo - pad, inf_y - threshold],
                     "y": [lo - pad + threshold, inf_y], "name": f"threshold {threshold:.3g}",
                     "line": {"color": PALETTE[5], "dash": "dot"}, "hoverinfo": "skip"})
    for name, mask, color, size in (("merged (noise)", fin & ~keep, "#bbb", 5),
                                     ("basins", fin & keep, PALETTE[0], 8),
                                     ("essential (never merge)", ~fin, "#000", 10)):
        if not mask.any():
            continue
        data.append({
            "type": "scatter", "mode": "markers", "name": name, "x": _list(b[mask]),
            "y": _list(np.where(np.isfinite(d[mask]), d[mask], inf_y)),
            "customdata": _list(pers[mask]),
            "marker": {"color": color, "size": size, "line": {"width": 0.6, "color": "#000"}},
            "hovertemplate": "birth %{x:.3f}<br>death %{y:.3f}<br>persistence "
                             "%{customdata:.3f} decades<extra></extra>",
        })
    layout = _layout(title, xaxis=_axis("birth (log10 loss)"),
                     yaxis=_axis("death (log10 loss; top row = ∞)"),
                     legend={"orientation": "h", "y": -0.18, "yanchor": "top"})
    return {"data": data, "layout": layout}


# ------------------------------------------------------------------ lines
def training_figure(runs: Sequence[Mapping[str, Any]], marks: Sequence[Mapping[str, Any]] = (),
                    title: str = "Metrics along training") -> dict:
    """Loss (log) and accuracy along training, one colour per run; train solid, test dashed.

    runs : {"name" (escaped), "group" (colour index), "x" epochs, "series": {metric: [..]}}
    marks : {"x", "text" (escaped), "group"} change points: dotted vertical lines and
        markers with the text on hover (:func:`change_point_traces`)
    """
    data: list[dict] = []
    for r in runs:
        color, symbol = style(int(r.get("group", 0)))
        for metric, values in r["series"].items():
            axis = "y" if metric.endswith("loss") else "y2"
            dash = "dash" if metric.startswith("test") else "solid"
            data.append({
                "type": "scatter", "mode": "lines+markers", "x": _list(r["x"]),
                "y": _list(values), "yaxis": axis, "name": f"{r['name']} {metric}",
                "legendgroup": r["name"], "line": {"color": color, "dash": dash, "width": 1.6},
                "marker": {"symbol": symbol, "size": 5, "color": color},
                "hovertemplate": f"{r['name']}<br>{metric} %{{y:.4g}}<br>epoch %{{x}}"
                                 "<extra></extra>",
            })
    shapes = []
    for m in marks:
        color, _ = style(int(m.get("group", 0)))
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": m["x"], "x1": m["x"],
                       "y0": 0, "y1": 1, "line": {"color": color, "dash": "dot", "width": 1}})
    data += change_point_traces(marks)
    layout = _layout(
        title, xaxis=_axis("epoch", anchor="y2"),
        yaxis=_axis("loss (nats, log scale)", type="log", domain=[0.56, 1]),
        yaxis2=_axis("accuracy (fraction)", domain=[0, 0.44], anchor="x"),
        yaxis3={"domain": [0.465, 0.535], "anchor": "x", "visible": False, "fixedrange": True,
                "range": [-0.5, max([int(m.get("group", 0)) for m in marks], default=0) + 0.5]},
        legend={"font": {"size": 10}}, shapes=shapes, hovermode="closest",
    )
    return {"data": data, "layout": layout}


def change_point_traces(marks: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Change points as markers on a strip between the loss and accuracy panels, one row
    per run group, the text on hover (never printed on the plot).

    marks : {"x", "text" (escaped), "group"}; marks at one (x, group) share a marker
    whose hover lists them all. Returns one trace per group (``meta.role ==
    "change-points"``).
    """
    by: dict[int, dict[float, list[str]]] = {}
    for m in marks:
        by.setdefault(int(m.get("group", 0)), {}).setdefault(float(m["x"]), []).append(m["text"])
    traces = []
    for group, at in sorted(by.items()):
        color, _ = style(group)
        xs = sorted(at)
        traces.append({
            "type": "scatter", "mode": "markers", "yaxis": "y3", "x": xs, "y": [group] * len(xs),
            "name": "change points" if group == min(by) else f"change points ({group})",
            "legendgroup": "change-points", "showlegend": group == min(by),
            "hovertext": ["<br>".join(at[x]) + f"<br>epoch {x:g}" for x in xs],
            "hovertemplate": "%{hovertext}<extra>change point</extra>",
            "marker": {"symbol": "diamond", "size": 9, "color": color,
                       "line": {"width": 1, "color": "#000"}},
            "meta": {"role": "change-points"},
        })
    return traces


def curve_figure(curves: Sequence[Mapping[str, Any]], xlabel: str, title: str,
                 ylabel: str = "loss (nats, log scale)", log: bool = True) -> dict:
    """Lines of a value along one coordinate: {"name" (escaped), "x", "y", "marks", and
    "dash" (plotly dash style, default "solid")}."""
    data = []
    for k, c in enumerate(curves):
        color, symbol = style(k)
        data.append({"type": "scatter", "mode": "lines+markers", "name": c["name"],
                     "x": _list(c["x"]), "y": _list(c["y"]),
                     "line": {"color": color, "width": 1.8, "dash": c.get("dash", "solid")},
                     "marker": {"size": 4, "symbol": symbol, "color": color},
                     "hovertemplate": f"{c['name']}<br>%{{x:.3g}}: %{{y:.4g}}<extra></extra>"})
        for m in c.get("marks", []):
            data.append({"type": "scatter", "mode": "markers+text", "x": [m["x"]],
                         "y": [m["y"]], "text": [m["text"]], "textposition": "top center",
                         "marker": {"size": 10, "color": color, "symbol": "star",
                                    "line": {"width": 1, "color": "#000"}},
                         "showlegend": False, "hovertemplate": f"{m['text']}<extra></extra>"})
    layout = _layout(title, xaxis=_axis(xlabel),
                     yaxis=_axis(ylabel, type="log" if log else "linear"),
                     hovermode="closest", legend={"orientation": "h", "y": -0.18, "yanchor": "top"})
    return {"data": data, "layout": layout}


def contour_figure(x: np.ndarray, y: np.ndarray, z: np.ndarray, xlabel: str, ylabel: str,
                   title: str, points: Sequence[Mapping[str, Any]] = (),
                   ztitle: str = "log10 loss") -> dict:
    """Filled contours of a regular 2-D field z[j, i] at (x[i], y[j]), with labelled points."""
    data: list[dict] = [{
        "type": "contour", "x": _list(x), "y": _list(y), "z": _list(z), "colorscale": "Viridis",
        "ncontours": 20, "colorbar": {"title": {"text": ztitle}, "thickness": 14},
        "line": {"width": 0.3, "color": "#333"},
        "hovertemplate": "%{x:.3g}, %{y:.3g}<br>" + ztitle + " %{z:.3f}<extra></extra>",
    }]
    if points:
        data.append({"type": "scatter", "mode": "markers+text", "name": "anchors",
                     "x": [p["x"] for p in points], "y": [p["y"] for p in points],
                     "text": [p["text"] for p in points], "textposition": "top center",
                     "textfont": {"color": "#fff"},
                     "marker": {"size": 9, "color": "#fff", "line": {"width": 1, "color": "#000"}},
                     "hovertemplate": "%{text}<extra></extra>"})
    layout = _layout(title, xaxis=_axis(xlabel), yaxis=_axis(ylabel), showlegend=False)
    return {"data": data, "layout": layout}


def heatmap_figure(z: np.ndarray, xlabels: Sequence[str], ylabels: Sequence[str], title: str,
                   ztitle: str, colorscale: str = "Cividis") -> dict:
    """A labelled heat map (labels escaped by the caller)."""
    data = [{"type": "heatmap", "z": _list(z), "x": list(xlabels), "y": list(ylabels),
             "colorscale": colorscale, "colorbar": {"title": {"text": ztitle}, "thickness": 14},
             "hovertemplate": "%{y} — %{x}<br>" + ztitle + " %{z:.4g}<extra></extra>"}]
    layout = _layout(title, xaxis=_axis("", type="category", tickangle=-45),
                     yaxis=_axis("", type="category", autorange="reversed"),
                     margin={"l": 120, "r": 20, "t": 40, "b": 110})
    return {"data": data, "layout": layout}


def scatter_compare_figure(series: Sequence[Mapping[str, Any]], xlabel: str, ylabel: str,
                           title: str, log: bool = True) -> dict:
    """Measured vs reference values (e.g. decoded vs true loss) with the y = x line.

    series : {"name", "x", "y", "text" (escaped)}
    """
    allv = np.concatenate([np.asarray(s["x"], float) for s in series]
                          + [np.asarray(s["y"], float) for s in series])
    allv = allv[np.isfinite(allv) & ((allv > 0) if log else True)]
    lo, hi = (float(allv.min()), float(allv.max())) if len(allv) else (1e-3, 1.0)
    data: list[dict] = [{"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi],
                         "name": "y = x", "line": {"color": "#999", "dash": "dash"},
                         "hoverinfo": "skip"}]
    for k, s in enumerate(series):
        color, symbol = style(k)
        data.append({"type": "scatter", "mode": "markers", "name": s["name"],
                     "x": _list(s["x"]), "y": _list(s["y"]), "text": list(s["text"]),
                     "marker": {"color": color, "symbol": symbol, "size": 8,
                                "line": {"width": 0.6, "color": "#000"}},
                     "hovertemplate": "%{text}<br>" + xlabel + " %{x:.4g}<br>" + ylabel
                                      + " %{y:.4g}<extra></extra>"})
    kind = "log" if log else "linear"
    layout = _layout(title, xaxis=_axis(xlabel, type=kind), yaxis=_axis(ylabel, type=kind),
                     legend={"orientation": "h", "y": -0.18, "yanchor": "top"}, hovermode="closest")
    return {"data": data, "layout": layout}


def per_model_figure(labels: Sequence[str], measures: Mapping[str, Sequence[float]],
                     units: Mapping[str, str], title: str) -> dict:
    """One row per measure (shared model axis): markers per model (labels escaped)."""
    names = list(measures)
    n = max(len(names), 1)
    gap = 0.06
    h = (1 - gap * (n - 1)) / n
    data, layout_axes = [], {}
    for r, name in enumerate(names):
        color, symbol = style(r)
        ax = "" if r == 0 else str(r + 1)
        data.append({"type": "scatter", "mode": "markers", "x": list(labels),
                     "y": _list(measures[name]), "xaxis": "x", "yaxis": f"y{ax}", "name": name,
                     "marker": {"color": color, "symbol": symbol, "size": 9,
                                "line": {"width": 0.6, "color": "#000"}},
                     "hovertemplate": "%{x}<br>" + name + " %{y:.4g} " + units.get(name, "")
                                      + "<extra></extra>"})
        top = 1 - r * (h + gap)
        unit = units.get(name, "")
        layout_axes[f"yaxis{ax}"] = _axis(f"{name}" + (f" ({unit})" if unit else ""),
                                          domain=[max(top - h, 0), top], anchor="x")
    layout = _layout(title, xaxis=_axis("model", type="category", tickangle=-45),
                     showlegend=False, height=max(300, 190 * n),
                     margin={"l": 80, "r": 20, "t": 40, "b": 120}, **layout_axes)
    return {"data": data, "layout": layout}
