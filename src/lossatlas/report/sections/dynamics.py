"""Training dynamics: "Phase transitions" (metrics along training with the
transitions, defect and stages of ``dynamics.json``) and "Algorithmic branches"
(models of one basin whose functions differ, ``branches.json``).
"""

from __future__ import annotations

import numpy as np

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._registry import Section, section


# ========================================================= phase transitions
@section("phase-transitions", "Phase transitions",
         hint="lossatlas dynamics {train}")
def phase_transitions(view: RunView) -> Section | None:
    """Metrics along training per run (``train/metrics.json``), with the transitions,
    defect and stages of ``dynamics.json`` marked when present."""
    metrics = view.metrics
    dyn = view.dynamics if isinstance(view.dynamics, dict) else None
    if not metrics and not dyn:
        return None
    runs_in = (metrics or {}).get("runs", metrics or {})
    variants = sorted({str(r.get("variant", k)) for k, r in runs_in.items()
                       if isinstance(r, dict)})
    runs, summary = [], {"runs": {}}
    for key, r in runs_in.items():
        rows = r.get("epochs") if isinstance(r, dict) else None
        if not rows:
            continue
        series = {}
        for m in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            vals = [row.get(m) for row in rows]
            if any(v is not None for v in vals):
                series[m] = [np.nan if v is None else float(v) for v in vals]
        x = [row.get("epoch", i) for i, row in enumerate(rows)]
        group = variants.index(str(r.get("variant", key)))
        runs.append({"name": esc(key), "group": group, "x": x, "series": series})
        last = rows[-1]
        summary["runs"][key] = {m: last.get(m) for m in series}
    marks = []
    transitions = dict((dyn or {}).get("transitions") or {})
    # the format of lossatlas.dynamics.dynamics_report: per run, per metric, change points
    # with the row index of the metric series; placed at that row's epoch
    for key, entry in ((dyn or {}).get("runs") or {}).items():
        run_key = str(key).replace("/", "_")
        xs = next((r["x"] for r in runs if r["name"] == esc(run_key)), None)
        pts = []
        for metric, found in (entry.get("transitions") or {}).items():
            for p in found if isinstance(found, list) else []:
                i = p.get("index") if isinstance(p, dict) else None
                if xs is not None and isinstance(i, int) and 0 <= i < len(xs):
                    pts.append({"epoch": xs[i], "metric": metric})
        transitions[run_key] = pts
    for key, points in transitions.items():
        for p in points if isinstance(points, list) else []:
            x = p.get("epoch") if isinstance(p, dict) else p
            text = p.get("metric", "transition") if isinstance(p, dict) else "transition"
            group = next((r["group"] for r in runs if r["name"] == esc(key)), 0)
            if isinstance(x, (int, float)):
                marks.append({"x": x, "text": esc(f"{key}: {text}"), "group": group})
    figs = {}
    plots = []
    if runs:
        figs["fig-training"] = F.training_figure(runs, marks)
    if dyn:
        for name in ("defect", "stages"):
            val = dyn.get(name)
            if isinstance(val, dict):
                lines = [{"name": esc(k), "x": v.get("x") or v.get("epoch") or [],
                          "y": v.get("y") or v.get("value") or []}
                         for k, v in val.items() if isinstance(v, dict)]
                if lines:
                    fid = f"fig-dynamics-{name}"
                    figs[fid] = F.curve_figure(lines, "epoch", f"{name.capitalize()} along "
                                               "training", ylabel=name, log=False)
                    plots.append(fid)
        summary["transitions"] = {k: len(v) for k, v in transitions.items()
                                  if isinstance(v, list)}
    if not figs:
        return None
    return Section(template="sections/phase_transitions.html.j2", figures=figs,
                   summary=summary, data={"training": "fig-training" in figs,
                                          "dynamics": bool(dyn), "plots": plots})


# ======================================================= algorithmic branches
@section("branches", "Algorithmic branches", hint="lossatlas branches {train} {dataset}")
def branches(view: RunView) -> Section | None:
    """Models of one basin whose functions differ (``branches.json`` as written by
    :func:`lossatlas.dynamics.branches_report`: per model its basin and branch, the
    functional distance matrix, branches per basin and their separation)."""
    br = view.branches
    if not isinstance(br, dict) or "branch" not in br or "basin" not in br:
        return None
    models = br.get("models") or []
    names = []
    for i, lab in enumerate(models):
        if isinstance(lab, dict):
            parts = [str(lab.get("variant", i))] + [f"{k} {lab[k]}" for k in ("seed", "epoch")
                                                     if k in lab]
            names.append(" / ".join(parts))
        else:
            names.append(str(lab))
    metric = str(br.get("metric", "disagreement"))
    figs: dict[str, dict] = {}
    dist = br.get("distances")
    if dist:
        shown = [esc(n) for n in names]  # plotly draws the labels as HTML
        figs["fig-branches"] = F.heatmap_figure(np.asarray(dist, float), shown, shown,
                                                esc(f"functional distance ({metric})"),
                                                esc(metric), colorscale="Cividis")
    sep = br.get("separation") or {}
    rows = []
    for b, n in sorted((br.get("num_branches") or {}).items(), key=lambda kv: str(kv[0])):
        members = [names[i] for i, bb in enumerate(br["basin"]) if str(bb) == str(b)
                   and i < len(names)]
        ratio = (sep.get(str(b)) or {}).get("ratio")
        rows.append([str(b), ", ".join(members), number(n),
                     number(ratio) if isinstance(ratio, float) and np.isfinite(ratio)
                     else "n/a"])
    data = {"metric": metric, "heatmap": "fig-branches" in figs,
            "table": Table(["basin", "models", "branches", "separation (between / within)"],
                           rows)}
    return Section(template="sections/branches.html.j2", data=data, figures=figs,
                   summary={"basins": len(br.get("num_branches") or {}),
                            "branches": int(sum((br.get("num_branches") or {}).values()))})
