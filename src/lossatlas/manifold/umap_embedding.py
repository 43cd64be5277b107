"""UMAP embedding with umap-learn's ``inverse_transform`` as the decoder.

umap-learn is an optional dependency (``pip install 'lossatlas[umap]'``); it is imported
inside `UMAPEmbedding.fit`, so the core install works without it. (This module is not
named ``umap.py`` so that it never shadows the umap package.)
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import Embedding, _as_population, _out_dtype

__all__ = ["UMAPEmbedding"]


def _import_umap(who: str) -> Any:
    try:
        import umap
    except ImportError as exc:
        raise ImportError(
            f"{who}: the UMAP embedding needs umap-learn; install it with "
            "pip install 'lossatlas[umap]'"
        ) from exc
    return umap


class UMAPEmbedding(Embedding):
    """UMAP of a population, decoded with umap-learn's ``inverse_transform``.

    Parameters
    ----------
    n_components : int
        Latent dimension d (default 2).
    n_neighbors : int, optional
        UMAP neighbourhood size; ``None`` (default): ``min(15, N - 1)`` so that small
        populations work (umap needs ``n_neighbors < N``).
    min_dist : float
        UMAP's minimum distance between embedded points (default 0.1).
    metric : str
        Input metric (default "euclidean"; ``inverse_transform`` needs a metric umap can
        invert).
    n_epochs : int, optional
        Optimisation epochs (umap's default when None).
    init : str
        "spectral" (umap's default) or "random"; "random" is used automatically when the
        population is too small for a spectral initialisation (N <= d + 1).
    seed : int
        ``random_state`` of umap (deterministic, single-threaded).

    Attributes
    ----------
    umap_ : umap.UMAP, the fitted object
    embedding_ : Tensor[N, d], the population's codes as fitted
    n_components_, n_features_in_, dtype_

    Notes
    -----
    `encode` runs umap's ``transform``, which returns ``embedding_`` for the training
    population itself (umap recognises it) and places new points against the fitted
    embedding. Decoding runs on the CPU (umap-learn is
    numpy/numba); the result is moved to the requested device. `save` stores the fitted
    umap object pickled inside the safetensors file, so loading it needs
    ``load_embedding(path, allow_pickle=True)`` (load only files you trust).
    """

    _fitted_attr = "umap_"

    def __init__(
        self,
        n_components: int = 2,
        n_neighbors: int | None = None,
        min_dist: float = 0.1,
        metric: str = "euclidean",
        n_epochs: int | None = None,
        init: str = "spectral",
        seed: int = 0,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.n_epochs = n_epochs
        self.init = init
        self.seed = seed

    def _umap_kwargs(self, N: int, who: str) -> dict[str, Any]:
        n_neighbors = self.n_neighbors if self.n_neighbors is not None else min(15, N - 1)
        if not 2 <= n_neighbors < N:
            raise ValueError(
                f"{who}: n_neighbors={n_neighbors} but umap needs 2 <= n_neighbors < N={N}"
            )
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(
                f"{who}: n_components must be a positive int, got {self.n_components!r}"
            )
        init = self.init if N > self.n_components + 1 else "random"
        return dict(
            n_components=int(self.n_components),
            n_neighbors=int(n_neighbors),
            min_dist=float(self.min_dist),
            metric=self.metric,
            n_epochs=self.n_epochs,
            init=init,
            random_state=int(self.seed),
            n_jobs=1,  # a random_state makes umap single-threaded anyway; say so to silence it
        )

    def fit(self, X: Tensor) -> UMAPEmbedding:
        """Fit on a population ``X : Tensor[N, D]`` (N >= 3); returns ``self``."""
        who = f"{type(self).__name__}.fit"
        umap = _import_umap(who)
        X = _as_population(X, who, min_rows=3)
        N, D = X.shape
        kwargs = self._umap_kwargs(N, who)
        model = umap.UMAP(**kwargs)
        emb = model.fit_transform(X.detach().cpu().numpy().astype(np.float32))
        self.umap_ = model
        self.embedding_ = torch.as_tensor(np.asarray(emb), dtype=torch.float32)
        self.n_components_ = int(emb.shape[1])
        self.n_features_in_ = D
        self.dtype_ = _out_dtype(X.dtype)
        return self

    def fit_encode(self, X: Tensor) -> Tensor:
        """``fit(X)`` and the fitted codes ``embedding_`` (Tensor[N, d])."""
        X = _as_population(X, f"{type(self).__name__}.fit_encode", min_rows=3)
        return self.fit(X).embedding_.to(device=X.device, dtype=self.dtype_)

    def _encode(self, X: Tensor) -> Tensor:
        Z = self.umap_.transform(X.detach().cpu().numpy().astype(np.float32))
        return torch.as_tensor(np.asarray(Z), dtype=torch.float32)

    def _latent_dtype(self) -> torch.dtype:
        return torch.float32

    def _decode(self, C: Tensor) -> Tensor:
        Y = self.umap_.inverse_transform(C.detach().cpu().numpy().astype(np.float32))
        return torch.as_tensor(np.asarray(Y), dtype=self.dtype_).to(C.device)

    def _state(self) -> dict[str, Tensor]:
        buf = io.BytesIO()
        pickle.dump(self.umap_, buf, protocol=pickle.HIGHEST_PROTOCOL)
        blob = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        return {"embedding_": self.embedding_, "umap_pickle": blob}

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        if not options.get("allow_pickle", False):
            raise ValueError(
                "UMAPEmbedding.load: the fitted umap-learn object is stored pickled; pass "
                "allow_pickle=True to load_embedding if you trust this file"
            )
        _import_umap("UMAPEmbedding.load")
        super()._restore(state, meta)
        self.embedding_ = state["embedding_"]
        self.umap_ = pickle.loads(state["umap_pickle"].numpy().tobytes())
