"""Developmental stages from the local learning coefficient (LLC) along training.

The LLC is estimated at every checkpoint (``lossatlas.curvature.llc`` by default, or
any ``estimate(model) -> float``). Stage boundaries are the critical points of its
smoothed curve over log-step: local maxima and minima (sign changes of the
derivative) and the ends of plateaus (where the absolute slope rises above a
tolerance after being below it).

Smoothing happens on a uniform grid in ``u = log(step)`` (step 0 is dropped; steps may
be unevenly spaced): the values are interpolated onto the grid, smoothed with a
Savitzky-Golay filter or a Gaussian kernel (width in units of ``u``), and
differentiated with finite differences.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import nn

__all__ = ["StageResult", "llc_along", "llc_stages", "stage_boundaries"]

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """Stage boundaries of a curve along training.

    Attributes
    ----------
    boundaries : list of dict
        ``{"step", "kind", "value"}`` with kind ``"max"``, ``"min"`` or ``"plateau_end"``,
        ordered by step (``step`` in training steps, on the smoothing grid).
    grid_steps : ndarray (g,)      steps of the smoothing grid (log-uniform)
    smoothed : ndarray (g,)        smoothed values on the grid (the curve's units)
    derivative : ndarray (g,)      d smoothed / d log(step)
    steps, values : ndarray (n,)   the input (step > 0 only)
    """

    boundaries: list[dict[str, Any]]
    grid_steps: np.ndarray
    smoothed: np.ndarray
    derivative: np.ndarray
    steps: np.ndarray
    values: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def boundary_steps(self) -> list[float]:
        return [b["step"] for b in self.boundaries]

    def to_dict(self) -> dict[str, Any]:
        return {
            "boundaries": self.boundaries,
            "grid_steps": self.grid_steps.tolist(),
            "smoothed": self.smoothed.tolist(),
            "steps": self.steps.tolist(),
            "values": self.values.tolist(),
            "config": self.config,
        }


def stage_boundaries(
    steps: np.ndarray | Sequence[float],
    values: np.ndarray | Sequence[float],
    smoothing: Literal["savgol", "gaussian", "none"] = "savgol",
    width: float = 0.5,
    grid: int = 200,
    plateau_tol: float = 0.05,
    min_separation: float | None = None,
) -> StageResult:
    """Stage boundaries at the critical points of a smoothed curve over log-step.

    Parameters
    ----------
    steps : array (n,) of training steps (> 0 used; any spacing)
    values : array (n,) e.g. LLC estimates (any units)
    smoothing : "savgol" (window ``width`` in log-step, cubic), "gaussian" (standard
        deviation ``width`` in log-step) or "none"
    width : smoothing scale in units of ``log(step)`` (0.5: a factor ~1.65 in steps)
    grid : number of log-uniform grid points
    plateau_tol : a point is on a plateau when ``|d value / d log step|`` is below
        ``plateau_tol * (range of the smoothed curve) / (range of log step)``
    min_separation : boundaries closer than this (log-step units) to an earlier one are
        dropped; default ``width / 2``

    Returns
    -------
    StageResult
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import savgol_filter

    st = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if st.shape != v.shape or st.ndim != 1:
        raise ValueError(
            f"stage_boundaries: steps {st.shape} and values {v.shape} must be equal 1-D"
        )
    keep = (st > 0) & np.isfinite(v)
    st, v = st[keep], v[keep]
    order = np.argsort(st)
    st, v = st[order], v[order]
    if st.size < 4:
        raise ValueError(
            f"stage_boundaries: need at least 4 points with step > 0, got {st.size}"
        )
    u = np.log(st)
    ug = np.linspace(u[0], u[-1], int(grid))
    du = ug[1] - ug[0]
    y = np.interp(ug, u, v)
    if smoothing == "savgol":
        win = max(5, int(round(width / du)) | 1)
        if win > len(ug):
            win = len(ug) if len(ug) % 2 else len(ug) - 1
        ys = savgol_filter(y, win, 3, mode="interp")
        dy = savgol_filter(y, win, 3, deriv=1, delta=du, mode="interp")
    elif smoothing == "gaussian":
        ys = gaussian_filter1d(y, width / du, mode="nearest")
        dy = np.gradient(ys, du)
    elif smoothing == "none":
        ys, dy = y, np.gradient(y, du)
    else:
        raise ValueError(
            f"stage_boundaries: smoothing must be 'savgol', 'gaussian' or 'none', "
            f"got {smoothing!r}"
        )
    span = float(np.ptp(ys)) or 1.0
    tol = plateau_tol * span / max(float(ug[-1] - ug[0]), 1e-12)
    flat = np.abs(dy) < tol
    sign = np.where(flat, 0, np.sign(dy))
    found: list[tuple[int, str]] = []
    # Extrema: the derivative changes sign (possibly across a flat stretch).
    last_i, last_s = None, 0
    for i, s in enumerate(sign):
        if s == 0:
            continue
        if last_s != 0 and s != last_s:
            # the extremum inside the stretch between the two signed points
            seg = slice(last_i, i + 1)
            j = last_i + int(np.argmax(ys[seg]) if last_s > 0 else np.argmin(ys[seg]))
            found.append((j, "max" if last_s > 0 else "min"))
        last_i, last_s = i, s
    # Plateau ends: flat for a while, then a slope of either sign.
    min_run = max(2, int(round(0.5 * width / du)))
    run = 0
    for i in range(len(flat)):
        if flat[i]:
            run += 1
            continue
        if run >= min_run:
            found.append((i, "plateau_end"))
        run = 0
    found.sort()
    sep = width / 2 if min_separation is None else float(min_separation)
    out: list[dict[str, Any]] = []
    last_u = -np.inf
    for i, kind in found:
        if ug[i] - last_u < sep and out:
            continue
        out.append({"step": float(np.exp(ug[i])), "kind": kind, "value": float(ys[i]),
                    "log_step": float(ug[i])})
        last_u = ug[i]
    return StageResult(
        boundaries=out, grid_steps=np.exp(ug), smoothed=ys, derivative=dy, steps=st, values=v,
        config={"smoothing": smoothing, "width": width, "grid": grid, "plateau_tol": plateau_tol},
    )


def llc_along(
    models: Sequence[nn.Module],
    data: Any = None,
    estimate: Callable[[nn.Module], float] | None = None,
    **llc_kwargs: Any,
) -> np.ndarray:
    """The LLC at every model (checkpoint) of a trajectory.

    Parameters
    ----------
    models : sequence of nn.Module, in checkpoint order
    data : training data for :func:`lossatlas.curvature.llc` (unused with ``estimate``)
    estimate : callable(model) -> float, optional; default
        ``lossatlas.curvature.llc(model, data, **llc_kwargs).llc_mean``

    Returns
    -------
    ndarray (len(models),)
    """
    if estimate is None:
        if data is None:
            raise ValueError("llc_along: give data= (for lossatlas.curvature.llc) or estimate=")
        from ..curvature import llc

        def estimate(model: nn.Module) -> float:
            return float(llc(model, data, **llc_kwargs).llc_mean)

    out = np.empty(len(models))
    for i, m in enumerate(models):
        out[i] = float(estimate(m))
        log.debug("llc_along: model %d: %.4g", i, out[i])
    return out


def llc_stages(
    steps: np.ndarray | Sequence[float],
    models: Sequence[nn.Module],
    data: Any = None,
    estimate: Callable[[nn.Module], float] | None = None,
    stage_kwargs: dict[str, Any] | None = None,
    **llc_kwargs: Any,
) -> StageResult:
    """LLC along checkpoints (:func:`llc_along`) and its stage boundaries
    (:func:`stage_boundaries`); the LLC values are ``result.values``."""
    values = llc_along(models, data, estimate, **llc_kwargs)
    return stage_boundaries(steps, values, **(stage_kwargs or {}))
