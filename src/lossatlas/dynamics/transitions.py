"""Phase transitions: change points in behavioural metrics along a training trajectory.

Model: the series is piecewise constant (a mean-shift model) plus noise. Change points
are found by binary segmentation: in a segment, the split maximising the reduction of
the squared error, ``n_L n_R / n (mean_L - mean_R)^2``, is kept when that reduction,
in units of the noise variance, exceeds a penalty; both halves are searched again.

The noise scale is estimated robustly from the first differences:
``sigma = 1.4826 MAD(diff(x)) / sqrt(2)``, so a few jumps (or a slow trend) do not
inflate it. The default penalty is ``3 log n`` (a BIC-style penalty, stricter than
``2 log n`` because the split location is chosen by maximisation); it keeps the
false-alarm rate on white noise near 1 % per series for n between 30 and 1000.

The series is taken in checkpoint order; ``steps`` (optional, possibly unevenly
spaced) only label the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

__all__ = [
    "Transition",
    "detect_all",
    "detect_transitions",
    "grokking_onset",
    "noise_scale",
    "lead_time",
    "rise_step",
]


@dataclass(frozen=True)
class Transition:
    """One change point of a metric series.

    Attributes
    ----------
    index : int
        Position in the series of the first value of the new segment.
    metric : str
        Name of the series (``""`` when not given).
    size : float
        The jump ``mean_after - mean_before`` of the adjacent segments, in the
        metric's units.
    confidence : float
        ``1 - p`` with ``p`` a Bonferroni-corrected two-sided normal p-value of
        ``z`` over the candidate split positions of its segment (in [0, 1]).
    z : float
        ``|size| / (sigma sqrt(1/n_before + 1/n_after))``; ``z**2`` is the
        likelihood-ratio statistic of the split (in noise-variance units).
    step : float or None
        ``steps[index]`` when steps were given (the first checkpoint after the change).
    step_before : float or None
        ``steps[index - 1]``: the change happened between ``step_before`` and ``step``.
    mean_before, mean_after : float
        Means of the adjacent segments (metric units).
    """

    index: int
    metric: str
    size: float
    confidence: float
    z: float
    step: float | None = None
    step_before: float | None = None
    mean_before: float = float("nan")
    mean_after: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise_scale(series: np.ndarray) -> float:
    """Robust noise standard deviation ``1.4826 MAD(diff(x)) / sqrt(2)`` (metric units).

    Falls back to the standard deviation of the differences when the MAD is 0
    (e.g. a quantised series), and to a tiny positive number for a constant series.
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


def _best_split(cs: np.ndarray, cs2: np.ndarray, s: int, e: int, min_size: int):
    """Best split ``k`` of ``x[s:e]`` (segments ``[s, k)`` and ``[k, e)``) and its gain."""
    n = e - s
    ks = np.arange(s + min_size, e - min_size + 1)
    if ks.size == 0:
        return None, 0.0
    n_l = ks - s
    n_r = e - ks
    sum_l = cs[ks] - cs[s]
    sum_r = cs[e] - cs[ks]
    diff = sum_l / n_l - sum_r / n_r
    gain = n_l * n_r / n * diff**2
    j = int(np.argmax(gain))
    return int(ks[j]), float(gain[j])


def detect_transitions(
    series: np.ndarray | Sequence[float],
    steps: np.ndarray | Sequence[float] | None = None,
    metric: str = "",
    penalty: float | None = None,
    min_size: int = 3,
    min_jump: float = 0.0,
    sigma: float | None = None,
    max_changes: int | None = None,
) -> list[Transition]:
    """Change points of a mean-shift model by binary segmentation.

    Parameters
    ----------
    series : array of shape (n,)
        The metric at consecutive checkpoints (any units), in order.
    steps : array of shape (n,), optional
        Training step of every entry (may be unevenly spaced); labels the result.
    metric : str
        Name stored in every :class:`Transition`.
    penalty : float, optional
        Minimum squared-error reduction of a split in units of ``sigma**2``;
        default ``3 log n``.
    min_size : int
        Minimum number of points in a segment.
    min_jump : float
        Minimum ``|size|`` (metric units) of a reported change.
    sigma : float, optional
        Noise standard deviation (metric units); default :func:`noise_scale`.
    max_changes : int, optional
        Stop after this many change points.

    Returns
    -------
    list of :class:`Transition`, sorted by index; sizes and confidences use the
    final segmentation (neighbouring change points as segment ends).

    Example
    -------
    >>> x = np.r_[np.zeros(50), np.ones(50)] + 0.1 * np.random.randn(100)
    >>> [t.index for t in detect_transitions(x)]
    [50]
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
    if steps is not None:
        steps = np.asarray(steps, dtype=float)
        if steps.shape != (n,):
            raise ValueError(
                f"detect_transitions: steps has shape {steps.shape}, series has ({n},)"
            )
    if min_size < 1:
        raise ValueError(f"detect_transitions: min_size must be >= 1, got {min_size}")
    if n < 2 * min_size:
        return []
    sig = noise_scale(x) if sigma is None else float(sigma)
    if not sig > 0:
        raise ValueError(f"detect_transitions: sigma must be > 0, got {sigma}")
    pen = max(3.0 * math.log(n), 12.0) if penalty is None else float(penalty)
    cs = np.concatenate([[0.0], np.cumsum(x)])
    cs2 = np.concatenate([[0.0], np.cumsum(x * x)])

    cuts: list[int] = []
    stack = [(0, n)]
    while stack:
        if max_changes is not None and len(cuts) >= max_changes:
            break
        s, e = stack.pop()
        k, gain = _best_split(cs, cs2, s, e, min_size)
        if k is None or gain / sig**2 <= pen:
            continue
        jump = abs((cs[e] - cs[k]) / (e - k) - (cs[k] - cs[s]) / (k - s))
        if jump < min_jump:
            continue
        cuts.append(k)
        stack.extend([(s, k), (k, e)])

    cuts.sort()
    bounds = [0, *cuts, n]
    out = []
    for j, k in enumerate(cuts):
        s, e = bounds[j], bounds[j + 2]
        n_l, n_r = k - s, e - k
        m_l = (cs[k] - cs[s]) / n_l
        m_r = (cs[e] - cs[k]) / n_r
        size = m_r - m_l
        z = abs(size) / (sig * math.sqrt(1.0 / n_l + 1.0 / n_r))
        candidates = max(1, (e - s) - 2 * min_size + 1)
        p = min(1.0, candidates * 2.0 * float(norm.sf(z)))
        out.append(
            Transition(
                index=int(k),
                metric=metric,
                size=float(size),
                confidence=float(1.0 - p),
                z=float(z),
                step=None if steps is None else float(steps[k]),
                step_before=None if steps is None else float(steps[k - 1]),
                mean_before=float(m_l),
                mean_after=float(m_r),
            )
        )
    return out


def detect_all(
    metrics: Mapping[str, np.ndarray | Sequence[float]],
    steps: np.ndarray | Sequence[float] | None = None,
    **kwargs: Any,
) -> dict[str, list[Transition]]:
    """:func:`detect_transitions` on every series of ``metrics`` (name -> array (n,));
    series with non-finite values are detected on their finite entries.

    Unless ``min_jump`` is given, a change must be at least 10 % of the series' robust
    range (5th to 95th percentile): smooth trends (a decaying loss) would otherwise
    be cut into many small significant steps."""
    out: dict[str, list[Transition]] = {}
    for name, values in metrics.items():
        v = np.asarray(values, dtype=float)
        keep = np.isfinite(v)
        st = None if steps is None else np.asarray(steps, dtype=float)[keep]
        kw = dict(kwargs)
        if "min_jump" not in kw and keep.any():
            lo, hi = np.percentile(v[keep], [5, 95])
            kw["min_jump"] = 0.1 * float(hi - lo)
        found = detect_transitions(v[keep], steps=st, metric=name, **kw)
        idx = np.flatnonzero(keep)
        out[name] = [
            Transition(**{**t.to_dict(), "index": int(idx[t.index])}) for t in found
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
