"""Figures of an atlas: the latent landscape, its merge tree and persistence diagram.

Every ``plot_*(atlas, ax=None, ...)`` draws on ``ax`` (a new figure without one) and
returns the Axes; none saves. Save with :func:`save_figure` (the atlas's settings of
:func:`lossatlas.plotting.save_figure`: 130 dpi, cropped, closed). Passing ``path``
still saves, deprecated.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .plotting import pyplot
from .plotting import save_figure as _save_figure
from .scale import drawable

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_landscape", "plot_atlas_tree", "plot_atlas_persistence", "save_figure"]

MARKERS = "osD^v<>pPX*h"


def save_figure(fig, path) -> Path:
    """Save an atlas figure as PNG atomically (130 dpi, cropped to its content) and close
    it; returns the path (:func:`lossatlas.plotting.save_figure` with these settings)."""
    return _save_figure(fig, path, dpi=130, bbox_inches="tight", close=True)


def _axes(ax: Axes | None, size: tuple[float, float]) -> tuple[Axes, bool]:
    """``ax``, or the Axes of a new figure of ``size`` inches (and whether it is new)."""
    if ax is not None:
        return ax, False
    return pyplot().subplots(figsize=size)[1], True


def _deprecated_save(ax: Axes, path, own: bool, who: str) -> None:
    """The deprecated ``path=`` of the plot functions: saves a figure they made."""
    if path is None:
        return
    warnings.warn(f"{who}(path=) is deprecated: the plot functions return the Axes and "
                  "never save; use lossatlas.atlas_plot.save_figure(ax.figure, path)",
                  DeprecationWarning, stacklevel=3)
    if own:
        save_figure(ax.figure, path)


def _variant_styles(labels: list[dict]) -> dict[str, tuple[str, object]]:
    variants = sorted({str(lab.get("variant", "?")) for lab in labels})
    cmap = pyplot().get_cmap("tab10")
    return {v: (MARKERS[i % len(MARKERS)], cmap(i % 10)) for i, v in enumerate(variants)}


def plot_landscape(atlas, path=None, ax: Axes | None = None, trajectories: bool = True,
                   marker_values: dict[int, float] | None = None,
                   marker_label: str = "") -> Axes:
    """Filled contours of log10 loss on the refined latent field (2-D maps).

    Basin boundaries (after simplification) are drawn as black lines when the
    topology stage has run; models are markers coloured and shaped by variant,
    trajectories are lines through each run's checkpoints in order.
    ``marker_values`` (population index -> value, e.g. the top Hessian eigenvalue)
    draws a ring around those models whose area grows with the value, labelled
    ``marker_label``: terrain on the map. The legend sits below the map, so it never
    covers a model.
    """
    f = atlas.field_
    if f.coords.shape[1] != 2:
        raise ValueError(
            f"plot_landscape: draws 2-D maps; this atlas has dim {f.coords.shape[1]}"
        )
    import matplotlib.tri as mtri

    ax, own = _axes(ax, (7.5, 6.2))
    values = drawable(f.values["log10_loss"])  # diverged samples drawn at the highest level
    finite = np.isfinite(values)
    cap = np.nanmax(values[finite]) if finite.any() else 1.0
    values[~finite] = cap
    tri = mtri.Triangulation(f.coords[:, 0], f.coords[:, 1])
    lo = float(np.nanmin(values))
    if cap - lo < 1e-12:  # a flat field: levels must increase
        lo, cap = lo - 0.5, cap + 0.5
    levels = np.linspace(lo, cap, 30)
    cs = ax.tricontourf(tri, values, levels=levels, cmap="viridis")
    ax.figure.colorbar(cs, ax=ax, label="log10 loss (mean loss per sample, nats)")
    if hasattr(atlas, "tree_"):
        labels = np.asarray(atlas.tree_.labels).reshape(-1)
        basins = np.unique(labels)
        if len(basins) > 1:
            # one contour per basin of its indicator: a single line along each boundary
            for b in basins:
                ax.tricontour(tri, (labels == b).astype(float), levels=[0.5], colors="k",
                              linewidths=0.8)
    z = atlas.codes_.numpy()
    labels = atlas.population.labels
    styles = _variant_styles(labels)
    if trajectories and hasattr(atlas.population, "trajectories"):
        for idx in atlas.population.trajectories().values():
            if len(idx) > 1:
                ax.plot(z[idx, 0], z[idx, 1], "-", color="white", lw=0.8, alpha=0.7)
    for v, (marker, color) in styles.items():
        idx = [i for i, lab in enumerate(labels) if str(lab.get("variant", "?")) == v]
        ax.scatter(z[idx, 0], z[idx, 1], marker=marker, color=color, edgecolor="k", s=36,
                   linewidths=0.6, label=f"variant {v}", zorder=3)
    if marker_values:
        idx = np.asarray(list(marker_values))
        vals = np.asarray([marker_values[i] for i in idx], dtype=float)
        ok = np.isfinite(vals)
        if ok.any():
            lo, hi = np.min(vals[ok]), np.max(vals[ok])
            sizes = 80 + 600 * (vals[ok] - lo) / max(hi - lo, 1e-12)
            ax.scatter(z[idx[ok], 0], z[idx[ok], 1], s=sizes, facecolors="none",
                       edgecolors="white", linewidths=1.5, zorder=4,
                       label=f"{marker_label}: {lo:.3g} (small) to {hi:.3g} (large)")
    ax.set_xlabel("latent z0")
    ax.set_ylabel("latent z1")
    ax.set_title(f"Loss landscape of {len(labels)} models ({f.n} samples)")
    # below the map, never over it: a legend inside the axes hides models' markers
    handles = ax.get_legend_handles_labels()[0]
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
              ncol=max(1, min(4, len(handles))), frameon=False)
    _deprecated_save(ax, path, own, "plot_landscape")
    return ax


def plot_atlas_tree(atlas, path=None, ax: Axes | None = None) -> Axes:
    """The simplified merge tree, leaves labelled with the variants in their basin."""
    from .topology import plot_merge_tree

    ax, own = _axes(ax, (7, 4.5))
    labels = atlas.population.labels
    names = []
    for b in range(len(np.asarray(atlas.tree_.minima).reshape(-1))):
        members = np.flatnonzero(atlas.basins_ == b)
        vs = sorted({str(labels[i].get("variant", "?")) for i in members})
        names.append(",".join(vs) if vs else "-")
    plot_merge_tree(atlas.tree_, leaf_labels=names, ax=ax)
    ax.set_ylabel("log10 loss")
    _deprecated_save(ax, path, own, "plot_atlas_tree")
    return ax


def plot_atlas_persistence(atlas, path=None, ax: Axes | None = None) -> Axes:
    """Persistence diagram (birth vs death, log10 loss) of the atlas field."""
    from .topology import plot_persistence_diagram

    ax, own = _axes(ax, (4.8, 4.5))
    plot_persistence_diagram(atlas.pairs_, ax=ax)
    ax.set_xlabel("birth (log10 loss)")
    ax.set_ylabel("death (log10 loss)")
    _deprecated_save(ax, path, own, "plot_atlas_persistence")
    return ax
