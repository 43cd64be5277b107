"""The seed's clustering comparison: MDS and Isomap beside the invertible maps.

Globscope (seed 003, Table 1 and Figure 3) compares its autoencoder map with the
cluster embeddings MDS and Isomap (scikit-learn): they group models by variant but have
no inverse, so no latent point can be decoded to weights and the loss columns of the
table (reconstruction error, decoded-model loss) are not computable for them. The seed
compares them by how well they separate the variants; the same figures are measured here
for every embedding, invertible or not:

- ``silhouette``: scikit-learn's ``silhouette_score`` of the variant labels in the
  embedding (Euclidean; -1 to 1, higher is better separated; None with fewer than 2
  variants or with every model its own variant);
- ``nn_purity``: the fraction of models whose nearest other model in the embedding has
  the same variant (0 to 1), beside ``nn_purity_chance``, its expected value when the
  labels are shuffled (``sum_v n_v (n_v - 1) / (N (N - 1))``).

Example
-------
>>> Z = cluster_embed("isomap", X, dim=2)           # X : Tensor[N, D] -> Tensor[N, 2]
>>> variant_separation(Z, ["A", "A", "B", ...])["nn_purity"]
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import _as_population

__all__ = ["CLUSTERING_METHODS", "cluster_embed", "clustering_row", "not_computable_reason",
           "variant_separation"]

log = logging.getLogger(__name__)

CLUSTERING_METHODS = ("mds", "isomap")
_CLASSES = {"mds": "MDS", "isomap": "Isomap"}


def not_computable_reason(method: str) -> str:
    """Why a cluster embedding has no loss columns (one sentence)."""
    return (f"{method} (sklearn.manifold.{_CLASSES.get(method, method)}) has no inverse map: "
            "it gives codes for the fitted models only and cannot decode a latent point to "
            "weights, so reconstruction error and decoded-model loss are not computable")


def cluster_embed(method: str, X: Tensor, dim: int = 2, seed: int = 0,
                  n_neighbors: int | None = None) -> Tensor:
    """Codes of a population by a cluster embedding without inverse.

    Parameters
    ----------
    method : {"mds", "isomap"}
        Metric MDS (SMACOF from classical-MDS initialisation, ``random_state=seed``) or
        Isomap (``n_neighbors``, default ``min(5, N - 1)``), both on Euclidean distances.
    X : Tensor[N, D]
        The population (or its span coordinates: the same distances).
    dim : int
        Latent dimension.

    Returns
    -------
    Tensor[N, dim], float64, CPU.
    """
    from sklearn.manifold import MDS, Isomap

    who = "cluster_embed"
    if method not in CLUSTERING_METHODS:
        raise ValueError(f"{who}: method must be one of {', '.join(CLUSTERING_METHODS)}, "
                         f"got {method!r}")
    X = _as_population(X, who, min_rows=3)
    N = X.shape[0]
    if not isinstance(dim, (int, np.integer)) or not 1 <= dim < N:
        raise ValueError(f"{who}: dim must be an int in [1, N - 1 = {N - 1}], got {dim!r}")
    Xn = X.detach().cpu().double().numpy()
    if method == "mds":
        est = MDS(n_components=int(dim), metric_mds=True, init="classical_mds",
                  random_state=int(seed), metric="euclidean")
    else:
        k = min(5, N - 1) if n_neighbors is None else int(n_neighbors)
        if not 1 <= k < N:
            raise ValueError(f"{who}: n_neighbors must be in [1, N - 1 = {N - 1}], got {k}")
        est = Isomap(n_neighbors=k, n_components=int(dim))
    with warnings.catch_warnings(record=True) as caught:
        # well separated variants leave Isomap's neighbour graph in pieces, which
        # scikit-learn joins (and warns about): expected here, so logged, not warned
        warnings.simplefilter("always")
        Z = est.fit_transform(Xn)
    for w in caught:
        log.info("cluster_embed(%s): %s", method, w.message)
    return torch.as_tensor(np.asarray(Z), dtype=torch.float64)


def variant_separation(Z: Tensor | np.ndarray, labels: Sequence[Any]) -> dict[str, Any]:
    """How well an embedding separates the variants.

    Parameters
    ----------
    Z : Tensor[N, d] or array, the codes
    labels : N variant labels (compared as strings)

    Returns
    -------
    dict with ``silhouette`` (float in [-1, 1] or None), ``nn_purity`` (float in [0, 1]),
    ``nn_purity_chance`` (float) and ``num_variants`` (int).
    """
    from scipy.spatial.distance import cdist
    from sklearn.metrics import silhouette_score

    Zn = np.asarray(Z.detach().cpu().double() if isinstance(Z, Tensor) else Z, dtype=float)
    lab = np.asarray([str(v) for v in labels])
    if Zn.ndim != 2 or len(lab) != len(Zn) or len(Zn) < 2:
        raise ValueError(f"variant_separation: codes {Zn.shape} and {len(lab)} labels must be "
                         "[N, d] and N, with N >= 2")
    N = len(lab)
    k = len(set(lab.tolist()))
    sil = float(silhouette_score(Zn, lab, metric="euclidean")) if 2 <= k <= N - 1 else None
    D = cdist(Zn, Zn)
    np.fill_diagonal(D, np.inf)
    nearest = D.argmin(axis=1)
    counts = np.array(list(Counter(lab.tolist()).values()), dtype=float)
    return {"silhouette": sil,
            "nn_purity": float(np.mean(lab[nearest] == lab)),
            "nn_purity_chance": float((counts * (counts - 1)).sum() / (N * (N - 1))),
            "num_variants": k}


def clustering_row(method: str, X: Tensor, labels: Sequence[Any], dim: int = 2,
                   seed: int = 0) -> dict[str, Any]:
    """One Table 1 row for a cluster embedding: the variant separation of its codes and
    the loss columns (``mse``, ``decoded_loss``, ``median_rel_loss_error``) as None with
    the reason in ``not_computable``. ``codes`` : list of N lists of ``dim`` floats."""
    Z = cluster_embed(method, X, dim=dim, seed=seed)
    return {"method": method, "class": _CLASSES[method], "n_components": int(dim),
            "mse": None, "decoded_loss": None, "median_rel_loss_error": None,
            "not_computable": not_computable_reason(method),
            **variant_separation(Z, labels), "codes": Z.tolist()}
