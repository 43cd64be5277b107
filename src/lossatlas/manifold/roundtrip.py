"""Round trips and the reconstruction table that compares embeddings.

`roundtrip(embedding, X)` gives ``decode(encode(X))`` (the models as the map sees them,
ready for the Evaluator); `reconstruction_table` gives one row per embedding with the
mean squared error over parameters, relative to the population's variance, and per model;
given the models' variant labels, also the variant separation of every embedding's codes
and rows for the cluster embeddings without inverse (MDS, Isomap; see `clustering`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import InputTypeError
from .base import Embedding, _as_population
from .clustering import CLUSTERING_METHODS, clustering_row, variant_separation

__all__ = ["reconstruction_table", "roundtrip"]


def roundtrip(
    embedding: Embedding,
    X: Tensor,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The population as decoded from its codes: ``decode(encode(X))``.

    X : Tensor[N, D] -> Tensor[N, D] on ``device`` (default ``X``'s device).
    """
    embedding._check_fitted("roundtrip")
    X = _as_population(X, "roundtrip")
    return embedding.decode(
        embedding.encode(X),
        device=device if device is not None else X.device,
        chunk_size=chunk_size,
    )


def reconstruction_table(
    embeddings: Mapping[str, Embedding],
    X: Tensor,
    labels: Sequence[Any] | None = None,
    clustering: Sequence[str] = (),
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per fitted embedding: how well it reproduces the population.

    Parameters
    ----------
    embeddings : mapping name -> fitted Embedding
    X : Tensor[N, D] (or, for span-based embeddings, anything their `fit` accepts)
    labels : N variant labels, optional
        Adds `variant_separation` of each embedding's codes to its row (``silhouette``,
        ``nn_purity``, ``nn_purity_chance``, ``num_variants``).
    clustering : names in {"mds", "isomap"}
        Rows for cluster embeddings without inverse (fitted here on ``X`` with the latent
        dimension of the first embedding, 2 without one, and ``seed``): their loss
        columns are None and ``not_computable`` says why; needs ``labels``.

    Returns
    -------
    list of dict with keys ``method`` (the name), ``class``, ``n_components``, ``mse``
    (mean squared error over all parameters), ``relative_mse`` (mse / the population's
    mean per-parameter variance; 0 is exact, 1 is as bad as decoding every model to the
    mean), ``per_model_mse`` (list of N floats, in the order of ``X``).
    """
    if clustering and (labels is None or not isinstance(X, Tensor)):
        raise ValueError("reconstruction_table: clustering rows need labels= and X as a "
                         "Tensor[N, D]")
    for name in clustering:
        if name not in CLUSTERING_METHODS:
            raise ValueError(f"reconstruction_table: clustering method {name!r} is not one of "
                             f"{', '.join(CLUSTERING_METHODS)}")
    Xt = _as_population(X, "reconstruction_table") if isinstance(X, Tensor) else None
    var = None
    if Xt is not None:
        Xd = Xt.double()
        var = float((Xd - Xd.mean(dim=0)).square().mean())
    rows = []
    for name, emb in embeddings.items():
        if not isinstance(emb, Embedding):
            raise InputTypeError(
                f"reconstruction_table: {name!r} is a {type(emb).__name__}, expected a fitted "
                "lossatlas Embedding"
            )
        per_model = emb.reconstruction_errors(X)
        mse = float(per_model.mean())
        row = {
            "method": name,
            "class": type(emb).__name__,
            "n_components": int(emb.n_components_),
            "mse": mse,
            "relative_mse": (mse / var if var else float("nan")) if var is not None else None,
            "per_model_mse": [float(v) for v in per_model],
        }
        if labels is not None:
            row.update(variant_separation(emb.encode(X), labels))
        rows.append(row)
    dim = int(next(iter(embeddings.values())).n_components_) if embeddings else 2
    for name in clustering:
        rows.append(clustering_row(name, Xt, labels, dim=dim, seed=seed))
    return rows
