"""Low-dimensional slices of the loss landscape: affine point sources plus what they mean.

Every slice is an :class:`~lossatlas.points.AffineSource` (``origin + coords @
directions`` over a grid) wrapped in a :class:`Slice` that also keeps the
coordinates of the models it was built from, the axis units and, for PCA
planes, how well the plane represents the trajectory. Evaluate one with
:func:`slice_field`, which is :func:`~lossatlas.fields.compute_field`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from .._compat import renamed_argument
from ..errors import InputTypeError
from ..evaluate import Evaluator
from ..fields import compute_field
from ..points import AffineSource, PointSource, grid_axes
from ..space import ParamSpace
from ..store import Run, jsonable
from .directions import (
    Normalization,
    as_directions,
    flat_params,
    hessian_directions,
    random_direction,
)

__all__ = [
    "DISTANCE_UNITS",
    "Slice",
    "direction_slice",
    "hessian_slice",
    "interpolation",
    "pca_plane",
    "plane",
    "random_slice",
    "slice_field",
]

DISTANCE_UNITS = "parameter distance (L2)"
_DIMS = ("alpha", "beta", "gamma", "delta")

ModelLike = nn.Module | Mapping[str, Tensor] | Tensor


@dataclass
class Slice:
    """An affine slice and what it was built from.

    Attributes
    ----------
    source : AffineSource
        The grid of points (``origin`` Tensor[D], ``directions`` Tensor[k, D]).
    kind : "interpolation" | "random" | "directions" | "hessian" | "plane" | "pca"
    units : dict dim -> unit of that axis' coordinate
    anchors : dict name -> coordinates (k floats) of the models the slice was built
        from (e.g. ``{"a": (0, 0), "b": (|b-a|, 0), "c": (...)}``)
    trajectory : np.ndarray [T, k] or None
        Coordinates of projected checkpoints (PCA planes).
    explained_variance : np.ndarray [k] or None
        Explained variance ratio of each direction (PCA planes).
    projection_error : np.ndarray [T] or None
        ``|w_i - projection(w_i)| / |w_i - origin|`` per checkpoint (0 where the
        checkpoint is the origin).
    info : dict
        Other JSON-able settings (normalisation, seed, ...).
    """

    source: AffineSource
    kind: str
    units: dict[str, str]
    anchors: dict[str, tuple[float, ...]] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    explained_variance: np.ndarray | None = None
    projection_error: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def dims(self) -> tuple[str, ...]:
        return self.source.dims

    @property
    def origin(self) -> Tensor:
        return self.source.origin

    @property
    def directions(self) -> Tensor:
        return self.source.directions

    def points_at(self, coords) -> Tensor:
        """Parameter points ``Tensor[n, D]`` at slice coordinates ``coords`` [n, k] (or [k])."""
        c = torch.as_tensor(np.asarray(coords, dtype=np.float64), dtype=self.directions.dtype)
        if c.ndim == 1:
            c = c[None]
        k = self.directions.shape[0]
        if c.ndim != 2 or c.shape[1] != k:
            raise ValueError(
                f"Slice.points_at: coordinates must be [n, {k}] for a {k}-D slice, "
                f"got {tuple(c.shape)}"
            )
        return torch.addmm(self.origin[None], c, self.directions)

    def anchor_points(self) -> tuple[list[str], Tensor]:
        """Names and parameter points ``Tensor[n, D]`` of the anchors."""
        names = list(self.anchors)
        if not names:
            return [], self.origin.new_zeros((0, self.origin.shape[0]))
        return names, self.points_at([self.anchors[n] for n in names])

    def describe(self) -> dict:
        """A JSON-able summary (no tensors): kind, dims, shape, units, anchors, quality."""
        out = {
            "kind": self.kind,
            "dims": list(self.dims),
            "shape": list(self.source.shape),
            "ranges": {d: [float(a[0]), float(a[-1])] for d, a in self.source.coords.items()},
            "units": dict(self.units),
            "anchors": {k: [float(x) for x in v] for k, v in self.anchors.items()},
            "fingerprint": self.source.fingerprint(),
            "info": self.info,
        }
        if self.trajectory is not None:
            out["trajectory"] = self.trajectory
        if self.explained_variance is not None:
            out["explained_variance"] = self.explained_variance
            out["explained_variance_total"] = float(np.sum(self.explained_variance))
        if self.projection_error is not None:
            out["projection_error"] = self.projection_error
            out["projection_error_max"] = float(np.max(self.projection_error))
        return jsonable(out)

    def field_attrs(self) -> dict[str, str]:
        """Attributes stored with the field: ``slice`` (JSON) and ``units_<dim>`` per axis."""
        attrs = {"slice": json.dumps(self.describe())}
        attrs.update({f"units_{d}": u for d, u in self.units.items()})
        return attrs


# ------------------------------------------------------------------ helpers
def _space_of(obj: ModelLike, space: ParamSpace | None) -> ParamSpace | None:
    if space is not None:
        return space
    return ParamSpace(obj) if isinstance(obj, nn.Module) else None


def _flat(obj: ModelLike, space: ParamSpace | None, who: str) -> Tensor:
    return flat_params(obj, space, who).float() if space is None else flat_params(obj, space, who)


def _same_length(who: str, **vecs: Tensor) -> None:
    lengths = {k: v.shape[0] for k, v in vecs.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{who}: the models have different parameter counts {lengths}")


def _ranges(span, ndim: int, who: str) -> list[tuple[float, float]]:
    """``span`` -> per-axis ``(lo, hi)``: a number s gives ``(-s, s)``; or one per axis."""
    if isinstance(span, (int, float)):
        items = [span] * ndim
    else:
        items = list(span)
        if len(items) == 2 and ndim == 1 and all(isinstance(x, (int, float)) for x in items):
            items = [tuple(items)]
        if len(items) != ndim:
            raise ValueError(f"{who}: span needs {ndim} entries (one per axis), got {span!r}")
    out = []
    for s in items:
        lo, hi = (-float(s), float(s)) if isinstance(s, (int, float)) else map(float, s)
        if not hi > lo:
            raise ValueError(f"{who}: an axis range must have lo < hi, got ({lo}, {hi})")
        out.append((lo, hi))
    return out


def _box(coords: np.ndarray, margin: float) -> list[tuple[float, float]]:
    """Bounding box of ``coords`` [n, k] widened by ``margin`` x its width on each side."""
    lo, hi = coords.min(0), coords.max(0)
    width = hi - lo
    floor = max(float(width.max()), 1e-12) * 1e-3
    width = np.maximum(width, floor)
    return [(float(a - margin * w), float(b + margin * w)) for a, b, w in zip(lo, hi, width, strict=True)]


def _check_margin(margin: float, who: str) -> None:
    if not margin >= 0:
        raise ValueError(f"{who}: margin must be >= 0 (a fraction of the extent), got {margin}")


# ------------------------------------------------------------------ slices
def direction_slice(
    model: ModelLike,
    directions,
    resolution: int | Sequence[int] = 51,
    span=1.0,
    dims: Sequence[str] | None = None,
    space: ParamSpace | None = None,
    units: str | Sequence[str] | None = None,
    kind: str = "directions",
    info: dict | None = None,
) -> Slice:
    """The grid ``model + sum_i c_i * directions[i]`` for any given directions.

    Parameters
    ----------
    model : the origin (module, state dict or flat ``Tensor[D]``)
    directions : Tensor[k, D] or Tensor[D] (e.g. Hessian eigenvectors), used as given
    resolution : points per axis (int or one per axis)
    span : coordinate range per axis: s -> [-s, s], or one s / (lo, hi) per axis
    dims : axis names (default alpha, beta, gamma)
    units : unit of each axis; default "parameter distance (L2)" when every direction
        has unit norm, else "direction units"
    """
    space = _space_of(model, space)
    origin = _flat(model, space, "direction_slice (model)")
    dirs = as_directions(directions, origin.shape[0], "direction_slice").to(origin.dtype)
    k = dirs.shape[0]
    if k > len(_DIMS) and dims is None:
        raise ValueError(f"direction_slice: {k} directions; pass dims (names) for more than 4")
    dims = tuple(dims or _DIMS[:k])
    axes = grid_axes(_ranges(span, k, "direction_slice"), resolution)
    if units is None:
        unit_norm = torch.allclose(dirs.norm(dim=1), torch.ones(k, dtype=dirs.dtype), atol=1e-4)
        units = DISTANCE_UNITS if unit_norm else "direction units"
    if isinstance(units, str):
        units = [units] * k
    src = AffineSource(origin, dirs, axes, dims)
    return Slice(
        src, kind, dict(zip(dims, units, strict=True)),
        anchors={"origin": (0.0,) * k}, info=dict(info or {}),
    )


@renamed_argument("ndim", "dim")
def random_slice(
    model: ModelLike,
    dim: int = 2,
    resolution: int | Sequence[int] = 51,
    span=1.0,
    normalization: Normalization = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    space: ParamSpace | None = None,
) -> Slice:
    """A 1-, 2- or 3-D slice around ``model`` along random normalised directions (Li et al.).

    Directions are drawn in order from ``torch.Generator().manual_seed(seed)`` with
    :func:`~lossatlas.surfaces.directions.random_direction`; coordinates are in
    multiples of the normalised direction (1 = the model's own scale per filter
    with filter normalisation). Dims ``alpha``, ``beta``, ``gamma``.
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"random_slice: dim must be 1, 2 or 3, got {dim}")
    space = _space_of(model, space)
    if space is None:
        raise InputTypeError("random_slice: a flat tensor was given; pass space=ParamSpace(model)")
    gen = torch.Generator().manual_seed(int(seed))
    dirs = torch.stack([
        random_direction(model, normalization, ignore, generator=gen, space=space)
        for _ in range(dim)
    ])
    unit = f"multiples of the {normalization}-normalised direction"
    return direction_slice(
        model, dirs, resolution, span, space=space, units=unit, kind="random",
        info={"normalization": normalization, "ignore": ignore, "seed": int(seed)},
    )


@renamed_argument("ndim", "dim")
def hessian_slice(
    model: nn.Module,
    data,
    dim: int = 2,
    resolution: int | Sequence[int] = 51,
    span=1.0,
    which: str = "largest",
    space: ParamSpace | None = None,
    **kwargs,
) -> Slice:
    """A 1-, 2- or 3-D slice around ``model`` along its top (or bottom) Hessian eigenvectors.

    The directions are unit eigenvectors (:func:`~lossatlas.surfaces.hessian_directions`),
    so coordinates are parameter distances (L2); along direction ``i`` the loss is
    ``L(w) + g.v_i t + lambda_i t^2 / 2 + O(t^3)``. Dims ``alpha``, ``beta``, ``gamma``;
    ``info["eigenvalues"]`` holds the ``lambda_i`` (loss per squared parameter).
    Compare with :func:`random_slice` (filter-normalised): a random direction sees
    the average curvature, these see the extremes.

    Parameters
    ----------
    model, data : the point and the data the Hessian is measured on
    dim : number of directions (1, 2 or 3)
    resolution, span : as in :func:`direction_slice` (``span`` in parameter distance)
    which : "largest" (sharpest directions) or "smallest" (most negative curvature)
    space : layout of the slice's points (default ``ParamSpace(model)``; pass the
        evaluator's space when it includes BatchNorm statistics)
    kwargs : passed to :func:`~lossatlas.curvature.hessian_eigen` (``loss_fn``,
        ``bn``, ``tol``, ``seed``, ...); use the same loss and BatchNorm policy as the
        Evaluator that will evaluate the slice
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"hessian_slice: dim must be 1, 2 or 3, got {dim}")
    space = _space_of(model, space)
    vals, dirs = hessian_directions(model, data, dim, which=which, space=space, **kwargs)
    info = {"which": which, "eigenvalues": [float(v) for v in vals]}
    info.update({k: v for k, v in kwargs.items() if isinstance(v, (str, int, float))})
    return direction_slice(model, dirs, resolution, span, space=space, units=DISTANCE_UNITS,
                           kind="hessian", info=info)


@renamed_argument("steps", "points")
def interpolation(
    model_a: ModelLike,
    model_b: ModelLike,
    points: int = 25,
    extrapolate: float | tuple[float, float] = (0.0, 0.0),
    space: ParamSpace | None = None,
) -> Slice:
    """The straight path ``a + t (b - a)``, dim ``t``, from ``t = -e0`` to ``1 + e1``.

    ``points`` points cover [0, 1] (``t = 0`` and ``t = 1`` are always grid points);
    ``extrapolate = (e0, e1)`` adds points with the same spacing before 0 and after
    1, rounded up to whole steps. Anchors: ``a`` at 0, ``b`` at 1.
    """
    if int(points) < 2:
        raise ValueError(f"interpolation: points must be >= 2, got {points}")
    e0, e1 = (extrapolate, extrapolate) if isinstance(extrapolate, (int, float)) else extrapolate
    if e0 < 0 or e1 < 0:
        raise ValueError(f"interpolation: extrapolate must be >= 0, got {extrapolate!r}")
    space = _space_of(model_a, space)
    a = _flat(model_a, space, "interpolation (model_a)")
    b = _flat(model_b, space, "interpolation (model_b)")
    _same_length("interpolation", a=a, b=b)
    n = int(points) - 1
    before = math.ceil(e0 * n - 1e-9)
    after = math.ceil(e1 * n - 1e-9)
    t = np.arange(-before, n + after + 1, dtype=np.float64) / n
    src = AffineSource(a, (b - a)[None], [t], ("t",))
    return Slice(
        src, "interpolation", {"t": "fraction of the path from a to b"},
        anchors={"a": (0.0,), "b": (1.0,)},
        info={"steps": int(points), "extrapolate": [float(e0), float(e1)],
              "distance": float((b - a).norm())},
    )


def plane(
    model_a: ModelLike,
    model_b: ModelLike,
    model_c: ModelLike,
    resolution: int | Sequence[int] = 51,
    margin: float = 0.2,
    space: ParamSpace | None = None,
) -> Slice:
    """The plane through three models (Garipov et al. 2018), in parameter-distance units.

    Origin ``a``; ``u = (b - a) / |b - a|``; ``v`` = the part of ``c - a`` orthogonal to
    ``u``, normalised. The models lie at ``a = (0, 0)``, ``b = (|b - a|, 0)``,
    ``c = ((c - a).u, (c - a).v)``; the grid covers their bounding box widened by
    ``margin`` x its width on each side. Dims ``u``, ``v``.
    """
    _check_margin(margin, "plane")
    space = _space_of(model_a, space)
    a = _flat(model_a, space, "plane (model_a)")
    b = _flat(model_b, space, "plane (model_b)")
    c = _flat(model_c, space, "plane (model_c)")
    _same_length("plane", a=a, b=b, c=c)
    ad, bd, cd = a.double(), b.double(), c.double()
    u = bd - ad
    du = u.norm()
    if du == 0:
        raise ValueError("plane: model_a and model_b are the same point; the plane is undefined")
    u = u / du
    w = cd - ad
    cu = w @ u
    v = w - cu * u
    dv = v.norm()
    if dv <= 1e-9 * max(float(du), float(w.norm())):
        raise ValueError("plane: model_c lies on the line through model_a and model_b")
    v = v / dv
    anchors = {"a": (0.0, 0.0), "b": (float(du), 0.0), "c": (float(cu), float(dv))}
    axes = grid_axes(_box(np.array(list(anchors.values())), margin), resolution)
    src = AffineSource(a, torch.stack([u, v]).to(a.dtype), axes, ("u", "v"))
    return Slice(
        src, "plane", {"u": DISTANCE_UNITS, "v": DISTANCE_UNITS}, anchors=anchors,
        info={"margin": float(margin), "distance_ab": float(du),
              "distance_ac": float(w.norm())},
    )


def _stack_trajectory(trajectory, space: ParamSpace | None) -> Tensor:
    if isinstance(trajectory, Tensor):
        if trajectory.ndim != 2:
            raise ValueError(f"pca_plane: a trajectory tensor must be [T, D], got "
                             f"{tuple(trajectory.shape)}")
        return trajectory.detach()
    items = list(trajectory)
    if not items:
        raise ValueError("pca_plane: the trajectory is empty")
    space = _space_of(items[0], space)
    vecs = [_flat(m, space, f"pca_plane (checkpoint {i})") for i, m in enumerate(items)]
    _same_length("pca_plane", **{f"checkpoint {i}": v for i, v in enumerate(vecs)})
    return torch.stack(vecs)


def pca_plane(
    trajectory,
    final_index: int = -1,
    resolution: int | Sequence[int] = 51,
    margin: float = 0.2,
    center: bool = True,
    space: ParamSpace | None = None,
) -> Slice:
    """The PCA plane of a training trajectory (Li et al. 2018, section 7).

    The origin is the final model ``w_f``; the directions are the two top
    principal components of the differences ``w_i - w_f`` (every checkpoint but
    the final one); every checkpoint is projected onto the plane.

    Parameters
    ----------
    trajectory : list of models / state dicts / Tensor[D], or Tensor[T, D]
    final_index : which checkpoint is the origin (default the last)
    center : subtract the mean difference before the PCA, as sklearn's PCA in the
        reference code does; ``False`` gives the plane through ``w_f`` that
        minimises the summed squared projection error
    resolution, margin : grid size and the margin around the projected checkpoints

    Returns
    -------
    Slice with dims ``pc1``, ``pc2`` (unit directions, so coordinates are parameter
    distances), ``trajectory`` [T, 2] coordinates of all checkpoints (signs chosen
    so the first checkpoint has coordinates <= 0), ``explained_variance`` [2]
    (explained variance ratio of each component) and ``projection_error`` [T]
    (``|r_i| / |w_i - w_f|``, ``r_i`` the residual off the plane; 0 for ``w_f``).
    ``info["projection_error_total"]`` is ``sqrt(sum |r_i|^2 / sum |w_i - w_f|^2)``.
    """
    _check_margin(margin, "pca_plane")
    W = _stack_trajectory(trajectory, space)
    T = W.shape[0]
    if T < 3:
        raise ValueError(f"pca_plane: need at least 3 checkpoints for a plane, got {T}")
    fi = final_index % T if -T <= final_index < T else None
    if fi is None:
        raise IndexError(f"pca_plane: final_index {final_index} out of range for {T} checkpoints")
    final = W[fi]
    diffs = W.double() - final.double()  # [T, D]
    M = diffs[[i for i in range(T) if i != fi]]
    if center:
        M = M - M.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(M, full_matrices=False)
    total = float((s**2).sum())
    tol = 100 * torch.finfo(W.dtype).eps if W.is_floating_point() else 1e-12
    if len(s) < 2 or total == 0 or float(s[1]) <= tol * float(s[0]):
        raise ValueError(
            "pca_plane: the checkpoints do not span two dimensions (they lie on a line or "
            f"coincide{'; with center=True, 3 checkpoints give only one' if center and T == 3 else ''}"
            "); use more checkpoints, center=False, or interpolation() for a 1-D path"
        )
    dirs = vh[:2]  # [2, D], orthonormal
    coords = diffs @ dirs.T  # [T, 2]
    first = 0 if fi != 0 else 1
    flip = torch.where(coords[first] > 0, -1.0, 1.0).to(coords.dtype)
    dirs, coords = dirs * flip[:, None], coords * flip[None]
    resid = (diffs - coords @ dirs).norm(dim=1)
    dnorm = diffs.norm(dim=1)
    err = torch.where(dnorm > 0, resid / dnorm.clamp_min(1e-300), torch.zeros_like(dnorm))
    evr = (s[:2] ** 2 / total).numpy()
    coords_np = coords.numpy()
    axes = grid_axes(_box(coords_np, margin), resolution)
    src = AffineSource(final, dirs.to(W.dtype), axes, ("pc1", "pc2"))
    proj_total = float((resid**2).sum().sqrt() / (dnorm**2).sum().sqrt().clamp_min(1e-300))
    return Slice(
        src, "pca", {"pc1": DISTANCE_UNITS, "pc2": DISTANCE_UNITS},
        anchors={"start": tuple(float(x) for x in coords_np[first]), "final": (0.0, 0.0)},
        trajectory=coords_np,
        explained_variance=evr,
        projection_error=err.numpy(),
        info={"final_index": int(fi), "checkpoints": int(T), "center": bool(center),
              "margin": float(margin), "projection_error_total": proj_total},
    )


# ------------------------------------------------------------------ evaluation
def slice_field(
    evaluator: Evaluator,
    source: Slice | PointSource,
    run: Run | None = None,
    name: str | None = None,
    progress: bool = False,
    **kwargs,
) -> xr.Dataset:
    """Evaluate a slice with :func:`~lossatlas.fields.compute_field` (stored when ``run``).

    A :class:`Slice` adds its description (``attrs["slice"]``, JSON) and axis units
    (``attrs["units_<dim>"]``) to the field. Other keyword arguments go to
    ``compute_field`` (``chunk_points``, ``overwrite``, ``attrs``).
    """
    attrs = dict(kwargs.pop("attrs", None) or {})
    if isinstance(source, Slice):
        attrs = {**source.field_attrs(), **attrs}
        src: PointSource = source.source
    elif isinstance(source, PointSource):
        src = source
    else:
        raise InputTypeError(
            f"slice_field: expected a Slice or a PointSource, got {type(source).__name__}"
        )
    if isinstance(src, AffineSource) and src.origin.shape[0] != evaluator.space.dim:
        raise ValueError(
            f"slice_field: the slice has {src.origin.shape[0]} parameters per point but the "
            f"evaluator's space has {evaluator.space.dim}; build both with the same ParamSpace "
            f"(buffers included or not)"
        )
    return compute_field(evaluator, src, run=run, name=name, progress=progress, attrs=attrs,
                         **kwargs)
