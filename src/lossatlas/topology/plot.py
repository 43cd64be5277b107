"""Figures: merge-tree dendrogram and 0-dim persistence diagram (matplotlib, no plt.show)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from lossatlas.topology.mergetree import MergeTree

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_merge_tree", "plot_persistence_diagram"]


def _axes(ax: Axes | None) -> Axes:
    from ..plotting import new_axes  # matplotlib only when drawing

    return new_axes(ax, (7, 4.5))


def _finite_top(y: np.ndarray) -> tuple[float, float, float]:
    """(low, high, level drawn for +inf) from the finite entries of ``y``."""
    fin = y[np.isfinite(y)]
    low, high = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
    span = high - low if high > low else max(abs(high), 1.0)
    return low, high, high + 0.1 * span


def _leaf_positions(tree: MergeTree) -> np.ndarray:
    """x of every node: leaves 0, 1, 2, ... in depth-first order (deeper child left),
    saddles halfway between their two children."""
    n_nodes = tree.parent.shape[0]
    children: list[list[int]] = [[] for _ in range(n_nodes)]
    for node, p in enumerate(tree.parent):
        if p >= 0:
            children[p].append(node)
    deepest = np.arange(n_nodes)  # lowest leaf below each node (leaves sorted by value)
    for node in range(tree.n_leaves, n_nodes):  # saddles come after their children
        deepest[node] = min(deepest[c] for c in children[node])
    roots = sorted(np.nonzero(tree.parent < 0)[0], key=lambda r: deepest[r])
    x = np.zeros(n_nodes)
    next_x = 0
    stack = [(int(r), False) for r in reversed(roots)]
    while stack:
        node, done = stack.pop()
        kids = sorted(children[node], key=lambda c: deepest[c])
        if not kids:
            x[node] = next_x
            next_x += 1
        elif done:
            x[node] = np.mean([x[c] for c in kids])
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(kids))
    return x


def plot_merge_tree(
    tree: MergeTree,
    leaf_labels: Sequence[str] | Mapping[int, str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Draw the merge tree as a dendrogram: field value (loss) up, one column per minimum.

    Parameters
    ----------
    tree : a :class:`MergeTree`.
    leaf_labels : text under each leaf, e.g. the model variants in that basin; a sequence of
        length ``tree.n_leaves`` or a mapping ``{leaf: text}``.
    ax : axes to draw in; a new figure if None.

    Returns the axes. Saddles or minima at ``+inf`` (diverged) are drawn on a line marked inf.
    """
    from matplotlib.collections import LineCollection

    ax = _axes(ax)
    x = _leaf_positions(tree)
    y = tree.node_values.astype(float)
    low, high, y_inf = _finite_top(y)
    y = np.where(np.isfinite(y), y, y_inf)
    segments = []
    for node, p in enumerate(tree.parent):
        if p >= 0:
            segments.append([(x[node], y[node]), (x[node], y[p]), (x[p], y[p])])
    stem = 0.05 * (high - low if high > low else 1.0)
    for r in np.nonzero(tree.parent < 0)[0]:
        segments.append([(x[r], y[r]), (x[r], y[r] + stem)])
    ax.add_collection(LineCollection(segments, colors="0.25", linewidths=1.2))
    k = tree.n_leaves
    ax.scatter(x[:k], y[:k], s=28, color="tab:blue", zorder=3, label="minimum (basin)")
    if tree.saddle_values.size:
        ax.scatter(x[k:], y[k:], s=14, color="tab:orange", zorder=3, label="saddle")
    if np.isinf(tree.node_values).any():
        ax.axhline(y_inf, color="tab:red", linestyle=":", linewidth=1, label="inf (diverged)")
    ax.set_xlim(-0.6, max(k - 0.4, 0.6))
    span = high - low if high > low else 1.0
    ax.set_ylim(low - 0.05 * span, max(float(y.max()), high) + 0.3 * span)  # room for legend
    if leaf_labels is None:
        ax.set_xticks([])
    else:
        items = dict(leaf_labels.items() if isinstance(leaf_labels, Mapping)
                     else enumerate(leaf_labels))
        ax.set_xticks([x[leaf] for leaf in items], [str(t) for t in items.values()],
                      rotation=90 if max(map(len, map(str, items.values())), default=0) > 3 else 0,
                      fontsize=8)
    ax.set_xlabel("minima (leaves); at each merge the deeper basin is on the left")
    ax.set_ylabel("loss")
    ax.set_title(f"merge tree: {k} minima, {tree.saddle_values.size} saddles "
                 f"(persistence threshold {tree.threshold:.3g})")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    return ax


def plot_persistence_diagram(pairs: np.ndarray, ax: Axes | None = None) -> Axes:
    """Birth (value at a minimum) against death (value at the saddle where it merges).

    ``pairs`` is float ``[k, 2]`` as returned by ``persistence``; pairs with infinite death
    (a component's deepest minimum) are drawn as triangles on a line at the top marked inf.
    Returns the axes.
    """
    p = np.asarray(pairs, dtype=float).reshape(-1, 2)
    ax = _axes(ax)
    low, high, y_inf = _finite_top(p[np.isfinite(p)].reshape(-1))
    inf_death = ~np.isfinite(p[:, 1])
    ax.plot([low, y_inf], [low, y_inf], color="0.5", linewidth=1, label="birth = death")
    ax.scatter(p[~inf_death, 0], p[~inf_death, 1], s=16, color="tab:blue", label="minimum")
    if inf_death.any():
        births = np.where(np.isfinite(p[inf_death, 0]), p[inf_death, 0], y_inf)
        ax.axhline(y_inf, color="tab:red", linestyle=":", linewidth=1)
        ax.scatter(births, np.full(births.shape, y_inf), marker="^", s=40, color="tab:red",
                   zorder=3, label="death = inf (never merges)")
    pad = 0.05 * (y_inf - low)
    ax.set_xlim(low - pad, y_inf + pad)
    ax.set_ylim(low - pad, y_inf + pad)
    ax.set_xlabel("birth: value at the minimum (loss)")
    ax.set_ylabel("death: value at the merging saddle (loss)")
    ax.set_title(f"0-dim persistence diagram ({p.shape[0]} pairs)")
    ax.legend(loc="lower right", fontsize=8)
    return ax
