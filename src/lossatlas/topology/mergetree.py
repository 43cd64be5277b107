"""Merge trees (join trees) of sublevel sets, simplified by persistence, with basin labels."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from lossatlas.topology import _unionfind
from lossatlas.topology._inputs import Sweep, clean_values, csr_from_edges, run_sweep
from lossatlas.topology.persistence import pairs_of
from lossatlas.topology.simplify import auto_threshold

__all__ = ["MergeTree", "Saddle", "basins_of", "graph_merge_tree", "merge_tree"]


class Saddle(NamedTuple):
    """An inner node of the merge tree: where two basins' sublevel components join."""

    index: tuple[int, ...]  # grid index of the saddle cell; ``(vertex,)`` on a graph
    value: float  # field value at the saddle (loss units)
    elder: int  # leaf (index into ``minima``) of the deeper component, which lives on
    younger: int  # leaf of the shallower component, which dies here
    node: int  # node id in ``parent`` (leaves are ``0..k-1``, saddles follow)


@dataclass(frozen=True, eq=False)
class MergeTree:
    """Join tree of a field's sublevel sets: leaves are minima, inner nodes saddles.

    Leaves are sorted by (value, flat index): leaf 0 is the global minimum. Nodes are numbered
    leaves ``0..k-1`` then saddles ``k..k+s-1`` in ascending saddle value; ``parent[node]`` is
    the saddle above it (-1 at a root; one root per connected component).

    Attributes
    ----------
    shape : grid shape, or ``(n,)`` for a graph.
    graph : whether the field lives on a graph (indices are vertex ids).
    threshold : persistence threshold used (loss units); minima with persistence
        ``<= threshold`` were merged into the basin they join at their saddle (elder rule).
    minima_flat : int64 ``[k]`` flat (C-order) index of each leaf.
    minimum_values : float64 ``[k]`` value at each leaf.
    persistence : float64 ``[k]`` saddle value minus minimum value; ``inf`` for the deepest
        minimum of each component (and for basins that only meet through ``inf`` cells).
    saddle_flat : int64 ``[s]`` flat index of each saddle.
    saddle_values : float64 ``[s]`` value at each saddle (ascending).
    saddle_pairs : int64 ``[s, 2]`` leaves (elder, younger) whose components meet there.
    parent : int64 ``[k + s]`` parent node of each node.
    labels : int64 array of ``shape``: the leaf each cell drains to (steepest descent to a
        local minimum, then that minimum's surviving representative under the elder rule).
    """

    shape: tuple[int, ...]
    graph: bool
    threshold: float
    minima_flat: np.ndarray
    minimum_values: np.ndarray
    persistence: np.ndarray
    saddle_flat: np.ndarray
    saddle_values: np.ndarray
    saddle_pairs: np.ndarray
    parent: np.ndarray
    labels: np.ndarray

    @property
    def n_leaves(self) -> int:
        return int(self.minima_flat.shape[0])

    @property
    def minima(self) -> np.ndarray:
        """int64 ``[k, ndim]`` grid index of each leaf (``[k, 1]`` vertex ids on a graph)."""
        return np.stack(np.unravel_index(self.minima_flat, self.shape), axis=1)

    @property
    def saddle_index(self) -> np.ndarray:
        """int64 ``[s, ndim]`` grid index of each saddle."""
        return np.stack(np.unravel_index(self.saddle_flat, self.shape), axis=1)

    @property
    def saddles(self) -> list[Saddle]:
        """The inner nodes, ascending in value."""
        k = self.n_leaves
        return [
            Saddle(tuple(int(c) for c in idx), float(val), int(e), int(y), k + j)
            for j, (idx, val, (e, y)) in enumerate(
                zip(self.saddle_index, self.saddle_values, self.saddle_pairs, strict=True)
            )
        ]

    @property
    def node_values(self) -> np.ndarray:
        """float64 ``[k + s]`` value of every node (leaves, then saddles)."""
        return np.concatenate([self.minimum_values, self.saddle_values])

    @property
    def basin_sizes(self) -> np.ndarray:
        """int64 ``[k]`` number of cells labelled with each leaf."""
        return np.bincount(self.labels.reshape(-1), minlength=self.n_leaves)

    def to_dict(self, include_labels: bool = False) -> dict[str, Any]:
        """JSON-ready description (``inf`` written as ``None``); labels only if asked."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        out: dict[str, Any] = {
            "kind": "graph" if self.graph else "grid",
            "shape": list(self.shape),
            "threshold": num(self.threshold),
            "leaves": [
                {"index": [int(c) for c in idx], "value": num(v), "persistence": num(p)}
                for idx, v, p in zip(
                    self.minima, self.minimum_values, self.persistence, strict=True
                )
            ],
            "saddles": [
                {"index": list(s.index), "value": num(s.value), "merges": [s.elder, s.younger]}
                for s in self.saddles
            ],
            "parent": [int(p) for p in self.parent],
        }
        if include_labels:
            out["labels"] = self.labels.tolist()
        return out


def _threshold(threshold: float | str | None, sweep: Sweep, who: str) -> float:
    if threshold is None:
        return 0.0
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"{who}: threshold must be a number, None or 'auto', got {threshold!r}")
        return auto_threshold(pairs_of(sweep))
    t = float(threshold)
    if not t >= 0:
        raise ValueError(f"{who}: threshold must be >= 0 (loss units), got {threshold}")
    return t


def _build(sweep: Sweep, threshold: float, graph: bool) -> MergeTree:
    n = sweep.values.shape[0]
    with np.errstate(invalid="ignore"):  # inf - inf: a minimum inside a diverged plateau
        pers = np.nan_to_num(sweep.values[sweep.saddle] - sweep.values[sweep.younger],
                             nan=0.0, posinf=np.inf)
    survives = pers > threshold
    rep = _unionfind.representatives(sweep.drain, sweep.younger, sweep.across, survives)
    is_leaf = np.zeros(n, bool)
    is_leaf[sweep.essential] = True
    is_leaf[sweep.younger[survives]] = True
    leaves = sweep.minima[is_leaf[sweep.minima]]  # already in (value, index) order
    leaf_of = np.full(n, -1, np.int64)
    leaf_of[leaves] = np.arange(leaves.shape[0])
    leaf_pers = np.full(leaves.shape[0], np.inf)
    leaf_pers[leaf_of[sweep.younger[survives]]] = pers[survives]
    pairs = np.stack(
        [leaf_of[sweep.elder[survives]], leaf_of[sweep.younger[survives]]], axis=1
    ).astype(np.int64)
    parent = _unionfind.link(
        np.int64(leaves.shape[0]), np.ascontiguousarray(pairs[:, 0]),
        np.ascontiguousarray(pairs[:, 1]),
    )
    return MergeTree(
        shape=sweep.shape,
        graph=graph,
        threshold=threshold,
        minima_flat=leaves,
        minimum_values=sweep.values[leaves],
        persistence=leaf_pers,
        saddle_flat=sweep.saddle[survives],
        saddle_values=sweep.values[sweep.saddle[survives]],
        saddle_pairs=pairs,
        parent=parent,
        labels=leaf_of[rep[sweep.drain]].reshape(sweep.shape),
    )


def merge_tree(values: np.ndarray, threshold: float | str | None = None) -> MergeTree:
    """Merge tree of a 1-D to 4-D grid field, simplified by persistence.

    Parameters
    ----------
    values : array of shape grid (1 to 4 axes), loss units; NaN counts as ``+inf``;
        neighbours are the ``2 * ndim`` axis-aligned cells; ties broken by flat index.
    threshold : minima of persistence ``<= threshold`` (loss units) are merged into the
        basin they join (elder rule). ``None`` means 0 (only flat-plateau artefacts go);
        ``"auto"`` uses :func:`auto_threshold` on the field's persistence pairs.

    Example
    -------
    >>> import numpy as np
    >>> t = merge_tree(np.array([0.0, 2.0, 1.0, 3.0]))
    >>> t.minima.tolist(), t.saddle_values.tolist(), t.labels.tolist()
    ([[0], [2]], [2.0], [0, 0, 1, 1])
    """
    v = clean_values(values, "merge_tree", (1, 2, 3, 4))
    sweep = run_sweep(v)
    return _build(sweep, _threshold(threshold, sweep, "merge_tree"), graph=False)


def graph_merge_tree(
    values: np.ndarray, edges: np.ndarray, threshold: float | str | None = None
) -> MergeTree:
    """Merge tree of a field on a graph (``values [n]``, int ``edges [m, 2]``).

    Same meaning as :func:`merge_tree`; ``labels`` has shape ``[n]`` and ``minima`` ``[k, 1]``.
    """
    v = clean_values(values, "graph_merge_tree", (1,))
    ptr, idx = csr_from_edges(edges, v.shape[0], "graph_merge_tree")
    sweep = run_sweep(v, ptr, idx)
    return _build(sweep, _threshold(threshold, sweep, "graph_merge_tree"), graph=True)


def basins_of(tree: MergeTree, points_index: np.ndarray) -> np.ndarray:
    """Leaf (index into ``tree.minima``) of the basin holding each given cell.

    Parameters
    ----------
    tree : a :class:`MergeTree`.
    points_index : int array ``[p, ndim]`` of grid indices (e.g. the cell nearest each model);
        ``[p]`` vertex ids for a graph or a 1-D grid.

    Returns
    -------
    int64 ``[p]``.
    """
    idx = np.asarray(points_index)
    ndim = len(tree.shape)
    if idx.dtype.kind not in "iu":
        raise ValueError(f"basins_of: points_index must be integer, got dtype {idx.dtype}")
    if idx.ndim == 1 and ndim == 1:
        idx = idx[:, None]
    if idx.ndim != 2 or idx.shape[1] != ndim:
        raise ValueError(
            f"basins_of: points_index must have shape [p, {ndim}] for a field of shape "
            f"{tree.shape}, got shape {idx.shape}"
        )
    bad = (idx < 0) | (idx >= np.asarray(tree.shape))
    if bad.any():
        row = int(np.nonzero(bad.any(axis=1))[0][0])
        raise ValueError(
            f"basins_of: point {row} has index {idx[row].tolist()}, outside the field of "
            f"shape {tree.shape}"
        )
    return tree.labels[tuple(idx.T)].astype(np.int64)
