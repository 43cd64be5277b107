"""The persistence threshold of an atlas's merge tree, from what ``Atlas.topology`` is
given: decades, "auto" or a percentage of the models' own log10-loss range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["resolve_threshold"]


def resolve_threshold(threshold: float | str, min_persistence: float, pairs: Any,
                      model_values: Callable[[], np.ndarray]) -> float:
    """The threshold in decades of log10 loss: ``threshold`` itself (a number), "auto"
    (:func:`~lossatlas.topology.auto_threshold` of the persistence ``pairs``) or "N%"
    (that fraction of the range of ``model_values()``, the field's log10 loss at the
    models, read only then); never below ``min_persistence``. ValueError for another
    string."""
    from .topology import auto_threshold

    if isinstance(threshold, str) and threshold.endswith("%"):
        own = model_values()
        own = own[np.isfinite(own)]
        threshold = float(threshold[:-1]) / 100 * float(np.ptp(own)) if len(own) else 0.0
    elif threshold == "auto":
        threshold = auto_threshold(pairs)
    elif isinstance(threshold, str):
        raise ValueError(
            f"Atlas.topology: threshold must be a number (decades), 'auto' or 'N%', "
            f"got {threshold!r}"
        )
    return max(float(threshold), float(min_persistence))
