"""Low-loss curves between two models (Garipov et al. 2018): Bezier and polychain.

A curve ``phi(t)``, ``t in [0, 1]``, has fixed endpoints ``phi(0) = w_a`` and
``phi(1) = w_b`` and trainable bends ``theta`` (flat parameter vectors). It is
trained by sampling ``t ~ U(0, 1)`` per mini-batch and descending the loss at
``phi(t)`` (plus weight decay at the curve point) with respect to the bends; the
user's model is only ever called through ``torch.func.functional_call``, so any
``nn.Module`` works without rewriting its layers.

The trained curve is evaluated like any other 1-D field: its points are an
:class:`~lossatlas.ExplicitSource` over ``t`` evaluated by
:func:`~lossatlas.compute_field` (BatchNorm statistics recomputed at every point
when the model has BatchNorm).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn
from torch.func import functional_call

from ..batches import as_tensor_data
from ..evaluate import Evaluator
from ..fields import compute_field
from ..points import ExplicitSource
from ..progress import progress_bar
from ..space import ParamSpace
from .barriers import _add_error, barrier_from_values

__all__ = ["CURVES", "CurveResult", "curve_points", "evaluate_curve", "train_curve"]

log = logging.getLogger(__name__)

CurveKind = Literal["bezier", "polychain"]
CURVES: tuple[str, ...] = ("bezier", "polychain")


def _check_kind(who: str, kind: str) -> None:
    if kind not in CURVES:
        raise ValueError(f"{who}: kind must be 'bezier' or 'polychain', got {kind!r}")


def curve_points(
    bends: Tensor, a: Tensor, b: Tensor, t: Tensor | float, kind: CurveKind = "bezier"
) -> Tensor:
    """Points of the curve with endpoints ``a``, ``b`` and control points ``bends``.

    Parameters
    ----------
    bends : Tensor[D] (one bend) or Tensor[K, D]
    a, b : Tensor[D]
        The fixed endpoints ``phi(0)`` and ``phi(1)``.
    t : Tensor[T] or float
        Curve coordinates in [0, 1].
    kind : {"bezier", "polychain"}
        "bezier": Bezier curve of degree ``K + 1`` with control points
        ``a, bends..., b`` (quadratic for one bend). "polychain": the polygonal
        line through ``a, bends..., b`` with the nodes at ``t = k / (K + 1)``.

    Returns
    -------
    Tensor[T, D] (Tensor[D] for a float ``t``); differentiable in ``bends``.
    """
    _check_kind("curve_points", kind)
    scalar = not isinstance(t, Tensor) or t.ndim == 0
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1)
    nodes = torch.cat([a[None], bends.reshape(-1, a.shape[-1]), b[None]])  # [K + 2, D]
    n = nodes.shape[0] - 1  # degree / number of segments
    if kind == "bezier":
        k = torch.arange(n + 1, dtype=a.dtype, device=a.device)
        binom = torch.tensor([math.comb(n, int(i)) for i in range(n + 1)], dtype=a.dtype,
                             device=a.device)
        coef = binom * t[:, None] ** k * (1 - t[:, None]) ** (n - k)  # [T, K + 2]
    else:
        s = (t * n).clamp(0, n)
        seg = s.floor().clamp(max=n - 1)
        frac = s - seg
        coef = torch.zeros(t.shape[0], n + 1, dtype=a.dtype, device=a.device)
        rows = torch.arange(t.shape[0], device=a.device)
        coef[rows, seg.long()] = 1 - frac
        coef[rows, seg.long() + 1] += frac
    out = coef @ nodes
    return out[0] if scalar else out


@dataclass
class CurveResult:
    """A trained curve between two models and its evaluation.

    Attributes
    ----------
    bends : Tensor[K, D]
        Control points (flat, in the layout of ``space``); ``curve_points(bends,
        w_a, w_b, t, kind)`` re-creates the curve.
    kind : "bezier" or "polychain"
    curve : xarray.Dataset over ``t``
        ``loss``, ``accuracy``, ``error`` along the curve (``points`` values of t).
    line : xarray.Dataset over ``t``
        The same on the straight segment, for comparison.
    barrier : float
        Loss barrier of the curve (entezari definition), nats.
    line_barrier : float
        Loss barrier of the straight segment (entezari definition), nats.
    arc_length : float
        Sum of the Euclidean lengths of the segments between consecutive
        evaluated points (parameter units).
    line_length : float
        ``||w_b - w_a||``.
    space : ParamSpace
    history : dict of lists
        ``step``, ``t``, ``loss`` of training mini-batches.
    seconds : float
        Training wall time.
    """

    bends: Tensor
    kind: str
    curve: xr.Dataset
    line: xr.Dataset
    barrier: float
    line_barrier: float
    arc_length: float
    line_length: float
    space: ParamSpace
    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0


def _eval_source(
    evaluator: Evaluator, points: Tensor, t: np.ndarray, kind: str
) -> xr.Dataset:
    ds = _add_error(compute_field(evaluator, ExplicitSource(points, dim="t", coord=t)))
    ds.attrs["curve"] = kind
    ds.attrs["barrier"] = float(barrier_from_values(ds["loss"].values, t, "entezari"))
    ds.attrs["definition"] = "entezari"
    ds.attrs["bn"] = evaluator.bn
    return ds


def evaluate_curve(
    model: nn.Module,
    bends: Tensor,
    w_a: Tensor,
    w_b: Tensor,
    data,
    kind: CurveKind = "bezier",
    points: int = 61,
    bn: Literal["own", "recompute"] | None = None,
    bn_data=None,
    space: ParamSpace | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    device: str | torch.device | None = None,
    **evaluator_kwargs,
) -> xr.Dataset:
    """Loss, accuracy and error at ``points`` evenly spaced ``t`` on a curve.

    ``model`` gives the architecture (and any tensor not laid out by ``space``,
    default ``ParamSpace(model)``: parameters only). The BatchNorm policy ``bn``
    defaults to recomputing the statistics at every point on ``bn_data`` (default
    ``data``), the rule the curve is trained with. Returns a Dataset over ``t`` with ``attrs["barrier"]``
    (entezari definition, nats).
    """
    _check_kind("evaluate_curve", kind)
    space = space or ParamSpace(model, buffers=bn == "own")
    ev = Evaluator(model, data, loss_fn=loss_fn, device=device, space=space, bn=bn,
                   bn_data=bn_data, **evaluator_kwargs)
    t = np.linspace(0.0, 1.0, int(points))
    with torch.no_grad():
        pts = curve_points(bends.detach().cpu(), w_a.cpu(), w_b.cpu(),
                           torch.as_tensor(t, dtype=w_a.dtype), kind)
    return _eval_source(ev, pts, t, kind)


def _arc_length(points: Tensor) -> float:
    return float(torch.linalg.vector_norm(points[1:] - points[:-1], dim=1).sum())


def train_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    kind: CurveKind = "bezier",
    num_bends: int = 1,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-2,
    optimizer: Literal["adam", "sgd"] = "adam",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    eval_data=None,
    bn_data=None,
    points: int = 61,
    progress: bool | None = None,
) -> CurveResult:
    """Train a Bezier or polychain curve between two models (Garipov et al. 2018).

    Parameters
    ----------
    model_a, model_b : nn.Module of one architecture
        The fixed endpoints (their BatchNorm buffers are not part of the curve).
    data : (X, y) tensors, Dataset or DataLoader
        Training data of the curve.
    kind : {"bezier", "polychain"}
    num_bends : int
        Control points; 1 gives the quadratic Bezier / one-bend polychain.
        Bends start on the straight line (at ``t = k / (num_bends + 1)``).
    steps : int
        Optimiser steps, one mini-batch of ``batch_size`` samples and one
        ``t ~ U(0, 1)`` each.
    optimizer : {"adam", "sgd"}
    weight_decay : float
        L2 penalty ``weight_decay / 2 * ||phi(t)||^2`` at the curve point
        (parameters only).
    eval_data : optional
        Data the finished curve is evaluated on (default: ``data``).
    bn_data : optional
        Data for BatchNorm statistics at evaluated points (default: ``data``).
    points : int
        Evaluated points along the curve (61 by default).
    progress : bool, optional
        A bar over the optimiser steps (``None``: auto, see :mod:`lossatlas.progress`).

    Training calls the model in train mode through ``functional_call`` with
    clones of its buffers each step, so BatchNorm uses the batch statistics at
    the curve point and running-statistic updates never leak into the models.

    Returns
    -------
    CurveResult
    """
    _check_kind("train_curve", kind)
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"train_curve: optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if int(num_bends) < 1:
        raise ValueError(f"train_curve: num_bends must be >= 1, got {num_bends}")
    if int(steps) < 0:
        raise ValueError(f"train_curve: steps must be >= 0, got {steps}")
    device = torch.device(
        device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    loss_fn = loss_fn or (
        lambda out, y: nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    )
    space = ParamSpace(model_a)
    w_a = space.flatten(model_a, source="model_a").to(device)
    w_b = space.flatten(model_b, source="model_b").to(device)
    template = copy.deepcopy(model_a).to(device).train()
    for p in template.parameters():
        p.requires_grad_(False)
    buffers = {k: v.detach() for k, v in template.named_buffers()}
    frac = torch.arange(1, num_bends + 1, dtype=w_a.dtype, device=device) / (num_bends + 1)
    bends = (w_a[None] + frac[:, None] * (w_b - w_a)[None]).clone().requires_grad_(True)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam([bends], lr=lr)
    else:
        opt = torch.optim.SGD([bends], lr=lr, momentum=momentum)
    train = as_tensor_data(data, "train_curve data").to(device)
    gen = torch.Generator().manual_seed(int(seed))
    history: dict[str, list] = {"step": [], "t": [], "loss": []}
    t0 = time.perf_counter()
    n = len(train)
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in progress_bar(range(int(steps)), desc=f"train {kind} curve", unit="step",
                             progress=progress):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + batch_size].to(device)
        pos += batch_size
        x, y = train.x[idx], train.y[idx]
        t = torch.rand((), generator=gen).item()
        w = curve_points(bends, w_a, w_b, t, kind)
        state = {**space.unflatten(w), **{k: v.clone() for k, v in buffers.items()}}
        out = functional_call(template, state, (x,))
        loss = loss_fn(out, y)
        total = loss + 0.5 * weight_decay * w.pow(2).sum() if weight_decay else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            history["step"].append(step)
            history["t"].append(t)
            history["loss"].append(float(loss.detach()))
    seconds = time.perf_counter() - t0
    bends = bends.detach()
    eval_data = data if eval_data is None else eval_data
    ev = Evaluator(model_a, eval_data, loss_fn=loss_fn, device=device, space=space,
                   bn_data=bn_data if bn_data is not None else data)
    t_grid = np.linspace(0.0, 1.0, int(points))
    tt = torch.as_tensor(t_grid, dtype=w_a.dtype, device=device)
    with torch.no_grad():
        curve_pts = curve_points(bends, w_a, w_b, tt, kind).cpu()
        line_pts = torch.lerp(w_a[None], w_b[None], tt[:, None]).cpu()
    curve = _eval_source(ev, curve_pts, t_grid, kind)
    line = _eval_source(ev, line_pts, t_grid, "line")
    arc = _arc_length(curve_pts)
    curve.attrs["arc_length"] = arc
    log.info("train_curve: %s barrier %.4g (line %.4g), %d steps in %.1fs",
             kind, curve.attrs["barrier"], line.attrs["barrier"], steps, seconds)
    return CurveResult(
        bends=bends.cpu(), kind=kind, curve=curve, line=line,
        barrier=float(curve.attrs["barrier"]), line_barrier=float(line.attrs["barrier"]),
        arc_length=arc, line_length=float(torch.linalg.vector_norm(w_b - w_a)),
        space=space, history=history, seconds=seconds,
    )
