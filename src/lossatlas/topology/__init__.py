"""Sublevel-set topology of scalar fields: persistence pairs, merge trees, basins.

Works on 1-D to 4-D grids (``2 * ndim`` axis-aligned neighbours) and on graphs. NaN values
count as ``+inf`` (diverged points, higher than everything finite); ties are broken by flat
index, so plateaus give deterministic results.
"""

from lossatlas.topology.mergetree import (
    MergeTree,
    Saddle,
    basins_of,
    graph_merge_tree,
    merge_tree,
)
from lossatlas.topology.persistence import graph_persistence, persistence
from lossatlas.topology.plot import plot_merge_tree, plot_persistence_diagram
from lossatlas.topology.simplify import auto_threshold, threshold_from_fraction

__all__ = [
    "MergeTree",
    "Saddle",
    "auto_threshold",
    "basins_of",
    "graph_merge_tree",
    "graph_persistence",
    "merge_tree",
    "persistence",
    "plot_merge_tree",
    "plot_persistence_diagram",
    "threshold_from_fraction",
]
