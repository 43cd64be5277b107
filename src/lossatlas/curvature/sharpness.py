"""Worst-case sharpness in a ball: epsilon-sharpness (SAM) and adaptive sharpness
(Kwon et al. 2021; Andriushchenko et al. 2023), by projected gradient ascent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ._objective import LossFn, Objective, resolve_points
from .lanczos import _generator

__all__ = ["max_loss_increase", "sharpness"]

ValueAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]

#: A gradient norm (loss per parameter unit) below this is taken as zero.
VANISHING = 1e-7


def max_loss_increase(
    value_and_grad: ValueAndGrad,
    w: Tensor,
    rho: float,
    *,
    scale: Tensor | None = None,
    num_steps: int = 20,
    step_size: float = 0.5,
    seed: int | None = 0,
) -> tuple[float, Tensor]:
    """``max_{||u|| <= rho} L(w + scale * u) - L(w)`` by projected gradient ascent on ``u``.

    Parameters
    ----------
    value_and_grad : callable(Tensor[D]) -> (scalar loss, Tensor[D] gradient)
    w : Tensor[D]
        The point.
    rho : float
        Radius of the L2 ball (parameter units; relative units when ``scale`` is given).
    scale : Tensor[D], optional
        Elementwise scaling of the ball (``|w|`` for adaptive sharpness); default 1.
    num_steps : int
        Ascent steps. The first step from ``u = 0`` is SAM's ``rho g / ||g||``; a random
        point of the sphere is used when the gradient vanishes (norm below
        ``VANISHING``: at a minimum the gradient is rounding noise, whose direction may
        miss the top eigenvector, and depends on the platform's arithmetic). Each step is
        ``u <- P(u + step_size * rho * g_u / ||g_u||)`` with ``g_u = scale * grad``;
        on a quadratic it is power iteration on ``I + c A`` and finds the top
        eigenvector.
    seed : int, optional
        Seed of the random start (used only when the gradient vanishes at ``w``).

    Returns
    -------
    (increase, delta): the largest increase found over all visited points (loss
    units) and the perturbation ``delta = scale * u`` [D] reaching it.
    """
    if rho < 0:
        raise ValueError(f"sharpness: rho must be >= 0, got {rho}")
    c = torch.ones_like(w) if scale is None else scale.to(w)
    base, g = value_and_grad(w)
    base = float(base)
    gu = c * g
    norm = float(gu.norm())
    if norm > VANISHING and torch.isfinite(gu).all():
        u = rho * gu / norm
    else:
        u = torch.randn(w.shape, generator=_generator(seed, w.device), dtype=w.dtype).to(w.device)
        u = rho * u / u.norm()
    best, best_u = -float("inf"), u
    for _ in range(max(1, int(num_steps))):
        val, g = value_and_grad(w + c * u)
        val = float(val)
        if val - base > best:
            best, best_u = val - base, u
        gu = c * g
        norm = float(gu.norm())
        if norm == 0 or not torch.isfinite(gu).all():
            break
        u = u + step_size * rho * gu / norm
        u = u * min(1.0, rho / float(u.norm()))
    val = float(value_and_grad(w + c * u)[0])
    if val - base > best:
        best, best_u = val - base, u
    return best, c * best_u


def sharpness(
    models_or_points,
    model: nn.Module,
    data,
    rho: float = 0.05,
    *,
    kind: Literal["epsilon", "adaptive"] = "epsilon",
    num_steps: int = 20,
    step_size: float = 0.5,
    eta: float = 0.0,
    loss_fn: LossFn | None = None,
    group: str | Sequence[str] | None = None,
    train: bool = False,
    bn: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int | None = 0,
) -> Tensor:
    """Sharpness of every model of a population, Tensor[P] (loss units).

    ``kind="epsilon"``: ``max_{||delta|| <= rho} L(w + delta) - L(w)``.
    ``kind="adaptive"`` (scale-invariant): the ball scaled elementwise by
    ``|w| + eta``: ``max_{||delta / (|w| + eta)|| <= rho} L(w + delta) - L(w)``.
    Found by projected gradient ascent (:func:`max_loss_increase`), a lower bound
    of the true maximum.

    Parameters
    ----------
    models_or_points : list of nn.Module, Tensor[P, D] or Tensor[D]
    model : nn.Module
        The template (architecture, buffers).
    data, loss_fn, group, train, batch_size, device
        As in :class:`HVP`: mean loss over ``data``, eval mode by default.
    """
    if kind not in ("epsilon", "adaptive"):
        raise ValueError(f"sharpness: kind must be 'epsilon' or 'adaptive', got {kind!r}")
    points = resolve_points(models_or_points, model, "sharpness")
    obj = Objective(
        model,
        data,
        loss_fn=loss_fn,
        group=group,
        train=train,
        bn=bn,
        batch_size=batch_size,
        device=device,
        who="sharpness",
    )
    out = []
    for p in points:
        obj.move_to(p)  # under bn="recompute", the statistics of this point
        w = obj.origin
        scale = w.abs() + eta if kind == "adaptive" else None
        inc, _ = max_loss_increase(
            obj.value_and_grad,
            w,
            rho,
            scale=scale,
            num_steps=num_steps,
            step_size=step_size,
            seed=seed,
        )
        out.append(inc)
    return torch.tensor(out, dtype=torch.float64)
