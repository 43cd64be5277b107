"""Phase transitions: abrupt changes of a metric that a smooth trend does not explain.

A training curve decays (or rises) smoothly almost everywhere; a *transition* is a
change that is abrupt on the scale of the checkpoint spacing and that no smooth trend
accounts for. The model of a series ``x_0 .. x_{n-1}`` (checkpoint index ``i``) is

    x_i = trend(t_i) + sum_j h_j expit((i - mu_j) / w_j) + noise,

with the trend one of a few smooth families of the (normalised) training step ``t``:

* ``constant``;
* ``exp``: ``c + a exp(-r t)`` (decay for ``r > 0``, growth for ``r < 0``);
* ``power``: ``c + a (t + t0)^-b`` (``b < 0``: a power-law rise);
* ``spline``: a cubic regression spline in ``log(t + dt)`` ("log-steps") with
  ``K`` evenly spaced interior knots, and ``spline-i``: one in the checkpoint index,
  with at least :data:`MIN_KNOT_SPACING` checkpoints between knots, so that a change
  over a few checkpoints cannot hide in it.

Each step is a logistic of centre ``mu_j`` (checkpoint index, fractional), scale
``w_j`` (checkpoints; its 10-90 % rise spans ``2 ln 9 w ~ 4.39 w`` checkpoints, at
most ``max_width`` and ``n / 10``) and height ``h_j`` (metric units). Models are
compared by the Bayesian information criterion in a small-sample form,
``BIC = n log(RSS / (n - k)) + k log n`` (``k`` counts every fitted parameter; the
noise variance is unknown; at least 3 residual degrees of freedom), or
``RSS / sigma^2 + k log n`` when ``sigma`` is given.

Noise: its scale may change along training (a loss's noise shrinks with the loss), so
least squares are weighted by the inverse relative noise scale, a moving median of the
absolute first differences of the trend's residuals (used only where it varies
significantly). The noise standard deviation itself is estimated robustly from the
first differences (:func:`noise_scale`: ``1.4826 MAD / sqrt(2)``).

Fit: all families are linear in their amplitudes once their nonlinear parameters
(rate, exponent, offset, step centres and scales) are fixed, so a grid of nonlinear
parameters is scanned by least squares (every candidate step at once, by projecting
the step columns off the trend's span) and the best candidate of every family is
refined by :func:`scipy.optimize.least_squares` on the variable-projection residual.
Steps are added greedily; one is kept when it lowers the BIC by more than ``penalty``,
it is at least ``min_snr`` local noise standard deviations and ``min_jump`` metric
units high, and the residuals of the model without it jump across it by at least two
standard errors (over ``min_size`` checkpoints either side), so that a step cannot
stand in for a different smooth trend.

Each reported transition carries its location (index, fractional centre, step), size
(metric units), width (checkpoints), ``delta_bic`` (BIC of the best model without
this step, trend family re-chosen and refitted, minus BIC of the final model; larger
is stronger) and a p-value: the likelihood-ratio statistic ``z**2`` of the step
against the same trend family without it (chi-square with one degree of freedom at a
fixed centre and scale), Bonferroni-corrected over the scanned (centre, scale) grid
(conservative).

Measured (``tests/dynamics/test_transitions.py``, fixed seeds, 20 curves each, 1 %
noise): transitions reported on 0 exponential decays (additive noise), 1 exponential
decay (multiplicative noise), 0 power-law decays, 0 nine-checkpoint decays; a sigmoid
jump of 10 noise standard deviations, 10-90 % span 1.3-4.4 checkpoints, riding on an
exponential decay is found within 5 checkpoints of its centre in 20 of 20 (largest
error 0.5 checkpoint); 0 false alarms on 100 white-noise series of 100 points.
About 0.1-0.6 s per series of 100 points, 1 s of 150, on a shared 2-core CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.interpolate import BSpline
from scipy.ndimage import median_filter
from scipy.optimize import least_squares
from scipy.special import expit
from scipy.stats import chi2

__all__ = [
    "MIN_KNOT_SPACING",
    "TREND_FAMILIES",
    "Transition",
    "detect_all",
    "detect_transitions",
    "fit_trend",
    "grokking_onset",
    "noise_scale",
    "lead_time",
    "rise_step",
]

TREND_FAMILIES = ("constant", "exp", "power", "spline", "spline-i")
"""The smooth trend families a transition is measured against (see the module doc)."""

MIN_KNOT_SPACING = 6
"""Fewest checkpoints between two knots of the ``spline-i`` (checkpoint-index) trend."""

MIN_KNOT_POINTS = 4
"""Fewest checkpoints between two knots of the ``spline`` (log-step) trend."""

_SPAN = 2.0 * math.log(9.0)  # 10-90 % rise of expit(z / w) spans _SPAN * w


@dataclass(frozen=True)
class Transition:
    """One abrupt change of a metric series, relative to its smooth trend.

    Attributes
    ----------
    index : int
        Position in the series of the first checkpoint after the centre of the change.
    metric : str
        Name of the series (``""`` when not given).
    size : float
        Height of the change (after minus before), in the metric's units, on top of
        the trend.
    confidence : float
        ``1 - p_value`` (in [0, 1]).
    z : float
        Square root of the likelihood-ratio statistic of this step against the model
        without it (in noise standard deviations).
    step : float or None
        ``steps[index]`` when steps were given (the first checkpoint after the change).
    step_before : float or None
        ``steps[index - 1]``: the change is centred between ``step_before`` and ``step``.
    level_before, level_after : float
        The fitted curve (trend and steps, no noise) at the checkpoints just before
        and just after the change's 10-90 % span (metric units).
    location : float
        Fractional checkpoint index of the centre (half-way point) of the change.
    location_step : float or None
        The centre in training steps (interpolated between checkpoints).
    width : float
        10-90 % span of the change, in checkpoints (``2 ln 9`` times the logistic scale).
    delta_bic : float
        BIC without this step (trend refitted) minus BIC with it; evidence for the
        change against the smooth trend (> 10: very strong).
    p_value : float
        Bonferroni-corrected likelihood-ratio p-value of the step (see the module doc).
    trend : str
        Trend family of the final model (one of :data:`TREND_FAMILIES`, with the
        number of knots for splines, e.g. ``"spline(3)"``).
    """

    index: int
    metric: str
    size: float
    confidence: float
    z: float
    step: float | None = None
    step_before: float | None = None
    level_before: float = float("nan")
    level_after: float = float("nan")
    location: float = float("nan")
    location_step: float | None = None
    width: float = float("nan")
    delta_bic: float = float("nan")
    p_value: float = float("nan")
    trend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_scale(series: np.ndarray) -> float:
    """Robust noise standard deviation ``1.4826 MAD(diff(x)) / sqrt(2)`` (metric units).

    Falls back to the standard deviation of the differences when the MAD is 0
    (e.g. a quantised series), and to a tiny positive number for a constant series.
    Applied to the residuals of a trend, a few jumps do not inflate it.
    """
    x = np.asarray(series, dtype=float)
    d = np.diff(x)
    if d.size == 0:
        return 1e-12
    mad = np.median(np.abs(d - np.median(d)))
    sigma = 1.4826 * mad / math.sqrt(2.0)
    if sigma <= 0:
        sigma = float(np.std(d)) / math.sqrt(2.0)
    scale = max(float(np.max(np.abs(x))), 1.0)
    return max(sigma, 1e-9 * scale)


# ------------------------------------------------------------------ model pieces
class _Axis:
    """Normalised time ``s`` in [0, 1], log-steps ``v``, checkpoint index ``i``."""

    def __init__(self, n: int, steps: np.ndarray | None) -> None:
        self.n = n
        self.i = np.arange(n, dtype=float)
        t = self.i if steps is None or np.any(np.diff(steps) <= 0) else steps
        s = (t - t[0]) / (t[-1] - t[0])
        self.s = s
        self.ds = float(s[1] - s[0])  # first spacing: the log-step offset
        self.v = np.log(s + self.ds)


@dataclass
class _Trend:
    family: str
    theta: np.ndarray  # nonlinear parameters
    knots: int = 0  # knots asked for (splines)
    inner: int = 0  # interior knots kept

    @property
    def name(self) -> str:
        return f"{self.family}({self.inner})" if self.family.startswith("spline") else self.family


def _spline_knots(x: np.ndarray, knots: int, min_points: int) -> np.ndarray:
    """``knots`` interior knots evenly spaced over ``x`` (sorted), thinned so that every
    knot interval holds at least ``min_points`` points."""
    lo, hi = float(x[0]), float(x[-1])
    kept: list[float] = []
    last = lo
    for kn in np.linspace(lo, hi, knots + 2)[1:-1]:
        if np.sum((x >= last) & (x < kn)) >= min_points and np.sum(x >= kn) >= min_points:
            kept.append(float(kn))
            last = float(kn)
    return np.asarray(kept)


def _spline_basis(x: np.ndarray, inner: np.ndarray) -> np.ndarray:
    lo, hi = float(x[0]), float(x[-1])
    t = np.r_[[lo] * 4, inner, [hi] * 4]
    return BSpline.design_matrix(np.clip(x, lo, hi), t, 3).toarray()


def _trend_basis(tr: _Trend, ax: _Axis) -> np.ndarray:
    one = np.ones((ax.n, 1))
    if tr.family == "constant":
        return one
    if tr.family == "exp":
        r = float(tr.theta[0])
        return np.c_[one, np.exp(-r * ax.s - max(0.0, -r))]  # scaled to <= 1
    if tr.family == "power":
        b, log_t0 = float(tr.theta[0]), float(tr.theta[1])
        col = np.exp(-b * np.log(ax.s + math.exp(log_t0)))
        return np.c_[one, col / np.max(np.abs(col))]
    if tr.family == "spline":
        return _spline_basis(ax.v, _spline_knots(ax.v, tr.knots, MIN_KNOT_POINTS))
    if tr.family == "spline-i":
        return _spline_basis(ax.i, _spline_knots(ax.i, tr.knots, MIN_KNOT_SPACING))
    raise ValueError(f"unknown trend family {tr.family!r}; choose from {TREND_FAMILIES}")


def _n_params(tr: _Trend, basis_rank: int) -> int:
    return basis_rank + int(tr.theta.size)


def _orth(m: np.ndarray) -> np.ndarray:
    """Orthonormal basis of the column span of ``m`` (rank-revealing SVD)."""
    u, sv, _ = np.linalg.svd(m, full_matrices=False)
    if sv.size == 0:
        return u
    return u[:, sv > 1e-10 * sv[0]]


def _trend_grid(ax: _Axis, families: Sequence[str]) -> list[_Trend]:
    n, out = ax.n, []
    for fam in families:
        if fam == "constant":
            out.append(_Trend("constant", np.zeros(0)))
        elif fam == "exp" and n >= 5:
            rmax = min(2.0 / ax.ds, 1e4)
            for r in [-3.0, -1.0, *np.geomspace(0.5, rmax, 9)]:
                out.append(_Trend("exp", np.array([r])))
        elif fam == "power" and n >= 6:
            for b in (-0.7, 0.2, 0.5, 1.0, 2.0):
                for t0 in np.geomspace(ax.ds / 4, 1.0, 4):
                    out.append(_Trend("power", np.array([b, math.log(t0)])))
        elif fam in ("spline", "spline-i") and n >= 12:
            x, m = (ax.v, MIN_KNOT_POINTS) if fam == "spline" else (ax.i, MIN_KNOT_SPACING)
            seen: set[tuple[float, ...]] = set()
            for k in range(0 if fam == "spline" else 1, min(8, n // 4 - 4) + 1):
                kn = tuple(_spline_knots(x, k, m))
                if kn not in seen and (kn or fam == "spline"):
                    seen.add(kn)
                    out.append(_Trend(fam, np.zeros(0), k, len(kn)))
        elif fam not in TREND_FAMILIES:
            raise ValueError(f"unknown trend family {fam!r}; choose from {TREND_FAMILIES}")
    return out


_BOUNDS = {"exp": ([-10.0], [1e4]), "power": ([-2.0, -20.0], [5.0, 1.0])}


@dataclass
class _Fit:
    trend: _Trend
    steps: list[tuple[float, float]]  # (mu, w)
    rss: float
    k: int
    bic: float = float("inf")
    coef: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fitted: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Problem:
    """One series: its axis, weights, the BIC, the grid scan and the refinement.

    Least squares are weighted by ``1 / s_i``, the relative noise scale at checkpoint
    ``i`` (:func:`_relative_noise`); every RSS is in weighted units.
    """

    def __init__(self, x: np.ndarray, ax: _Axis, sigma: float | None, families: Sequence[str],
                 mus: np.ndarray, ws: np.ndarray, w_max: float, min_gap: float) -> None:
        self.x, self.ax, self.n = x, ax, x.size
        self.sigma = sigma
        self.trends = _trend_grid(ax, families)
        self.mus, self.ws, self.w_max, self.min_gap = mus, ws, w_max, min_gap
        self.cand = np.c_[np.repeat(mus, ws.size), np.tile(ws, mus.size)]
        self.S = expit((ax.i[:, None] - self.cand[None, :, 0]) / self.cand[None, :, 1])
        self._cache: dict[tuple, np.ndarray] = {}
        self.set_weights(np.ones(self.n))

    def set_weights(self, rel_noise: np.ndarray) -> None:
        self.wt = 1.0 / rel_noise
        self.xw = self.x * self.wt
        self.Sw = self.S * self.wt[:, None]
        self.S2 = np.sum(self.Sw * self.Sw, axis=0)
        scale = max(float(np.ptp(self.xw)), 1e-300)
        self.rss_floor = self.n * (1e-4 * scale) ** 2  # noise below 1e-4 of the range
        self._q: dict[int, tuple[np.ndarray, int]] = {}

    def bic(self, rss: float, k: int) -> float:
        """BIC (unknown variance, small-sample form ``n log(RSS / (n - k))``); ``inf``
        with fewer than 3 residual degrees of freedom."""
        n = self.n
        if n - k < 3:
            return float("inf")
        if self.sigma is not None:
            return rss / self.sigma**2 + k * math.log(n)
        return n * math.log(max(rss, self.rss_floor) / (n - k)) + k * math.log(n)

    def basis(self, tr: _Trend) -> np.ndarray:
        if tr.theta.size:
            return _trend_basis(tr, self.ax)
        key = (tr.family, tr.knots)
        if key not in self._cache:
            self._cache[key] = _trend_basis(tr, self.ax)
        return self._cache[key]

    def design(self, tr: _Trend, steps: Sequence[tuple[float, float]]) -> np.ndarray:
        cols = [self.basis(tr)]
        for mu, w in steps:
            cols.append(expit((self.ax.i - mu) / w)[:, None])
        return np.concatenate(cols, axis=1)

    def fit_linear(self, tr: _Trend, steps: Sequence[tuple[float, float]]) -> _Fit:
        m = self.design(tr, steps)
        coef, _, rank, _ = np.linalg.lstsq(m * self.wt[:, None], self.xw, rcond=None)
        fitted = m @ coef
        rss = float(np.sum(((self.x - fitted) * self.wt) ** 2))
        k = int(rank) + int(tr.theta.size) + 2 * len(steps)
        f = _Fit(tr, list(steps), rss, k, coef=coef, fitted=fitted)
        f.bic = self.bic(rss, k)
        return f

    def refine(self, tr: _Trend, steps: Sequence[tuple[float, float]],
               free: int = 10**9) -> _Fit:
        """Least-squares refinement of the trend's nonlinear parameters and of the last
        ``free`` steps' centres (within 2 checkpoints of their start) and scales."""
        steps = list(steps)
        nt = tr.theta.size
        held, moving = steps[: max(len(steps) - free, 0)], steps[max(len(steps) - free, 0):]
        if nt == 0 and not moving:
            return self.fit_linear(tr, steps)
        lo_t, hi_t = _BOUNDS.get(tr.family, ([], []))
        lo = list(lo_t)
        hi = list(hi_t)
        for mu, _w in moving:
            lo += [max(self.mus[0], mu - 2.0), 0.05]
            hi += [min(self.mus[-1], mu + 2.0), self.w_max]
        p0 = np.clip(np.r_[tr.theta, np.ravel(moving)], lo, hi)

        def unpack(p):
            t = _Trend(tr.family, p[:nt], tr.knots, tr.inner)
            mv = [(float(p[nt + 2 * j]), float(p[nt + 2 * j + 1])) for j in range(len(moving))]
            return t, [*held, *mv]

        def resid(p):
            m = self.design(*unpack(p)) * self.wt[:, None]
            coef, *_ = np.linalg.lstsq(m, self.xw, rcond=None)
            return self.xw - m @ coef

        start = self.fit_linear(tr, steps)
        try:
            sol = least_squares(resid, p0, bounds=(lo, hi), x_scale="jac", ftol=1e-6,
                                xtol=1e-6, max_nfev=25 * p0.size)
            best = self.fit_linear(*unpack(sol.x))
        except (ValueError, np.linalg.LinAlgError):
            return start
        return best if best.rss <= start.rss else start

    def scan(self, fixed: Sequence[tuple[float, float]], with_step: bool,
             margin: float = 10.0) -> list[_Fit]:
        """Refined best grid model of every family whose grid BIC is within ``margin``
        of the best (with one more step, away from the ``fixed`` ones, when
        ``with_step``)."""
        best: dict[str, tuple[float, _Trend, tuple[float, float] | None]] = {}
        fixed_cols = [expit((self.ax.i - mu) / w)[:, None] for mu, w in fixed]
        allowed = np.ones(self.cand.shape[0], bool)
        for mu, _w in fixed:
            allowed &= np.abs(self.cand[:, 0] - mu) >= self.min_gap
        for tr in self.trends:
            m = np.concatenate([self.basis(tr), *fixed_cols], axis=1) * self.wt[:, None]
            q = _orth(m)
            k = q.shape[1] + int(tr.theta.size) + 2 * len(fixed)
            r = self.xw - q @ (q.T @ self.xw)
            rss0 = float(r @ r)
            if with_step:
                qs = q.T @ self.Sw
                den = self.S2 - np.sum(qs * qs, axis=0)
                ok = allowed & (den > 1e-8 * self.S2)
                if not ok.any():
                    continue
                gain = np.where(ok, (r @ self.Sw) ** 2 / np.where(ok, den, 1.0), -np.inf)
                j = int(np.argmax(gain))
                rss, k, step = max(rss0 - float(gain[j]), 0.0), k + 3, tuple(self.cand[j])
            else:
                rss, step = rss0, None
            b = self.bic(rss, k)
            if tr.family not in best or b < best[tr.family][0]:
                best[tr.family] = (b, tr, step)
        if not best:
            return []
        top = min(v[0] for v in best.values())
        out = []
        for b, tr, step in best.values():
            if b > top + margin or not np.isfinite(b):
                continue
            st = [*fixed, step] if step is not None else list(fixed)
            out.append(self.refine(tr, st, free=1 if step is not None else 0))
        return out

    def best(self, fixed: Sequence[tuple[float, float]], with_step: bool) -> _Fit | None:
        fits = self.scan(fixed, with_step)
        return min(fits, key=lambda f: f.bic) if fits else None


def _relative_noise(resid: np.ndarray) -> np.ndarray:
    """Relative noise scale at every checkpoint (geometric mean 1), from a moving
    median of ``|diff(resid)|`` over ``W = max(15, n // 5)`` differences (robust to
    the few large differences of a jump). Ones unless the variation of its log is
    significant (more than 4 standard errors, ``1.2 / sqrt(W)`` for Gaussian noise);
    the ratio is clipped to 30 either way; ones for fewer than 20 checkpoints."""
    n = resid.size
    if n < 20:
        return np.ones(n)
    d = np.abs(np.diff(resid))
    pos = d[d > 0]
    if pos.size < n // 2:  # a quantised series: no reliable local scale
        return np.ones(n)
    width = max(15, n // 5) | 1
    sm = np.log(np.maximum(median_filter(d, size=width, mode="mirror"), 0.5 * pos.min()))
    at = np.r_[sm[0], 0.5 * (sm[1:] + sm[:-1]), sm[-1]]  # diffs -> checkpoints
    dev = at - at.mean()
    if np.max(np.abs(dev)) < 4.0 * 1.2 / math.sqrt(width):
        return np.ones(n)
    return np.exp(np.clip(dev, -math.log(30), math.log(30)))


def _local_jump(resid: np.ndarray, mu: float, w: float, m: int) -> float:
    """Mean of ``resid`` over the ``m`` checkpoints after a change's 10-90 % span minus
    the mean over the ``m`` before it, in units of one residual's standard error
    (``sqrt(1 / m_before + 1 / m_after)``); metric units when divided out again."""
    n = resid.size
    lo = int(math.floor(mu - _SPAN / 2 * w))
    hi = int(math.ceil(mu + _SPAN / 2 * w))
    before = resid[max(lo - m + 1, 0): max(lo + 1, 0)]
    after = resid[min(hi, n): min(hi + m, n)]
    if before.size == 0 or after.size == 0:
        return 0.0
    return float(after.mean() - before.mean()) / math.sqrt(1 / before.size + 1 / after.size)


def _step_height(fit: _Fit, j: int) -> float:
    return float(fit.coef[-len(fit.steps) + j])


def fit_trend(
    series: np.ndarray | Sequence[float],
    steps: np.ndarray | Sequence[float] | None = None,
    families: Sequence[str] = TREND_FAMILIES,
) -> dict[str, Any]:
    """The smooth trend of a series alone, chosen by BIC among ``families``.

    Returns
    -------
    dict with ``trend`` (family name), ``theta`` (its nonlinear parameters on the
    normalised time axis), ``fitted`` (array (n,), metric units), ``rss``
    (metric units squared), ``bic`` and ``noise`` (:func:`noise_scale` of the
    residuals, metric units).
    """
    x = np.asarray(series, dtype=float)
    st = None if steps is None else np.asarray(steps, dtype=float)
    ax = _Axis(x.size, st)
    prob = _Problem(x, ax, None, families, np.array([0.5]), np.array([1.0]), 1.0, 1.0)
    f = prob.best([], with_step=False)
    if f is None:
        raise ValueError(f"fit_trend: no trend family of {families} fits {x.size} points")
    return {"trend": f.trend.name, "theta": f.trend.theta.tolist(), "fitted": f.fitted,
            "rss": f.rss, "bic": f.bic, "noise": noise_scale(x - f.fitted)}


def detect_transitions(
    series: np.ndarray | Sequence[float],
    steps: np.ndarray | Sequence[float] | None = None,
    metric: str = "",
    penalty: float | None = None,
    min_size: int = 3,
    min_jump: float = 0.0,
    sigma: float | None = None,
    max_changes: int | None = None,
    max_width: float = 8.0,
    min_snr: float = 3.0,
    families: Sequence[str] = TREND_FAMILIES,
) -> list[Transition]:
    """Abrupt changes of a series that its smooth trend does not explain.

    Parameters
    ----------
    series : array of shape (n,)
        The metric at consecutive checkpoints (any units), in order.
    steps : array of shape (n,), optional
        Training step of every entry (may be unevenly spaced, e.g. logarithmic); the
        time axis of the trend (else the checkpoint index) and the result's labels.
    metric : str
        Name stored in every :class:`Transition`.
    penalty : float, optional
        Minimum BIC decrease for a step to be kept (beyond the BIC's own ``log n`` per
        parameter); default ``log n``.
    min_size : int
        Minimum number of checkpoints on either side of a change's centre.
    min_jump : float
        Minimum ``|size|`` (metric units) of a reported change.
    sigma : float, optional
        Known noise standard deviation (metric units): the BIC then uses
        ``RSS / sigma**2`` instead of the unknown-variance form.
    max_changes : int, optional
        At most this many changes (default ``n // 10 + 1``).
    max_width : float
        Largest 10-90 % span of a change, in checkpoints (also at most ``n / 10``);
        anything slower is trend.
    min_snr : float
        Minimum ``|size|`` in units of the robust noise scale of the trend residuals
        (:func:`noise_scale`).
    families : trend families to consider (see :data:`TREND_FAMILIES`).

    Returns
    -------
    list of :class:`Transition`, sorted by location; empty for a smooth curve.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> i = np.arange(100.0)
    >>> x = np.exp(-i / 15) + 0.3 * (i >= 60) + 0.01 * rng.standard_normal(100)
    >>> [t.index for t in detect_transitions(x)]
    [60]
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"detect_transitions: series must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x))
        raise ValueError(
            f"detect_transitions: series{f' {metric!r}' if metric else ''} has non-finite "
            f"values at indices {bad[:5].tolist()}; drop or interpolate them first"
        )
    n = x.size
    st = None
    if steps is not None:
        st = np.asarray(steps, dtype=float)
        if st.shape != (n,):
            raise ValueError(
                f"detect_transitions: steps has shape {st.shape}, series has ({n},)"
            )
    if min_size < 1:
        raise ValueError(f"detect_transitions: min_size must be >= 1, got {min_size}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"detect_transitions: sigma must be > 0, got {sigma}")
    if n < max(2 * min_size, 5) or np.ptp(x) == 0:
        return []
    pen = math.log(n) if penalty is None else float(penalty)
    max_changes = n // 10 + 1 if max_changes is None else int(max_changes)
    w_max = max(min(float(max_width), n / 10.0) / _SPAN, 0.1)
    ws = np.array([w for w in (0.1, 0.5, 1.2) if w <= w_max] or [w_max])
    mus = np.arange(min_size - 0.5, n - min_size - 0.5 + 1e-9, 1.0)
    ax = _Axis(n, st)
    prob = _Problem(x, ax, sigma, families, mus, ws, w_max, float(max(min_size, 2)))
    current = prob.best([], with_step=False)
    if current is None:
        return []
    if sigma is None:  # heteroscedastic noise (e.g. proportional to a decaying loss)
        prob.set_weights(_relative_noise(x - current.fitted))
        current = prob.best([], with_step=False)
    noise_w = noise_scale((x - current.fitted) * prob.wt)  # weighted units
    while len(current.steps) < max_changes:
        cand = prob.best(current.steps, with_step=True)
        if cand is None or current.bic - cand.bic <= pen:
            break
        mu, w = cand.steps[-1]
        h = _step_height(cand, len(cand.steps) - 1)
        # local noise (metric units); below 1e-4 of the range counts as none
        local = max(noise_w / prob.wt[int(min(max(round(mu), 0), n - 1))], 1e-4 * np.ptp(x))
        if abs(h) < max(min_jump, min_snr * local):
            break
        if _local_jump(x - current.fitted, mu, w, min_size) * np.sign(h) < 2.0 * local:
            break  # not a jump in the residuals of the model without it: a trend swap
        current = cand

    out = []
    m_tests = prob.cand.shape[0]
    for j, (mu, w) in enumerate(current.steps):
        others = [s for jj, s in enumerate(current.steps) if jj != j]
        without = prob.best(others, with_step=False)
        h = _step_height(current, j)
        nested = prob.refine(current.trend, others, free=0)  # same trend family
        if sigma is not None:
            lr = (nested.rss - current.rss) / sigma**2
        else:
            lr = n * math.log(max(nested.rss, prob.rss_floor)
                              / max(current.rss, prob.rss_floor))
        lr = max(lr, 0.0)
        p = min(1.0, m_tests * float(chi2.sf(lr, 1)))
        idx = int(min(max(math.ceil(mu), 1), n - 1))
        before = int(max(math.floor(mu - _SPAN / 2 * w), 0))
        after = int(min(math.ceil(mu + _SPAN / 2 * w), n - 1))
        out.append(Transition(
            index=idx, metric=metric, size=h, confidence=1.0 - p, z=math.sqrt(lr),
            step=None if st is None else float(st[idx]),
            step_before=None if st is None else float(st[idx - 1]),
            level_before=float(current.fitted[before]),
            level_after=float(current.fitted[after]),
            location=float(mu),
            location_step=None if st is None else float(np.interp(mu, ax.i, st)),
            width=float(_SPAN * w), delta_bic=float(without.bic - current.bic),
            p_value=p, trend=current.trend.name,
        ))
    return sorted(out, key=lambda t: t.location)


def detect_all(
    metrics: Mapping[str, np.ndarray | Sequence[float]],
    steps: np.ndarray | Sequence[float] | None = None,
    **kwargs: Any,
) -> dict[str, list[Transition]]:
    """:func:`detect_transitions` on every series of ``metrics`` (name -> array (n,));
    series with non-finite values are detected on their finite entries, and the
    returned indices are those of the full series."""
    out: dict[str, list[Transition]] = {}
    for name, values in metrics.items():
        v = np.asarray(values, dtype=float)
        keep = np.isfinite(v)
        st = None if steps is None else np.asarray(steps, dtype=float)[keep]
        found = detect_transitions(v[keep], steps=st, metric=name, **kwargs)
        idx = np.flatnonzero(keep)
        pos = np.arange(idx.size, dtype=float)
        out[name] = [
            Transition(**{**t.to_dict(), "index": int(idx[t.index]),
                          "location": float(np.interp(t.location, pos, idx))})
            for t in found
        ]
    return out


def grokking_onset(
    steps: np.ndarray | Sequence[float],
    val_accuracy: np.ndarray | Sequence[float],
    train_accuracy: np.ndarray | Sequence[float] | None = None,
    plateau: int = 5,
    train_threshold: float = 0.99,
) -> dict[str, Any]:
    """The grokking onset: the first step where validation accuracy crosses the
    midpoint between its starting plateau and its final plateau.

    Parameters
    ----------
    steps : array (n,) of training steps
    val_accuracy : array (n,), fractions in [0, 1]
    train_accuracy : array (n,), optional
        Gives ``train_fit_step``, the first step with train accuracy >= ``train_threshold``.
    plateau : int
        Number of points averaged (median) at each end for the two plateaus; the
        starting plateau is taken after the train fit when train accuracy is given
        (the memorisation plateau), else at the start.

    Returns
    -------
    dict with ``onset_step``, ``onset_index``, ``start_level``, ``final_level``,
    ``midpoint``, ``train_fit_step`` (or None), ``delay`` (onset - train fit, steps,
    or None) and ``grokked`` (final level - start level >= 0.5; without it there is no
    onset and ``onset_step`` is None).
    """
    st = np.asarray(steps, dtype=float)
    va = np.asarray(val_accuracy, dtype=float)
    if st.shape != va.shape or va.ndim != 1 or va.size < 2:
        raise ValueError(
            f"grokking_onset: steps {st.shape} and val_accuracy {va.shape} must be equal 1-D"
        )
    fit_step = fit_index = None
    if train_accuracy is not None:
        ta = np.asarray(train_accuracy, dtype=float)
        hit = np.flatnonzero(ta >= train_threshold)
        if hit.size:
            fit_index = int(hit[0])
            fit_step = float(st[fit_index])
    k = max(1, min(int(plateau), va.size // 4 or 1))
    first = fit_index if fit_index is not None else 0
    start = float(np.median(va[first : first + k]))
    final = float(np.median(va[-k:]))
    mid = 0.5 * (start + final)
    grokked = bool(final - start >= 0.5)
    above = np.flatnonzero(va[first:] >= mid) + first if grokked else np.array([], int)
    onset_index = int(above[0]) if above.size else None
    onset_step = None if onset_index is None else float(st[onset_index])
    return {
        "onset_step": onset_step,
        "onset_index": onset_index,
        "start_level": start,
        "final_level": final,
        "midpoint": mid,
        "train_fit_step": fit_step,
        "delay": None if onset_step is None or fit_step is None else onset_step - fit_step,
        "grokked": grokked,
    }


def rise_step(
    steps: np.ndarray | Sequence[float],
    values: np.ndarray | Sequence[float],
    method: str = "transition",
    baseline: int = 5,
    factor: float = 2.0,
    start: int = 1,
    log_scale: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """When a positive signal (e.g. the commutator defect) rises.

    ``method="transition"``: the first upward change point of the series (in log10
    when ``log_scale``) after index ``start``. ``method="threshold"``: the first
    step where the value exceeds ``factor`` times its early baseline (median of the
    ``baseline`` points from ``start``).

    Returns
    -------
    dict with ``step`` (or None), ``index``, ``method`` and, for "transition", the
    :class:`Transition` as ``transition``.
    """
    st = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if method == "threshold":
        base = float(np.nanmedian(v[start : start + baseline]))
        hit = np.flatnonzero(v[start + baseline :] > factor * base) + start + baseline
        i = int(hit[0]) if hit.size else None
        return {"step": None if i is None else float(st[i]), "index": i, "method": method,
                "baseline": base}
    if method != "transition":
        raise ValueError(f"rise_step: method must be 'transition' or 'threshold', got {method!r}")
    series = np.log10(np.maximum(v, 1e-300)) if log_scale else v
    ts = detect_transitions(series[start:], steps=st[start:], **kwargs)
    ups = [t for t in ts if t.size > 0]
    if not ups:
        return {"step": None, "index": None, "method": method, "transition": None}
    t = ups[0]
    return {"step": t.step, "index": t.index + start, "method": method, "transition": t}


def lead_time(
    steps: np.ndarray | Sequence[float],
    signal: np.ndarray | Sequence[float],
    onset_step: float | None,
    train_fit_step: float | None = None,
    method: str = "transition",
    **kwargs: Any,
) -> dict[str, Any]:
    """How long before the grokking onset an early-warning signal rises.

    The search for the rise starts after memorisation: at the first checkpoint after
    ``train_fit_step`` where the signal is back at or below its value at the train fit
    (the commutator defect spikes while the train set is being fitted; that spike is
    not the warning). Without ``train_fit_step`` it starts at index 1.

    Parameters
    ----------
    steps : array (c,) of checkpoint steps
    signal : array (c,) of positive values (e.g. the commutator defect)
    onset_step : grokking onset (steps), from :func:`grokking_onset`
    method, **kwargs : passed to :func:`rise_step`

    Returns
    -------
    dict with ``rise_step``, ``onset_step``, ``lead_time`` (onset - rise, in steps;
    positive when the signal rises first; None when either is missing), ``search_from``
    (step) and ``rise`` (the :func:`rise_step` result).
    """
    st = np.asarray(steps, dtype=float)
    v = np.asarray(signal, dtype=float)
    start = 1
    if train_fit_step is not None:
        i_fit = int(np.searchsorted(st, train_fit_step))
        if i_fit < st.size:
            ref = v[i_fit]
            back = np.flatnonzero(v[i_fit + 1 :] <= ref) + i_fit + 1
            start = int(back[0]) if back.size else i_fit
    start = min(max(start, 1), max(st.size - 2, 0))
    rise = rise_step(st, v, method=method, start=start, **kwargs)
    lead = None
    if rise["step"] is not None and onset_step is not None:
        lead = float(onset_step - rise["step"])
    return {
        "rise_step": rise["step"],
        "onset_step": onset_step,
        "lead_time": lead,
        "search_from": float(st[start]) if st.size else None,
        "rise": rise,
    }
