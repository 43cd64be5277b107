"""Saving figures, and pyplot's backend chosen when first needed (never at import).

:func:`save_figure` is lossatlas's one way to write a figure: atomically (a temporary
file beside the target, then a rename), the format from the suffix. :func:`pyplot`
returns ``matplotlib.pyplot`` with a non-interactive backend (``$MPLBACKEND`` or Agg)
unless pyplot was imported already, so a notebook's own backend is never replaced.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .store import atomic_path

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["new_axes", "pyplot", "save_figure"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot``; the first import in a process selects ``$MPLBACKEND`` or
    Agg (figures are written to files, never shown)."""
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use(os.environ.get("MPLBACKEND") or "Agg")
    import matplotlib.pyplot as plt

    return plt


def new_axes(ax: Axes | None = None, figsize: tuple[float, float] = (6.4, 4.8), *,
             projection: str | None = None,
             layout: Literal["constrained", "tight"] | None = None) -> Axes:
    """``ax``, or the Axes of a new ``matplotlib.figure.Figure`` of ``figsize`` inches
    (built directly: no pyplot, no backend chosen, nothing global to close): where every
    ``plot_*(..., ax=None)`` draws."""
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout=layout).add_subplot(projection=projection)


def save_figure(fig: Figure | Axes, path: str | os.PathLike, dpi: int = 150, *,
                bbox_inches: Literal["tight"] | None = None, close: bool = False) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG if none; parent folders
    made) through a temporary file, at ``dpi`` dots per inch, cropped to its content
    with ``bbox_inches="tight"``; ``close`` releases a pyplot figure afterwards.
    Returns ``path``. ``fig`` may also be an Axes (as the ``plot_*`` functions return):
    the figure holding it is written."""
    while not hasattr(fig, "savefig") and getattr(fig, "figure", None) is not None:
        fig = fig.figure  # Axes -> (sub)figure -> figure
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    with atomic_path(path, suffix=f".tmp.{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches=bbox_inches)
    if close and "matplotlib.pyplot" in sys.modules:  # a Figure pyplot does not hold
        sys.modules["matplotlib.pyplot"].close(fig)  # needs no closing
    return path
