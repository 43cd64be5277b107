"""Terrain of a population: curvature, sharpness and learning coefficient per model."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..batchnorm import resolve_policy
from ..progress import progress_bar
from ._objective import LossFn, resolve_points
from .hvp import HVP
from .lanczos import lanczos
from .llc import llc as _llc
from .sharpness import sharpness
from .trace import hutch_plusplus

__all__ = ["terrain"]

log = logging.getLogger(__name__)

MEASURES = ("eigenvalues", "trace", "sharpness", "llc")


def terrain(
    models_or_points,
    model: nn.Module,
    data,
    *,
    measures: Sequence[str] = MEASURES,
    k: int = 3,
    num_probes: int = 99,
    rho: float = 0.05,
    sharpness_steps: int = 20,
    llc_kwargs: dict[str, Any] | None = None,
    loss_fn: LossFn | None = None,
    train: bool = False,
    bn: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    labels: Sequence[Any] | None = None,
    seed: int | None = 0,
    progress: bool | None = None,
) -> xr.Dataset:
    """Local qualifiers at every model of a population.

    Parameters
    ----------
    models_or_points : list of nn.Module, or Tensor[P, D] (``ParamSpace(model)`` layout)
    model : nn.Module
        Template (architecture, buffers).
    data : (X, y), Dataset or DataLoader
    measures : subset of ("eigenvalues", "trace", "sharpness", "llc")
    k : int
        Top Hessian eigenvalues (Lanczos).
    num_probes : int
        Hutch++ Hessian-vector products for the trace.
    rho : float
        Radius of epsilon- and adaptive sharpness.
    llc_kwargs : dict, optional
        Passed to :func:`llc` (epsilon, nbeta, gamma, num_chains, ...).
    train, bn : the mode and the BatchNorm policy in eval mode (see
        :class:`~lossatlas.curvature.HVP`; default: statistics recomputed at each model).
    labels : sequence, optional
        Coordinate values of dimension ``model`` (default 0..P-1).
    progress : bool, optional
        A bar over the models (``None``: auto, see :mod:`lossatlas.progress`).

    Returns
    -------
    xarray.Dataset over dimension ``model`` (and ``rank``): ``eigenvalues``
    (model, rank), ``top_eigenvalue``, ``trace``, ``trace_std`` (loss per squared
    parameter), ``epsilon_sharpness``, ``adaptive_sharpness`` (loss units),
    ``llc_mean``, ``llc_std``, ``llc_diverged``, ``loss``; ``attrs`` record the
    mode, units and settings.
    """
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"terrain: unknown measures {sorted(unknown)}; choose from {MEASURES}")
    points = resolve_points(models_or_points, model, "terrain")
    P = points.shape[0]
    # under bn="own" each model given as a module is its own template: its statistics
    # are the model's, not the first model's (under "recompute" they are the point's)
    own = not train and resolve_policy(model, bn, "terrain") == "own"
    templates = (list(models_or_points) if own and isinstance(models_or_points, (list, tuple))
                 and all(isinstance(m, nn.Module) for m in models_or_points) else [model] * P)
    common = dict(loss_fn=loss_fn, train=train, batch_size=batch_size, device=device, bn=bn)
    out: dict[str, Any] = {"loss": np.full(P, np.nan)}
    if "eigenvalues" in measures:
        out["eigenvalues"] = np.full((P, k), np.nan)
    if "trace" in measures:
        out["trace"] = np.full(P, np.nan)
        out["trace_std"] = np.full(P, np.nan)
    if "llc" in measures:
        for name in ("llc_mean", "llc_std", "llc_diverged"):
            out[name] = np.full(P, np.nan)
    for i, p in enumerate(progress_bar(points, desc="terrain", unit="model", progress=progress)):
        H = HVP(templates[i], data, params=p, **common)
        out["loss"][i] = float(H.value())
        if "eigenvalues" in measures:
            out["eigenvalues"][i] = (lanczos(H, k, seed=seed, progress=False)
                                     .eigenvalues.double().cpu().numpy())
        if "trace" in measures:
            est = hutch_plusplus(H, num_probes, seed=seed, progress=False)
            out["trace"][i], out["trace_std"][i] = est.trace, est.std
        if "llc" in measures:
            res = _llc(templates[i], data, params=p, seed=seed, progress=False,
                       **common_llc(common), **(llc_kwargs or {}))
            out["llc_mean"][i], out["llc_std"][i] = res.llc_mean, res.llc_std
            out["llc_diverged"][i] = float(res.diverged)
        log.info("terrain: model %d of %d done", i + 1, P)
    if "sharpness" in measures:
        # all points at once on one template; one at a time on their own templates
        groups = ([(slice(0, P), model)] if all(t is model for t in templates)
                  else [(slice(i, i + 1), templates[i]) for i in range(P)])
        for kind in ("epsilon", "adaptive"):
            out[f"{kind}_sharpness"] = np.concatenate([sharpness(
                points[sl], tpl, data, rho, kind=kind, num_steps=sharpness_steps, seed=seed,
                **common).numpy() for sl, tpl in groups])
    coords = {"model": list(labels) if labels is not None else np.arange(P)}
    data_vars = {}
    for name, values in out.items():
        if name == "eigenvalues":
            data_vars[name] = (("model", "rank"), values)
            data_vars["top_eigenvalue"] = (("model",), values[:, 0])
        else:
            data_vars[name] = (("model",), values)
    if "eigenvalues" in measures:
        coords["rank"] = np.arange(k)
    return xr.Dataset(
        data_vars,
        coords=coords,
        attrs={
            "mode": "train" if train else "eval",
            "bn": "batch" if train else resolve_policy(model, bn, "terrain"),
            "eigenvalue_units": "loss per squared parameter",
            "sharpness_units": "loss",
            "rho": rho,
            "k": k,
            "num_probes": num_probes,
            "llc_kwargs": repr(llc_kwargs or {}),
        },
    )


def common_llc(common: dict[str, Any]) -> dict[str, Any]:
    """The shared settings :func:`llc` takes (it samples its own batches)."""
    return {k: v for k, v in common.items() if k != "batch_size"}
