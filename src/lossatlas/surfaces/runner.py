"""A slice of the loss landscape into a run directory, end to end: what its grid will
cost (estimated, and refused when it cannot finish, before anything is evaluated), the
field evaluated and drawn (:func:`lossatlas.pipeline.write_slice`), and a summary of it.

>>> ds, summary = run_slice("plane", sl, ev, "runs/surface", "plane")  # doctest: +SKIP
>>> summary["min_loss"], summary["figures"]                           # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LossatlasError

__all__ = ["BYTES_PER_POINT", "WARN_GRID_POINTS", "GridCost", "GridTooLargeError",
           "grid_cost", "run_slice", "slice_summary"]

log = logging.getLogger(__name__)

#: Grids of more points than this get an estimate of their time and memory (a warning),
#: and are refused when the estimate is over the machine's memory or a week.
WARN_GRID_POINTS = 10**6
#: Host bytes per grid point of a slice with its figures, by its number of axes
#: (measured: a 3000 x 3000 random slice took 3.8 GB, most of it matplotlib's contours
#: and 3-D surface).
BYTES_PER_POINT = {1: 64, 2: 420, 3: 16}
#: The longest a slice may be estimated to take (seconds).
MAX_SECONDS = 7 * 86400


class GridTooLargeError(LossatlasError, ValueError):
    """A slice's grid would not fit the machine's memory or would take over a week."""


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _human_seconds(t: float) -> str:
    if t < 120:
        return f"{t:.0f} s"
    if t < 7200:
        return f"{t / 60:.0f} min"
    return f"{t / 3600:.1f} h" if t < 172800 else f"{t / 86400:.1f} days"


def _free_memory() -> int | None:
    """Free host memory in bytes, ``None`` where the system does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class GridCost:
    """What evaluating and drawing a slice's grid will take: ``shape`` (points per axis),
    ``points`` in all, ``memory`` (host bytes, `BYTES_PER_POINT`), ``seconds`` (from a
    few points timed on ``device``) and the ``available`` free memory (bytes, ``None``
    where unknown)."""

    shape: tuple[int, ...]
    points: int
    memory: float
    seconds: float
    device: str
    available: int | None

    def describe(self) -> str:
        grid = " x ".join(map(str, self.shape))
        return (f"a grid of {grid} = {self.points:.3g} points: about "
                f"{_human_bytes(self.memory)} of memory and {_human_seconds(self.seconds)} "
                f"on {self.device}")

    def check(self) -> None:
        """Raise `GridTooLargeError` (naming the estimate) when the grid would not fit the
        free memory or would take over `MAX_SECONDS`."""
        if self.available is not None and self.memory > self.available:
            raise GridTooLargeError(f"{self.describe()}, over the "
                                    f"{_human_bytes(self.available)} of free memory; "
                                    "lower the resolution")
        if self.seconds > MAX_SECONDS:
            raise GridTooLargeError(f"{self.describe()}; lower the resolution")


def grid_cost(sl, ev) -> GridCost | None:
    """The `GridCost` of the slice ``sl`` (a point source of :mod:`lossatlas.surfaces`)
    under the Evaluator ``ev`` when it has over `WARN_GRID_POINTS` points (a few of them
    evaluated to time it), else ``None``."""
    shape = tuple(int(n) for n in sl.source.shape)
    points = math.prod(shape)
    if points <= WARN_GRID_POINTS:
        return None
    probe = min(32, points)
    x = sl.source.points(0, probe)
    ev.evaluate(x[:4])  # warm-up
    t = time.perf_counter()
    ev.evaluate(x)
    seconds = (time.perf_counter() - t) / probe * points
    return GridCost(shape, points, points * BYTES_PER_POINT.get(len(shape), 16), seconds,
                    str(ev.device), _free_memory())


def slice_summary(ds, kind: str, name: str, store: Path, figures: list[Path],
                  seconds: float) -> dict[str, Any]:
    """The summary of a slice field ``ds``: its name and kind, grid shape, points, the
    smallest and largest finite loss (nats; ``None`` when none is finite), non-finite
    points, ``seconds`` and points per second, where it is stored and its figures."""
    import numpy as np

    loss = ds["loss"].values
    finite = loss[np.isfinite(loss)]
    return {
        "field": name, "kind": kind, "shape": "x".join(map(str, ds["loss"].shape)),
        "points": int(loss.size), "min_loss": float(finite.min()) if finite.size else None,
        "max_loss": float(finite.max()) if finite.size else None,
        "nonfinite": int(ds.attrs.get("nonfinite", 0)),
        "seconds": round(seconds, 2),
        "points_per_second": round(loss.size / max(seconds, 1e-9), 1),
        "store": str(store), "figures": [str(f) for f in figures],
    }


def run_slice(kind: str, sl, ev, out_dir: str | Path, name: str, overwrite: bool = False,
              progress: bool = True) -> tuple[Any, dict[str, Any] | None]:
    """Evaluate the slice ``sl`` with the Evaluator ``ev`` into the field ``name`` of the
    run directory ``out_dir`` and draw it (:func:`~lossatlas.pipeline.write_slice`; a
    stored field is resumed unless ``overwrite``). A grid not yet stored of over
    `WARN_GRID_POINTS` points is estimated first: logged as a warning, or refused with
    `GridTooLargeError`.

    Returns ``(field, summary)`` (`slice_summary`); under torchrun the summary is
    ``None`` on ranks other than 0.
    """
    from .. import distributed
    from ..pipeline import write_slice
    from ..store import Run

    t0 = time.perf_counter()
    run = Run(out_dir)
    if overwrite or not run.has_field(name):
        cost = grid_cost(sl, ev)
        if cost is not None:
            cost.check()
            log.warning("%s", cost.describe())
    ds, figs = write_slice(kind, sl, ev, out_dir, name, overwrite=overwrite,
                           progress=progress)
    if not distributed.is_main():
        return ds, None
    return ds, slice_summary(ds, kind, name, run.field_path(name), figs,
                             time.perf_counter() - t0)
