"""Figures of training dynamics: metrics with transitions marked, trajectories on the atlas.

matplotlib only, never ``plt.show``; each ``plot_*`` draws on ``ax`` (a new figure when
None) and returns the Axes; :func:`save_png` (or :func:`lossatlas.plotting.save_figure`)
writes it. ``path=`` (saving from the plot function) is deprecated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from .._compat import save_legacy_plot
from ..errors import MissingKeyError
from ..plotting import new_axes, save_figure
from .transitions import Transition

__all__ = ["plot_trajectory_transitions", "plot_transitions", "save_png"]


_PNG = {"dpi": 120, "bbox_inches": "tight", "close": True}


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Save ``fig`` (a Figure or an Axes) as PNG atomically (120 dpi, cropped to its
    content) and close it (:func:`lossatlas.plotting.save_figure` with these settings)."""
    return save_figure(fig, path, **_PNG)


def _as_list(transitions: Any, name: str) -> list[Transition]:
    if transitions is None:
        return []
    if isinstance(transitions, Mapping):
        return list(transitions.get(name, []))
    return [t for t in transitions if not t.metric or t.metric == name]


def plot_transitions(
    steps: np.ndarray | Sequence[float],
    metrics: Mapping[str, np.ndarray | Sequence[float]],
    transitions: Mapping[str, Sequence[Transition]] | Sequence[Transition] | None = None,
    ax: Any = None,
    onset: float | None = None,
    path: str | os.PathLike | None = None,
    log_x: bool = False,
) -> Any:
    """Metrics along training with their transitions marked.

    Parameters
    ----------
    steps : array (n,) training steps of the metric rows
    metrics : name -> array (n,); accuracies (names containing "acc") on the left axis
        in [0, 1], others on a second (log) axis
    transitions : name -> list of Transition (or a flat list; matched by ``.metric``);
        drawn as markers at ``step`` on the curve of their metric
    ax : matplotlib Axes, optional (a new figure otherwise)
    onset : grokking onset step, drawn as a dashed vertical line
    path : deprecated: save a PNG there (use :func:`save_png` on the returned Axes)
    log_x : logarithmic step axis

    Returns
    -------
    The Axes.
    """
    st = np.asarray(steps, dtype=float)
    ax = new_axes(ax, (8, 4.2))
    acc = {k: v for k, v in metrics.items() if "acc" in k}
    other = {k: v for k, v in metrics.items() if "acc" not in k}
    ax2 = ax.twinx() if other else None
    colors = matplotlib.colormaps["tab10"]
    for i, (name, values) in enumerate([*acc.items(), *other.items()]):
        target = ax if name in acc else ax2
        v = np.asarray(values, dtype=float)
        c = colors(i % 10)
        target.plot(st, v, color=c, lw=1.4, label=name)
        for t in _as_list(transitions, name):
            idx = t.index if t.index < v.size else v.size - 1
            x = t.step if t.step is not None else st[idx]
            target.plot([x], [v[idx]], marker="v" if t.size < 0 else "^", color=c, ms=8,
                        mec="k", ls="none")
    if ax2 is not None:
        ax2.set_yscale("log" if all(np.nanmin(np.asarray(v, float)) > 0 for v in other.values())
                       else "linear")
        ax2.set_ylabel(", ".join(other))
        h2, l2 = ax2.get_legend_handles_labels()
    else:
        h2, l2 = [], []
    if onset is not None:
        ax.axvline(onset, color="k", ls="--", lw=1, label=f"onset {onset:g}")
    if log_x:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy" if acc else "")
    h1, l1 = ax.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    ax.set_title("metrics along training (triangles: detected transitions)")
    save_legacy_plot("plot_transitions", ax, path, **_PNG)
    return ax


def plot_trajectory_transitions(
    atlas: Any,
    transitions_by_run: Mapping[str, Sequence[Transition] | Sequence[int]],
    ax: Any = None,
    path: str | os.PathLike | None = None,
    landscape: bool = True,
) -> Any:
    """Trajectories' latent codes on the atlas map with detected transitions marked.

    Parameters
    ----------
    atlas : :class:`~lossatlas.atlas.Atlas` after ``embed`` (``codes_``; the landscape is
        drawn underneath when ``field`` has run and ``landscape``)
    transitions_by_run : run key (``population.trajectories()`` keys, e.g.
        ``"A/seed0"``) -> transitions (their ``.index`` is the position along that
        run's checkpoints) or plain checkpoint positions
    ax : matplotlib Axes, optional
    path : save a PNG there (atomically)

    Returns
    -------
    The Axes.
    """
    if not hasattr(atlas, "codes_"):
        raise ValueError("plot_trajectory_transitions: the atlas has no codes_; call embed() first")
    codes = np.asarray(atlas.codes_, dtype=float)
    if codes.shape[1] < 2:
        raise ValueError(
            f"plot_trajectory_transitions: needs 2-D latent codes, got dim {codes.shape[1]}"
        )
    trajectories = atlas.population.trajectories()
    unknown = [k for k in transitions_by_run if k not in trajectories]
    if unknown:
        raise MissingKeyError(
            f"plot_trajectory_transitions: unknown run {unknown[0]!r}; runs are "
            f"{list(trajectories)[:8]}"
        )
    ax = new_axes(ax, (7.5, 6.2))
    if landscape and hasattr(atlas, "field_"):
        atlas.plot_landscape(ax=ax, trajectories=False)
    colors = matplotlib.colormaps["tab10"]
    for i, (key, idx) in enumerate(trajectories.items()):
        z = codes[idx]
        c = colors(i % 10)
        ax.plot(z[:, 0], z[:, 1], "-", color=c, lw=1.2, alpha=0.9, label=key)
        ax.plot(z[0, 0], z[0, 1], "o", color=c, ms=4)
        for t in transitions_by_run.get(key, []):
            pos = int(getattr(t, "index", t))
            pos = min(max(pos, 0), len(idx) - 1)
            ax.plot(z[pos, 0], z[pos, 1], "*", color=c, ms=14, mec="k", mew=0.8)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title("trajectories with transitions (stars)")
    ax.legend(fontsize=8, loc="best")
    save_legacy_plot("plot_trajectory_transitions", ax, path, **_PNG)
    return ax
