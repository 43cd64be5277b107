"""The survey's built-in studies as report sections (issue 19).

Each study writes a run directory of its own with a summary JSON; the report shows it
when that summary is in the run (``RUN/NAME.json``, e.g. ``lossatlas report`` on the
study's directory) or one level down (``RUN/SUB/NAME.json``, a study run with
``out_dir`` inside the atlas's run):

- "Induction heads": ``induction.json`` (:func:`lossatlas.studies.run_induction_heads`);
- "Batch size vs flatness": ``batch_size.json`` (:func:`lossatlas.studies.run_batch_size`);
- "Grokking lead time": ``lead_time_law.json`` (:func:`lossatlas.dynamics.lead_time_sweep`
  or :func:`lossatlas.dynamics.write_lead_time_law`), with ``interventions.json``
  (:func:`lossatlas.dynamics.grokking_interventions`) when beside it;
- "Double descent": ``double_descent.json`` (:func:`lossatlas.studies.run_double_descent`)
  and its stored filter-normalised surfaces.

Registered when this module is imported (``lossatlas.report`` imports it); builders
read stored values only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossatlas.scale import drawable, log10_loss

from . import figures as F
from .html import Table, esc, number
from .rundir import RunView, _natural_key
from .sections import Section, section

__all__ = ["batch_size", "double_descent", "induction_heads", "lead_time", "study_summaries"]


def study_summaries(view: RunView, filename: str) -> list[tuple[Path, dict]]:
    """``(folder, summary)`` of every ``filename`` in the run (top level first, then one
    level down in natural order); a file that is not a JSON object is refused."""
    found = [view.path / filename] if (view.path / filename).is_file() else []
    found += [p / filename for p in sorted(view.path.iterdir(), key=lambda p: _natural_key(p.name))
              if p.is_dir() and not p.name.startswith(".") and (p / filename).is_file()]
    out = []
    for p in found:
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"report: {p} is not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"report: {p} holds a {type(data).__name__}, expected an object")
        out.append((p.parent, data))
    return out


def _where(view: RunView, folder: Path) -> str:
    rel = folder.relative_to(view.path)
    return "this run" if str(rel) == "." else f"{rel}/"


def _log_x(fig: dict) -> dict:
    fig["layout"]["xaxis"]["type"] = "log"
    return fig


def _studies(view: RunView, filename: str, build, body: str) -> Section | None:
    """One part per stored summary (under a heading naming its folder when several),
    each shown by the template ``sections/BODY.html.j2``; ``build(view, folder, summary,
    tag)`` returns the part's values ({facts, plots, tables, stacked}), its figures and
    its facts for ``summary.json``."""
    found = study_summaries(view, filename)
    if not found:
        return None
    parts, figs, summary = [], {}, {}
    for k, (folder, data) in enumerate(found):
        where = _where(view, folder)
        part, f, s = build(view, folder, data, f"{k}")
        parts.append({"where": where, "stacked": False, **part})
        figs.update(f)
        summary[where] = s
    return Section(template="sections/study.html.j2", figures=figs, summary=summary,
                   data={"body": f"sections/{body}.html.j2", "parts": parts})


def _facts(items: Sequence[tuple[str, str]], caption: str) -> Table:
    """A study's facts: a two-column table of quantities and their values (text)."""
    return Table(["quantity", "value"], [[k, v] for k, v in items], caption=caption)


def _steps(values: Any) -> str:
    """Step numbers as text (``none`` when there are none)."""
    if not isinstance(values, list) or not values:
        return "none"
    return ", ".join(number(v) for v in values)


# ============================================================== induction heads
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


# ======================================================= batch size vs flatness
def _means(rows: list[dict], x: str, keys: Sequence[str]) -> tuple[list, dict[str, list]]:
    xs = sorted({r[x] for r in rows if isinstance(r.get(x), (int, float))})
    out = {}
    for k in keys:
        out[k] = [float(np.mean([float(r[k]) for r in rows if r.get(x) == v
                                 and isinstance(r.get(k), (int, float))] or [np.nan]))
                  for v in xs]
    return xs, out


def _batch(view: RunView, folder: Path, s: dict, tag: str) -> tuple[dict, dict, dict]:
    rows = [r for r in s.get("models") or [] if isinstance(r, dict)]
    xs, mean = _means(rows, "batch_size", ("lambda_max", "sharpness", "loss_gap", "error_gap"))
    figs = {
        f"fig-batch-{tag}-sharp": _log_x(F.curve_figure(
            [{"name": "top Hessian eigenvalue (nats / parameter²)", "x": xs,
              "y": mean["lambda_max"]},
             {"name": "ε-sharpness (nats)", "x": xs, "y": mean["sharpness"], "dash": "dash"}],
            "mini-batch size (samples, log scale)", "Flatness of the minimum vs batch size",
            ylabel="top eigenvalue · ε-sharpness (log scale)")),
        f"fig-batch-{tag}-gap": _log_x(F.curve_figure(
            [{"name": "loss gap (test − train, nats)", "x": xs, "y": mean["loss_gap"]},
             {"name": "error gap (test − train, fraction)", "x": xs, "y": mean["error_gap"],
              "dash": "dash"}],
            "mini-batch size (samples, log scale)", "Generalisation gap vs batch size",
            ylabel="gap", log=False)),
    }
    table_rows = [[number(r.get("batch_size")), number(r.get("seed")), number(r.get("epochs")),
                   "yes" if r.get("reached_target") else "no",
                   number(r.get("train_loss"), "", 4), number(r.get("test_loss"), "", 4),
                   number(r.get("loss_gap"), "", 4), number(r.get("lambda_max"), "", 4),
                   number(r.get("trace"), "", 4), number(r.get("sharpness"), "", 4)]
                  for r in rows]
    sp = s.get("spearman") or {}
    cfg = s.get("config") or {}
    items = [("top eigenvalue, largest / smallest batch",
              number(s.get("lambda_max_ratio"), "", 3)),
             ("Spearman: batch size ~ top eigenvalue",
              number(sp.get("batch_size_lambda_max"), "", 3)),
             ("Spearman: batch size ~ ε-sharpness", number(sp.get("batch_size_sharpness"), "", 3)),
             ("Spearman: batch size ~ loss gap", number(sp.get("batch_size_loss_gap"), "", 3)),
             ("Spearman: top eigenvalue ~ loss gap",
              number(sp.get("lambda_max_loss_gap"), "", 3)),
             ("training", f"SGD lr {cfg.get('lr', 'n/a')} to training loss "
                          f"{cfg.get('target_loss', 'n/a')} nats (at most "
                          f"{cfg.get('max_epochs', 'n/a')} epochs), "
                          f"{cfg.get('dataset', 'n/a')}, {cfg.get('num_train', 'n/a')} "
                          "training samples")]
    part = {"facts": _facts(items, "Batch size vs flatness, summary"), "plots": list(figs),
            "tables": [Table(["batch size", "seed", "epochs", "reached target", "train loss",
                              "test loss", "loss gap", "top eigenvalue", "trace",
                              "ε-sharpness"], table_rows,
                             caption="Per model (losses in nats, eigenvalue and trace in "
                                     "nats / parameter², ε-sharpness in nats)")]}
    summary = {"batch_sizes": xs, "lambda_max": mean["lambda_max"],
               "sharpness": mean["sharpness"], "loss_gap": mean["loss_gap"],
               "lambda_max_ratio": s.get("lambda_max_ratio"), "spearman": sp}
    return part, figs, summary


@section("batch-size", "Batch size vs flatness",
         hint="lossatlas study batch-size --out {run}/batch_size")
def batch_size(view: RunView) -> Section | None:
    """Top eigenvalue, ε-sharpness and generalisation gap across the batch-size sweep
    (``batch_size.json``)."""
    return _studies(view, "batch_size.json", _batch, "batch_size")


# ============================================================ grokking lead time
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


# ================================================================ double descent
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
