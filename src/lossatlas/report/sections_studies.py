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

from . import figures as F
from .html import esc, fmt, table
from .rundir import RunView, _natural_key
from .sections import Section, plot_div, section

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


def _studies(view: RunView, filename: str, build) -> Section | None:
    """One sub-section per stored summary (a heading naming its folder when several)."""
    found = study_summaries(view, filename)
    if not found:
        return None
    html, figs, summary = [], {}, {}
    for k, (folder, data) in enumerate(found):
        where = _where(view, folder)
        if len(found) > 1:
            html.append(f"<h3>{esc(where)}</h3>")
        body, f, s = build(view, folder, data, f"{k}")
        html.append(body)
        figs.update(f)
        summary[where] = s
    return Section("".join(html), figs, summary)


def _kv_table(items: Sequence[tuple[str, str]], caption: str) -> str:
    return table(["quantity", "value"], [[esc(k), v] for k, v in items], raw=True,
                 caption=caption)


def _steps(values: Any) -> str:
    if not isinstance(values, list) or not values:
        return "none"
    return ", ".join(fmt(v) for v in values)


# ============================================================== induction heads
def _induction(view: RunView, folder: Path, s: dict, tag: str) -> tuple[str, dict, dict]:
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
                           "text": esc(f"drop at step {fmt(drop)}")}]
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
    items = [("bigram loss (plateau level)", fmt(bigram, "nats")),
             ("lowest loss before the drop", fmt(s.get("plateau_loss"), "nats")),
             ("final loss", fmt(s.get("final_loss"), "nats")),
             ("final induction score", fmt(s.get("final_induction_score"))),
             ("induction drop (score half-way up)",
              "none within the run" if drop is None else f"step {fmt(drop)}"),
             ("LLC stage boundaries (steps)", esc(_steps(boundary_steps))),
             ("boundary nearest the drop", fmt(s.get("nearest_boundary_step"))),
             ("its offset from the drop (checkpoints)", fmt(s.get("boundary_offset_checkpoints"),
                                                            "", 3)),
             ("training", esc(f"{cfg.get('steps', 'n/a')} steps, preset "
                              f"{cfg.get('preset', 'n/a')}, seed {cfg.get('seed', 'n/a')}"))]
    html = ['<p class="intro">A two-layer attention-only transformer learns next-token '
            "prediction on Markov sequences with a repeated segment: the loss first settles "
            "at the bigram solution, then drops as induction heads form (the induction "
            "score rises). The local learning coefficient (LLC) along the checkpoints marks "
            "developmental stages; the survey expects a stage boundary at the drop.</p>",
            _kv_table(items, "Induction heads, summary"),
            '<div class="grid2">' + "".join(plot_div(f) for f in figs) + "</div>"]
    summary = {k: s.get(k) for k in ("bigram_loss", "plateau_loss", "final_loss",
                                     "final_induction_score", "drop_step",
                                     "nearest_boundary_step", "boundary_offset_checkpoints")}
    summary["stage_boundary_steps"] = boundary_steps
    return "".join(html), figs, summary


@section("induction-heads", "Induction heads",
         hint="lossatlas study induction-heads --out {run}/induction")
def induction_heads(view: RunView) -> Section | None:
    """Loss, induction score, LLC with its stage boundaries and the commutator defect
    along the training of the attention-only transformer (``induction.json``)."""
    return _studies(view, "induction.json", _induction)


# ======================================================= batch size vs flatness
def _means(rows: list[dict], x: str, keys: Sequence[str]) -> tuple[list, dict[str, list]]:
    xs = sorted({r[x] for r in rows if isinstance(r.get(x), (int, float))})
    out = {}
    for k in keys:
        out[k] = [float(np.mean([float(r[k]) for r in rows if r.get(x) == v
                                 and isinstance(r.get(k), (int, float))] or [np.nan]))
                  for v in xs]
    return xs, out


def _batch(view: RunView, folder: Path, s: dict, tag: str) -> tuple[str, dict, dict]:
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
    table_rows = [[fmt(r.get("batch_size")), fmt(r.get("seed")), fmt(r.get("epochs")),
                   esc("yes" if r.get("reached_target") else "no"),
                   fmt(r.get("train_loss"), "", 4), fmt(r.get("test_loss"), "", 4),
                   fmt(r.get("loss_gap"), "", 4), fmt(r.get("lambda_max"), "", 4),
                   fmt(r.get("trace"), "", 4), fmt(r.get("sharpness"), "", 4)] for r in rows]
    sp = s.get("spearman") or {}
    cfg = s.get("config") or {}
    items = [("top eigenvalue, largest / smallest batch", fmt(s.get("lambda_max_ratio"), "", 3)),
             ("Spearman: batch size ~ top eigenvalue", fmt(sp.get("batch_size_lambda_max"), "", 3)),
             ("Spearman: batch size ~ ε-sharpness", fmt(sp.get("batch_size_sharpness"), "", 3)),
             ("Spearman: batch size ~ loss gap", fmt(sp.get("batch_size_loss_gap"), "", 3)),
             ("Spearman: top eigenvalue ~ loss gap", fmt(sp.get("lambda_max_loss_gap"), "", 3)),
             ("training", esc(f"SGD lr {cfg.get('lr', 'n/a')} to training loss "
                              f"{cfg.get('target_loss', 'n/a')} nats (at most "
                              f"{cfg.get('max_epochs', 'n/a')} epochs), "
                              f"{cfg.get('dataset', 'n/a')}, {cfg.get('num_train', 'n/a')} "
                              "training samples"))]
    html = ['<p class="intro">The same network from the same initialisation trained with '
            "plain SGD to the same training loss, only the mini-batch size differs (Keskar "
            "et al.). The survey expects large batches to end in sharper minima (larger top "
            "Hessian eigenvalue and ε-sharpness) that generalise worse.</p>",
            _kv_table(items, "Batch size vs flatness, summary"),
            '<div class="grid2">' + "".join(plot_div(f) for f in figs) + "</div>",
            table(["batch size", "seed", "epochs", "reached target", "train loss",
                   "test loss", "loss gap", "top eigenvalue", "trace", "ε-sharpness"],
                  table_rows, raw=True, caption="Per model (losses in nats, eigenvalue and "
                  "trace in nats / parameter², ε-sharpness in nats)")]
    summary = {"batch_sizes": xs, "lambda_max": mean["lambda_max"],
               "sharpness": mean["sharpness"], "loss_gap": mean["loss_gap"],
               "lambda_max_ratio": s.get("lambda_max_ratio"), "spearman": sp}
    return "".join(html), figs, summary


@section("batch-size", "Batch size vs flatness",
         hint="lossatlas study batch-size --out {run}/batch_size")
def batch_size(view: RunView) -> Section | None:
    """Top eigenvalue, ε-sharpness and generalisation gap across the batch-size sweep
    (``batch_size.json``)."""
    return _studies(view, "batch_size.json", _batch)


# ============================================================ grokking lead time
def _interval(ci: Any) -> str:
    if not isinstance(ci, list) or len(ci) != 2 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in ci):
        return "n/a"
    return f"[{fmt(ci[0], '', 3)}, {fmt(ci[1], '', 3)}]"


def _lead(view: RunView, folder: Path, s: dict, tag: str) -> tuple[str, dict, dict]:
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
        lines.append({"name": esc(f"fit: lead = {fmt(law['prefactor'], '', 3)} · "
                                  f"onset^{fmt(law['exponent'], '', 3)}"),
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
    items = [("exponent α (lead ∝ onset^α)", fmt(law.get("exponent") if law else None, "", 4)),
             (f"{pct} interval of α (OLS, t)", esc(_interval(law.get("exponent_ci"))
                                                     if law else "n/a")),
             (f"{pct} interval of α (bootstrap)", esc(_interval(law.get("exponent_ci_bootstrap"))
                                                       if law else "n/a")),
             ("standard error of α", fmt(law.get("exponent_se") if law else None, "", 3)),
             ("prefactor c (steps^(1−α))", fmt(law.get("prefactor") if law else None, "", 4)),
             ("R² (log-log)", fmt(law.get("r2") if law else None, "", 4)),
             ("runs used / all runs", esc(f"{len(used)} / {len(runs)}"))]
    html = ['<p class="intro">The commutator defect rises before grokking (the jump of '
            "validation accuracy); over several moduli p and weight decays the survey finds "
            "the lead time growing as a superlinear power of the onset step (α ≈ 1.1–1.2). "
            "Runs without an onset or without a defect rise before it cannot enter the "
            "log-log fit.</p>",
            _kv_table(items, "Lead-time law" + ("" if law else ": no law fitted (fewer than "
                                                "two distinct onsets)"))]
    html += [plot_div(f) for f in figs]
    html.append(table(["p", "weight decay", "seed", "onset (step)", "defect rise (step)",
                       "lead (steps)", "final validation accuracy"],
                      [[esc(r.get("p")), fmt(r.get("weight_decay")), fmt(r.get("seed")),
                        fmt(r.get("onset_step")), fmt(r.get("defect_rise_step")),
                        fmt(r.get("lead_time")), fmt(r.get("final_val_accuracy"), "", 3)]
                       for r in runs], raw=True, caption="Grokking runs"))
    inter = folder / "interventions.json"
    effects = None
    if inter.is_file():
        try:
            effects = json.loads(inter.read_text()).get("effects") or {}
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"report: {inter} is not a JSON object ({err})") from err
        html.append(table(["intervention", "onset change (steps)", "onset ratio", "direction"],
                          [[esc(n.replace("_", " ")), fmt(e.get("onset_change")),
                            fmt(e.get("onset_ratio"), "", 3), esc(e.get("direction"))]
                           for n, e in effects.items()], raw=True,
                          caption="Interventions against the baseline run"))
    summary = {"law": {k: law.get(k) for k in ("exponent", "exponent_ci",
                                                "exponent_ci_bootstrap", "exponent_se",
                                                "prefactor", "r2", "level")} if law else None,
               "runs": len(runs), "used": len(used), "interventions": effects}
    return "".join(html), figs, summary


@section("grokking-lead-time", "Grokking lead time",
         hint="lossatlas study grokking-law --out {run}/lead_time")
def lead_time(view: RunView) -> Section | None:
    """The fitted lead-time law with its interval, the runs, and the interventions'
    effect on onset when stored (``lead_time_law.json``, ``interventions.json``)."""
    return _studies(view, "lead_time_law.json", _lead)


# ================================================================ double descent
def _surface_field(folder: Path, name: str):
    import xarray as xr

    p = folder / "fields" / f"{name}.zarr"
    if not p.is_dir():
        return None
    with xr.open_zarr(p, consolidated=False) as ds:
        return ds.load()


def _double(view: RunView, folder: Path, s: dict, tag: str) -> tuple[str, dict, dict]:
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
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.log10(np.where(ds["loss"].values > 0, ds["loss"].values, np.nan)).T
        figs[f"fig-dd-{tag}-surf{k}"] = F.contour_figure(
            ds[d0].values, ds[d1].values, z, esc(f"{d0} (filter-normalised direction)"),
            esc(f"{d1} (filter-normalised direction)"),
            esc(f"width {r.get('width')}: training loss"), ztitle="log10 loss (nats)")
    items = [("interpolation threshold (width)", fmt(s.get("interpolation_threshold"))),
             ("classical best width (test error)", esc(f"{fmt(s.get('classical_best_width'))}"
                                                       f" ({fmt(s.get('classical_best_test_error'), '', 3)})")),
             ("test-error peak width", esc(f"{fmt(s.get('peak_test_error_width'))} "
                                           f"({fmt(s.get('peak_test_error'), '', 3)})")),
             ("final test error", fmt(s.get("final_test_error"), "", 3)),
             ("sharpest width (top eigenvalue)", fmt(s.get("sharpest_width"))),
             ("flattest / sharpest surface width", esc(
                 f"{fmt(s.get('flattest_surface_width'))} / "
                 f"{fmt(s.get('sharpest_surface_width'))}"))]
    html = ['<p class="intro">Test error against model width with noisy labels: it falls, '
            "peaks where the models first fit the training set (the interpolation "
            "threshold), then falls again. Beside it the sharpness of each minimum and, "
            "when stored, its filter-normalised random surface and how flat it is.</p>",
            _kv_table(items, "Double descent, summary"),
            '<div class="grid2">' + "".join(plot_div(f) for f in figs) + "</div>"]
    if any(r.get("surface") for r in rows):
        html.append(table(["width", "seed", "mean loss rise (nats)", "max loss rise (nats)",
                           "flat fraction"],
                          [[fmt(r.get("width")), fmt(r.get("seed")),
                            fmt(r.get("surface_mean_rise"), "", 4),
                            fmt(r.get("surface_max_rise"), "", 4),
                            fmt(r.get("surface_flat_fraction"), "", 3)]
                           for r in rows if r.get("surface")], raw=True,
                          caption="Filter-normalised surfaces: rise of the training loss "
                                  "over the plane above its centre"))
    summary = {k: s.get(k) for k in ("interpolation_threshold", "peak_test_error_width",
                                     "peak_test_error", "sharpest_width",
                                     "flattest_surface_width", "sharpest_surface_width")}
    summary.update(widths=xs, test_error=mean["test_error"])
    return "".join(html), figs, summary


@section("double-descent", "Double descent",
         hint="lossatlas study double-descent --surfaces --out {run}/double_descent")
def double_descent(view: RunView) -> Section | None:
    """Error, sharpness and the filter-normalised surfaces across the width sweep
    (``double_descent.json`` and its stored surfaces)."""
    return _studies(view, "double_descent.json", _double)
