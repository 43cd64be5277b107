"""The section "Batch size vs flatness": the study's ``batch_size.json``
(:func:`lossatlas.studies.run_batch_size`), laid out by :mod:`.studies`.
"""

from __future__ import annotations

from pathlib import Path

from .. import figures as F
from ..html import Table, number
from ..rundir import RunView
from ._registry import Section, section
from .studies import _facts, _log_x, _means, _studies


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
