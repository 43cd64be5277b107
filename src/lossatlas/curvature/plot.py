"""Figures of curvature results (matplotlib, object API: nothing is shown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..plotting import save_figure
from .density import SpectralDensity

__all__ = ["plot_density", "plot_llc_trace"]


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        save_figure(fig, path, dpi=120)


def plot_llc_trace(result: dict[str, Any], path: str | Path | None = None) -> Figure:
    """Loss traces of the SGLD chains of :func:`llc` (one line per chain, the mean
    dashed, ``L(w*)`` dotted); written as PNG to ``path`` when given."""
    trace = np.asarray(result["loss_trace"], dtype=float)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    draws = np.arange(trace.shape[1])
    for i, row in enumerate(trace):
        ax.plot(draws, row, lw=0.8, alpha=0.7, label=f"chain {i}")
    ax.plot(draws, trace.mean(0), "k--", lw=1.5, label="mean")
    ax.axhline(result["init_loss"], color="grey", ls=":", label="L(w*)")
    ax.set_xlabel("draw")
    ax.set_ylabel("batch loss")
    flag = "  [diverged]" if result.get("diverged") else ""
    ax.set_title(f"LLC = {result['llc_mean']:.3g} ± {result['llc_std']:.2g}{flag}")
    if trace.shape[0] <= 10:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1, 1))
    _save(fig, path)
    return fig


def plot_density(density: SpectralDensity, path: str | Path | None = None) -> Figure:
    """The Hessian eigenvalue density on a log scale (as Ghorbani et al. 2019)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    d = density.density.numpy()
    ax.semilogy(density.grid.numpy(), np.maximum(d, 1e-12))
    ax.set_xlabel("eigenvalue (loss / parameter²)")
    ax.set_ylabel("density")
    ax.set_ylim(max(1e-8, d.max() * 1e-10), d.max() * 2)
    _save(fig, path)
    return fig
