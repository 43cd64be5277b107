"""The section "Faithfulness": how far to trust the map (reconstruction, decoded vs
true loss per model, the embeddings side by side, projection error of overlays).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lossatlas.scale import log10_loss

from .. import figures as F
from ..html import Table, esc, number
from ..rundir import RunView
from ._common import _policy_text, _run_policy
from ._registry import Section, section


def _loss_per_model(texts: list[str], true: np.ndarray, eval_mode: Any, bn: Any,
                    bn_text: Any) -> tuple[dict[str, Any] | None, float | None]:
    """The table of each model's loss under the BatchNorm policy beside its eval-mode loss
    (when stored), as the template's ``per_model`` ({open, count, policy, line, table}),
    and the largest gap between them in decades; ``(None, None)`` without models."""
    if not len(true):
        return None, None
    own = None
    if isinstance(eval_mode, list) and len(eval_mode) == len(true):
        own = np.asarray([np.nan if v is None else v for v in eval_mode], float)
    policy = bn if isinstance(bn, str) else "as stored"
    header = ["model", f"loss under the policy ({policy})"]
    if own is None:
        line = ("The loss of each model (the true loss above), as the map shows it."
                + ("" if bn in (None, "none") else
                   " No eval-mode loss is stored: the population kept no BatchNorm "
                   "statistics of its own."))
        rows = [[texts[i], number(true[i], "nats")] for i in range(len(true))]
        gap = None
    else:
        line = ("Under the BatchNorm policy every model is evaluated as the map evaluates "
                "the points between models; its eval-mode loss is the checkpoint as saved, "
                "in eval mode with its own running statistics. A gap between the two means "
                "the stored statistics do not match the data (they are two different "
                "functions of the same weights).")
        header += ["eval-mode loss (own statistics)", "eval-mode vs policy"]
        with np.errstate(invalid="ignore"):
            dec = log10_loss(own) - log10_loss(true)
        rows = [[texts[i], number(true[i], "nats"), number(own[i], "nats"),
                 number(float(dec[i]), "decades", 3)] for i in range(len(true))]
        fin = np.abs(dec[np.isfinite(dec)])
        gap = float(fin.max()) if len(fin) else None
    return ({"open": own is not None, "count": len(true), "policy": _policy_text(bn, bn_text),
             "line": line, "table": Table(header, rows)}, gap)


@section("faithfulness", "Faithfulness",
         hint="lossatlas atlas --population {population} {data} --out {run}")
def faithfulness(view: RunView) -> Section | None:
    """How far to trust the map: reconstruction, decoded-vs-true loss per model, field
    error at the models, projection error of overlays (curves, trajectories)."""
    faith = view.faithfulness
    if (not isinstance(faith, dict) and not view.overlays
            and not (view.path / "reconstruction.json").is_file()):
        return None
    figs: dict[str, dict] = {}
    data: dict[str, Any] = {"reconstruction": None, "scatter": False, "per_model": None,
                            "embeddings": None, "overlays": None}
    summary: dict[str, Any] = {}
    if isinstance(faith, dict):
        med = faith.get("median_decades") or {}
        names = {"decoded_raw": "decoded raw", "field_at_model": "field at model",
                 "field_loo": "field left-one-out",
                 "max_step_near_models": "largest step across an edge at a model"}
        rows = [[names.get(k, k.replace("_", " ")), number(v, "decades", 3)]
                for k, v in med.items()]
        rows.append(["reconstruction MSE (raw decoder)",
                     number(faith.get("reconstruction_mse_raw"), "per parameter²", 3)])
        rel = faith.get("decoded_loss_relative_error_median")
        rows.append(["decoded loss relative error (median)",
                     number(100 * rel, "%", 3) if isinstance(rel, float) else "n/a"])
        data["reconstruction"] = Table(["measure (median over models)", "value"], rows,
                                       "Reconstruction")
        per = faith.get("per_model") or {}
        true = np.asarray([np.nan if v is None else v for v in per.get("true_loss", [])], float)
        labels = list(view.label_texts)
        if len(labels) != len(true):
            labels = [f"model {i}" for i in range(len(true))]
        texts = [esc(t) for t in labels]  # plotly draws the hover text as HTML
        series = []
        if len(true):
            if per.get("decoded_raw_loss"):
                series.append({"name": "decoded raw",
                               "x": true, "y": np.asarray(per["decoded_raw_loss"], float),
                               "text": texts})
            for key, name in (("field_log10_loo", "field left-one-out"),
                              ("field_log10_at_model", "field at model")):
                if per.get(key):
                    v = np.asarray([np.nan if x is None else x for x in per[key]], float)
                    series.append({"name": name, "x": true, "y": 10 ** v, "text": texts})
        if series:
            figs["fig-faith"] = F.scatter_compare_figure(series, "true loss (nats)",
                                                         "loss on the map (nats)",
                                                         "Decoded vs true loss per model")
            data["scatter"] = True
        bn = faith.get("bn") if isinstance(faith.get("bn"), str) else _run_policy(view)[0]
        data["per_model"], gap = _loss_per_model(labels, true, per.get("eval_mode_loss"), bn,
                                                 faith.get("bn_text"))
        summary = {"median_decades": med,
                   "reconstruction_mse_raw": faith.get("reconstruction_mse_raw"),
                   "decoded_loss_relative_error_median":
                       faith.get("decoded_loss_relative_error_median"),
                   "bn": bn, "eval_mode_loss": per.get("eval_mode_loss") is not None,
                   "eval_mode_gap_decades_max": gap}
    recon = view.path / "reconstruction.json"
    if recon.is_file():
        recon_rows = json.loads(recon.read_text())
        data["embeddings"] = _embedding_table(recon_rows)
        summary["reconstruction_table"] = [
            {k: r.get(k) for k in ("method", "mse", "median_rel_loss_error", "skipped",
                                   "not_computable", "silhouette", "nn_purity",
                                   "nn_purity_chance")}
            for r in recon_rows.get("rows", [])]
    if view.overlays:
        rows = []
        for name, o in view.overlays.items():
            tr, pr = o.get("true_range") or [None, None], o.get("projected_range") or [None,
                                                                                      None]
            rows.append([name, number(len(o.get("codes") or []), "points"),
                         number(o.get("mae"), "nats"),
                         f"{number(tr[0])} – {number(tr[1], 'nats')}",
                         f"{number(pr[0])} – {number(pr[1], 'nats')}"])
        data["overlays"] = Table(["overlay", "points", "mean abs. error", "true loss range",
                                  "loss range on the map"], rows,
                                 "Projection error of curves, trajectories and re-basined "
                                 "models")
        summary["overlays_mae"] = {n: o.get("mae") for n, o in view.overlays.items()}
    return Section(template="sections/faithfulness.html.j2", data=data, figures=figs,
                   summary=summary)


def _embedding_table(data: dict[str, Any]) -> Table:
    """The embeddings side by side (``reconstruction.json``): reconstruction, decoded-model
    loss error, separation of the variants, fit time per method."""
    rows = []
    for r in data.get("rows", []):
        if "skipped" in r:
            rows.append([str(r["method"]), "skipped", str(r["skipped"]), "", ""])
            continue
        rel = r.get("median_rel_loss_error")
        sep = (f"{number(r.get('silhouette'), '', 2)} / {number(r.get('nn_purity'), '', 2)} "
               f"(chance {number(r.get('nn_purity_chance'), '', 2)})")
        if r.get("not_computable"):
            rows.append([str(r["method"]), "not computable", str(r["not_computable"]), sep,
                         number(r.get("seconds"), "s")])
            continue
        rows.append([str(r["method"]), number(r.get("mse"), "per parameter²", 3),
                     number(100 * rel, "%", 3) if isinstance(rel, float) else "n/a", sep,
                     number(r.get("seconds"), "s")])
    return Table(["method (on span coordinates)", "reconstruction MSE",
                  "decoded-model loss error (median)",
                  "variant separation: silhouette / nearest-neighbour purity", "fit time"], rows,
                 caption=f"Embeddings side by side ({data.get('dim', 2)} latent dimensions, "
                         "no residual correction; MDS and Isomap have no inverse, so only "
                         "their separation of the variants)")
