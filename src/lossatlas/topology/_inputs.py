"""Input checks and the call into the compiled sweep, shared by persistence and merge trees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossatlas._compat import renamed_argument
from lossatlas.topology import _unionfind

_NO_INDEX = np.zeros(1, np.int64)


@dataclass(frozen=True)
class Sweep:
    """Result of one sweep over a field; flat vertex indices throughout.

    ``values`` float64[n] (NaN replaced by +inf); ``drain`` int64[n] (local minimum reached by
    steepest descent); ``minima`` int64[p] (local minima, ascending); events ``saddle``,
    ``elder``, ``younger``, ``across`` (the saddle's lowest neighbour on the elder side) int64[e]
    in ascending saddle order; ``essential`` int64[r] (minima that
    never die: one per connected component).
    """

    shape: tuple[int, ...]
    values: np.ndarray
    drain: np.ndarray
    minima: np.ndarray
    saddle: np.ndarray
    elder: np.ndarray
    younger: np.ndarray
    across: np.ndarray
    essential: np.ndarray


@renamed_argument("where", "who")
def clean_values(values: object, who: str, ndims: tuple[int, ...]) -> np.ndarray:
    """float64 copy of ``values`` with NaN -> +inf, after checking dtype and ndim."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{who}: values must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = f"a {ndims[0]}-D" if len(ndims) == 1 else f"a {ndims[0]}-D to {ndims[-1]}-D"
        raise ValueError(f"{who}: values must be {want} array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{who}: values must not be empty, got shape {arr.shape}")
    out = np.array(arr, dtype=np.float64, order="C")
    out[np.isnan(out)] = np.inf
    return out


@renamed_argument("where", "who")
def csr_from_edges(edges: object, n: int, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric CSR adjacency ``(ptr[n + 1], idx[nnz])`` of an edge list; self-loops dropped."""
    e = np.asarray(edges)
    if e.size == 0:
        e = e.reshape(0, 2)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"{who}: edges must have shape [m, 2], got shape {e.shape}")
    if e.dtype.kind not in "iu" and e.shape[0] > 0:
        raise ValueError(f"{who}: edges must be an integer array, got dtype {e.dtype}")
    e = e.astype(np.int64, copy=False)
    if e.shape[0] and (e.min() < 0 or e.max() >= n):
        bad = e[(e < 0) | (e >= n)][0]
        raise ValueError(
            f"{who}: edges refer to vertex {bad}, out of range for {n} vertices "
            f"(valid indices are 0..{n - 1})"
        )
    e = e[e[:, 0] != e[:, 1]]
    src = np.concatenate([e[:, 0], e[:, 1]])
    dst = np.concatenate([e[:, 1], e[:, 0]])
    perm = np.argsort(src, kind="stable")
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
    return ptr, np.ascontiguousarray(dst[perm])


def run_sweep(values: np.ndarray, ptr: np.ndarray | None = None, idx=None) -> Sweep:
    """Sort once (stable: ties by flat index) and sweep; a graph when ``ptr`` is given."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(flat, kind="stable").astype(np.int64, copy=False)
    shape = np.ones(4, np.int64)
    strides = np.ones(4, np.int64)
    grid = ptr is None
    if grid:
        shape[: values.ndim] = values.shape
        strides[: values.ndim] = np.cumprod((values.shape + (1,))[:0:-1])[::-1]
        ptr, idx = _NO_INDEX, _NO_INDEX
    drain, minima, n_min, saddle, elder, younger, across, n_ev = _unionfind.sweep(
        order, grid, shape, strides, np.int64(values.ndim if grid else 1), ptr, idx
    )
    minima = minima[:n_min]
    younger = younger[:n_ev]
    died = np.zeros(flat.shape[0], bool)
    died[younger] = True
    return Sweep(
        shape=tuple(values.shape),
        values=flat,
        drain=drain,
        minima=minima,
        saddle=saddle[:n_ev],
        elder=elder[:n_ev],
        younger=younger,
        across=across[:n_ev],
        essential=minima[~died[minima]],
    )
