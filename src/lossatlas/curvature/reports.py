"""Curvature as the command line reports it. One model's, measured and written into a
run directory as ``lossatlas hessian CHECKPOINT`` and ``lossatlas llc CHECKPOINT`` do:
:func:`hessian_report` (top and bottom eigenvalues, trace, spectral density, saddle
verdict) and :func:`llc_report` (the local learning coefficient by SGLD); the atlas's
merge-tree saddles as rows: :func:`saddle_rows`. A whole population's terrain:
:mod:`lossatlas.curvature.population`.

>>> rep = hessian_report(model, (x, y), "runs/hessian", k=3, trace=True)  # doctest: +SKIP
>>> rep["eigenvalues"], rep["trace"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from torch import nn

__all__ = ["SADDLE_COLUMNS", "hessian_report", "llc_report", "saddle_rows"]

#: The measures of `saddle_rows`, in order.
SADDLE_COLUMNS = ("map_log10_loss", "loss", "grad_norm", "min_eigenvalue", "max_eigenvalue",
                  "negative_count", "is_saddle")


def hessian_report(model: nn.Module, data, out_dir: str | Path, k: int = 5, *,
                   trace: bool = False, bottom: int | None = None, density: bool = False,
                   saddle: bool = False, saddle_tol: float = 0.05, device=None,
                   bn: Literal["own", "recompute"] | None = None) -> dict[str, Any]:
    """The Hessian spectrum of ``model``'s mean loss over ``data`` (eval mode; eigenvalues
    in loss per squared parameter): the ``k`` largest eigenvalues (``eigenvalues``,
    largest first, and ``top_eigenvalue``); with ``trace`` the Hutch++ ``trace`` and its
    ``trace_std``; with ``bottom`` the ``bottom`` smallest (``smallest_eigenvalues``);
    with ``density`` the ``negative_mass`` of the SLQ spectral density and its figure
    ``OUT/density.png``; with ``saddle`` the saddle check (``saddle_*`` entries and
    ``saddle_verdict``: "saddle" when an eigenvalue is below ``-saddle_tol`` x the
    largest magnitude, else "minimum"), on ``bottom or 1`` smallest eigenvalues.

    Writes ``OUT/hessian.json`` (the returned dict, with ``bn`` the BatchNorm policy in
    force and the wall ``seconds``) and records the stage in ``OUT/run.json``.
    """
    from ..batchnorm import resolve_policy
    from ..plotting import save_figure
    from ..store import Run, atomic_write_json
    from .plot import plot_density
    from .saddles import saddle_check
    from .spectrum import hessian_density, hessian_eigen, hessian_trace_estimate

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    eig = hessian_eigen(model, data, k=k, device=device, bn=bn)
    summary: dict[str, Any] = {"eigenvalues": [float(v) for v in eig.eigenvalues],
                               "bn": resolve_policy(model, bn, "hessian")}
    if trace:
        tr = hessian_trace_estimate(model, data, device=device, bn=bn)
        summary.update(trace=float(tr.trace), trace_std=float(tr.std))
    if bottom:
        low = hessian_eigen(model, data, k=bottom, device=device, bn=bn, which="smallest")
        summary["smallest_eigenvalues"] = [float(v) for v in low.eigenvalues]
    if density:
        dens = hessian_density(model, data, device=device, bn=bn)
        summary["negative_mass"] = dens.negative_mass()  # fraction of the spectrum below 0
        summary["density_figure"] = str(save_figure(plot_density(dens),
                                                    out_dir / "density.png"))
    if saddle:
        sc = saddle_check(model, data, k=bottom or 1, tol=saddle_tol, device=device, bn=bn)
        summary.update({f"saddle_{key}": v for key, v in sc.as_dict().items()})
        summary["saddle_verdict"] = "saddle" if sc.is_saddle else "minimum"
    summary["top_eigenvalue"] = summary["eigenvalues"][0]
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out_dir / "hessian.json", summary)
    Run(out_dir).record_stage("hessian", summary["seconds"], k=k, bottom=bottom or 0)
    return summary


def llc_report(model: nn.Module, data, out_dir: str | Path, *, num_chains: int = 8,
               num_draws: int = 200, num_burnin_steps: int = 0, epsilon: float = 1e-3,
               nbeta: float | None = None, gamma: float = 100.0, batch_size: int = 32,
               device=None, bn: Literal["own", "recompute"] | None = None
               ) -> dict[str, Any]:
    """The local learning coefficient of ``model`` on ``data`` by SGLD with localisation
    (:func:`~lossatlas.curvature.llc`, its arguments): ``llc_mean`` and ``llc_std`` over
    the chains, beside what places them (``parameters`` d and a regular model's LLC d/2;
    smaller means a degenerate, flatter minimum), the ``nbeta`` used, the samples and
    SGLD settings, the sampler's ``warnings`` and its trace figure ``OUT/llc_trace.png``.

    Writes ``OUT/llc.json`` (the returned dict, with the wall ``seconds``) and records
    the stage in ``OUT/run.json``.
    """
    from ..plotting import save_figure
    from ..store import Run, atomic_write_json
    from .llc import llc
    from .plot import plot_llc_trace

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = llc(model, data, device=device, bn=bn, num_chains=num_chains, num_draws=num_draws,
              num_burnin_steps=num_burnin_steps, epsilon=epsilon, nbeta=nbeta, gamma=gamma,
              batch_size=batch_size)
    d = sum(p.numel() for p in model.parameters())
    summary = {"llc_mean": float(res.llc_mean), "llc_std": float(res.llc_std),
               # what a reader needs to place the value: a regular model of d
               # parameters has LLC d/2; smaller means a degenerate (flatter) minimum
               "parameters": d, "regular_model_llc (d/2)": d / 2,
               "nbeta": float(res.nbeta), "samples": len(data[1]),
               "batch_size": batch_size, "chains": num_chains, "draws": num_draws,
               "burnin": num_burnin_steps, "warnings": list(res.warnings),
               "trace_figure": str(save_figure(plot_llc_trace(res), out_dir / "llc_trace.png")),
               "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out_dir / "llc.json", summary)
    Run(out_dir).record_stage("llc", summary["seconds"], chains=num_chains, draws=num_draws)
    return summary


def saddle_rows(ds) -> list[dict[str, Any]]:
    """One dict per merge-tree saddle of :func:`~lossatlas.curvature.atlas_saddles`'
    dataset: ``basins`` joined, the map's log10 loss, the full-space ``loss`` (nats),
    ``grad_norm``, the smallest and largest eigenvalue (loss per squared parameter),
    ``negative_count`` and ``is_saddle`` (the verdict: True a true saddle, False an
    artefact of the map)."""
    rows = []
    for i in range(int(ds.sizes["saddle"])):
        row: dict[str, Any] = {"basins": [int(b) for b in ds["basins"].values[i]]}
        for c in SADDLE_COLUMNS:
            v = ds[c].values[i]
            v = v[0] if c == "min_eigenvalue" else v
            row[c] = bool(v) if c == "is_saddle" else (int(v) if c == "negative_count"
                                                       else float(v))
        rows.append(row)
    return rows
