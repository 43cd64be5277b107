"""The commutator defect of SGD steps: how much two mini-batch updates fail to commute.

For mini-batches ``A``, ``B`` and step size ``eta``::

    theta_AB = (theta - eta g_A(theta)) - eta g_B(theta - eta g_A(theta))
    theta_BA = (theta - eta g_B(theta)) - eta g_A(theta - eta g_B(theta))

    defect = ||theta_AB - theta_BA|| / (eta^2 ||g_A(theta)|| ||g_B(theta)||)

To second order ``theta_AB - theta_BA = eta^2 (H_B g_A - H_A g_B) + O(eta^3)``, so the
normalised defect tends to ``||H_B g_A - H_A g_B|| / (||g_A|| ||g_B||)`` as
``eta -> 0``: how strongly the curvature of one batch's loss turns the other
batch's gradient (units: Hessian / gradient, i.e. 1 / parameter units). The normalisation by the two
gradient norms makes it insensitive to how large the gradients are, so a rise means
curvature aligning with the gradients, not larger gradients.

Everything is computed functionally (``torch.func.functional_call`` + ``grad`` and
``jvp`` of ``grad`` for Hessian-vector products) on a copy of the parameters; the
user's model is never written to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

from ..batches import as_tensor_data
from ..errors import MissingKeyError

__all__ = [
    "commutator_defect",
    "defect_along",
    "first_order_difference",
    "sgd_commutator",
]

log = logging.getLogger(__name__)

Params = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def _loss_of(model: nn.Module, buffers: Params, loss_fn: LossFn) -> Callable[..., Tensor]:
    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    return loss


def _axpy(a: float, x: Params, y: Params) -> Params:
    """``y + a * x`` for parameter dicts."""
    return {k: y[k] + a * x[k] for k in y}


def _sub(x: Params, y: Params) -> Params:
    return {k: x[k] - y[k] for k in x}


def _norm(x: Params) -> Tensor:
    return torch.sqrt(sum((v.double() ** 2).sum() for v in x.values()))


def sgd_commutator(
    loss: Callable[..., Tensor],
    params: Params,
    batch_a: tuple[Tensor, Tensor],
    batch_b: tuple[Tensor, Tensor],
    eta: float,
) -> tuple[Params, Params, Params]:
    """``theta_AB - theta_BA`` of two plain SGD steps in the two orders (exact).

    Parameters
    ----------
    loss : callable(params, x, y) -> scalar mean loss
    params : dict name -> Tensor (not modified)
    batch_a, batch_b : (x, y) mini-batches
    eta : step size

    Returns
    -------
    (difference, g_A, g_B): parameter dicts, the gradients taken at ``params``.
    """
    g = grad(loss)
    g_a, g_b = g(params, *batch_a), g(params, *batch_b)
    after_a, after_b = _axpy(-eta, g_a, params), _axpy(-eta, g_b, params)
    theta_ab = _axpy(-eta, g(after_a, *batch_b), after_a)
    theta_ba = _axpy(-eta, g(after_b, *batch_a), after_b)
    return _sub(theta_ab, theta_ba), g_a, g_b


def first_order_difference(
    loss: Callable[..., Tensor],
    params: Params,
    batch_a: tuple[Tensor, Tensor],
    batch_b: tuple[Tensor, Tensor],
    eta: float,
) -> tuple[Params, Params, Params]:
    """The leading term ``eta^2 (H_B g_A - H_A g_B)`` of ``theta_AB - theta_BA``.

    Two Hessian-vector products by forward-over-reverse differentiation (``jvp`` of
    ``grad``); no weights are written. Returns ``(difference, g_A, g_B)``.
    """
    g_a_fn = lambda p: grad(loss)(p, *batch_a)  # noqa: E731
    g_b_fn = lambda p: grad(loss)(p, *batch_b)  # noqa: E731
    g_a, g_b = g_a_fn(params), g_b_fn(params)
    _, hb_ga = jvp(g_b_fn, (params,), (g_a,))
    _, ha_gb = jvp(g_a_fn, (params,), (g_b,))
    return {k: eta**2 * (hb_ga[k] - ha_gb[k]) for k in params}, g_a, g_b


def _prepare(
    model: nn.Module, params: Mapping[str, Tensor] | None, dtype: torch.dtype | None
) -> tuple[Params, Params]:
    """Detached copies of the model's parameters (or ``params``) and buffers in ``dtype``."""
    if params is None:
        params = {k: v for k, v in model.named_parameters()}
    else:
        names = {k for k, _ in model.named_parameters()}
        missing = names - set(params)
        if missing:
            raise MissingKeyError(
                f"commutator_defect: params lacks tensors {sorted(missing)[:4]} of the model"
            )

    def cast(t: Tensor) -> Tensor:
        t = t.detach()
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t.clone()

    buffers = {k: cast(v) for k, v in model.named_buffers()}
    return {k: cast(v) for k, v in params.items()}, buffers


def commutator_defect(
    model: nn.Module,
    data: Any,
    eta: float = 1e-2,
    num_pairs: int = 8,
    batch_size: int = 128,
    params: Mapping[str, Tensor] | None = None,
    loss_fn: LossFn | None = None,
    dtype: torch.dtype | None = torch.float64,
    first_order: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The normalised commutator defect at one point, median over random batch pairs.

    Parameters
    ----------
    model : nn.Module
        Architecture and buffers; its parameters are the point unless ``params``.
        Never written to (its training/eval mode is used as it is).
    data : (X, y) tensors, Dataset or DataLoader
        Training samples; every pair draws two disjoint batches of ``batch_size``.
    eta : float
        SGD step size of the two steps (parameter units per unit gradient).
    num_pairs : int
        ``K`` random pairs ``(A, B)``.
    params : dict name -> Tensor, optional
        The point, e.g. a checkpoint's state dict (default the model's parameters).
    loss_fn : callable(output, target) -> scalar mean; default cross-entropy (nats).
    dtype : torch.dtype or None
        Compute dtype; default float64, since the difference is ``O(eta^2)`` and
        float32 round-off dominates it at small ``eta``. None keeps the model's.
    first_order : bool
        Also compute the first-order form ``||H_B g_A - H_A g_B|| / (||g_A|| ||g_B||)``
        (two Hessian-vector products per pair).
    seed : int
        Seed of the batch draws (a private generator; global RNG untouched).

    Returns
    -------
    dict with ``defect`` (median over pairs, float, see the module docstring),
    ``defects`` (ndarray[K]), ``raw`` (ndarray[K], ``||theta_AB - theta_BA||``, in
    parameter units), ``grad_norms`` (ndarray[K, 2]), and with ``first_order``:
    ``defect_first_order`` (median) and ``defects_first_order`` (ndarray[K]).
    """
    if not eta > 0:
        raise ValueError(f"commutator_defect: eta must be > 0, got {eta}")
    if num_pairs < 1:
        raise ValueError(f"commutator_defect: num_pairs must be >= 1, got {num_pairs}")
    td = as_tensor_data(data, who="commutator_defect: data")
    n = len(td)
    bs = min(int(batch_size), n // 2)
    if bs < 1:
        raise ValueError(f"commutator_defect: data has {n} samples; need at least 2")
    p, buffers = _prepare(model, params, dtype)
    device = next(iter(p.values())).device
    buffers = {k: v.to(device) for k, v in buffers.items()}
    x_all, y_all = td.x.to(device), td.y.to(device)
    if dtype is not None and x_all.is_floating_point():
        x_all = x_all.to(dtype)
    loss = _loss_of(model, buffers, loss_fn or _cross_entropy)
    gen = torch.Generator().manual_seed(int(seed))
    defects, raws, norms, firsts = [], [], [], []
    for _ in range(int(num_pairs)):
        perm = torch.randperm(n, generator=gen)
        ia, ib = perm[:bs].to(device), perm[bs : 2 * bs].to(device)
        ba, bb = (x_all[ia], y_all[ia]), (x_all[ib], y_all[ib])
        diff, g_a, g_b = sgd_commutator(loss, p, ba, bb, eta)
        na, nb = float(_norm(g_a)), float(_norm(g_b))
        raw = float(_norm(diff))
        denom = eta**2 * na * nb
        defects.append(raw / denom if denom > 0 else float("nan"))
        raws.append(raw)
        norms.append((na, nb))
        if first_order:
            fo, _, _ = first_order_difference(loss, p, ba, bb, 1.0)
            firsts.append(float(_norm(fo)) / (na * nb) if na * nb > 0 else float("nan"))
    out: dict[str, Any] = {
        "defect": float(np.nanmedian(defects)),
        "defects": np.asarray(defects),
        "raw": np.asarray(raws),
        "grad_norms": np.asarray(norms),
        "eta": float(eta),
        "batch_size": bs,
    }
    if first_order:
        out["defect_first_order"] = float(np.nanmedian(firsts))
        out["defects_first_order"] = np.asarray(firsts)
    return out


def defect_along(
    model: nn.Module,
    states: Sequence[Mapping[str, Tensor]],
    data: Any,
    **kwargs: Any,
) -> np.ndarray:
    """Median commutator defect at every state (checkpoint) of a trajectory.

    Parameters
    ----------
    model : nn.Module
        Architecture (never written to).
    states : sequence of state dicts / parameter dicts, in checkpoint order
    data : training data, as in :func:`commutator_defect`
    **kwargs : passed to :func:`commutator_defect` (``eta``, ``num_pairs``, ...); the
        same ``seed`` is used at every checkpoint so the batch pairs are the same.

    Returns
    -------
    ndarray[len(states)] of defects.
    """
    names = [k for k, _ in model.named_parameters()]
    device = next(model.parameters()).device
    out = np.empty(len(states))
    for i, state in enumerate(states):
        missing = [k for k in names if k not in state]
        if missing:
            raise MissingKeyError(f"defect_along: state {i} lacks tensors {missing[:4]}")
        out[i] = commutator_defect(model, data, params={k: state[k].to(device) for k in names}, **kwargs)[
            "defect"
        ]
        log.debug("defect_along: state %d: %.4g", i, out[i])
    return out
