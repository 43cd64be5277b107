"""Adaptive refinement of a scalar field over a latent box (2-D to 4-D).

Trained minima are narrow compared with the distances between models, so a
uniform grid over a population's map misses the loss at the models. We start
from a regular grid and split cells (quadtree / octree style) whose corner
values differ by more than a tolerance, highest priority first, until the
tolerance or a point budget is met. Samples live on an integer lattice at the
finest level, so a sample, once taken, is never moved or re-evaluated.
Extra points (e.g. the population models' own codes) are inserted as samples.
The samples' adjacency is their Delaunay triangulation.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import Delaunay

__all__ = ["RefinedField", "refine_field", "delaunay_edges"]

log = logging.getLogger(__name__)

Evaluate = Callable[[np.ndarray], dict[str, np.ndarray]]


def delaunay_edges(points: np.ndarray) -> np.ndarray:
    """Unique undirected edges Int[m, 2] of the Delaunay triangulation of ``points`` [n, d]."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[1] == 1:
        order = np.argsort(points[:, 0], kind="stable")
        return np.stack([order[:-1], order[1:]], axis=1)
    tri = Delaunay(points, qhull_options="Qbb Qc Qz Q12" if points.shape[1] <= 3 else "Qbb Qc Qx")
    simplices = tri.simplices
    pairs = [simplices[:, [i, j]] for i, j in itertools.combinations(range(simplices.shape[1]), 2)]
    if len(tri.coplanar):
        # points qhull left out (coincident or nearly so): join them to their nearest vertex
        pairs.append(tri.coplanar[:, [0, 2]])
    e = np.sort(np.concatenate(pairs), axis=1)
    e = e[e[:, 0] != e[:, 1]]
    return np.unique(e, axis=0)


@dataclass
class RefinedField:
    """Samples of a field over a latent box with their adjacency.

    Attributes
    ----------
    coords : float[n, d]      latent coordinates of the samples
    values : dict of float[n] the evaluated variables (e.g. ``loss``, ``accuracy``)
    key : str                 the variable refinement used (``log10_loss``)
    edges : int[m, 2]         Delaunay adjacency of the samples
    level : int[n]            refinement level of each sample (0 = base grid, -1 = inserted)
    rounds : int              refinement rounds done
    extra_index : int[k]      the sample holding each of the ``extra_points`` (duplicates share)
    """

    coords: np.ndarray
    values: dict[str, np.ndarray]
    key: str
    edges: np.ndarray
    level: np.ndarray
    rounds: int
    lo: np.ndarray
    hi: np.ndarray
    resolution: int
    extra_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def n(self) -> int:
        return len(self.coords)

    def interpolate(self, z: np.ndarray, var: str | None = None) -> np.ndarray:
        """Piecewise-linear interpolation of ``var`` (default: the key) at points z [k, d]."""
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        var = var or self.key
        vals = np.asarray(self.values[var], dtype=np.float64)
        finite = np.isfinite(vals)
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        if self.coords.shape[1] == 1:
            order = np.argsort(self.coords[:, 0])
            return np.interp(z[:, 0], self.coords[order, 0], vals[order])
        lin = LinearNDInterpolator(self.coords[finite], vals[finite])
        out = lin(z)
        miss = ~np.isfinite(out)
        if miss.any():
            out[miss] = NearestNDInterpolator(self.coords[finite], vals[finite])(z[miss])
        return out


def _log10(loss: np.ndarray) -> np.ndarray:
    loss = np.asarray(loss, dtype=np.float64)
    out = np.log10(np.maximum(np.where(np.isnan(loss), np.inf, loss), 1e-12))
    return out


def refine_field(
    evaluate: Evaluate,
    lo: np.ndarray,
    hi: np.ndarray,
    resolution: int = 64,
    tol: float = 0.1,
    budget: int = 20000,
    max_level: int = 6,
    extra_points: np.ndarray | None = None,
    focus_points: np.ndarray | None = None,
    key: str = "loss",
    round_size: int = 4096,
    on_round: Callable[[int, int], None] | None = None,
) -> RefinedField:
    """Sample ``evaluate`` on a grid over the box [lo, hi] and refine it adaptively.

    Parameters
    ----------
    evaluate : callable(Z: float[P, d]) -> dict of float[P]
        Must return ``key`` (a loss; refinement works on its log10).
    lo, hi : float[d]
        The latent box.
    resolution : int
        Base grid points per axis.
    tol : float
        Split a cell when its corner values of log10 loss differ by more than
        this (decades).
    budget : int
        Maximum number of samples in total (base grid and extras included).
    max_level : int
        Deepest split: a finest cell is ``2**-max_level`` of a base cell.
    extra_points : float[k, d], optional
        Inserted as samples (e.g. population codes), evaluated with the base grid.
    focus_points : float[k, d], optional
        Cells holding one of these are split first (default: ``extra_points``).
    round_size : int
        Most new samples evaluated per round (one call of ``evaluate``).
    on_round : callable(round, samples_so_far), optional
        Progress callback.

    Returns
    -------
    RefinedField with ``values["log10_loss"]`` added.
    """
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    d = lo.shape[0]
    if not 1 <= d <= 4:
        raise ValueError(f"refine_field: latent dimension must be 1 to 4, got {d}")
    if np.any(hi <= lo):
        raise ValueError(f"refine_field: need hi > lo on every axis, got lo={lo}, hi={hi}")
    if resolution < 2:
        raise ValueError(f"refine_field: resolution must be >= 2, got {resolution}")
    if resolution**d > budget:
        raise ValueError(
            f"refine_field: the base grid has {resolution ** d} points, over the budget {budget}"
        )
    scale = 2**max_level  # lattice units per base cell
    step = (hi - lo) / ((resolution - 1) * scale)  # latent size of one lattice unit

    index: dict[tuple[int, ...], int] = {}
    coords: list[np.ndarray] = []
    levels: list[int] = []

    def add(lattice: tuple[int, ...], lvl: int) -> bool:
        if lattice in index:
            return False
        index[lattice] = len(coords)
        coords.append(lo + np.asarray(lattice) * step)
        levels.append(lvl)
        return True

    base = itertools.product(range(0, (resolution - 1) * scale + 1, scale), repeat=d)
    for lat in base:
        add(tuple(lat), 0)
    extra = np.zeros((0, d)) if extra_points is None else np.atleast_2d(extra_points).astype(float)
    focus = extra if focus_points is None else np.atleast_2d(focus_points).astype(float)
    n_lattice0 = len(coords)
    # identical extra points (e.g. models sharing an initialisation) become one sample
    unique, extra_inverse = (np.unique(extra, axis=0, return_inverse=True) if len(extra)
                             else (extra, np.zeros(0, dtype=int)))
    first = np.full(len(unique), -1)
    for i, u in enumerate(extra_inverse.reshape(-1)):
        if first[u] < 0:
            first[u] = i
    order = np.argsort(first)  # keep the order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    extra_index = n_lattice0 + rank[extra_inverse.reshape(-1)]
    for z in unique[order]:
        coords.append(np.asarray(z, dtype=np.float64))
        levels.append(-1)

    values: dict[str, list[np.ndarray]] = {}

    def run(start: int) -> None:
        res = evaluate(np.asarray(coords[start:]))
        if key not in res:
            raise KeyError(f"refine_field: evaluate() did not return {key!r}")
        for k, v in res.items():
            values.setdefault(k, []).append(np.asarray(v, dtype=np.float64))

    run(0)
    corners = np.array(list(itertools.product((0, 1), repeat=d)))
    focus_lat = (focus - lo) / step if len(focus) else np.zeros((0, d))

    def logv() -> np.ndarray:
        return _log10(np.concatenate(values[key]))

    def score(cell_lo: np.ndarray, size: int, lv: np.ndarray) -> float:
        idx = [index[tuple(cell_lo + size * c)] for c in corners]
        v = lv[idx]
        holds = bool(len(focus_lat)) and bool(
            np.any(np.all((focus_lat >= cell_lo) & (focus_lat <= cell_lo + size), axis=1))
        )
        if np.all(np.isinf(v)):
            return 10.0 * tol if holds else 0.0
        finite = v[np.isfinite(v)]
        spread = (np.max(v) - np.min(v)) if np.all(np.isfinite(v)) else 3.0 + np.ptp(finite)
        if holds:
            # a narrow minimum can hide inside a cell whose corners agree: always split
            spread = max(spread, tol * 1.01)
        if spread <= tol:
            return 0.0
        low = float(np.min(finite)) if len(finite) else np.inf
        # priority: spread, boosted for cells holding models and for low-lying cells
        return spread * (10.0 if holds else 1.0) * (1.0 + 1.0 / (1.0 + max(low - floor, 0.0)))

    lv = logv()
    floor = float(np.min(lv[np.isfinite(lv)])) if np.isfinite(lv).any() else 0.0
    heap: list[tuple[float, int, tuple[int, ...], int]] = []
    counter = itertools.count()
    for cell in itertools.product(range(resolution - 1), repeat=d):
        c = np.asarray(cell) * scale
        s = score(c, scale, lv)
        if s > 0:
            heap.append((-s, next(counter), tuple(c), scale))
    heapq.heapify(heap)
    rounds = 0
    per_split = 3**d - 2**d
    while heap and len(coords) + per_split <= budget:
        start = len(coords)
        split: list[tuple[np.ndarray, int]] = []
        while heap and len(coords) - start + per_split <= round_size and len(coords) + per_split <= budget:
            _, _, c, size = heapq.heappop(heap)
            if size < 2:
                continue
            c = np.asarray(c)
            half = size // 2
            for off in itertools.product((0, 1, 2), repeat=d):
                lat = tuple(c + half * np.asarray(off))
                if lat in index:
                    continue
                index[lat] = len(coords)
                coords.append(lo + np.asarray(lat) * step)
                levels.append(max_level - int(np.log2(half)))
            split.append((c, half))
        if len(coords) == start:
            break
        run(start)
        rounds += 1
        lv = logv()
        for c, half in split:
            for off in corners:
                child = c + half * off
                s = score(child, half, lv)
                if s > 0 and half >= 2:
                    heapq.heappush(heap, (-s, next(counter), tuple(child), half))
        if on_round is not None:
            on_round(rounds, len(coords))
    pts = np.asarray(coords)
    vals = {k: np.concatenate(v) for k, v in values.items()}
    vals["log10_loss"] = _log10(vals[key])
    log.info("refine_field: %d samples (%d base) after %d rounds", len(pts), n_lattice0, rounds)
    return RefinedField(
        coords=pts,
        values=vals,
        key="log10_loss",
        edges=delaunay_edges(pts),
        level=np.asarray(levels),
        rounds=rounds,
        extra_index=extra_index,
        lo=lo,
        hi=hi,
        resolution=resolution,
    )
