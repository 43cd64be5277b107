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

from .errors import MissingKeyError, NotComputedError
from .scale import log10_loss

__all__ = ["RefinedField", "RefinePlan", "Refinement", "refine_field", "delaunay_edges"]

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


@dataclass(frozen=True)
class RefinePlan:
    """What a refinement will compute, known before its first evaluation.

    Attributes
    ----------
    dim : int          latent dimensions
    resolution : int   base grid points per axis
    base : int         base grid samples (``resolution ** dim``)
    extra : int        inserted samples (distinct extra points, e.g. the models' codes)
    budget : int       most samples in all
    max_points : int   most samples taken: the budget, or the first round alone when no
                       cell can be split (infinite ``tol`` or no room for a split)
    rounds : int       fewest refinement rounds that can spend the budget (rounds of at
                       most ``round_size`` samples); more when a round finds fewer cells
                       to split (each goes one level deeper), fewer when the tolerance is
                       met first: known only once values come in; 0 when nothing is
                       refined
    tol : float        decades of log10 loss that make a cell split
    max_level : int    deepest split
    round_size : int   most samples per refinement round
    """

    dim: int
    resolution: int
    base: int
    extra: int
    budget: int
    max_points: int
    rounds: int
    tol: float
    max_level: int
    round_size: int

    @property
    def first(self) -> int:
        """Samples of the first round (base grid and extra points)."""
        return self.base + self.extra

    def describe(self) -> str:
        """One line: grid, budget, points and rounds."""
        grid = "x".join([str(self.resolution)] * self.dim)
        text = (f"base grid {grid} = {self.base:,} points + {self.extra:,} model codes; "
                f"budget {self.budget:,}: at most {self.max_points:,} points")
        if self.max_points > self.first:
            text += (f", {self.first:,} first, then up to {self.max_points - self.first:,} in "
                     f"refinement rounds of at most {self.round_size:,} ({self.rounds} or more "
                     f"to spend the budget; tolerance {self.tol:g} decades, at most "
                     f"{self.max_level} levels deeper)")
        else:
            text += ", no refinement"
        return text


class Refinement:
    """Adaptive refinement as explicit state, asked for points and told their values.

    ``pending()`` gives the latent points Float[P, d] that need values (first the base
    grid and the extra points, then each round's new samples); ``tell(values)`` records
    their values (``{name: Float[P]}``, with ``key``), scores the cells they complete and
    picks the next round's samples. ``done`` once the tolerance or the budget is met;
    ``result()`` is then the :class:`RefinedField`. Parameters as :func:`refine_field`.

    State (all between rounds, nothing hidden in closures):
    ``coords`` list of Float[d] and ``levels`` list of int (one per sample, in the order
    taken), ``index`` lattice point -> sample, ``values`` {name: list of Float[P] per
    round}, ``evaluated`` samples with values, ``heap`` of cells to split as
    ``(-priority, tie, lattice corner, size in lattice units)``, ``split`` the cells
    split in the pending round, ``floor`` the lowest log10 value of the base round,
    ``rounds`` refinement rounds told.
    """

    def __init__(
        self,
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
    ):
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
                f"refine_field: the base grid has {resolution ** d} points, over the budget "
                f"{budget}"
            )
        self.lo, self.hi, self.d = lo, hi, d
        self.resolution, self.tol, self.budget = resolution, tol, budget
        self.max_level, self.key, self.round_size = max_level, key, round_size
        self.scale = 2**max_level  # lattice units per base cell
        self.step = (hi - lo) / ((resolution - 1) * self.scale)  # latent size of a unit
        self.corners = np.array(list(itertools.product((0, 1), repeat=d)))
        self.per_split = 3**d - 2**d  # new samples when a cell is split (at most)
        self.index: dict[tuple[int, ...], int] = {}
        self.coords: list[np.ndarray] = []
        self.levels: list[int] = []
        self.values: dict[str, list[np.ndarray]] = {}
        self.evaluated = 0
        self.heap: list[tuple[float, int, tuple[int, ...], int]] = []
        self.tie = itertools.count()
        self.split: list[tuple[np.ndarray, int]] = []
        self.floor = 0.0
        self.rounds = 0
        self.done = False

        for lat in itertools.product(range(0, (resolution - 1) * self.scale + 1, self.scale),
                                     repeat=d):
            self._add(tuple(lat), 0)
        self.n_base = len(self.coords)
        extra = (np.zeros((0, d)) if extra_points is None
                 else np.atleast_2d(extra_points).astype(float))
        focus = extra if focus_points is None else np.atleast_2d(focus_points).astype(float)
        self.focus_lat = (focus - lo) / self.step if len(focus) else np.zeros((0, d))
        unique, self.extra_index = _unique_in_order(extra, self.n_base)
        for z in unique:
            self.coords.append(np.asarray(z, dtype=np.float64))
            self.levels.append(-1)
        self.n_first = len(self.coords)  # samples of the first round

    def plan(self) -> RefinePlan:
        """The points and rounds this refinement expects (before any :meth:`tell`)."""
        first = self.n_first
        refines = (self.max_level >= 1 and self.tol < np.inf
                   and first + self.per_split <= self.budget)
        most = self.budget if refines else first
        spare = most - first
        rounds = -(-spare // self.round_size) if spare > 0 else 0
        return RefinePlan(dim=self.d, resolution=self.resolution, base=self.n_base,
                          extra=first - self.n_base, budget=self.budget, max_points=most,
                          rounds=int(rounds), tol=float(self.tol), max_level=self.max_level,
                          round_size=self.round_size)

    # ------------------------------------------------------------------ ask / tell
    def pending(self) -> np.ndarray:
        """Latent points Float[P, d] waiting for values (empty when ``done``)."""
        return np.asarray(self.coords[self.evaluated:]).reshape(-1, self.d)

    def tell(self, values: dict[str, np.ndarray]) -> None:
        """Record the values ``{name: Float[P]}`` of the :meth:`pending` points, score the
        cells they complete and take the next round's samples (or finish)."""
        if self.key not in values:
            raise MissingKeyError(f"refine_field: evaluate() did not return {self.key!r}")
        for k, v in values.items():
            self.values.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
        first = self.evaluated == 0
        self.evaluated = len(self.coords)
        lv = log10_loss(np.concatenate(self.values[self.key]))
        if first:
            finite = np.isfinite(lv)
            self.floor = float(np.min(lv[finite])) if finite.any() else 0.0
            for cell in itertools.product(range(self.resolution - 1), repeat=self.d):
                c = np.asarray(cell) * self.scale
                s = self._score(c, self.scale, lv)
                if s > 0:
                    self.heap.append((-s, next(self.tie), tuple(c), self.scale))
            heapq.heapify(self.heap)
        else:
            self.rounds += 1
            for c, half in self.split:
                for off in self.corners:
                    child = c + half * off
                    s = self._score(child, half, lv)
                    if s > 0 and half >= 2:
                        heapq.heappush(self.heap, (-s, next(self.tie), tuple(child), half))
        self._next_round()

    def result(self) -> RefinedField:
        """The samples, their values (``log10_loss`` added) and Delaunay adjacency."""
        if not self.done:
            raise NotComputedError("Refinement.result: points are still pending; tell() them first")
        pts = np.asarray(self.coords)
        vals = {k: np.concatenate(v) for k, v in self.values.items()}
        vals["log10_loss"] = log10_loss(vals[self.key])
        return RefinedField(
            coords=pts, values=vals, key="log10_loss", edges=delaunay_edges(pts),
            level=np.asarray(self.levels), rounds=self.rounds, extra_index=self.extra_index,
            lo=self.lo, hi=self.hi, resolution=self.resolution,
        )

    # ------------------------------------------------------------------ helpers
    def _add(self, lattice: tuple[int, ...], level: int) -> None:
        self.index[lattice] = len(self.coords)
        self.coords.append(self.lo + np.asarray(lattice) * self.step)
        self.levels.append(level)

    def _room(self, start: int) -> bool:
        """Whether one more split fits in this round and in the budget."""
        n = len(self.coords)
        return n - start + self.per_split <= self.round_size and n + self.per_split <= self.budget

    def _next_round(self) -> None:
        """Split the highest-priority cells into the next round's samples; ``done`` when
        there are none (tolerance met) or the budget has no room for a split."""
        start = len(self.coords)
        self.split = []
        if self.heap and start + self.per_split <= self.budget:
            while self.heap and self._room(start):
                _, _, corner, size = heapq.heappop(self.heap)
                if size < 2:
                    continue
                c = np.asarray(corner)
                half = size // 2
                level = self.max_level - int(np.log2(half))
                for off in itertools.product((0, 1, 2), repeat=self.d):
                    lat = tuple(c + half * np.asarray(off))
                    if lat not in self.index:
                        self._add(lat, level)
                self.split.append((c, half))
        self.done = len(self.coords) == start

    def _score(self, cell_lo: np.ndarray, size: int, lv: np.ndarray) -> float:
        """Split priority of the cell at lattice corner ``cell_lo`` of ``size`` units (0:
        its corners agree within ``tol`` decades and it holds no focus point)."""
        tol = self.tol
        v = lv[[self.index[tuple(cell_lo + size * c)] for c in self.corners]]
        focus = self.focus_lat
        holds = bool(len(focus)) and bool(
            np.any(np.all((focus >= cell_lo) & (focus <= cell_lo + size), axis=1)))
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
        return spread * (10.0 if holds else 1.0) * (
            1.0 + 1.0 / (1.0 + max(low - self.floor, 0.0)))


def _unique_in_order(extra: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``extra`` [k, d] in order of first appearance, and for each
    row the sample index (``offset`` + rank) holding it: identical extra points (models
    sharing an initialisation) become one sample."""
    if not len(extra):
        return extra, np.zeros(0, dtype=int)
    unique, inverse = np.unique(extra, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    first = np.full(len(unique), -1)
    for i, u in enumerate(inverse):
        if first[u] < 0:
            first[u] = i
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], offset + rank[inverse]


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
        Progress callback, after each refinement round.

    Returns
    -------
    RefinedField with ``values["log10_loss"]`` added. The same loop, one step at a
    time, is :class:`Refinement` (``pending`` / ``tell``).
    """
    ref = Refinement(lo, hi, resolution=resolution, tol=tol, budget=budget,
                     max_level=max_level, extra_points=extra_points,
                     focus_points=focus_points, key=key, round_size=round_size)
    while not ref.done:
        ref.tell(evaluate(ref.pending()))
        if on_round is not None and ref.rounds:
            on_round(ref.rounds, ref.evaluated)
    log.info("refine_field: %d samples (%d base) after %d rounds", ref.evaluated, ref.n_base,
             ref.rounds)
    return ref.result()
