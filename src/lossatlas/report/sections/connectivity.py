"""The section "Connectivity": barrier matrices before / after alignment, the loss
along paths and curves, layer-wise barriers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._common import _policy_text
from ._registry import Section, section


def _matrix(ds) -> tuple[np.ndarray, list[str], list[str], str, str] | None:
    for name, da in ds.data_vars.items():
        if da.ndim == 2:
            d0, d1 = da.dims
            ylab = [str(v) for v in (ds[d0].values if d0 in ds.coords else range(da.shape[0]))]
            xlab = [str(v) for v in (ds[d1].values if d1 in ds.coords else range(da.shape[1]))]
            return da.values.astype(float), xlab, ylab, str(name), str(da.attrs.get("units", ""))
    return None


def _heatmap(figs: dict, m: tuple[np.ndarray, list[str], list[str], str, str],
             title: str) -> str:
    """Adds the heatmap of ``m`` (:func:`_matrix`) to ``figs``; returns its figure id."""
    z, xl, yl, var, units = m
    fid = f"fig-conn-{len(figs)}"
    figs[fid] = F.heatmap_figure(z, [esc(v) for v in xl], [esc(v) for v in yl], esc(title),
                                 esc(f"{var} ({units})" if units else var))
    return fid


def _barrier_pairs(mats: dict) -> dict[str, Any] | None:
    """One row per pair of models, one column per square barrier matrix (before / after
    alignment side by side, nats), as the template's ``pairs`` ({open, count, table});
    None unless the matrices share their models."""
    found = {name: m for name, ds in mats.items() if (m := _matrix(ds)) is not None
             and m[0].shape[0] == m[0].shape[1] and m[1] == m[2]}
    if not found or len({tuple(m[1]) for m in found.values()}) != 1:
        return None
    names = next(iter(found.values()))[1]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    rows = [[f"{names[i]} – {names[j]}", *[number(float(m[0][i, j])) for m in found.values()]]
            for i, j in pairs]
    header = ["pair", *[f"{n.replace('_', ' ')} ({m[4] or 'loss'})" for n, m in found.items()]]
    return {"open": len(pairs) <= 28, "count": len(pairs), "table": Table(header, rows)}


def _lines_of(name: str, ds, dash: str) -> list[dict[str, Any]]:
    """One line per path of a field over ``t`` (more than one when it has a second dim)."""
    if "t" not in ds.dims or "loss" not in ds:
        return []
    da = ds["loss"]
    other = [d for d in da.dims if d != "t"]
    if not other:
        return [{"key": name, "name": esc(name), "x": ds["t"].values, "y": da.values,
                 "dash": dash}]
    labels = ds[other[0]].values if other[0] in ds.coords else range(da.sizes[other[0]])
    return [{"key": f"{name} {lab}", "name": esc(f"{name} {lab}"), "x": ds["t"].values,
             "y": da.isel({other[0]: k}).values, "dash": dash} for k, lab in enumerate(labels)]


def _path_lines(curves: dict, straight: dict, table: dict,
                summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Lines of "Loss along paths and curves": trained curves (solid) and the straight
    lines between their endpoints (dashed) from ``fields/curve*``, ``fields/line*`` and
    ``curves.json`` (``loss`` and ``line_loss`` over ``t``); ``summary`` gets each
    line's highest loss (nats)."""
    lines = [ln for name, ds in curves.items() for ln in _lines_of(name, ds, "solid")]
    lines += [ln for name, ds in straight.items()
              for ln in _lines_of(f"straight line ({name})", ds, "dash")]
    t = table.get("t")
    pair = "–".join(str(p) for p in table.get("pair") or [])
    stored = f"curve-{pair.replace('–', '-')}"
    if isinstance(t, list) and isinstance(table.get("loss"), list) and stored not in curves:
        key = f"{table.get('kind', 'curve')} curve {pair}"
        lines.append({"key": key, "name": esc(key), "x": t, "y": table["loss"], "dash": "solid"})
    if isinstance(t, list) and isinstance(table.get("line_loss"), list):
        lines.append({"key": f"straight line {pair}", "name": esc(f"straight line {pair}"),
                      "x": t, "y": table["line_loss"], "dash": "dash"})
    for ln in lines:
        v = np.asarray(ln["y"], dtype=float)
        v = v[np.isfinite(v)]
        summary[ln["key"]] = {"max_loss": float(v.max()) if len(v) else None}
    return lines


@section("connectivity", "Connectivity",
         hint="lossatlas connect --population {population} {data} --align --out {run}")
def connectivity(view: RunView) -> Section | None:
    """Barrier matrices (``fields/barriers*.zarr``, before/after alignment), loss along
    connecting curves (``fields/curve*.zarr`` over ``t``), layer-wise barriers."""
    mats = view.fields_named("barriers")
    curves = view.fields_named("curve")
    layers = view.fields_named("layerwise")
    straight = view.fields_named("line")
    if not (mats or curves or layers or straight or view.curves_table):
        return None
    figs: dict[str, dict] = {}
    conn = view.connectivity_table
    bn = conn.get("bn") or next((ds.attrs.get("bn") for ds in (*mats.values(),
                                                                *curves.values())
                                 if isinstance(ds.attrs.get("bn"), str)), None)
    data: dict[str, Any] = {"policy": _policy_text(bn), "matrices": [],
                            "pairs": _barrier_pairs(mats), "curves": False, "layers": []}
    summary: dict[str, Any] = {"barrier_matrices": {}, "curves": {}, "bn": bn}
    for name, ds in mats.items():
        m = _matrix(ds)
        if m is None:
            continue
        z, units = m[0], m[4]
        data["matrices"].append(_heatmap(figs, m, name.replace("_", " ")))
        off = z[~np.eye(*z.shape, dtype=bool)] if z.shape[0] == z.shape[1] else z.ravel()
        off = off[np.isfinite(off)]
        summary["barrier_matrices"][name] = {
            "shape": list(z.shape), "median": float(np.median(off)) if len(off) else None,
            "max": float(off.max()) if len(off) else None, "units": units}
    lines = _path_lines(curves, straight, view.curves_table, summary["curves"])
    if lines:
        figs["fig-conn-curves"] = F.curve_figure(lines, "t (position along the path)",
                                                 "Loss along paths and curves")
        data["curves"] = True
    for name, ds in layers.items():
        m = _matrix(ds)
        if m is not None:
            data["layers"].append(_heatmap(figs, m, f"Layer-wise barriers: {name}"))
    if not figs:
        return None
    return Section(template="sections/connectivity.html.j2", data=data, figures=figs,
                   summary=summary)
