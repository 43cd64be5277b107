"""Compiled core: one sorted sweep with a union-find, shared by grids and graphs.

Private module: inputs are trusted (checked in ``_inputs``). Every function here is compiled
once for one signature (int64 index arrays, float64 values), so the JIT cost is paid once and
cached on disk.

Neighbours come either from a regular grid (implicit, ``2 * ndim`` axis-aligned neighbours,
C order) or from a graph in CSR form (``ptr[n + 1]``, ``idx[nnz]``); ``grid`` selects which.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _degree(v, grid, ndim, ptr):
    if grid:
        return 2 * ndim
    return ptr[v + 1] - ptr[v]


@numba.njit(cache=True)
def _neighbour(v, k, grid, shape, strides, ptr, idx):
    """The k-th neighbour of vertex v, or -1 where a grid neighbour falls off the edge."""
    if not grid:
        return idx[ptr[v] + k]
    axis = k >> 1
    step = strides[axis]
    coord = (v // step) % shape[axis]
    if k & 1:
        if coord + 1 < shape[axis]:
            return v + step
        return -1
    if coord > 0:
        return v - step
    return -1


@numba.njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@numba.njit(cache=True)
def _shell_sort(a, n):
    """Sort ``a[:n]`` ascending in place (Knuth gaps; insertion sort for a few entries)."""
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for i in range(gap, n):
            x = a[i]
            j = i
            while j >= gap and a[j - gap] > x:
                a[j] = a[j - gap]
                j -= gap
            a[j] = x
        gap //= 3


@numba.njit(cache=True)
def sweep(order, grid, shape, strides, ndim, ptr, idx):
    """Sweep the vertices in ``order`` (ascending (value, index)), merging lower neighbours.

    Returns ``(drain, minima, n_min, ev_saddle, ev_elder, ev_younger, ev_across, n_ev)``:
    ``drain[v]`` is the local minimum reached from v by steepest descent in the total order;
    ``minima[:n_min]`` are the local minima in birth order; event j says the component whose
    minimum is ``ev_younger[j]`` joins the one of ``ev_elder[j]`` at vertex ``ev_saddle[j]``
    (elder rule), where ``ev_across[j]`` is the saddle's lowest neighbour on the elder side.
    Events come in sweep order.
    """
    n = order.shape[0]
    rank = np.empty(n, np.int64)
    for i in range(n):
        rank[order[i]] = i
    max_deg = 2 * ndim
    if not grid:
        max_deg = 0
        for v in range(n):
            max_deg = max(max_deg, ptr[v + 1] - ptr[v])
    lower = np.empty(max(max_deg, 1), np.int64)  # ranks of a vertex's processed neighbours
    parent = np.empty(n, np.int64)
    size = np.empty(n, np.int64)
    low = np.empty(n, np.int64)  # at a root: rank of its component's minimum
    drain = np.empty(n, np.int64)
    minima = np.empty(n, np.int64)
    ev_saddle = np.empty(n, np.int64)
    ev_elder = np.empty(n, np.int64)
    ev_younger = np.empty(n, np.int64)
    ev_across = np.empty(n, np.int64)
    n_min = 0
    n_ev = 0
    for i in range(n):
        v = order[i]
        cnt = 0
        for k in range(_degree(v, grid, ndim, ptr)):
            u = _neighbour(v, k, grid, shape, strides, ptr, idx)
            if u >= 0 and rank[u] < i:
                lower[cnt] = rank[u]
                cnt += 1
        if cnt == 0:  # a local minimum: a new component
            parent[v] = v
            size[v] = 1
            low[v] = i
            drain[v] = v
            minima[n_min] = v
            n_min += 1
            continue
        _shell_sort(lower, cnt)
        steepest = order[lower[0]]
        drain[v] = drain[steepest]
        root = _find(parent, steepest)  # v joins the component of its lowest neighbour
        parent[v] = root
        size[root] += 1
        for t in range(1, cnt):
            u = order[lower[t]]  # the first neighbour met in each component is its lowest
            a = _find(parent, u)
            if a == root:
                continue
            la = low[a]
            lr = low[root]
            ev_saddle[n_ev] = v
            ev_elder[n_ev] = order[min(la, lr)]
            ev_younger[n_ev] = order[max(la, lr)]
            ev_across[n_ev] = u if la < lr else steepest
            n_ev += 1
            if size[a] > size[root]:  # union by size; the new root keeps the elder minimum
                a, root = root, a
            parent[a] = root
            size[root] += size[a]
            low[root] = min(la, lr)
    return drain, minima, n_min, ev_saddle, ev_elder, ev_younger, ev_across, n_ev


@numba.njit(cache=True)
def representatives(drain, ev_younger, ev_across, survives):
    """``rep[m]``: the surviving minimum whose basin minimum m's cells join.

    A minimum whose event j does not survive (``survives[j]`` False) hands its cells to the
    basin across its saddle: that of ``drain[ev_across[j]]``, on the elder side, resolved
    transitively. Survivors, and vertices that are not minima, map to themselves.
    """
    n = drain.shape[0]
    rep = np.arange(n)
    for j in range(ev_younger.shape[0]):
        if not survives[j]:
            rep[ev_younger[j]] = drain[ev_across[j]]
    for m in range(n):
        r = m
        while rep[r] != r:
            r = rep[r]
        while rep[m] != r:  # path compression
            nxt = rep[m]
            rep[m] = r
            m = nxt
    return rep


@numba.njit(cache=True)
def link(n_leaves, pair_elder, pair_younger):
    """Parent of every node of the join tree: leaves ``0..k-1``, then one saddle per pair.

    Pair j (leaf indices, in order of increasing saddle) becomes node ``k + j``, the parent of
    the current top nodes of both components. Roots have parent -1.
    """
    s = pair_elder.shape[0]
    parent = np.full(n_leaves + s, -1, np.int64)
    top = np.arange(n_leaves)
    for j in range(s):
        node = n_leaves + j
        e = pair_elder[j]
        parent[top[e]] = node
        parent[top[pair_younger[j]]] = node
        top[e] = node
    return parent
