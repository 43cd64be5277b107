"""The section "Induction heads": the study's ``induction.json``
(:func:`lossatlas.studies.run_induction_heads`), laid out by :mod:`.studies`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import figures as F
from ..html import esc, number
from ..rundir import RunView
from ._registry import Section, section
from .studies import _facts, _steps, _studies


def _induction(view: RunView, folder: Path, s: dict, tag: str) -> tuple[dict, dict, dict]:
    m = s.get("metrics") or {}
    steps = np.asarray(m.get("step") or [], dtype=float)
    ck = np.asarray(s.get("checkpoint_steps") or [], dtype=float)
    stages = [b for b in s.get("stages") or [] if isinstance(b, dict)]
    drop = s.get("drop_step")
    bigram = s.get("bigram_loss")
    figs: dict[str, dict] = {}
    lines = [{"name": "held-out loss, all positions", "x": steps, "y": m.get("loss") or []},
             {"name": "held-out loss, repeated positions", "x": steps,
              "y": m.get("copy_loss") or []}]
    if isinstance(bigram, (int, float)) and len(steps):
        lines.append({"name": "bigram solution", "x": [steps[0], steps[-1]],
                      "y": [bigram, bigram], "dash": "dash"})
    figs[f"fig-induction-{tag}-loss"] = F.curve_figure(
        lines, "training step", "Loss along training: the bigram plateau, then the drop",
        ylabel="cross-entropy (nats)", log=False)
    score = {"name": "induction score", "x": steps, "y": m.get("induction_score") or []}
    if drop is not None and len(steps):
        j = int(np.argmin(np.abs(steps - float(drop))))
        score["marks"] = [{"x": float(drop), "y": float(score["y"][j]),
                           "text": esc(f"drop at step {number(drop)}")}]
    figs[f"fig-induction-{tag}-score"] = F.curve_figure(
        [score], "training step", "Induction score along training",
        ylabel="induction score (attention probability)", log=False)
    llc = np.asarray(s.get("llc") or [], dtype=float)
    marks = []
    for b in stages:
        if len(ck) and len(llc) == len(ck):
            j = int(np.argmin(np.abs(ck - float(b.get("step", np.nan)))))
            marks.append({"x": float(ck[j]), "y": float(llc[j]),
                          "text": esc(f"stage boundary ({b.get('kind', '')})")})
    figs[f"fig-induction-{tag}-llc"] = F.curve_figure(
        [{"name": "LLC", "x": ck, "y": llc, "marks": marks},
         {"name": "commutator defect", "x": ck, "y": s.get("defect") or [], "dash": "dot"}],
        "training step (checkpoints)", "LLC and commutator defect at the checkpoints",
        ylabel="LLC (dimensionless) · defect (relative)", log=False)
    boundary_steps = [b.get("step") for b in stages]
    cfg = s.get("config") or {}
    items = [("bigram loss (plateau level)", number(bigram, "nats")),
             ("lowest loss before the drop", number(s.get("plateau_loss"), "nats")),
             ("final loss", number(s.get("final_loss"), "nats")),
             ("final induction score", number(s.get("final_induction_score"))),
             ("induction drop (score half-way up)",
              "none within the run" if drop is None else f"step {number(drop)}"),
             ("LLC stage boundaries (steps)", _steps(boundary_steps)),
             ("boundary nearest the drop", number(s.get("nearest_boundary_step"))),
             ("its offset from the drop (checkpoints)",
              number(s.get("boundary_offset_checkpoints"), "", 3)),
             ("training", f"{cfg.get('steps', 'n/a')} steps, preset "
                          f"{cfg.get('preset', 'n/a')}, seed {cfg.get('seed', 'n/a')}")]
    part = {"facts": _facts(items, "Induction heads, summary"), "plots": list(figs),
            "tables": []}
    summary = {k: s.get(k) for k in ("bigram_loss", "plateau_loss", "final_loss",
                                     "final_induction_score", "drop_step",
                                     "nearest_boundary_step", "boundary_offset_checkpoints")}
    summary["stage_boundary_steps"] = boundary_steps
    return part, figs, summary


@section("induction-heads", "Induction heads",
         hint="lossatlas study induction-heads --out {run}/induction")
def induction_heads(view: RunView) -> Section | None:
    """Loss, induction score, LLC with its stage boundaries and the commutator defect
    along the training of the attention-only transformer (``induction.json``)."""
    return _studies(view, "induction.json", _induction, "induction")
