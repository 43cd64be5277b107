"""The section "Double descent": the study's ``double_descent.json``
(:func:`lossatlas.studies.run_double_descent`) and its stored filter-normalised
surfaces, laid out by :mod:`.studies`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossatlas.scale import drawable, log10_loss

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._registry import Section, section
from .studies import _facts, _log_x, _means, _studies


def _surface_field(folder: Path, name: str):
    import xarray as xr

    p = folder / "fields" / f"{name}.zarr"
    if not p.is_dir():
        return None
    with xr.open_zarr(p, consolidated=False) as ds:
        return ds.load()


def _double(view: RunView, folder: Path, s: dict, tag: str) -> tuple[dict, dict, dict]:
    rows = [r for r in s.get("models") or [] if isinstance(r, dict)]
    xs, mean = _means(rows, "width", ("train_error", "test_error", "lambda_max",
                                      "surface_mean_rise"))
    figs = {f"fig-dd-{tag}-error": _log_x(F.curve_figure(
        [{"name": "test error", "x": xs, "y": mean["test_error"]},
         {"name": "train error", "x": xs, "y": mean["train_error"], "dash": "dash"}],
        "hidden width (units, log scale)", "Error against width", ylabel="error (fraction)",
        log=False))}
    figs[f"fig-dd-{tag}-sharp"] = _log_x(F.curve_figure(
        [{"name": "top Hessian eigenvalue", "x": xs, "y": mean["lambda_max"]}]
        + ([{"name": "mean loss rise on the surface (nats)", "x": xs,
             "y": mean["surface_mean_rise"], "dash": "dash"}]
           if any(np.isfinite(mean["surface_mean_rise"])) else []),
        "hidden width (units, log scale)", "Sharpness and surface flatness against width",
        ylabel="nats / parameter² · nats (log scale)"))
    surfaces = []
    for r in rows:
        if r.get("surface") and r.get("seed") == rows[0].get("seed"):
            ds = _surface_field(folder, str(r["surface"]))
            if ds is not None and len(ds["loss"].dims) == 2:
                surfaces.append((r, ds))
    for k, (r, ds) in enumerate(surfaces):
        d0, d1 = ds["loss"].dims
        z = drawable(log10_loss(ds["loss"].values)).T
        figs[f"fig-dd-{tag}-surf{k}"] = F.contour_figure(
            ds[d0].values, ds[d1].values, z, esc(f"{d0} (filter-normalised direction)"),
            esc(f"{d1} (filter-normalised direction)"),
            esc(f"width {r.get('width')}: training loss"), ztitle="log10 loss (nats)")
    items = [("interpolation threshold (width)", number(s.get("interpolation_threshold"))),
             ("classical best width (test error)",
              f"{number(s.get('classical_best_width'))} "
              f"({number(s.get('classical_best_test_error'), '', 3)})"),
             ("test-error peak width", f"{number(s.get('peak_test_error_width'))} "
                                       f"({number(s.get('peak_test_error'), '', 3)})"),
             ("final test error", number(s.get("final_test_error"), "", 3)),
             ("sharpest width (top eigenvalue)", number(s.get("sharpest_width"))),
             ("flattest / sharpest surface width",
              f"{number(s.get('flattest_surface_width'))} / "
              f"{number(s.get('sharpest_surface_width'))}")]
    tables = []
    if any(r.get("surface") for r in rows):
        tables.append(Table(["width", "seed", "mean loss rise (nats)", "max loss rise (nats)",
                             "flat fraction"],
                            [[number(r.get("width")), number(r.get("seed")),
                              number(r.get("surface_mean_rise"), "", 4),
                              number(r.get("surface_max_rise"), "", 4),
                              number(r.get("surface_flat_fraction"), "", 3)]
                             for r in rows if r.get("surface")],
                            caption="Filter-normalised surfaces: rise of the training loss "
                                    "over the plane above its centre"))
    part = {"facts": _facts(items, "Double descent, summary"), "plots": list(figs),
            "tables": tables}
    summary = {k: s.get(k) for k in ("interpolation_threshold", "peak_test_error_width",
                                     "peak_test_error", "sharpest_width",
                                     "flattest_surface_width", "sharpest_surface_width")}
    summary.update(widths=xs, test_error=mean["test_error"])
    return part, figs, summary


@section("double-descent", "Double descent",
         hint="lossatlas study double-descent --surfaces --out {run}/double_descent")
def double_descent(view: RunView) -> Section | None:
    """Error, sharpness and the filter-normalised surfaces across the width sweep
    (``double_descent.json`` and its stored surfaces)."""
    return _studies(view, "double_descent.json", _double, "double_descent")
