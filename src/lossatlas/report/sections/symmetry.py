"""The section "Symmetry orbits": re-basined models on the map and the alignment summary."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import figures as F
from ..html import Table, number
from ..rundir import RunView
from ._registry import Section, section
from .basins import _model_groups, _model_table, _overlay_groups


@section("symmetry", "Symmetry orbits",
         hint="lossatlas align {a} {b} {model} {data} --out {run}")
def symmetry(view: RunView) -> Section | None:
    """Re-basined models on the map (overlays named ``rebasin*``/``aligned*``) and the
    alignment summary of ``symmetry.json`` (distances before/after, per pair)."""
    groups = _overlay_groups(view, True)
    sym = view.symmetry
    if not groups and not sym:
        return None
    figs: dict[str, dict] = {}
    ds = view.atlas
    models = _model_table(view)
    if groups and ds is not None and models is not None and len(view.latent_dims) == 2:
        coords = np.stack([ds[c].values for c in view.latent_dims], 1).astype(float)
        logl = ds["log10_loss"].values.astype(float)
        lo = ds.attrs.get("box_lo") or coords.min(0).tolist()
        hi = ds.attrs.get("box_hi") or coords.max(0).tolist()
        grid = F.grid_field(coords, logl, 120, lo, hi)
        codes = coords[models["sample"]]
        fig = F.landscape_figure(grid, coords, logl, _model_groups(view, codes, models),
                                 overlays=groups, title="Re-basined models on the map")
        for tr in fig["data"]:
            if (tr.get("meta") or {}).get("role") == "models":
                tr["meta"] = {"role": "models-symmetry"}
        figs["fig-symmetry-map"] = fig
    summary: dict[str, Any] = {"overlays": [g["name"] for g in groups]}
    data: dict[str, Any] = {"map": "fig-symmetry-map" in figs, "pairs": None, "scalars": {}}
    if isinstance(sym, dict):
        pairs = sym.get("pairs") or []
        if pairs:
            keys = sorted({k for p in pairs for k in p})
            data["pairs"] = Table(keys, [[number(p.get(k)) if isinstance(p.get(k), (int, float))
                                          else str(p.get(k, "")) for k in keys] for p in pairs],
                                  caption="Alignment per pair")
        scalars = {k: v for k, v in sym.items() if isinstance(v, (int, float, str))}
        data["scalars"] = {k: number(v) for k, v in scalars.items()}
        summary.update(scalars)
    return Section(template="sections/symmetry.html.j2", data=data, figures=figs,
                   summary=summary)
