"""Algorithmic branches: models in one basin (low barrier) that compute different functions.

Functional distances between models:

* prediction disagreement: the fraction of held-out inputs whose arg-max predictions
  differ (in [0, 1]);
* ``1 - linear CKA`` of the representations of chosen layers (Kornblith et al. 2019),
  taken by forward hooks on modules named as in ``model.named_modules()``.

Within every basin (given as labels, or as the groups connected below a barrier
threshold in a barrier matrix) the models are clustered by average-linkage
hierarchical clustering on the functional distance; the dendrogram is cut at
``branch_threshold``. A basin has more than one branch when the cut gives several
clusters whose mean between-branch distance is at least ``min_ratio`` times their mean
within-branch distance. Branches are distinct from basins: two branches of one basin
are joined by a low-loss path but disagree as functions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ..batches import as_tensor_data
from ..errors import MissingKeyError

__all__ = [
    "BranchResult",
    "basins_from_barriers",
    "find_branches",
    "functional_distances",
    "linear_cka",
    "prediction_disagreement",
    "representations",
]

log = logging.getLogger(__name__)

OUTPUT = "output"
"""Layer name meaning the model's output (logits)."""


def _as_matrix(z: Any, name: str) -> Tensor:
    t = torch.as_tensor(z).detach()
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        t = t.reshape(t.shape[0], -1)
    return t.to(torch.float64)


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same inputs.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with ``Xc``, ``Yc`` the
    column-centred matrices (Kornblith et al. 2019, eq. for the linear kernel); it is
    invariant to orthogonal transforms and isotropic scaling of either representation.

    Parameters
    ----------
    X : Tensor[n, p]  (or array; extra dimensions are flattened)
    Y : Tensor[n, q]

    Returns
    -------
    float in [0, 1] (computed in float64); 0 when either representation is constant.
    """
    x, y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka: X and Y must have the same number of rows (inputs), got "
            f"{x.shape[0]} and {y.shape[0]}"
        )
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    # Use the n x n Gram matrices when they are smaller than the feature products.
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        num = (kx * ky).sum()
        den = torch.linalg.norm(kx) * torch.linalg.norm(ky)
    else:
        num = torch.linalg.norm(y.T @ x) ** 2
        den = torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y)
    if den <= 0:
        return 0.0
    return float(num / den)


def prediction_disagreement(outputs_a: Tensor, outputs_b: Tensor) -> float:
    """Fraction of inputs whose arg-max predictions differ (``Tensor[n, classes]`` each)."""
    if outputs_a.shape != outputs_b.shape:
        raise ValueError(
            f"prediction_disagreement: output shapes differ: {tuple(outputs_a.shape)} vs "
            f"{tuple(outputs_b.shape)}"
        )
    return float((outputs_a.argmax(-1) != outputs_b.argmax(-1)).double().mean())


@torch.no_grad()
def representations(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[str] | None = None,
    batch_size: int = 4096,
) -> dict[str, Tensor]:
    """Outputs of the named modules on inputs ``x``, by forward hooks.

    Parameters
    ----------
    model : nn.Module (run in its current mode; nothing is changed)
    x : Tensor[n, ...] inputs
    layers : module names from ``model.named_modules()``; ``"output"`` is the model's
        output. Default ``["output"]``.

    Returns
    -------
    dict name -> Tensor[n, features] (float32, flattened per input, on the CPU).
    """
    layers = [OUTPUT] if layers is None else list(layers)
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name != OUTPUT and name not in modules]
    if unknown:
        names = [n for n in modules if n]
        raise MissingKeyError(
            f"representations: no module named {unknown[0]!r}; modules are "
            f"{names[:10]}{'...' if len(names) > 10 else ''} (or 'output')"
        )
    store: dict[str, list[Tensor]] = {name: [] for name in layers}
    handles = []
    for name in layers:
        if name == OUTPUT:
            continue

        def hook(_m: nn.Module, _inp: Any, out: Any, _name: str = name) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            store[_name].append(out.detach().reshape(out.shape[0], -1).float().cpu())

        handles.append(modules[name].register_forward_hook(hook))
    try:
        device = next(model.parameters()).device
        for i in range(0, x.shape[0], batch_size):
            out = model(x[i : i + batch_size].to(device))
            if OUTPUT in store:
                store[OUTPUT].append(out.detach().reshape(out.shape[0], -1).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(v) for name, v in store.items()}


def functional_distances(
    models: Sequence[nn.Module],
    data: Any,
    metric: Literal["disagreement", "cka"] = "disagreement",
    layers: Sequence[str] | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Pairwise functional distances ``[N, N]`` between models on held-out inputs.

    ``metric="disagreement"``: fraction of inputs with different arg-max predictions
    (uses the outputs). ``metric="cka"``: ``1 - linear CKA`` averaged over ``layers``
    (default the output).
    """
    if metric not in ("disagreement", "cka"):
        raise ValueError(
            f"functional_distances: metric must be 'disagreement' or 'cka', got {metric!r}"
        )
    x = as_tensor_data(data, who="functional_distances: data").x
    use = [OUTPUT] if metric == "disagreement" else (layers or [OUTPUT])
    reps = [representations(m, x, use, batch_size) for m in models]
    n = len(models)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if metric == "disagreement":
                v = prediction_disagreement(reps[i][OUTPUT], reps[j][OUTPUT])
            else:
                v = float(np.mean([1.0 - linear_cka(reps[i][k], reps[j][k]) for k in use]))
            d[i, j] = d[j, i] = max(v, 0.0)
    return d


def basins_from_barriers(barrier_matrix: Any, threshold: float) -> np.ndarray:
    """Basin label per model: connected components of the graph whose edges are the
    pairs with barrier ``< threshold`` (matrix ``[N, N]``, NaN = not measured)."""
    from scipy.sparse.csgraph import connected_components

    b = np.asarray(getattr(barrier_matrix, "values", barrier_matrix), dtype=float)
    if b.ndim != 2 or b.shape[0] != b.shape[1]:
        raise ValueError(f"basins_from_barriers: expected a square matrix, got {b.shape}")
    adj = np.nan_to_num(np.maximum(b, b.T), nan=np.inf) < threshold
    _, labels = connected_components(adj, directed=False)
    return labels.astype(int)


@dataclass
class BranchResult:
    """Branches found by :func:`find_branches`.

    Attributes
    ----------
    branch : ndarray[N] of int     global branch id of every model (unique across basins)
    basin : ndarray[N] of int      basin label of every model
    num_branches : dict basin -> int
    separation : dict basin -> dict
        ``ratio`` (mean between-branch / mean within-branch distance; inf when the
        branches are tight, NaN with one branch), ``silhouette`` (scikit-learn, on
        the precomputed distances; NaN when undefined), ``max_merge`` (height of the
        last average-linkage merge, the distance unit).
    distances : ndarray[N, N]      functional distance used
    metric : str
    """

    branch: np.ndarray
    basin: np.ndarray
    num_branches: dict[int, int]
    separation: dict[int, dict[str, float]]
    distances: np.ndarray
    metric: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "branch": self.branch.tolist(),
            "basin": self.basin.tolist(),
            "num_branches": {str(k): v for k, v in self.num_branches.items()},
            "separation": {str(k): v for k, v in self.separation.items()},
            "distances": self.distances.tolist(),
            "metric": self.metric,
            "config": self.config,
        }


def _split_basin(
    d: np.ndarray, threshold: float, min_ratio: float
) -> tuple[np.ndarray, dict[str, float]]:
    """Cluster one basin's models; returns local labels 0..k-1 and separation stats."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = d.shape[0]
    if n == 1:
        return np.zeros(1, int), {"ratio": float("nan"), "silhouette": float("nan"),
                                  "max_merge": 0.0}
    z = linkage(squareform(d, checks=False), method="average")
    labels = fcluster(z, t=threshold, criterion="distance") - 1
    stats = {"max_merge": float(z[-1, 2])}
    k = labels.max() + 1
    if k > 1:
        same = labels[:, None] == labels[None, :]
        off = ~np.eye(n, dtype=bool)
        within = d[same & off]
        between = d[~same]
        w = float(within.mean()) if within.size else 0.0
        ratio = float(between.mean()) / w if w > 0 else float("inf")
        sil = float("nan")
        if 2 <= k <= n - 1:
            from sklearn.metrics import silhouette_score

            sil = float(silhouette_score(d, labels, metric="precomputed"))
        stats.update(ratio=ratio, silhouette=sil)
        if ratio < min_ratio:
            labels = np.zeros(n, int)
    else:
        stats.update(ratio=float("nan"), silhouette=float("nan"))
    return labels.astype(int), stats


def find_branches(
    models: Sequence[nn.Module] | Any,
    data: Any,
    basins: Sequence[int] | np.ndarray | None = None,
    barrier_matrix: Any = None,
    barrier_threshold: float = 0.1,
    layers: Sequence[str] | None = None,
    metric: Literal["disagreement", "cka"] = "disagreement",
    branch_threshold: float = 0.1,
    min_ratio: float = 2.0,
    batch_size: int = 4096,
) -> BranchResult:
    """Algorithmic branches within basins.

    Parameters
    ----------
    models : sequence of N nn.Module, or a Population (``.model(i)``)
    data : held-out (X, y) tensors / Dataset / DataLoader; only inputs are used
    basins : int labels [N], optional
        Basin of every model (e.g. ``atlas.basins_``).
    barrier_matrix : [N, N] array or xarray, optional
        Used when ``basins`` is None: models connected by barriers below
        ``barrier_threshold`` (in the matrix's units, e.g. nats) share a basin.
        With neither, all models form one basin.
    layers : module names for ``metric="cka"`` (default the output)
    metric : "disagreement" (fraction of inputs) or "cka" (``1 - CKA``)
    branch_threshold : average-linkage height (distance units) at which the dendrogram
        is cut into branches
    min_ratio : a split is kept only when between/within mean distance >= this

    Returns
    -------
    BranchResult
    """
    if hasattr(models, "model") and hasattr(models, "as_points"):
        models = [models.model(i) for i in range(len(models))]
    models = list(models)
    n = len(models)
    if n == 0:
        raise ValueError("find_branches: no models given")
    if basins is not None:
        basin = np.asarray(basins, dtype=int)
        if basin.shape != (n,):
            raise ValueError(f"find_branches: basins has shape {basin.shape}, expected ({n},)")
    elif barrier_matrix is not None:
        basin = basins_from_barriers(barrier_matrix, barrier_threshold)
        if basin.shape != (n,):
            raise ValueError(
                f"find_branches: barrier_matrix is for {basin.shape[0]} models, got {n} models"
            )
    else:
        log.info("find_branches: no basins or barrier matrix given; one basin for all models")
        basin = np.zeros(n, int)
    d = functional_distances(models, data, metric, layers, batch_size)
    branch = np.empty(n, int)
    num: dict[int, int] = {}
    sep: dict[int, dict[str, float]] = {}
    next_id = 0
    for b in sorted(set(basin.tolist())):
        idx = np.flatnonzero(basin == b)
        local, stats = _split_basin(d[np.ix_(idx, idx)], branch_threshold, min_ratio)
        branch[idx] = local + next_id
        k = int(local.max() + 1)
        next_id += k
        num[int(b)] = k
        sep[int(b)] = stats
    return BranchResult(
        branch=branch, basin=basin, num_branches=num, separation=sep, distances=d,
        metric=metric,
        config={"branch_threshold": branch_threshold, "min_ratio": min_ratio,
                "barrier_threshold": barrier_threshold, "layers": list(layers or [OUTPUT])},
    )

