"""Negative curvature: is a point of the landscape a saddle of the full parameter space?

The merge tree of an atlas (:meth:`lossatlas.Atlas.topology`) finds its saddles
on a 2-D (or few-D) map: the lowest pass between two basins *within the map*.
Whether that pass is a saddle of the loss in the full parameter space, or only
an artefact of the map (the map crossing a ridge that the full space goes
around), is told by the Hessian there: a true saddle has a direction of
negative curvature. :func:`saddle_check` measures the smallest Hessian
eigenvalues at one point (Lanczos at the low end of the spectrum, see
:func:`~lossatlas.curvature.lanczos`) next to the largest one and the gradient
norm; :func:`atlas_saddles` does it at every merge-tree saddle of an atlas,
decoded into parameter space.

Eigenvalues are in loss per squared parameter (nats for cross-entropy).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from ..errors import NotComputedError
from ..progress import progress_bar
from ._objective import LossFn
from .hvp import HVP
from .lanczos import lanczos

__all__ = ["SaddleCheck", "atlas_saddles", "saddle_check"]


@dataclass
class SaddleCheck:
    """The curvature at one point of parameter space.

    Attributes
    ----------
    loss : float
        Mean loss over the data at the point (loss units, e.g. nats).
    grad_norm : float
        L2 norm of the gradient there (loss per parameter); a critical point has 0.
    min_eigenvalues : Tensor[k]
        The ``k`` smallest Hessian eigenvalues, smallest first (loss per squared
        parameter).
    max_eigenvalue : float
        The largest Hessian eigenvalue.
    directions : Tensor[k, D]
        Unit eigenvectors of ``min_eigenvalues`` in the ``ParamSpace(model)``
        layout (zero outside ``group``): the directions of steepest negative
        curvature.
    tol : float
        Relative tolerance of the verdict (see :attr:`is_saddle`).
    converged : bool
        Whether every Ritz pair met Lanczos' residual tolerance.
    """

    loss: float
    grad_norm: float
    min_eigenvalues: Tensor
    max_eigenvalue: float
    directions: Tensor
    tol: float
    converged: bool

    @property
    def threshold(self) -> float:
        """Eigenvalues below ``-threshold`` count as negative: ``tol`` times the largest
        eigenvalue magnitude (loss per squared parameter)."""
        scale = max(abs(self.max_eigenvalue), abs(float(self.min_eigenvalues[0])))
        return self.tol * scale

    @property
    def negative_count(self) -> int:
        """How many of the ``k`` smallest eigenvalues are negative (below ``-threshold``):
        a lower bound on the Morse index."""
        return int((self.min_eigenvalues < -self.threshold).sum())

    @property
    def is_saddle(self) -> bool:
        """True when the Hessian has a negative eigenvalue (below ``-threshold``): the
        loss decreases to second order along ``directions[0]``, so the point is a
        saddle (or a point on a slope with negative curvature), not a minimum."""
        return self.negative_count > 0

    def as_dict(self) -> dict:
        """JSON-able summary: floats, the verdict and the eigenvalues as a list."""
        return {"loss": self.loss, "grad_norm": self.grad_norm,
                "min_eigenvalues": [float(v) for v in self.min_eigenvalues],
                "max_eigenvalue": self.max_eigenvalue, "threshold": self.threshold,
                "negative_count": self.negative_count, "is_saddle": self.is_saddle,
                "converged": self.converged}


def _check_options(who: str, k: int, tol: float) -> None:
    if int(k) < 1:
        raise ValueError(f"{who}: k (eigenvalues wanted) must be >= 1, got {k}")
    if not (math.isfinite(tol) and 0 <= tol < 1):
        raise ValueError(f"{who}: tol must be in [0, 1) (relative to the largest "
                         f"eigenvalue magnitude), got {tol}")


def _check_hvp(H: HVP, k: int, tol: float, num_iter: int | None, seed: int | None,
               lanczos_tol: float) -> SaddleCheck:
    k = min(int(k), H.dim)
    low = lanczos(H, k, num_iter=num_iter, tol=lanczos_tol, seed=seed, progress=False,
                  which="smallest")
    high = lanczos(H, 1, num_iter=num_iter, tol=lanczos_tol, seed=seed, progress=False)
    loss, grad = H.value_and_grad(H.origin)
    return SaddleCheck(
        loss=float(loss), grad_norm=float(grad.norm()),
        min_eigenvalues=low.eigenvalues.detach().cpu(),
        max_eigenvalue=float(high.eigenvalues[0]),
        directions=H.embed(low.eigenvectors).detach().cpu(), tol=float(tol),
        converged=bool(low.converged.all()) and bool(high.converged.all()),
    )


def saddle_check(
    model: nn.Module,
    data,
    params: Tensor | None = None,
    *,
    k: int = 1,
    tol: float = 0.05,
    loss_fn: LossFn | None = None,
    group: str | Sequence[str] | None = None,
    train: bool = False,
    bn: str | None = None,
    output=None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    num_iter: int | None = None,
    lanczos_tol: float = 1e-6,
    seed: int | None = 0,
) -> SaddleCheck:
    """Smallest and largest Hessian eigenvalues and the gradient norm at one point.

    Parameters
    ----------
    model : nn.Module
        The architecture, and the point when ``params`` is None.
    data : (X, y) tensors, Dataset, DataLoader or TensorData
    params : Tensor[D], optional
        The point in the ``ParamSpace(model)`` layout (parameters only).
    k : int
        Smallest eigenvalues wanted (a lower bound on the number of descent
        directions when they are all negative).
    tol : float
        Verdict tolerance, relative: an eigenvalue counts as negative below
        ``-tol * max(|lambda_max|, |lambda_min|)``. Trained models are not exact
        minima and show small negative eigenvalues (measured: -1.6% of the largest
        for an MLP on digits at loss 0.014), while a pass between two basins bends
        down about as much as the basins bend up (-80% on the saddles of a tanh
        MLP's permuted copies); the default 0.05 tells the two apart. Use ~1e-6 to
        count every resolved negative eigenvalue.
    loss_fn, group, train, bn, output, batch_size, device :
        As in :class:`~lossatlas.curvature.HVP` (eval mode and the BatchNorm
        policy ``bn`` by default).
    num_iter, lanczos_tol, seed :
        Lanczos steps (default ``min(D, max(4 k, k + 40))``), its residual
        tolerance and the seed of its start vector.

    Returns
    -------
    SaddleCheck
    """
    _check_options("saddle_check", k, tol)
    H = HVP(model, data, loss_fn=loss_fn, params=params, group=group, train=train, bn=bn,
            output=output, batch_size=batch_size, device=device)
    return _check_hvp(H, k, tol, num_iter, seed, lanczos_tol)


def atlas_saddles(
    atlas,
    *,
    k: int = 1,
    tol: float = 0.05,
    corrected: bool = True,
    num_iter: int | None = None,
    lanczos_tol: float = 1e-6,
    seed: int | None = 0,
    save: bool = True,
    progress: bool | None = None,
) -> xr.Dataset:
    """Whether each merge-tree saddle of ``atlas`` is a saddle of the full parameter space.

    Every inner node of ``atlas.tree_`` (after :meth:`~lossatlas.Atlas.topology`) is
    decoded from its latent code into parameter space (``atlas.decode``, with the
    residual correction unless ``corrected=False``); :func:`saddle_check` measures the
    full-space Hessian there, with the atlas' data, loss, model output and BatchNorm
    policy. A saddle with a negative eigenvalue (``is_saddle``) is a true saddle
    (or at least a descent direction leaves it, as at a mountain pass); one without
    is an artefact of the map: the full space has no pass there.

    Parameters
    ----------
    atlas : lossatlas.Atlas after ``embed``, ``field`` and ``topology``
    k, tol, num_iter, lanczos_tol, seed : as in :func:`saddle_check`
    corrected : decode with the atlas' residual correction (as its field was)
    save : store the result as the run's ``saddles`` dataset
        (``RUN/fields/saddles.zarr``)
    progress : a bar over the saddles (``None``: auto)

    Returns
    -------
    xarray.Dataset over ``saddle`` (and ``rank`` for the ``k`` smallest eigenvalues,
    ``latent`` for the codes, ``end`` for the two basins joined):
    ``min_eigenvalue`` (saddle, rank), ``max_eigenvalue``, ``grad_norm``,
    ``loss`` (full-space loss at the decoded point), ``map_log10_loss`` (the
    field's value at the saddle), ``negative_count``, ``is_saddle`` (bool),
    ``converged`` (bool), ``basins`` (saddle, end), ``z`` (saddle, latent);
    ``attrs``: units, ``tol``, ``bn``, ``corrected``.
    """
    _check_options("atlas_saddles", k, tol)
    for attr, stage in (("codes_", "embed()"), ("field_", "field()"), ("tree_", "topology()")):
        if not hasattr(atlas, attr):
            raise NotComputedError(f"atlas_saddles: call Atlas.{stage} first")
    t0 = time.perf_counter()
    tree, field = atlas.tree_, atlas.field_
    flat = np.asarray(tree.saddle_flat, dtype=np.int64)
    coords = np.asarray(field.coords, dtype=np.float64)  # [n, dim]
    z = coords[flat].reshape(len(flat), coords.shape[1])  # also with no saddle
    pop = atlas.population
    ev = atlas.evaluator
    template = pop.model(0)
    checks: list[SaddleCheck] = []
    points = (atlas.decode(torch.as_tensor(z, dtype=torch.float32, device=atlas.device),
                           corrected=corrected).detach().cpu() if len(flat) else [])
    for i in progress_bar(range(len(flat)), desc="saddle check", unit="saddle",
                          progress=progress):
        model = copy.deepcopy(template)
        pop.space.load_into(model, points[i].to(pop.space.dtype))
        H = HVP(model, ev.data, loss_fn=ev.loss_fn, bn=atlas.bn, output=ev.output,
                batch_size=ev.batch_size, device=atlas.device)
        checks.append(_check_hvp(H, k, tol, num_iter, seed, lanczos_tol))
    kk = min(int(k), pop.space.dim)
    mins = np.full((len(checks), kk), np.nan)
    for i, c in enumerate(checks):
        mins[i, : len(c.min_eigenvalues)] = c.min_eigenvalues.double().numpy()

    def col(name: str, dtype=np.float64) -> np.ndarray:
        return np.array([getattr(c, name) for c in checks], dtype=dtype)

    ds = xr.Dataset(
        {
            "min_eigenvalue": (("saddle", "rank"), mins),
            "max_eigenvalue": ("saddle", col("max_eigenvalue")),
            "grad_norm": ("saddle", col("grad_norm")),
            "loss": ("saddle", col("loss")),
            "map_log10_loss": ("saddle", np.asarray(tree.saddle_values, dtype=np.float64)),
            "negative_count": ("saddle", col("negative_count", np.int64)),
            "is_saddle": ("saddle", col("is_saddle", bool)),
            "converged": ("saddle", col("converged", bool)),
            "basins": (("saddle", "end"), np.asarray(tree.saddle_pairs, dtype=np.int64)
                       .reshape(len(flat), 2)),
            "z": (("saddle", "latent"), z),
        },
        coords={"saddle": np.arange(len(flat)), "rank": np.arange(kk)},
        attrs={"units": "eigenvalues in loss per squared parameter; loss in nats "
                        "(the atlas' loss); grad_norm in loss per parameter",
               "tol": float(tol), "bn": str(atlas.bn), "corrected": bool(corrected)},
    )
    if save:
        atlas.run.save_dataset("saddles", ds)
        atlas.run.record_stage("saddles", time.perf_counter() - t0, saddles=len(flat),
                               true_saddles=int(ds["is_saddle"].sum()))
    return ds
