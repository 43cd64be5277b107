"""Negative curvature and per-layer views as report sections (issue 19).

- "Saddles": the atlas's merge-tree saddles checked in the full parameter space
  (``RUN/fields/saddles.zarr``, written by :func:`lossatlas.curvature.atlas_saddles`);
- "Hessian-direction slices": slices along Hessian eigenvectors (stored slices of kind
  ``hessian``, :func:`lossatlas.surfaces.hessian_slice` evaluated with
  :func:`lossatlas.pipeline.write_slice`) beside the filter-normalised random slice of
  the same model, with the curvature at the centre of each;
- "Layer noise tolerance": the loss rise under filter-normalised noise one layer group
  at a time beside the layer-wise barriers (``RUN/fields/layer_noise.zarr``, written
  by :func:`lossatlas.connectivity.write_layer_noise`).

Registered when this module is imported (``lossatlas.report.sections`` imports it);
like every builder they read stored values only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from lossatlas.scale import drawable, log10_loss

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._registry import Section, section

__all__ = ["centre_curvature", "hessian_slices", "layer_noise", "saddles"]


# ==================================================================== saddles
@section("saddles", "Saddles",
         hint="lossatlas atlas --population {population} {data} --check-saddles --out {run}")
def saddles(view: RunView) -> Section | None:
    """Per merge-tree saddle: the map's loss there, the full-space loss at the decoded
    point, the smallest and largest Hessian eigenvalues, and the verdict."""
    ds = view.field("saddles")
    if ds is None or "min_eigenvalue" not in ds or ds.sizes.get("saddle", 0) == 0:
        return None
    n = ds.sizes["saddle"]
    mins = np.asarray(ds["min_eigenvalue"].values, dtype=float).reshape(n, -1)
    lmax = np.asarray(ds["max_eigenvalue"].values, dtype=float)
    loss = np.asarray(ds["loss"].values, dtype=float)
    map_loss = 10.0 ** np.asarray(ds["map_log10_loss"].values, dtype=float)
    verdict = np.asarray(ds["is_saddle"].values, dtype=bool)
    basins = np.asarray(ds["basins"].values).reshape(n, -1) if "basins" in ds else None
    conv = np.asarray(ds["converged"].values, dtype=bool) if "converged" in ds else None
    tol = ds.attrs.get("tol")
    rows = []
    for i in range(n):
        joins = (" – ".join(str(int(b)) for b in basins[i]) if basins is not None else "n/a")
        text = "true saddle" if verdict[i] else "map artefact"
        if conv is not None and not conv[i]:
            text += " (Lanczos not converged)"
        rows.append([str(i), joins, number(map_loss[i], "", 4), number(loss[i], "", 4),
                     number(mins[i, 0], "", 4), number(lmax[i], "", 4),
                     str(int(ds["negative_count"].values[i]) if "negative_count" in ds
                         else "n/a"), text])
    true_n = int(verdict.sum())
    table = Table(["saddle", "basins joined", "map loss (nats)", "full-space loss (nats)",
                   "smallest eigenvalue", "largest eigenvalue", "negative eigenvalues found",
                   "verdict"], rows,
                  caption="Eigenvalues in loss per squared parameter (nats / parameter²); "
                          "the map loss is the field's value at the saddle, the full-space "
                          "loss the loss at the decoded point")
    idx = list(range(n))
    texts = [esc(f"saddle {i}: {'true saddle' if verdict[i] else 'map artefact'}")
             for i in idx]
    fig = F.scatter_compare_figure(
        [{"name": "smallest eigenvalue", "x": idx, "y": mins[:, 0], "text": texts},
         {"name": "largest eigenvalue", "x": idx, "y": lmax, "text": texts}],
        "saddle (index)", "Hessian eigenvalue (nats / parameter²)",
        "Curvature at the merge-tree saddles", log=False)
    fig["data"] = fig["data"][1:]  # no y = x line: the x axis is an index
    summary = {"saddles": n, "true_saddles": true_n, "tol": tol,
               "min_eigenvalue": mins[:, 0].tolist(), "max_eigenvalue": lmax.tolist(),
               "loss": loss.tolist(), "map_loss": map_loss.tolist(),
               "is_saddle": verdict.tolist(), "units": ds.attrs.get("units")}
    return Section(template="sections/saddles.html.j2", figures={"fig-saddles": fig},
                   summary=summary, data={"tol": tol, "true_count": true_n, "count": n,
                                          "table": table})


# ====================================================== Hessian-direction slices
def centre_curvature(ds: xr.Dataset) -> dict[str, float | None]:
    """Second derivative of the stored loss at the slice's centre (coordinate 0 on every
    axis) along each axis, by the three-point finite difference of the grid (loss per
    squared axis unit); None for an axis without grid points on both sides of 0."""
    loss = ds["loss"]
    dims = list(loss.dims)
    centre = {}
    for d in dims:
        c = np.asarray(ds[d].values, dtype=float)
        i = int(np.argmin(np.abs(c)))
        scale = max(float(np.abs(c).max()), 1e-300)
        centre[d] = i if abs(c[i]) <= 1e-9 * scale else None
    out: dict[str, float | None] = {}
    for d in dims:
        c = np.asarray(ds[d].values, dtype=float)
        i = centre[d]
        if any(centre[e] is None for e in dims) or i is None or i == 0 or i == len(c) - 1:
            out[d] = None
            continue
        line = loss.isel({e: centre[e] for e in dims if e != d}).values.astype(float)
        h1, h2 = c[i] - c[i - 1], c[i + 1] - c[i]
        out[d] = float(2.0 * (h1 * line[i + 1] - (h1 + h2) * line[i] + h2 * line[i - 1])
                       / (h1 * h2 * (h1 + h2)))
    return out


def _centre_loss(ds: xr.Dataset) -> float | None:
    sel = {}
    for d in ds["loss"].dims:
        c = np.asarray(ds[d].values, dtype=float)
        i = int(np.argmin(np.abs(c)))
        if abs(c[i]) > 1e-9 * max(float(np.abs(c).max()), 1e-300):
            return None
        sel[d] = i
    v = float(ds["loss"].isel(sel).values)
    return v if math.isfinite(v) else None


def _slice_figure(ds: xr.Dataset, title: str, units: dict[str, str]) -> dict:
    dims = list(ds["loss"].dims)
    vals = ds["loss"].values.astype(float)

    def label(d: str) -> str:
        return esc(f"{d} ({units[d]})" if units.get(d) else d)

    if len(dims) == 1:
        return F.curve_figure([{"name": "loss", "x": ds[dims[0]].values, "y": vals}],
                              label(dims[0]), esc(title), ylabel="loss (nats)", log=False)
    z = drawable(log10_loss(vals)).T
    return F.contour_figure(ds[dims[0]].values, ds[dims[1]].values, z, label(dims[0]),
                            label(dims[1]), esc(title), ztitle="log10 loss (nats)")


@section("hessian-slices", "Hessian-direction slices",
         hint="lossatlas surface hessian {a} {model} {data} --out {run} (and lossatlas "
              "surface random {a} {model} {data} --out {run} beside it)")
def hessian_slices(view: RunView) -> Section | None:
    """Each stored Hessian-direction slice beside the filter-normalised random slice of
    the same model (the random slice with the same loss at its centre), with the
    eigenvalues and the curvature measured on each grid at its centre."""
    found = view.slices
    hess = {n: ds for n, ds in found.items() if view.slice_info(n).get("kind") == "hessian"}
    if not hess:
        return None
    randoms = {n: ds for n, ds in found.items() if view.slice_info(n).get("kind") == "random"}
    figs: dict[str, dict] = {}
    rows, summary, grid = [], {}, []
    for k, (name, ds) in enumerate(hess.items()):
        info = view.slice_info(name)
        units = info.get("units") or {}
        eig = (info.get("info") or {}).get("eigenvalues") or []
        which = (info.get("info") or {}).get("which", "largest")
        c0 = _centre_loss(ds)
        partner = None
        if c0 is not None:
            partner = next((n for n, r in randoms.items()
                            if len(r["loss"].dims) == len(ds["loss"].dims)
                            and (rc := _centre_loss(r)) is not None
                            and math.isclose(rc, c0, rel_tol=1e-5, abs_tol=1e-9)), None)
        curv = centre_curvature(ds)
        fid = f"fig-hslice-{k}"
        figs[fid] = _slice_figure(ds, f"{name.split('/')[-1]}: Hessian directions ({which})",
                                  units)
        row = [fid]
        entry: dict[str, Any] = {"which": which, "eigenvalues": eig, "centre_loss": c0,
                                 "curvature": curv, "random": partner}
        for j, d in enumerate(ds["loss"].dims):
            rows.append([name, "Hessian", str(d),
                         number(eig[j] if j < len(eig) else None, "", 4),
                         number(curv[d], "", 4), str(units.get(d, ""))])
        if partner is not None:
            rds = randoms[partner]
            rinfo = view.slice_info(partner)
            runits = rinfo.get("units") or {}
            rcurv = centre_curvature(rds)
            rfid = f"fig-hslice-{k}-random"
            figs[rfid] = _slice_figure(rds, f"{partner.split('/')[-1]}: random directions",
                                       runits)
            row.append(rfid)
            for d in rds["loss"].dims:
                rows.append([partner, "random", str(d), number(None),
                             number(rcurv[d], "", 4), str(runits.get(d, ""))])
            entry["random_curvature"] = rcurv
        grid.append(row)
        summary[name] = entry
    table = Table(["slice", "directions", "axis", "Hessian eigenvalue (nats / parameter²)",
                   "curvature at the centre (nats / unit²)", "axis unit"], rows,
                  caption="Eigenvalues stored with the slice; curvature by finite "
                          "differences on the stored grid")
    unpaired = [n for n, e in summary.items() if e["random"] is None]
    return Section(template="sections/hessian_slices.html.j2", figures=figs, summary=summary,
                   data={"rows": grid, "table": table, "unpaired": unpaired})


# ==================================================================== layer noise
@section("layer-noise", "Layer noise tolerance",
         hint="lossatlas connect {a} {b} {model} {data} --curve linear --layer-noise "
              "--out {run}")
def layer_noise(view: RunView) -> Section | None:
    """Per layer group: the loss rise under filter-normalised noise (per model) and the
    noise scale it tolerates, beside the layer-wise barriers when stored."""
    from lossatlas.connectivity.layerwise import LAYER_NOISE_NAME

    ds = view.field(LAYER_NOISE_NAME)
    if ds is None or "tolerance" not in ds or "loss_rise" not in ds:
        return None
    tol_da, rise_da = ds["tolerance"], ds["loss_rise"]
    if "model" not in tol_da.dims:  # one model's layer_noise_tolerance
        tol_da, rise_da = tol_da.expand_dims(model=["model"]), rise_da.expand_dims(model=["model"])
    groups = [str(g) for g in ds["group"].values]
    models = [str(m) for m in tol_da["model"].values]
    scales = np.asarray(ds["scale"].values, dtype=float)
    tol = tol_da.transpose("model", "group").values.astype(float)
    rise = rise_da.transpose("model", "group", "scale").values.astype(float)
    barrier = (ds["barrier"].transpose("group", ...).values.astype(float).reshape(len(groups), -1)
               if "barrier" in ds else None)
    anchors = ([str(a) for a in ds["anchor"].values] if barrier is not None
               and "anchor" in ds.coords else [])
    threshold = ds.attrs.get("threshold")
    header = ["layer group"] + [f"tolerance, model {m}" for m in models]
    header += [f"barrier, rest at {a} (nats)" for a in anchors]
    rows = []
    for g, name in enumerate(groups):
        cells = [name] + [number(t, "", 4) for t in tol[:, g]]
        if barrier is not None:
            cells += [number(b, "", 4) for b in barrier[g]]
        rows.append(cells)
    table = Table(header, rows, caption="Tolerance in multiples of the normalised direction; "
                                        "loss in nats (the loss' units)")
    lines = [{"name": esc(f"{name}, model {m}"), "x": scales, "y": rise[i, g],
              "dash": "solid" if i == 0 else "dash"}
             for i, m in enumerate(models) for g, name in enumerate(groups)]
    figs = {"fig-layer-noise": F.curve_figure(
        lines, "noise scale s (multiples of the filter-normalised direction)",
        "Loss rise under noise in one layer group", ylabel="loss rise (nats)", log=False)}
    if barrier is not None:
        figs["fig-layer-noise-tb"] = F.scatter_compare_figure(
            [{"name": esc(f"model {m}"), "x": tol[i], "y": barrier.max(1),
              "text": [esc(g) for g in groups]} for i, m in enumerate(models)],
            "noise tolerance (multiples of the direction)",
            "layer-wise barrier, max over anchors (nats)",
            "Tolerance against barrier per layer group", log=False)
        figs["fig-layer-noise-tb"]["data"] = figs["fig-layer-noise-tb"]["data"][1:]
    summary = {"groups": groups, "models": models, "scales": scales.tolist(),
               "threshold": threshold,
               "tolerance": {m: [float(t) if np.isfinite(t) else "inf" if t > 0 else None
                                 for t in tol[i]] for i, m in enumerate(models)},
               "barrier": None if barrier is None else barrier.tolist()}
    return Section(template="sections/layer_noise.html.j2", figures=figs, summary=summary,
                   data={"threshold": threshold, "table": table,
                         "tb": "fig-layer-noise-tb" in figs})
