"""Choosing a persistence threshold for merge-tree simplification."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["auto_threshold", "threshold_from_fraction"]


def auto_threshold(pairs: np.ndarray) -> float:
    """Threshold in the middle of the largest gap between sorted finite persistences.

    The persistences ``death - birth`` (in the units of the values, no log taken here) that
    are finite are sorted with 0 prepended, so a field with only deep minima keeps them all.
    Minima whose persistence falls below the returned value are the ones simplification
    removes.

    Parameters
    ----------
    pairs : float array ``[k, 2]`` of (birth, death), as returned by ``persistence``.

    Returns
    -------
    float, >= 0; 0.0 when no pair has a finite persistence.
    """
    p = np.asarray(pairs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"auto_threshold: pairs must have shape [k, 2], got shape {p.shape}")
    pers = p[:, 1] - p[:, 0]
    pers = np.sort(pers[np.isfinite(pers)])
    if pers.size == 0:
        return 0.0
    levels = np.concatenate([[0.0], pers])
    j = int(np.argmax(np.diff(levels)))
    return float(0.5 * (levels[j] + levels[j + 1]))


def threshold_from_fraction(frac: float, low: float, high: float) -> float:
    """Absolute threshold ``frac * (high - low)``: a fraction of a reference range of values.

    E.g. ``threshold_from_fraction(0.05, field.min(), np.percentile(field, 95))`` keeps minima
    deeper than 5% of that loss range. ``low`` and ``high`` are in loss units, ``high >= low``.
    """
    frac, low, high = float(frac), float(low), float(high)
    if not (math.isfinite(frac) and frac >= 0):
        raise ValueError(f"threshold_from_fraction: frac must be finite and >= 0, got {frac}")
    if not (math.isfinite(low) and math.isfinite(high) and high >= low):
        raise ValueError(
            f"threshold_from_fraction: need finite low <= high, got low={low}, high={high}"
        )
    return frac * (high - low)
