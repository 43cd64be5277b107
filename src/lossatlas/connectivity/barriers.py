"""Loss and error barriers along the straight path between models.

A barrier compares the loss ``L(t)`` on the segment ``w(t) = (1 - t) w_a + t w_b``
with the endpoints' losses. Three definitions are in use in the literature and
are not interchangeable; lossatlas always records which one it used:

``"entezari"`` (default, Entezari et al. 2022)
    ``max_t [L(t) - ((1 - t) L(0) + t L(1))]``: the largest excess over the
    linear interpolation of the endpoint losses.
``"midpoint"``
    ``L(0.5) - (L(0) + L(1)) / 2`` (needs ``t = 0.5`` on the grid: odd ``points``).
``"mean"`` (git re-basin, Ainsworth et al. 2022)
    ``max_t L(t) - (L(0) + L(1)) / 2``.

The points of every path are evaluated by one :class:`~lossatlas.Evaluator` through
the same point sources and :func:`~lossatlas.compute_field` as every other field,
so results are labelled xarray objects.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .._compat import renamed_argument
from ..batchnorm import resolve_policy
from ..errors import InputTypeError
from ..evaluate import Evaluator
from ..fields import compute_field
from ..points import AffineSource, MappedSource
from ..progress import progress_enabled
from ..space import ParamSpace

__all__ = [
    "DEFINITIONS",
    "METRICS",
    "barrier",
    "barrier_curve",
    "barrier_from_values",
    "barrier_matrix",
    "make_evaluator",
]

log = logging.getLogger(__name__)

Definition = Literal["entezari", "midpoint", "mean"]
Metric = Literal["loss", "error"]
DEFINITIONS: tuple[str, ...] = ("entezari", "midpoint", "mean")
METRICS: tuple[str, ...] = ("loss", "error")


def _check_definition(who: str, definition: str) -> None:
    if definition not in DEFINITIONS:
        raise ValueError(
            f"{who}: definition must be one of {DEFINITIONS}, got {definition!r}"
        )


def _check_metric(who: str, metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"{who}: metric must be 'loss' or 'error' (1 - accuracy), got {metric!r}")


def _check_points(who: str, points: int, definition: str) -> None:
    if int(points) < 2:
        raise ValueError(f"{who}: points must be >= 2 (both endpoints), got {points}")
    if definition == "midpoint" and int(points) % 2 == 0:
        raise ValueError(
            f"{who}: definition='midpoint' needs t = 0.5 on the grid; points={points} is even, "
            f"use an odd number such as {int(points) + 1}"
        )


def barrier_from_values(
    values: np.ndarray | Tensor, t: np.ndarray | Tensor, definition: Definition = "entezari"
) -> np.ndarray:
    """Barrier of values along a path, by ``definition``.

    Parameters
    ----------
    values : array of shape (..., T)
        Loss (or error) at the path coordinates ``t``; the last axis is the path.
    t : array of shape (T,)
        Increasing coordinates with ``t[0] == 0`` and ``t[-1] == 1``.
    definition : {"entezari", "midpoint", "mean"}

    Returns
    -------
    ndarray of shape (...): the barrier, in the units of ``values``. NaN where a
    value on the path is NaN.
    """
    _check_definition("barrier_from_values", definition)
    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, np.float64)
    t = np.asarray(t.detach().cpu() if isinstance(t, Tensor) else t, np.float64)
    if t.ndim != 1 or v.shape[-1:] != t.shape:
        raise ValueError(
            f"barrier_from_values: values must be (..., T) with T = len(t) = {t.shape}; "
            f"got values of shape {v.shape}"
        )
    if not (np.isclose(t[0], 0.0) and np.isclose(t[-1], 1.0)):
        raise ValueError(
            f"barrier_from_values: t must run from 0 to 1, got [{t[0]}, {t[-1]}]"
        )
    v0, v1 = v[..., :1], v[..., -1:]
    if definition == "entezari":
        return np.max(v - ((1.0 - t) * v0 + t * v1), axis=-1)
    if definition == "mean":
        return np.max(v, axis=-1) - 0.5 * (v0[..., 0] + v1[..., 0])
    hits = np.flatnonzero(np.isclose(t, 0.5))
    if hits.size == 0:
        raise ValueError(
            "barrier_from_values: definition='midpoint' needs t = 0.5 among the coordinates"
        )
    return v[..., hits[0]] - 0.5 * (v0[..., 0] + v1[..., 0])


def make_evaluator(
    model: nn.Module,
    data,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    **evaluator_kwargs,
) -> Evaluator:
    """The Evaluator used along paths between models of ``model``'s architecture.

    The BatchNorm policy (:mod:`lossatlas.batchnorm`): with ``bn="recompute"`` (the
    default for a model with BatchNorm) the statistics are re-estimated at every point
    on ``bn_data`` (default: ``data``) and only parameters are laid out; with
    ``bn="own"`` they are part of every point (``ParamSpace(model, buffers=True)``),
    so they are interpolated with the weights (variances on a log scale).
    """
    bn = resolve_policy(model, bn, "make_evaluator")
    space = evaluator_kwargs.pop("space", None)
    if space is None:
        space = ParamSpace(model, buffers=bn == "own")
    return Evaluator(
        model, data, loss_fn=loss_fn, device=device, space=space, bn=bn, bn_data=bn_data,
        **evaluator_kwargs,
    )


def _flat(evaluator: Evaluator, model: nn.Module | Tensor, which: str) -> Tensor:
    if isinstance(model, Tensor):
        if model.shape != (evaluator.space.dim,):
            raise ValueError(
                f"barrier: {which} is a Tensor of shape {tuple(model.shape)}, expected the flat "
                f"vector [{evaluator.space.dim}] of the evaluator's ParamSpace"
            )
        return model.detach().to(evaluator.space.dtype)
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"barrier: {which} must be an nn.Module or a flat Tensor[D], got "
                             f"{type(model).__name__}")
    return evaluator.space.flatten(model, source=which)


def _add_error(ds: xr.Dataset) -> xr.Dataset:
    if "accuracy" in ds:
        ds["error"] = 1.0 - ds["accuracy"]
        ds["error"].attrs["units"] = "fraction of samples misclassified"
    return ds


@renamed_argument("steps", "points")
def barrier_curve(
    model_a: nn.Module | Tensor,
    model_b: nn.Module | Tensor,
    data=None,
    definition: Definition = "entezari",
    points: int = 25,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    evaluator: Evaluator | None = None,
    progress: bool | None = None,
    **evaluator_kwargs,
) -> xr.Dataset:
    """Loss, accuracy and error along ``w(t) = (1 - t) w_a + t w_b``, with the barriers.

    Parameters
    ----------
    model_a, model_b : nn.Module of one architecture (or flat Tensor[D] in the
        layout of ``evaluator.space`` when an evaluator is given)
    data : (X, y) tensors, Dataset or DataLoader
        The data the loss is measured on (train or test: the caller's choice).
    definition : {"entezari", "midpoint", "mean"}
        Which barrier goes in ``attrs["barrier"]`` (see the module docstring).
    points : int
        Points on the path, ``t = linspace(0, 1, points)``.
    bn : {"own", "recompute"}
        "recompute" re-estimates BatchNorm statistics at every point on ``bn_data``.
    evaluator : Evaluator, optional
        Reuse an evaluator (then ``data``, ``bn``, ``loss_fn``... are ignored).
    progress : bool, optional
        A bar over the evaluated points (``None``: auto, see :mod:`lossatlas.progress`).

    Returns
    -------
    xarray.Dataset over ``t`` with ``loss`` (mean loss per sample), ``accuracy``
    and ``error`` (= 1 - accuracy); ``attrs``: ``barrier`` (loss barrier),
    ``error_barrier``, ``definition``, ``bn``, ``points``.
    """
    _check_definition("barrier_curve", definition)
    _check_points("barrier_curve", points, definition)
    if evaluator is None:
        if data is None:
            raise ValueError("barrier_curve: give data (or an evaluator)")
        if not isinstance(model_a, nn.Module):
            raise InputTypeError(
                "barrier_curve: model_a must be an nn.Module when no evaluator is given"
            )
        evaluator = make_evaluator(model_a, data, bn, bn_data, loss_fn, device, **evaluator_kwargs)
    wa = _flat(evaluator, model_a, "model_a")
    wb = _flat(evaluator, model_b, "model_b")
    t = np.linspace(0.0, 1.0, int(points))
    source = AffineSource(wa, (wb - wa)[None], [t], dims=("t",))
    ds = _add_error(compute_field(evaluator, source, progress=progress_enabled(progress)))
    ds["t"].attrs["units"] = "fraction of the way from model_a to model_b"
    ds.attrs["definition"] = definition
    ds.attrs["bn"] = evaluator.bn
    ds.attrs["points"] = int(points)
    ds.attrs["barrier"] = float(barrier_from_values(ds["loss"].values, t, definition))
    if "error" in ds:
        ds.attrs["error_barrier"] = float(barrier_from_values(ds["error"].values, t, definition))
    return ds


@renamed_argument("steps", "points")
def barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    definition: Definition = "entezari",
    points: int = 25,
    metric: Metric = "loss",
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    **evaluator_kwargs,
) -> float:
    """The barrier between two models on ``data`` (a float).

    ``metric="loss"`` gives the loss barrier (nats for cross-entropy);
    ``metric="error"`` the error barrier (fraction). See :func:`barrier_curve`
    for the other arguments and the whole path.
    """
    _check_metric("barrier", metric)
    ds = barrier_curve(
        model_a, model_b, data, definition, points, bn, bn_data, loss_fn, device, **evaluator_kwargs
    )
    return float(ds.attrs["barrier" if metric == "loss" else "error_barrier"])


def _key(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for x in tensors:
        h.update(np.ascontiguousarray(x.detach().cpu().numpy()).tobytes())
    return h.hexdigest()[:16]


@renamed_argument("steps", "points")
def barrier_matrix(
    models: Sequence[nn.Module],
    data,
    reference: int | None = None,
    definition: Definition = "entezari",
    points: int = 25,
    metric: Metric = "loss",
    names: Sequence[str] | None = None,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    return_paths: bool = False,
    progress: bool | None = None,
    **evaluator_kwargs,
) -> xr.DataArray | tuple[xr.DataArray, xr.Dataset]:
    """Barriers between all pairs of ``models`` (or all against ``models[reference]``).

    Every path's points are produced lazily by one point source over
    ``(pair, t)`` and evaluated in large chunks by a single Evaluator.

    Parameters
    ----------
    models : sequence of N nn.Module of one architecture
    reference : int, optional
        Index of the reference model: only the N paths to it are evaluated.
    names : labels of the models (default "0", "1", ...).
    metric : {"loss", "error"}
    return_paths : bool
        Also return the Dataset of loss / accuracy / error over ``(pair, t)``.
    progress : bool, optional
        A bar over the points of all paths (pairs x points; ``None``: auto).

    Returns
    -------
    xarray.DataArray ``[model_i, model_j]``: ``N x N`` symmetric with zero
    diagonal, or ``N x 1`` against the reference; ``attrs``: ``definition``,
    ``metric``, ``points``, ``bn``.
    """
    _check_definition("barrier_matrix", definition)
    _check_metric("barrier_matrix", metric)
    _check_points("barrier_matrix", points, definition)
    models = list(models)
    if len(models) < 2 and reference is None:
        raise ValueError(f"barrier_matrix: need at least 2 models, got {len(models)}")
    names = [str(i) for i in range(len(models))] if names is None else [str(n) for n in names]
    if len(names) != len(models):
        raise ValueError(f"barrier_matrix: {len(models)} models but {len(names)} names")
    if reference is not None and not 0 <= reference < len(models):
        raise ValueError(
            f"barrier_matrix: reference={reference} is not an index into {len(models)} models"
        )
    evaluator = make_evaluator(models[0], data, bn, bn_data, loss_fn, device, **evaluator_kwargs)
    flats = torch.stack(
        [evaluator.space.flatten(m, source=f"models[{i}]") for i, m in enumerate(models)]
    )
    if reference is None:
        pairs = [(i, j) for i in range(len(models)) for j in range(i + 1, len(models))]
    else:
        pairs = [(i, reference) for i in range(len(models))]
    pair_a = torch.tensor([p[0] for p in pairs])
    pair_b = torch.tensor([p[1] for p in pairs])
    cache: dict[torch.device, Tensor] = {}

    def path_points(coords: Tensor) -> Tensor:  # [P, 2] (pair, t) -> [P, D]
        dev = coords.device
        if dev not in cache:
            cache.clear()
            cache[dev] = flats.to(dev)
        w = cache[dev]
        k = coords[:, 0].round().long().cpu()
        t = coords[:, 1:2].to(w.dtype)
        wa, wb = w[pair_a[k].to(dev)], w[pair_b[k].to(dev)]
        return torch.lerp(wa, wb, t)

    t = np.linspace(0.0, 1.0, int(points))
    source = MappedSource(
        path_points, [np.arange(len(pairs), dtype=np.float64), t], ("pair", "t"),
        key=f"paths:{_key(flats, pair_a, pair_b)}",
    )
    paths = _add_error(compute_field(evaluator, source, progress=progress_enabled(progress)))
    values = paths["loss" if metric == "loss" else "error"].values
    per_pair = barrier_from_values(values, t, definition)
    if reference is None:
        mat = np.zeros((len(models), len(models)))
        for (i, j), b in zip(pairs, per_pair, strict=True):
            mat[i, j] = mat[j, i] = b
        out = xr.DataArray(mat, dims=("model_i", "model_j"),
                           coords={"model_i": names, "model_j": names})
    else:
        out = xr.DataArray(per_pair[:, None], dims=("model_i", "model_j"),
                           coords={"model_i": names, "model_j": [names[reference]]})
    out.name = f"{metric}_barrier"
    out.attrs.update(
        definition=definition, metric=metric, points=int(points), bn=evaluator.bn,
        units="nats (mean loss per sample)" if metric == "loss" else "fraction",
    )
    if return_paths:
        paths = paths.assign_coords(
            pair=[f"{names[i]}|{names[j]}" for i, j in pairs], t=t
        )
        paths.attrs.update(definition=definition, bn=evaluator.bn)
        return out, paths
    return out
