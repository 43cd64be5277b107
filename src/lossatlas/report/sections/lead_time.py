"""The section "Grokking lead time": ``lead_time_law.json``, with
``interventions.json`` when beside it, laid out by :mod:`.studies`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._registry import Section, section
from .studies import _facts, _log_x, _studies


def _interval(ci: Any) -> str:
    """A stored ``[low, high]`` interval as text; ``n/a`` when incomplete or not finite."""
    if not isinstance(ci, list) or len(ci) != 2 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return "n/a"
    return f"[{number(ci[0], '', 3)}, {number(ci[1], '', 3)}]"


def _lead(view: RunView, folder: Path, s: dict, tag: str) -> tuple[dict, dict, dict]:
    runs = [r for r in s.get("runs") or [] if isinstance(r, dict)]
    used = [r for r in runs if r.get("onset_step") and isinstance(r.get("lead_time"), (int, float))
            and r["lead_time"] > 0]
    law = s.get("law") if isinstance(s.get("law"), dict) else None
    lines = []
    for p in sorted({r.get("p") for r in used}, key=str):
        pts = sorted((float(r["onset_step"]), float(r["lead_time"])) for r in used
                     if r.get("p") == p)
        lines.append({"name": esc(f"p = {p}"), "x": [a for a, _ in pts],
                      "y": [b for _, b in pts]})
    if law is not None and law.get("onsets"):
        xs = np.geomspace(min(law["onsets"]), max(law["onsets"]), 30)
        lines.append({"name": esc(f"fit: lead = {number(law['prefactor'], '', 3)} · "
                                  f"onset^{number(law['exponent'], '', 3)}"),
                      "x": xs, "y": law["prefactor"] * xs ** law["exponent"], "dash": "dash"})
    figs = {}
    if lines:
        fig = _log_x(F.curve_figure(lines, "grokking onset (steps, log scale)",
                                    "Defect lead time against grokking onset",
                                    ylabel="defect lead time (steps, log scale)"))
        for tr in fig["data"][: len(lines) - (law is not None)]:
            tr["mode"] = "markers"
        figs[f"fig-lead-{tag}"] = fig
    level = law.get("level") if law else None
    pct = f"{100 * level:.0f}%" if isinstance(level, (int, float)) else "n/a"
    items = [("exponent α (lead ∝ onset^α)",
              number(law.get("exponent") if law else None, "", 4)),
             (f"{pct} interval of α (OLS, t)",
              _interval(law.get("exponent_ci")) if law else "n/a"),
             (f"{pct} interval of α (bootstrap)",
              _interval(law.get("exponent_ci_bootstrap")) if law else "n/a"),
             ("standard error of α", number(law.get("exponent_se") if law else None, "", 3)),
             ("prefactor c (steps^(1−α))", number(law.get("prefactor") if law else None, "", 4)),
             ("R² (log-log)", number(law.get("r2") if law else None, "", 4)),
             ("runs used / all runs", f"{len(used)} / {len(runs)}")]
    rises = [r for r in runs if isinstance(r.get("defect_rise_step"), (int, float))]
    late = [r for r in rises if isinstance(r.get("onset_step"), (int, float))
            and r["defect_rise_step"] >= r["onset_step"]]
    items.append(("runs grokked / defect rise found / rise at or after the onset",
                  f"{sum(bool(r.get('grokked')) for r in runs)} / {len(rises)} / {len(late)}"))
    line = s.get("rise_vs_onset") if isinstance(s.get("rise_vs_onset"), dict) else None
    if line is not None:
        items.append(("rise step against onset step (line fit)",
                      f"slope {number(line.get('slope'), '', 3)}, r = "
                      f"{number(line.get('r'), '', 3)}; spread of the rise "
                      f"{number(line.get('rise_sd'))} vs the onset {number(line.get('onset_sd'))}"
                      " steps"))
    fixed_rise = (line is not None and isinstance(line.get("rise_sd"), (int, float))
                  and isinstance(line.get("onset_sd"), (int, float))
                  and line["rise_sd"] < 0.5 * line["onset_sd"])
    tables = [Table(["p", "weight decay", "seed", "onset (step)", "defect rise (step)",
                     "lead (steps)", "final validation accuracy"],
                    [[str(r.get("p")), number(r.get("weight_decay")), number(r.get("seed")),
                      number(r.get("onset_step")), number(r.get("defect_rise_step")),
                      number(r.get("lead_time")), number(r.get("final_val_accuracy"), "", 3)]
                     for r in runs], caption="Grokking runs")]
    inter = folder / "interventions.json"
    effects = None
    if inter.is_file():
        try:
            effects = json.loads(inter.read_text()).get("effects") or {}
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"report: {inter} is not a JSON object ({err})") from err
        tables.append(Table(["intervention", "onset change (steps)", "onset ratio",
                             "direction"],
                            [[n.replace("_", " "), number(e.get("onset_change")),
                              number(e.get("onset_ratio"), "", 3), str(e.get("direction"))]
                             for n, e in effects.items()],
                            caption="Interventions against the baseline run"))
    part = {"facts": _facts(items, "Lead-time law" + ("" if law else ": no law fitted (fewer "
                                                      "than two distinct onsets)")),
            "plots": list(figs), "tables": tables, "stacked": True,
            "note": ("The defect rises at about the same step whatever the onset (its spread "
                     "is under half the onset's): the lead is then close to onset minus a "
                     "constant, and the log-log exponent reflects that offset more than a "
                     "power law.") if fixed_rise else None}
    summary = {"law": {k: law.get(k) for k in ("exponent", "exponent_ci",
                                                "exponent_ci_bootstrap", "exponent_se",
                                                "prefactor", "r2", "level")} if law else None,
               "runs": len(runs), "used": len(used), "rises": len(rises),
               "rises_at_or_after_onset": len(late), "rise_at_fixed_step": fixed_rise,
               "interventions": effects}
    return part, figs, summary


@section("grokking-lead-time", "Grokking lead time",
         hint="lossatlas study grokking-law --out {run}/lead_time")
def lead_time(view: RunView) -> Section | None:
    """The fitted lead-time law with its interval, the runs, and the interventions'
    effect on onset when stored (``lead_time_law.json``, ``interventions.json``)."""
    return _studies(view, "lead_time_law.json", _lead, "lead_time")
