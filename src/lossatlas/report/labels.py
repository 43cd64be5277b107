"""Greedy placement of point labels without overlap (pure numpy, pixel units).

Each label is tried at the eight positions around its point (plotly's
``textposition`` names); the first whose box stays inside the plot area, overlaps no
label placed before it and covers no marker is kept. A label with no free position is
left unplaced (``None``): the caller lists it in the legend instead.

>>> import numpy as np
>>> placed = place_labels(np.array([[50.0, 50.0], [52.0, 50.0]]), [(40, 14), (40, 14)],
...                       np.zeros((0, 2)), (200.0, 100.0))
>>> [p.position for p in placed]
['top center', 'bottom center']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["POSITIONS", "Placed", "boxes_overlap", "place_labels", "to_pixels"]

#: plotly textposition -> (horizontal, vertical) side of the point the box lies on
POSITIONS: dict[str, tuple[int, int]] = {
    "top center": (0, 1), "bottom center": (0, -1), "middle right": (1, 0),
    "middle left": (-1, 0), "top right": (1, 1), "top left": (-1, 1),
    "bottom right": (1, -1), "bottom left": (-1, -1),
}


@dataclass(frozen=True)
class Placed:
    """A placed label: its plotly ``position`` and its box ``(x0, y0, x1, y1)`` in pixels
    (y up, origin at the plot area's lower left corner)."""

    position: str
    box: tuple[float, float, float, float]


def to_pixels(xy: np.ndarray, xrange: Sequence[float], yrange: Sequence[float],
              size: tuple[float, float]) -> np.ndarray:
    """Data coordinates [n, 2] to pixels [n, 2] of a plot area ``size = (width, height)``
    showing ``xrange`` x ``yrange``."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    lo = np.array([xrange[0], yrange[0]], dtype=np.float64)
    span = np.array([xrange[1] - xrange[0], yrange[1] - yrange[0]], dtype=np.float64)
    span[span == 0] = 1.0
    return (xy - lo) / span * np.asarray(size, dtype=np.float64)


def boxes_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes ``(x0, y0, x1, y1)`` share an interior point."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _box(p: np.ndarray, w: float, h: float, side: tuple[int, int], gap: float
         ) -> tuple[float, float, float, float]:
    sx, sy = side
    cx = p[0] + sx * (gap + w / 2)
    cy = p[1] + sy * (gap + h / 2)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _covers(box: tuple[float, float, float, float], pts: np.ndarray, radius: float) -> bool:
    """Whether ``box`` comes within ``radius`` of any point of ``pts`` [m, 2]."""
    if not len(pts):
        return False
    dx = np.maximum(np.maximum(box[0] - pts[:, 0], 0), pts[:, 0] - box[2])
    dy = np.maximum(np.maximum(box[1] - pts[:, 1], 0), pts[:, 1] - box[3])
    return bool((dx * dx + dy * dy < radius * radius).any())


def place_labels(points: np.ndarray, sizes: Sequence[tuple[float, float]],
                 obstacles: np.ndarray, area: tuple[float, float], radius: float = 6.0,
                 gap: float = 7.0) -> list[Placed | None]:
    """Positions for the labels of ``points`` [n, 2] (pixels), in order of priority.

    Parameters
    ----------
    sizes : (width, height) of each label in pixels
    obstacles : markers [m, 2] (pixels) no label may come within ``radius`` of; the
        labelled points themselves are obstacles too
    area : (width, height) of the plot area; boxes must lie inside it
    gap : distance between a point and its label's box (at least ``radius``, so a
        label never covers its own point)

    Returns
    -------
    list of :class:`Placed`, or None where no position is free.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    marks = np.concatenate([np.asarray(obstacles, dtype=np.float64).reshape(-1, 2), pts])
    placed: list[tuple[float, float, float, float]] = []
    out: list[Placed | None] = []
    for p, (w, h) in zip(pts, sizes, strict=True):
        found = None
        for name, side in POSITIONS.items():
            box = _box(p, float(w), float(h), side, gap)
            if (box[0] < 0 or box[1] < 0 or box[2] > area[0] or box[3] > area[1]
                    or any(boxes_overlap(box, q) for q in placed)
                    or _covers(box, marks, radius)):
                continue
            found = Placed(name, box)
            break
        if found is not None:
            placed.append(found.box)
        out.append(found)
    return out
