"""0-dimensional sublevel-set persistence of grid fields and graph fields."""

from __future__ import annotations

import numpy as np

from lossatlas.topology._inputs import Sweep, clean_values, csr_from_edges, run_sweep

__all__ = ["graph_persistence", "persistence"]


def pairs_of(sweep: Sweep) -> np.ndarray:
    """Pairs ``[k, 2]`` (birth, death) of a sweep: finite deaths in sweep order, then the
    essential minima (death ``inf``) in ascending birth; zero-persistence pairs dropped."""
    birth = sweep.values[sweep.younger]
    death = sweep.values[sweep.saddle]
    keep = death > birth
    finite = np.stack([birth[keep], death[keep]], axis=1)
    ess = sweep.values[sweep.essential]
    essential = np.stack([ess, np.full(ess.shape, np.inf)], axis=1)
    return np.concatenate([finite, essential], axis=0)


def persistence(values: np.ndarray) -> np.ndarray:
    """0-dim sublevel-set persistence pairs of a 1-D to 4-D grid field.

    Neighbours are the ``2 * ndim`` axis-aligned cells (the vertex-based cubical complex, as
    ``gudhi.CubicalComplex(vertices=values)`` in dimension 0). NaN counts as ``+inf`` (a
    diverged point: higher than everything finite). Ties are broken by flat (C-order) index.

    Parameters
    ----------
    values : array of shape grid, 1 to 4 axes, in loss units.

    Returns
    -------
    float64 array ``[k, 2]`` of (birth, death) in the units of ``values``: the finite-death
    pairs ordered by death, then the global minimum with death ``inf``. Pairs with
    ``death == birth`` are omitted.
    """
    v = clean_values(values, "persistence", (1, 2, 3, 4))
    return pairs_of(run_sweep(v))


def graph_persistence(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0-dim sublevel-set persistence pairs of a field on a graph.

    An edge enters at the larger value of its two endpoints (lower-star filtration).

    Parameters
    ----------
    values : array ``[n]``, vertex values in loss units (NaN counts as ``+inf``).
    edges : int array ``[m, 2]`` of vertex indices; self-loops and duplicates are allowed.

    Returns
    -------
    float64 array ``[k, 2]`` of (birth, death), as :func:`persistence`; the minimum of every
    connected component has death ``inf``.
    """
    v = clean_values(values, "graph_persistence", (1,))
    ptr, idx = csr_from_edges(edges, v.shape[0], "graph_persistence")
    return pairs_of(run_sweep(v, ptr, idx))
