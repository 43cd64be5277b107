"""The section "Terrain": local qualifiers per model (top Hessian eigenvalues, trace,
sharpness, local learning coefficient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import figures as F
from ..html import Png, Table, esc, number
from ..rundir import RunView
from ._common import _policy_text
from ._registry import Section, section

_TERRAIN_UNITS = {"top_eigenvalue": "loss / param²", "trace": "loss / param²",
                  "epsilon_sharpness": "nats", "adaptive_sharpness": "nats", "llc": "",
                  "llc_mean": "", "loss": "nats"}


def _terrain_numbers(labels: list[str], ds, measures: dict[str, np.ndarray]) -> Table:
    """The per-model table of every measure, with its spread where stored (``trace_std``:
    standard error of the estimate; ``llc_std``: across chains)."""
    names = list(measures)
    spread = {n: ds[f"{n.removesuffix('_mean')}_std"].values.astype(float) for n in names
              if f"{n.removesuffix('_mean')}_std" in ds}

    def cell(n: str, i: int) -> str:
        v = number(float(measures[n][i]))
        return f"{v} ± {number(float(spread[n][i]), '', 2)}" if n in spread else v

    header = ["model", *[f"{n} ({_TERRAIN_UNITS[n]})" if _TERRAIN_UNITS.get(n) else n
                         for n in names]]
    rows = [[lab, *[cell(n, i) for n in names]] for i, lab in enumerate(labels)]
    return Table(header, rows,
                 caption="Measures per model (± standard error of the trace estimate; ± "
                         "standard deviation of the LLC across chains)")


@section("terrain", "Terrain",
         hint="lossatlas hessian --population {population} {data} --out {run}")
def terrain(view: RunView) -> Section | None:
    """Local qualifiers per model from ``fields/terrain.zarr`` (dim ``model``): top
    Hessian eigenvalues, trace, sharpness, local learning coefficient."""
    ds = view.field("terrain")
    if ds is None or "model" not in ds.dims:
        return None
    labels = [str(v) for v in (ds["model"].values if "model" in ds.coords
                               else range(ds.sizes["model"]))]
    # a fixed column order (the store lists variables in no fixed order): known measures
    # as in _TERRAIN_UNITS, then the others by name
    known = list(_TERRAIN_UNITS)
    names = sorted((str(k) for k, da in ds.data_vars.items()
                    if da.dims == ("model",) and not str(k).endswith(("_std", "_diverged"))),
                   key=lambda k: (known.index(k) if k in known else len(known), k))
    measures = {k: ds[k].values.astype(float) for k in names}
    if not measures:
        return None
    figs = {"fig-terrain": F.per_model_figure([esc(v) for v in labels], measures,
                                              _TERRAIN_UNITS, "Local qualifiers per model")}
    bn = view.terrain_table.get("bn") or ds.attrs.get("bn")
    eigenvalues = None
    if "eigenvalues" in ds and ds["eigenvalues"].ndim == 2:
        ev = ds["eigenvalues"].values.astype(float)
        eigenvalues = Table(["model", *[f"λ{r + 1}" for r in range(ev.shape[1])]],
                            [[lab, *[number(v) for v in row]]
                             for lab, row in zip(labels, ev, strict=True)],
                            caption="Top Hessian eigenvalues (loss per squared parameter)")
    p = view.png("landscape_terrain.png")  # terrain on the map: rings sized by the top eigenvalue
    rings = (Png.of(p, "Latent landscape with rings sized by the top Hessian eigenvalue")
             if p is not None else None)
    summary: dict[str, Any] = {
        k: {"median": float(np.nanmedian(v)) if np.isfinite(v).any() else None}
        for k, v in measures.items()}
    summary["bn"] = bn if isinstance(bn, str) else None
    data = {"policy": _policy_text(bn), "numbers": _terrain_numbers(labels, ds, measures),
            "eigenvalues": eigenvalues, "rings": rings}
    return Section(template="sections/terrain.html.j2", data=data, figures=figs,
                   summary=summary)
