"""The section "Slices": the stored 1-D / 2-D slices and their PNGs."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossatlas.scale import drawable, log10_loss

from .. import figures as F
from ..html import Png, esc
from ..rundir import RunView
from ._registry import Section, section


@section("slices", "Slices",
         hint="lossatlas surface random {a} {model} {data} --out {run}")
def slices(view: RunView) -> Section | None:
    """The stored 1-D / 2-D slices (fields with ``attrs["slice"]``) and their PNGs."""
    found = view.slices
    if not found:
        return None
    figs: dict[str, dict] = {}
    summary: dict[str, Any] = {}
    plots: list[str] = []
    pngs: list[Png] = []
    for k, (name, ds) in enumerate(found.items()):
        info = view.slice_info(name)
        da = ds["loss"]
        dims = list(da.dims)
        kind = info.get("kind", "slice")
        title = f"{name.split('/')[-1]} ({kind})"
        units = info.get("units") or {}
        fid = f"fig-slice-{k}"
        vals = da.values.astype(float)
        fin = vals[np.isfinite(vals)]
        summary[name] = {"kind": kind, "shape": list(da.shape),
                         "min_loss": float(fin.min()) if len(fin) else None,
                         "max_loss": float(fin.max()) if len(fin) else None}
        anchors = info.get("anchors") or {}
        if len(dims) == 1:
            d = dims[0]
            marks = []
            for a, pos in anchors.items():
                if pos:
                    j = int(np.argmin(np.abs(ds[d].values - pos[0])))
                    marks.append({"x": float(ds[d].values[j]), "y": float(vals[j]),
                                  "text": esc(a)})
            figs[fid] = F.curve_figure(
                [{"name": "loss", "x": ds[d].values, "y": vals, "marks": marks}],
                esc(f"{d} ({units.get(d)})" if units.get(d) else d), esc(title))
        elif len(dims) == 2:
            d0, d1 = dims
            z = drawable(log10_loss(vals)).T  # [d1, d0]
            pts = [{"x": p[0], "y": p[1], "text": esc(a)} for a, p in anchors.items()
                   if len(p) >= 2]
            figs[fid] = F.contour_figure(ds[d0].values, ds[d1].values, z, esc(d0), esc(d1),
                                         esc(title), pts)
        else:
            continue
        plots.append(fid)
        for p in view.slice_pngs(name):
            pngs.append(Png.of(p, p.name))
            summary[name].setdefault("figures", []).append(str(p.relative_to(view.path)))
    return Section(template="sections/slices.html.j2", data={"plots": plots, "pngs": pngs},
                   figures=figs, summary=summary)
