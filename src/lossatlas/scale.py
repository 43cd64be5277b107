"""The atlas's loss scale: log10 of the mean loss, with one rule for diverged points.

Every map, merge tree, faithfulness figure and report figure reads losses through
:func:`log10_loss`, so a diverged point (NaN or +inf loss) is treated the same
everywhere: it is **+inf** on the scale (higher than any finite loss, never a
minimum), and a loss at or below zero is clipped to ``FLOOR`` (1e-12). Drawing code
that cannot show infinities masks them with :func:`drawable`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import MissingKeyError

__all__ = ["FLOOR", "drawable", "log10_loss"]

#: losses below this are clipped before the logarithm (mean losses are >= 0)
FLOOR = 1e-12


def _log10(values: np.ndarray, floor: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.log10(np.maximum(np.where(np.isnan(values), np.inf, values), floor))


def log10_loss(loss: Any, floor: float = FLOOR) -> Any:
    """``log10(max(loss, floor))`` with NaN losses as +inf (diverged), in decades.

    ``loss`` may be a field (an ``xarray.Dataset`` with a ``loss`` variable: the
    result is a ``DataArray`` over its dims), a ``DataArray``, a tensor, an array, a
    list or a number; the result has the same kind (float64; a float for a number).
    """
    if hasattr(loss, "data_vars"):  # xarray.Dataset
        if "loss" not in loss:
            raise MissingKeyError("log10_loss: the dataset has no 'loss' variable "
                           f"(it has {sorted(loss.data_vars)})")
        loss = loss["loss"]
    if hasattr(loss, "dims") and hasattr(loss, "copy"):  # xarray.DataArray
        out = loss.copy(data=_log10(loss.values, floor))
        out.attrs = {"units": "log10 of mean loss"}
        return out.rename("log10_loss")
    if hasattr(loss, "detach"):  # torch.Tensor
        import torch

        return torch.from_numpy(_log10(loss.detach().double().cpu().numpy(), floor))
    out = _log10(loss, floor)
    return float(out) if out.ndim == 0 else out


def drawable(values: Any) -> np.ndarray:
    """``values`` as float64 with non-finite entries (diverged points) set to NaN, for
    plotting libraries that draw NaN as a gap but fail on infinities."""
    values = np.array(values, dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values
