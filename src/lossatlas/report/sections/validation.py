"""The seed's two downstream validations as report sections.

- "Table 2": mode-connectivity curves projected onto each map (``RUN/table2.json``,
  written by :func:`lossatlas.connectivity.curve_table.write_curve_table`);
- "Re-basin": re-basined models and their permuted trajectories on a joint map
  (``RUN/rebasin.json``, written by
  :func:`lossatlas.symmetry.rebasin_study.write_rebasin_study`).

Registered with :func:`~lossatlas.report.sections.section` when this module is
imported (``lossatlas.report.sections`` imports it); like every builder they read stored
values only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .. import figures as F
from ..html import Table, esc, fmt, number
from ..rundir import RunView
from ._registry import Section, section

__all__ = ["rebasin", "table2"]


def _read(view: RunView, name: str) -> dict | None:
    """``RUN/name`` or, failing that, the first ``RUN/*/name`` (a study run into a
    sub-folder, e.g. ``lossatlas study rebasin --out RUN/rebasin``); None if neither."""
    p = view.path / name
    if not p.is_file():
        below = sorted(view.path.glob(f"*/{name}"))
        if not below:
            return None
        p = below[0]
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"report: {p} is not valid JSON ({err})") from err


def _range(r: Any) -> str:
    """A stored ``[low, high]`` as text; ``n/a`` when incomplete."""
    if not isinstance(r, list) or len(r) != 2 or None in r:
        return "n/a"
    return f"{number(r[0])} – {number(r[1])}"


def _map_figure(m: dict, overlays: list[dict], title: str, basins: list | None = None) -> dict:
    """A stored map (field samples, log10 loss, model codes) with overlays drawn on it."""
    samples = np.asarray(m["samples"], dtype=float)
    logl = np.asarray(m["log10_loss"], dtype=float)
    grid = F.grid_field(samples, logl, 120, m.get("box_lo"), m.get("box_hi"))
    codes = np.asarray(m["models"], dtype=float).reshape(-1, 2)
    labels = [str(v) for v in m.get("labels") or range(len(codes))]
    basins = basins if basins is not None else [0] * len(codes)
    models = [{"name": "models", "x": codes[:, 0], "y": codes[:, 1],
               "index": list(range(len(codes))), "basin": basins,
               "text": [esc(f"model {i}: {lab}") for i, lab in enumerate(labels)]}]
    return F.landscape_figure(grid, samples, logl, models, overlays=overlays, title=title)


def _curve_overlays(entry: dict, key: str, data: dict) -> list[dict]:
    out = []
    for pair, c in entry["pairs"].items():
        codes = np.asarray(c.get(f"{key}_codes") or [], dtype=float)
        if codes.ndim != 2 or codes.shape[1] < 2 or not np.isfinite(codes).all():
            continue
        true = data.get("true_loss", {}).get(pair) or []
        dec = c.get(f"{key}_loss") or []
        texts = [f"<b>{esc(pair)}</b> t={t:.3f}<br>true loss {fmt(a, 'nats')}<br>"
                 f"decoded {fmt(b, 'nats')}"
                 for t, a, b in zip(data.get("t", []), true, dec, strict=False)]
        out.append({"name": esc(f"curve {pair}"), "x": codes[:, 0], "y": codes[:, 1],
                    "text": texts})
    return out


@section("table2", "Mode connectivity on the map (Table 2)",
         hint="run lossatlas.connectivity.curve_table.curve_table and write_curve_table")
def table2(view: RunView) -> Section | None:
    """Per method and pair: true loss range along the curve, range of the loss at the
    decoded projected points, median absolute error (projected, span floor, included);
    the curves drawn on each 2-D map."""
    data = _read(view, "table2.json")
    if not data or not data.get("rows"):
        return None
    rows = []
    for r in data["rows"]:
        rows.append([str(r["method"]), str(r["pair"]), _range(r.get("true_range")),
                     _range(r.get("projected_range")), number(r.get("projected_mae"), "", 3),
                     number(r.get("span_mae"), "", 3), _range(r.get("included_range")),
                     number(r.get("included_mae"), "", 3),
                     number(r.get("included_raw_mae"), "", 3)])
    table = Table(["map", "pair", "curve loss range", "projected loss range", "projected MAE",
                   "span floor MAE", "included loss range", "included MAE",
                   "included MAE, no correction"], rows,
                  caption=f"{len(data.get('pairs') or [])} pairs, "
                          f"{data.get('points_per_curve')} points per curve, loss in nats")
    med = data.get("median_abs_error") or {}
    medians = (Table(["map", "median projected MAE", "median included MAE"],
                     [[str(m), number(e.get("projected"), "nats", 3),
                       number(e.get("included"), "nats", 3)] for m, e in med.items()],
                     caption="Median over pairs") if med else None)
    figs: dict[str, dict] = {}
    maps = []
    for method, entry in (data.get("curves") or {}).items():
        for key, map_key, what in (("projected", "map", "projected"),
                                   ("included", "included_map", "included")):
            m = entry.get(map_key)
            overlays = _curve_overlays(entry, key, data)
            if not m or not overlays:
                continue
            fid = f"fig-table2-{len(figs)}"
            figs[fid] = _map_figure(m, overlays, esc(f"{method} map: curves {what}"))
            maps.append(fid)
    skipped = (", ".join(f"{k} ({v})" for k, v in data["skipped"].items())
               if data.get("skipped") else None)
    summary = {k: data.get(k) for k in ("reference", "pairs", "methods", "units",
                                        "median_abs_error", "skipped")}
    summary["rows"] = [{k: r.get(k) for k in ("method", "pair", "true_range",
                                              "projected_range", "projected_mae",
                                              "span_mae", "included_range", "included_mae",
                                              "included_raw_mae")}
                       for r in data["rows"]]
    return Section(template="sections/table2.html.j2", figures=figs, summary=summary,
                   data={"reference": data.get("reference"), "table": table,
                         "medians": medians, "maps": maps, "skipped": skipped})


@section("rebasin", "Re-basin on the map",
         hint="lossatlas study rebasin --pairs 16 --out {run}/rebasin")
def rebasin(view: RunView) -> Section | None:
    """Re-basined models on a joint map: basin against the partner's (and the control's),
    permuted training trajectories with their projection error."""
    data = _read(view, "rebasin.json")
    if not data or not data.get("pairs"):
        return None
    n = len(data["pairs"])
    rows = []
    for p in data["pairs"]:
        tr = p.get("trajectory") or {}
        rows.append([str(p["a"]), str(p["b"]), number(p.get("partner_basin")),
                     number(p.get("rebased_basin")), "yes" if p.get("same_basin") else "no",
                     number(p.get("control_basin")), number(p.get("distance_before"), "", 3),
                     number(p.get("distance_after"), "", 3),
                     number(p.get("rebased_abs_error"), "nats", 3),
                     number(tr.get("median_abs_error"), "nats", 3)])
    table = Table(["A", "B", "A's basin", "re-basined B's basin", "same",
                   "B's basin (control)", "|B − A|", "|P·B − A|", "re-basined error",
                   "trajectory MAE"], rows, caption="Per pair (distances in parameter units)")
    figs: dict[str, dict] = {}
    m = data.get("map")
    if m:
        overlays = []
        reb = np.asarray([p["rebased_code"] for p in data["pairs"]], dtype=float)
        if reb.ndim == 2 and reb.shape[1] >= 2:
            overlays.append({"name": "re-basined B", "x": reb[:, 0], "y": reb[:, 1],
                             "text": [esc(f"{p['b']} onto {p['a']}: basin "
                                          f"{p.get('rebased_basin')} (A's "
                                          f"{p.get('partner_basin')})")
                                      for p in data["pairs"]]})
        for p in data["pairs"]:
            codes = np.asarray((p.get("trajectory") or {}).get("codes") or [], dtype=float)
            if codes.ndim == 2 and codes.shape[1] >= 2:
                overlays.append({"name": esc(f"{p['b']} trajectory, permuted"),
                                 "x": codes[:, 0], "y": codes[:, 1],
                                 "text": [esc(f"{p['b']} epoch {e}") for e in
                                          p["trajectory"].get("epochs", [])]})
        figs["fig-rebasin"] = _map_figure(m, overlays, "Re-basined models on the joint map",
                                          m.get("model_basin"))
    summary = {k: data.get(k) for k in ("in_partner_basin", "control_in_partner_basin",
                                        "nearest_is_partner",
                                        "num_basins", "trajectory_median_abs_error",
                                        "rebased_median_abs_error")}
    summary["pairs"] = n
    shown = {k: data.get(k) for k in ("in_partner_basin", "control_in_partner_basin",
                                      "nearest_is_partner", "num_basins")}
    shown.update(pairs=n, table=table, map="fig-rebasin" in figs)
    return Section(template="sections/rebasin.html.j2", figures=figs, summary=summary,
                   data=shown)
