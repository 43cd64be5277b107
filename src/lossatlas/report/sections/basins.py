"""The section "Basins": the latent landscape, merge tree, persistence diagram,
3-D surface and basin table; also the models and overlays on the map, which
"Symmetry orbits" draws too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from lossatlas.scale import drawable, log10_loss

from .. import figures as F
from ..html import Png, Table, esc, fmt, number
from ..rundir import RunView
from ._common import _runs_of, _variant
from ._registry import Section, section


def _model_table(view: RunView) -> dict[str, Any] | None:
    """Per model: label text, loss (true when stored), accuracy, basin, code."""
    ds = view.atlas
    if ds is None or "model_sample" not in ds:
        return None
    idx = ds["model_sample"].values.astype(int)
    loss = ds["loss"].values[idx].astype(float)
    faith = view.faithfulness or {}
    true = (faith.get("per_model") or {}).get("true_loss")
    if true is not None and len(true) == len(idx):
        loss = np.array([np.nan if v is None else v for v in true], dtype=float)
    acc = ds["accuracy"].values[idx].astype(float) if "accuracy" in ds else None
    topo = view.topology or {}
    basin = topo.get("model_basin")
    basin = np.asarray(basin if basin is not None and len(basin) == len(idx)
                       else [-1] * len(idx), dtype=int)
    texts = view.label_texts
    hover = []
    for i in range(len(idx)):
        lines = [f"<b>{esc(texts[i])}</b>", f"loss {fmt(loss[i], 'nats')}"]
        if acc is not None:
            lines.append(f"accuracy {fmt(100 * acc[i], '%', 3)}")
        if basin[i] >= 0:
            lines.append(f"basin {basin[i]}")
        hover.append("<br>".join(lines))
    return {"sample": idx, "loss": loss, "accuracy": acc, "basin": basin, "text": texts,
            "hover": hover}


def _model_groups(view: RunView, codes: np.ndarray, models: dict[str, Any]) -> list[dict]:
    by: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(view.labels):
        by[_variant(lab)].append(i)
    if not by:
        by["models"] = list(range(len(codes)))
    return [{"name": esc(f"variant {v}" if v != "all models" else v),
             "x": codes[ix, 0], "y": codes[ix, 1], "index": ix,
             "text": [models["hover"][i] for i in ix], "basin": models["basin"][ix]}
            for v, ix in by.items()]


_SYMMETRY_PREFIXES = ("rebasin", "aligned", "symmetry", "orbit")


def _overlay_groups(view: RunView, symmetry: bool) -> list[dict]:
    out = []
    for name, o in view.overlays.items():
        if name.startswith(_SYMMETRY_PREFIXES) != symmetry:
            continue
        codes = np.asarray(o.get("codes") or [], dtype=float)
        if codes.ndim != 2 or codes.shape[1] < 2:
            continue
        labs = o.get("labels") or [str(i) for i in range(len(codes))]
        true, proj = o.get("true_loss") or [], o.get("projected_loss") or []
        texts = []
        for i in range(len(codes)):
            t = true[i] if i < len(true) else None
            p = proj[i] if i < len(proj) else None
            texts.append(f"<b>{esc(name)}: {esc(labs[i] if i < len(labs) else i)}</b><br>"
                         f"true loss {fmt(t, 'nats')}<br>on the map {fmt(p, 'nats')}")
        out.append({"name": esc(name), "x": codes[:, 0], "y": codes[:, 1], "text": texts})
    return out


def _tree(view: RunView):
    """Merge tree and persistence pairs from the stored field (no evaluation)."""
    from lossatlas.topology import graph_merge_tree, graph_persistence

    ds, topo = view.atlas, view.topology
    values = ds["log10_loss"].values.astype(np.float64)
    edges = ds["edges"].values.astype(np.int64)
    pairs = graph_persistence(values, edges)
    tree = None
    if topo is not None and topo.get("threshold") is not None:
        tree = graph_merge_tree(values, edges, threshold=float(topo["threshold"]))
    return tree, pairs


def _minima(tree, coords: np.ndarray, logl: np.ndarray) -> list[dict[str, Any]]:
    """Each basin's minimum on the map: {"x", "y", "label", "text" (hover HTML)}."""
    return [{"x": float(coords[flat, 0]), "y": float(coords[flat, 1]), "label": f"basin {b}",
             "text": f"minimum of basin {b}<br>loss {fmt(10 ** float(logl[flat]), 'nats')}"}
            for b, flat in enumerate(np.asarray(tree.minima_flat))]


def _map_figures(view: RunView, coords: np.ndarray, logl: np.ndarray,
                 models: dict[str, Any] | None, tree) -> dict[str, dict]:
    """The 2-D map (contours, basin boundaries, models, minima) and its 3-D surface."""
    ds = view.atlas
    lo = ds.attrs.get("box_lo") or coords.min(0).tolist()
    hi = ds.attrs.get("box_hi") or coords.max(0).tolist()
    grid = F.grid_field(coords, logl, 160, lo, hi)
    basin_grid = None
    if tree is not None:
        lab = np.asarray(tree.labels).reshape(-1).astype(float)
        basin_grid = F.grid_field(coords, lab, 160, lo, hi, method="nearest")[2]
        basin_grid[~np.isfinite(grid[2])] = np.nan
    codes = coords[models["sample"]] if models else np.zeros((0, 2))
    groups = _model_groups(view, codes, models) if models else []
    minima = _minima(tree, coords, logl) if tree is not None else []
    landscape = F.landscape_figure(grid, coords, logl, groups, basin_grid, minima,
                                   _runs_of(view.labels), _overlay_groups(view, False),
                                   title=f"Latent landscape: {len(codes)} models, "
                                         f"{len(logl)} samples")
    pts = [{"name": g["name"], "x": g["x"], "y": g["y"], "text": g["text"],
            "z": drawable(log10_loss(models["loss"][g["index"]]))} for g in groups]
    return {"fig-landscape": landscape, "fig-surface": F.surface_figure(grid, pts)}


def _tree_figure(tree, topo: dict | None, models: dict[str, Any] | None) -> dict:
    """The merge tree with hover text per leaf (loss, models and variants in the basin)."""
    k = tree.n_leaves
    per_leaf = [0] * k
    for b in (models["basin"] if models is not None else []):
        if 0 <= b < k:
            per_leaf[b] += 1
    stored = (topo or {}).get("basins") or []
    leaf_text = []
    for b in range(k):
        variants = stored[b].get("variants", {}) if b < len(stored) else {}
        vtext = ", ".join(f"{v}: {c}" for v, c in variants.items())
        leaf_text.append(f"<b>basin {b}</b><br>minimum loss "
                         f"{fmt(10 ** float(tree.minimum_values[b]), 'nats')}<br>"
                         f"{per_leaf[b]} model(s)" + (f"<br>{esc(vtext)}" if vtext else ""))
    return F.merge_tree_figure(tree.parent, tree.node_values, k, leaf_text, per_leaf)


def _basin_table(topo: dict, tree) -> Table:
    """The table of ``topology.json``'s basins with their depth (persistence)."""
    rows = []
    for b in topo.get("basins") or []:
        pers = None
        if tree is not None and int(b.get("basin", -1)) < tree.n_leaves:
            pers = float(tree.persistence[int(b["basin"])])
        variants = ", ".join(f"{v}: {c}" for v, c in (b.get("variants") or {}).items())
        rows.append([number(b.get("basin")), number(b.get("min_loss"), "nats"),
                     number(pers, "decades", 3), number(len(b.get("models") or []), "models"),
                     variants])
    return Table(["basin", "minimum loss", "depth (persistence)", "models",
                  "variants (models)"], rows,
                 caption=f"{topo.get('num_basins')} basin(s) for {topo.get('num_variants')} "
                         f"variant(s); persistence threshold "
                         f"{number(topo.get('threshold'), 'decades', 3)}")


def _basin_summary(topo: dict) -> dict[str, Any]:
    return {"num_basins": topo.get("num_basins"), "num_variants": topo.get("num_variants"),
            "threshold_decades": topo.get("threshold"),
            "basins": [{"basin": b.get("basin"), "min_loss": b.get("min_loss"),
                        "models": len(b.get("models") or []), "variants": b.get("variants")}
                       for b in topo.get("basins") or []]}


def _static_pngs(view: RunView) -> list[Png]:
    """The atlas's PNG figures (shown folded)."""
    out = []
    for png, alt in (("landscape.png", "Landscape (static figure)"),
                     ("merge_tree.png", "Merge tree (static figure)"),
                     ("persistence.png", "Persistence diagram (static figure)")):
        p = view.png(png)
        if p is not None:
            out.append(Png.of(p, alt))
    return out


def _tree_notes(tree, topo: dict | None) -> list[str]:
    """What the tree and ``topology.json`` disagree on, or that topology is missing."""
    if tree is not None and topo is not None and topo.get("num_basins") not in (
            None, tree.n_leaves):
        return [f"topology.json lists {topo['num_basins']} basins, the merge tree of the "
                f"stored field {tree.n_leaves}: the field changed after topology ran."]
    if tree is None and topo is None:
        return ["No topology.json: basins, merge tree and boundaries are not shown "
                "(run Atlas.topology)."]
    return []


@section("basins", "Basins", hint="lossatlas atlas --population {population} {data} --out {run}")
def basins(view: RunView) -> Section | None:
    """Latent landscape, merge tree, persistence diagram, 3-D surface, basin table."""
    ds = view.atlas
    if ds is None or "log10_loss" not in ds or len(view.latent_dims) < 2:
        return None
    dims = view.latent_dims
    coords = np.stack([ds[c].values for c in dims], axis=1).astype(np.float64)
    logl = ds["log10_loss"].values.astype(np.float64)
    models, topo = _model_table(view), view.topology
    tree, pairs = _tree(view) if "edges" in ds else (None, np.zeros((0, 2)))
    figs: dict[str, dict] = {}
    notes = _tree_notes(tree, topo)
    if len(dims) == 2:
        figs.update(_map_figures(view, coords, logl, models, tree))
    else:
        notes.insert(0, f"The map is {len(dims)}-D: the contour and surface views need 2-D.")
    if tree is not None:
        figs["fig-merge-tree"] = _tree_figure(tree, topo, models)
    if len(pairs):
        figs["fig-persistence"] = F.persistence_figure(pairs, (topo or {}).get("threshold"))
    summary: dict[str, Any] = {"samples": int(len(logl)), "latent_dim": len(dims),
                               "persistence_pairs": int(len(pairs))}
    if topo is not None:
        summary.update(_basin_summary(topo))
    data = {"landscape": "fig-landscape" in figs,
            "row": [f for f in ("fig-merge-tree", "fig-persistence") if f in figs],
            "basin_table": _basin_table(topo, tree) if topo is not None else None,
            "pngs": _static_pngs(view), "notes": notes}
    return Section(template="sections/basins.html.j2", data=data, figures=figs,
                   summary=summary)
