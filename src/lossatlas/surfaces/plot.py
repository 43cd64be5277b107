"""Figures of slice fields: curves, filled contours, 3-D surfaces, PCA trajectories.

Every ``plot_*(ds, ..., ax=None)`` draws on ``ax`` or on a new
``matplotlib.figure.Figure`` built directly (no pyplot, no global backend change, never
``show``, never saving), so they work headless; they return the Axes, and
:func:`save_figure` writes it (``save_figure(plot_contour(ds), "slice.png")``). Colour maps are
perceptually uniform (viridis by default), readable in grey scale. Loss colour
scales are log10 by default (losses span decades).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import MissingKeyError
from ..plotting import new_axes, save_figure  # the one figure saver, re-exported here
from ..scale import log10_loss
from .slices import Slice

__all__ = ["plot_contour", "plot_curve", "plot_surface", "plot_trajectory", "save_figure"]

_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


# ------------------------------------------------------------------ helpers
def _new_axes(ax: Axes | None, projection: str | None = None) -> tuple[Figure, Axes]:
    ax = new_axes(ax, (6.0, 4.8), projection=projection, layout="constrained")
    return ax.figure, ax


def _check_var(ds: xr.Dataset, var: str, who: str) -> None:
    if var not in ds.data_vars:
        raise MissingKeyError(f"{who}: the field has no variable {var!r}; it has {list(ds.data_vars)}")


def _check_ndim(ds: xr.Dataset, var: str, ndim: int, who: str) -> tuple[str, ...]:
    dims = tuple(ds[var].dims)
    if len(dims) != ndim:
        hint = ""
        if len(dims) > ndim:
            extra = dims[ndim:]
            hint = f"; select the others first, e.g. ds.sel({extra[0]}=0, method='nearest')"
        raise ValueError(f"{who}: needs a {ndim}-D field, got dims {dims}{hint}")
    return dims


def _axis_label(ds: xr.Dataset, dim: str) -> str:
    units = ds.attrs.get(f"units_{dim}") or ds[dim].attrs.get("units") or "coordinate"
    return f"{dim} ({units})"


def _values(ds: xr.Dataset, var: str, log: bool) -> tuple[xr.DataArray, str]:
    """The plotted array and its label (with units)."""
    if var == "loss":
        if log:
            return log10_loss(ds), "log10 loss (nats)"
        return ds["loss"], "loss (nats)"
    if var == "accuracy":
        return ds["accuracy"], "accuracy (fraction)"
    units = ds[var].attrs.get("units")
    da = ds[var]
    if log:
        da = np.log10(da.where(da > 0))
        return da, f"log10 {var}" + (f" ({units})" if units else "")
    return da, var + (f" ({units})" if units else "")


def _slice_info(ds: xr.Dataset) -> dict:
    try:
        return json.loads(ds.attrs.get("slice", "{}"))
    except (TypeError, json.JSONDecodeError):
        return {}


def _as_points(points, ds: xr.Dataset, k: int, who: str) -> list[tuple[str, np.ndarray]]:
    """``points`` -> [(label, coords[k])]; None means the slice's anchors stored in ``ds``."""
    if points is None:
        points = _slice_info(ds).get("anchors", {})
    if isinstance(points, Slice):
        points = points.anchors
    if isinstance(points, Mapping):
        items = [(str(n), np.asarray(c, dtype=float).reshape(-1)) for n, c in points.items()]
    elif all(isinstance(p, tuple | list) and len(p) == 2 and isinstance(p[0], str) for p in points):
        items = [(n, np.asarray(c, dtype=float).reshape(-1)) for n, c in points]
    else:
        arr = np.asarray(points, dtype=float)
        arr = arr.reshape(-1, k) if arr.ndim <= 1 else arr
        items = [("", row) for row in arr]
    for label, c in items:
        if c.shape != (k,):
            raise ValueError(
                f"{who}: point {label or '(unnamed)'} has {c.size} coordinates, the field has {k}"
            )
    return items


# ------------------------------------------------------------------ figures
def plot_curve(
    ds: xr.Dataset,
    var: str = "loss",
    ax: Axes | None = None,
    log: bool = False,
    points=None,
) -> Axes:
    """A 1-D field as a curve: x = the field's dim (with units), y = ``var``.

    ``log`` uses a logarithmic y axis. ``points``: x positions to mark with
    dashed vertical lines, as ``{label: x}``; None marks the slice's anchors
    stored in the field (e.g. ``a`` at t=0, ``b`` at t=1); ``{}`` marks none.
    """
    _check_var(ds, var, "plot_curve")
    (dim,) = _check_ndim(ds, var, 1, "plot_curve")
    _, ax = _new_axes(ax)
    da = ds[var]
    x = ds[dim].values
    ax.plot(x, da.values, "-", color="C0", marker="." if len(x) <= 60 else None, label=var)
    if var == "loss":
        ylabel = "loss (nats)"
    elif var == "accuracy":
        ylabel = "accuracy (fraction)"
    else:
        ylabel = var + (f" ({da.attrs['units']})" if "units" in da.attrs else "")
    if log:
        ax.set_yscale("log")
    for label, c in _as_points(points, ds, 1, "plot_curve"):
        ax.axvline(float(c[0]), color="0.4", linestyle="--", linewidth=0.8)
        if label:
            ax.annotate(label, (float(c[0]), 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -12), textcoords="offset points", color="0.2")
    ax.set_xlabel(_axis_label(ds, dim))
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return ax


def plot_contour(
    ds: xr.Dataset,
    var: str = "loss",
    log: bool = True,
    ax: Axes | None = None,
    points=None,
    levels: int = 30,
    cmap: str = "viridis",
) -> Axes:
    """Filled contours of a 2-D field with a labelled colour bar.

    x = the field's first dim, y = the second. The loss is shown as log10 by
    default; non-finite values (diverged points) are left blank. ``points``:
    ``{label: (x, y)}``, a list of ``(label, (x, y))``, an array [n, 2] or a
    :class:`Slice` (its anchors); None marks the anchors stored with the field;
    ``{}`` marks none.
    """
    _check_var(ds, var, "plot_contour")
    dx, dy = _check_ndim(ds, var, 2, "plot_contour")
    fig, ax = _new_axes(ax)
    da, label = _values(ds, var, log)
    z = np.ma.masked_invalid(da.transpose(dy, dx).values.astype(float))
    x, y = ds[dx].values, ds[dy].values
    if z.count() == 0:
        raise ValueError(f"plot_contour: every value of {var!r} is NaN or infinite")
    lo, hi = float(z.min()), float(z.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    cs = ax.contourf(x, y, z, levels=np.linspace(lo, hi, int(levels)), cmap=cmap, extend="neither")
    ax.contour(x, y, z, levels=cs.levels[::3], colors="k", linewidths=0.4, alpha=0.5)
    cbar = fig.colorbar(cs, ax=ax, ticks=MaxNLocator(nbins=8))
    cbar.set_label(label)
    for i, (name, c) in enumerate(_as_points(points, ds, 2, "plot_contour")):
        ax.plot(c[0], c[1], linestyle="none", marker=_MARKERS[i % len(_MARKERS)], markersize=8,
                markerfacecolor="white", markeredgecolor="black", label=name or None)
        if name:
            ax.annotate(name, (c[0], c[1]), xytext=(5, 5), textcoords="offset points",
                        color="black", fontsize=9,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
    ax.set_xlabel(_axis_label(ds, dx))
    ax.set_ylabel(_axis_label(ds, dy))
    ax.set_aspect("auto")
    return ax


def plot_surface(
    ds: xr.Dataset,
    var: str = "loss",
    log: bool = True,
    cmap: str = "viridis",
    ax: Axes | None = None,
) -> Axes:
    """A 2-D field as a 3-D surface (z = log10 loss by default), with a colour bar;
    ``ax`` must be a 3-D Axes (``projection="3d"``) when given."""
    _check_var(ds, var, "plot_surface")
    dx, dy = _check_ndim(ds, var, 2, "plot_surface")
    if ax is not None and getattr(ax, "name", "") != "3d":
        raise ValueError("plot_surface: ax must be a 3-D Axes (add_subplot(projection='3d')), "
                         f"got a {getattr(ax, 'name', type(ax).__name__)!r} Axes")
    fig, ax = _new_axes(ax, projection="3d")
    da, label = _values(ds, var, log)
    z = da.transpose(dy, dx).values.astype(float)
    z = np.where(np.isfinite(z), z, np.nan)
    if np.isnan(z).all():
        raise ValueError(f"plot_surface: every value of {var!r} is NaN or infinite")
    X, Y = np.meshgrid(ds[dx].values, ds[dy].values)
    surf = ax.plot_surface(X, Y, z, cmap=cmap, linewidth=0, antialiased=True,
                           vmin=np.nanmin(z), vmax=np.nanmax(z))
    cbar = fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.1)
    cbar.set_label(label)
    ax.set_xlabel(_axis_label(ds, dx))
    ax.set_ylabel(_axis_label(ds, dy))
    ax.set_zlabel(label)
    return ax


def plot_trajectory(
    pca_slice: Slice | Mapping | None,
    ds: xr.Dataset,
    var: str = "loss",
    log: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Contours of a PCA-plane field with the projected checkpoints as a connected line.

    ``pca_slice`` is the :class:`Slice` from :func:`~lossatlas.surfaces.pca_plane`
    (or its ``describe()`` dict; None reads the description stored with ``ds``).
    Start and end are marked; the title gives the explained variance of the two
    components and the legend the largest relative projection error.
    """
    info = pca_slice.describe() if isinstance(pca_slice, Slice) else (pca_slice or _slice_info(ds))
    if "trajectory" not in info:
        raise ValueError(
            "plot_trajectory: no projected trajectory; pass the Slice returned by pca_plane()"
        )
    traj = np.asarray(info["trajectory"], dtype=float)
    ax = plot_contour(ds, var, log, ax=ax, points={})
    err = np.asarray(info.get("projection_error") or [np.nan], dtype=float)
    overall = info.get("info", {}).get("projection_error_total")
    total = f", overall {overall:.1%}" if overall is not None else ""
    ax.plot(traj[:, 0], traj[:, 1], "-", color="white", linewidth=3.0, alpha=0.8)
    ax.plot(traj[:, 0], traj[:, 1], "-o", color="black", linewidth=1.2, markersize=3,
            label=f"checkpoints (projection error: max {np.nanmax(err):.1%}{total})")
    ax.plot(traj[0, 0], traj[0, 1], "^", markersize=10, markerfacecolor="white",
            markeredgecolor="black", label="start", linestyle="none")
    final = info.get("info", {}).get("final_index", len(traj) - 1)
    ax.plot(traj[final, 0], traj[final, 1], "*", markersize=14, markerfacecolor="white",
            markeredgecolor="black", label="final", linestyle="none")
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    ev = info.get("explained_variance")
    if ev is not None and len(ev) >= 2:
        ax.set_title(
            f"PCA plane: explained variance {ev[0]:.1%} + {ev[1]:.1%} = {sum(ev[:2]):.1%}",
            fontsize=10,
        )
    return ax


