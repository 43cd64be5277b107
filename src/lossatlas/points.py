"""Point sources: where a field's parameter points come from, produced in chunks.

A source has named dimensions with coordinates (``dims``, ``coords``); its points
are the grid in C order. ``points(start, stop)`` returns rows ``start:stop`` of
that flattened grid as Tensor[P, D] on the requested device.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PointSource", "AffineSource", "ExplicitSource", "MappedSource", "LatentSource", "grid_axes",
    "MAX_GRID_POINTS",
]

#: Most points a grid may have unless the caller raises the limit (10**7 points of
#: fp32 loss and accuracy are 80 MB; more is almost always a typo in a resolution).
MAX_GRID_POINTS = 10**7


def _hash_arrays(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def grid_axes(
    ranges: Sequence[tuple[float, float]],
    resolution: int | Sequence[int],
    max_points: int | None = MAX_GRID_POINTS,
) -> list[np.ndarray]:
    """Evenly spaced coordinates per axis: ``[np.linspace(lo, hi, n), ...]`` (an axis of
    one point: its centre).

    Refuses grids of more than ``max_points`` points in all (default
    :data:`MAX_GRID_POINTS`; ``None`` for no limit) before allocating anything.
    """
    if isinstance(resolution, (int, np.integer)):
        resolution = [int(resolution)] * len(ranges)
    if len(resolution) != len(ranges):
        raise ValueError(
            f"grid_axes: {len(ranges)} ranges but {len(resolution)} resolutions"
        )
    for n in resolution:
        if int(n) < 1:
            raise ValueError(f"grid_axes: resolution must be >= 1, got {n}")
    for i, (lo, hi) in enumerate(ranges):
        if not (np.isfinite(float(lo)) and np.isfinite(float(hi))):
            raise ValueError(f"grid_axes: axis {i} range ({lo}, {hi}) is not finite")
    total = math.prod(int(n) for n in resolution)
    if max_points is not None and total > max_points:
        shape = " x ".join(str(int(n)) for n in resolution)
        raise ValueError(
            f"grid_axes: a grid of {shape} = {total:.3g} points is over the limit of "
            f"{max_points:.3g} points; lower the resolution (or pass max_points=None)"
        )
    # one point on an axis sits at its centre (for a slice around a model, the model),
    # not at its lower corner
    return [np.linspace(float(lo), float(hi), int(n)) if int(n) > 1
            else np.array([(float(lo) + float(hi)) / 2])
            for (lo, hi), n in zip(ranges, resolution, strict=True)]


class PointSource:
    """Base class: a labelled grid of parameter points."""

    dims: tuple[str, ...]
    coords: dict[str, np.ndarray]
    kind: str = "points"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.coords[d]) for d in self.dims)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def grid_coords(self, start: int, stop: int) -> np.ndarray:
        """Coordinates [P, ndim] of flat grid rows ``start:stop``."""
        idx = np.unravel_index(np.arange(start, stop), self.shape)
        return np.stack([self.coords[d][i] for d, i in zip(self.dims, idx, strict=True)], axis=1)

    def points(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash of everything that decides the points (for safe resuming)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-able description stored with the field."""
        return {"kind": self.kind, "dims": list(self.dims), "shape": list(self.shape)}


class AffineSource(PointSource):
    """``origin + sum_i c_i * directions[i]`` over a grid of coefficients.

    Parameters
    ----------
    origin : Tensor[D]
    directions : Tensor[k, D]
    axes : sequence of k 1-D arrays
        Coefficients along each direction (e.g. ``np.linspace(-1, 1, 51)``).
    dims : names of the k axes (default ``alpha``, ``beta``, ``gamma``).
    """

    kind = "affine"

    def __init__(
        self,
        origin: Tensor,
        directions: Tensor,
        axes: Sequence[np.ndarray],
        dims: Sequence[str] | None = None,
    ):
        directions = torch.as_tensor(directions)
        if directions.ndim == 1:
            directions = directions[None]
        origin = torch.as_tensor(origin)
        if origin.ndim != 1 or directions.shape[1] != origin.shape[0]:
            raise ValueError(
                f"AffineSource: origin must be [D] and directions [k, D]; got "
                f"{tuple(origin.shape)} and {tuple(directions.shape)}"
            )
        if len(axes) != directions.shape[0]:
            raise ValueError(
                f"AffineSource: {directions.shape[0]} directions but {len(axes)} coordinate axes"
            )
        dims = tuple(dims or ("alpha", "beta", "gamma", "delta")[: len(axes)])
        if len(dims) != len(axes):
            raise ValueError(f"AffineSource: {len(axes)} axes but dims {dims}")
        self.origin = origin
        self.directions = directions
        self.dims = dims
        self.coords = {d: np.asarray(a, dtype=np.float64) for d, a in zip(dims, axes, strict=True)}
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def points(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        device = torch.device(device)
        if device not in self._cache:
            self._cache = {device: (self.origin.to(device), self.directions.to(device))}
        origin, directions = self._cache[device]
        c = torch.as_tensor(self.grid_coords(start, stop), dtype=directions.dtype, device=device)
        return torch.addmm(origin[None], c, directions)

    def fingerprint(self) -> str:
        return _hash_arrays(self.origin, self.directions, *self.coords.values())


class ExplicitSource(PointSource):
    """Given points Tensor[P, D] along one dimension (default ``point``)."""

    kind = "explicit"

    def __init__(self, points: Tensor, dim: str = "point", coord: np.ndarray | None = None):
        points = torch.as_tensor(points)
        if points.ndim != 2:
            raise ValueError(f"ExplicitSource: points must be [P, D], got {tuple(points.shape)}")
        self._points = points
        self.dims = (dim,)
        self.coords = {dim: np.arange(len(points)) if coord is None else np.asarray(coord)}
        if len(self.coords[dim]) != len(points):
            raise ValueError(
                f"ExplicitSource: {len(points)} points but {len(self.coords[dim])} coordinates"
            )

    def points(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        return self._points[start:stop].to(device)

    def fingerprint(self) -> str:
        return _hash_arrays(self._points, *self.coords.values())


class MappedSource(PointSource):
    """Points made by a function of grid coordinates, e.g. a decoder of latent codes.

    ``fn(coords: Tensor[P, ndim]) -> Tensor[P, D]`` is called per chunk on ``device``;
    ``key`` identifies the function for resuming (e.g. a hash of the decoder).
    """

    kind = "mapped"

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        axes: Sequence[np.ndarray],
        dims: Sequence[str],
        key: str,
    ):
        if len(axes) != len(dims):
            raise ValueError(f"MappedSource: {len(axes)} axes but dims {tuple(dims)}")
        self.fn = fn
        self.dims = tuple(dims)
        self.coords = {d: np.asarray(a, dtype=np.float64) for d, a in zip(dims, axes, strict=True)}
        self.key = key

    def points(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        c = torch.as_tensor(self.grid_coords(start, stop), dtype=torch.float32, device=device)
        return self.fn(c)

    def fingerprint(self) -> str:
        return _hash_arrays(np.frombuffer(self.key.encode(), dtype=np.uint8), *self.coords.values())


class LatentSource(PointSource):
    """Points ``fn(codes[i])`` for a list of latent codes Float[P, d], along dim ``sample``.

    ``fn(Tensor[P, d]) -> Tensor[P, D]`` (e.g. an embedding's decoder) runs per
    chunk on the device; ``key`` identifies it for resuming.
    """

    kind = "latent"

    def __init__(self, fn: Callable[[Tensor], Tensor], codes: np.ndarray, key: str,
                 dim: str = "sample"):
        codes = np.atleast_2d(np.asarray(codes, dtype=np.float64))
        self.fn = fn
        self.codes = codes
        self.key = key
        self.dims = (dim,)
        self.coords = {dim: np.arange(len(codes))}

    def points(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        return self.fn(torch.as_tensor(self.codes[start:stop], dtype=torch.float32, device=device))

    def fingerprint(self) -> str:
        return _hash_arrays(np.frombuffer(self.key.encode(), dtype=np.uint8), self.codes)
