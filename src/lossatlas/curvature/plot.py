"""Figures of curvature results (matplotlib, object API: nothing is shown or saved).

Each ``plot_*(result, ax=None)`` draws on ``ax`` (a new figure when None) and returns
the Axes; write it with :func:`lossatlas.plotting.save_figure`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from .._compat import legacy_plot_path, save_legacy_plot
from ..plotting import new_axes
from .density import SpectralDensity
from .llc import LLCResult

__all__ = ["plot_density", "plot_llc_trace"]


def plot_llc_trace(result: LLCResult | Mapping[str, Any], ax: Axes | None = None, *,
                   path: str | os.PathLike | None = None) -> Axes:
    """Loss traces of the SGLD chains of :func:`llc` (one line per chain, the mean
    dashed, ``L(w*)`` dotted; y in the loss's units). ``result``: the
    :class:`LLCResult` (or the dict ``llc`` used to return). ``path`` is deprecated
    (save the returned Axes with ``save_figure``)."""
    ax, path = legacy_plot_path("plot_llc_trace", ax, path)
    r = result.to_dict() if isinstance(result, LLCResult) else result
    trace = np.asarray(r["loss_trace"], dtype=float)
    ax = new_axes(ax, (7, 4), layout="constrained")
    draws = np.arange(trace.shape[1])
    for i, row in enumerate(trace):
        ax.plot(draws, row, lw=0.8, alpha=0.7, label=f"chain {i}")
    ax.plot(draws, trace.mean(0), "k--", lw=1.5, label="mean")
    ax.axhline(r["init_loss"], color="grey", ls=":", label="L(w*)")
    ax.set_xlabel("draw")
    ax.set_ylabel("batch loss")
    flag = "  [diverged]" if r.get("diverged") else ""
    ax.set_title(f"LLC = {r['llc_mean']:.3g} ± {r['llc_std']:.2g}{flag}")
    if trace.shape[0] <= 10:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    save_legacy_plot("plot_llc_trace", ax, path, dpi=120)
    return ax


def plot_density(density: SpectralDensity, ax: Axes | None = None, *,
                 path: str | os.PathLike | None = None) -> Axes:
    """The Hessian eigenvalue density on a log scale (as Ghorbani et al. 2019); x in
    loss per squared parameter. ``path`` is deprecated (save the returned Axes with
    ``save_figure``)."""
    ax, path = legacy_plot_path("plot_density", ax, path)
    ax = new_axes(ax, (6, 4), layout="constrained")
    d = density.density.numpy()
    ax.semilogy(density.grid.numpy(), np.maximum(d, 1e-12))
    ax.set_xlabel("eigenvalue (loss / parameter²)")
    ax.set_ylabel("density")
    ax.set_ylim(max(1e-8, d.max() * 1e-10), d.max() * 2)
    save_legacy_plot("plot_density", ax, path, dpi=120)
    return ax
