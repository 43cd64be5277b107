"""`ReducedEmbedding`: any embedding trained on the exact span coordinates.

``ReducedEmbedding(inner, SpanReduction())`` fits the span reduction to the population
(``D`` parameters -> ``N - 1`` coordinates, exact on the population), then fits ``inner``
to those coordinates. Encoding and decoding compose; decoding goes back through the
basis on the requested device, chunk by chunk. The population may be lazy (anything
`SpanReduction.fit` accepts): only the span coordinates reach ``inner``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import Embedding, _sub_state, clone
from .span import SpanReduction, _keep_one_shot, _Reader

__all__ = ["ReducedEmbedding"]


class ReducedEmbedding(Embedding):
    """An embedding of the span coordinates of a population, decoded back to parameters.

    Parameters
    ----------
    inner : Embedding
        The embedding trained on the span coordinates (``Tensor[N, r]``, r <= N-1).
    reduction : SpanReduction, optional
        The reduction (default ``SpanReduction()``: every non-degenerate component,
        without standardisation).

    Attributes
    ----------
    reduction_ : SpanReduction, fitted copy of ``reduction``
    inner_ : Embedding, fitted copy of ``inner``
    n_components_ : int, the inner latent dimension d
    n_features_in_ : int, D
    dtype_ : torch.dtype

    Example
    -------
    >>> emb = ReducedEmbedding(AutoencoderEmbedding(latent_dim=2)).fit(X)  # X : Tensor[N, D]
    >>> Z = emb.encode(X)                                                  # Tensor[N, 2]
    >>> W = emb.decode(Z, device="cuda", chunk_size=256)                   # Tensor[N, D]
    >>> emb.inner_.loss_history_                                           # the AE's losses
    """

    _fitted_attr = "inner_"

    def __init__(self, inner: Embedding, reduction: SpanReduction | None = None):
        self.inner = inner
        self.reduction = reduction

    def fit(self, X: Any) -> ReducedEmbedding:
        """Fit the reduction, then ``inner`` on the span coordinates; returns ``self``.

        X : Tensor[N, D], numpy array / memmap, BlockSource, or a callable (or one-shot
        iterator) of column blocks Tensor[N, b].
        """
        self._fit(X, encode=False)
        return self

    def fit_encode(self, X: Any) -> Tensor:
        """``fit(X)`` and the population's codes (from the inner embedding's ``fit_encode``)."""
        return self._fit(X, encode=True)

    def _fit(self, X: Any, encode: bool) -> Tensor | None:
        who = f"{type(self).__name__}.fit"
        if not isinstance(self.inner, Embedding):
            raise TypeError(
                f"{who}: inner must be a lossatlas Embedding (e.g. AutoencoderEmbedding()), "
                f"got {type(self.inner).__name__}"
            )
        if self.reduction is not None and not isinstance(self.reduction, SpanReduction):
            raise TypeError(
                f"{who}: reduction must be a SpanReduction or None, got "
                f"{type(self.reduction).__name__}"
            )
        X = _keep_one_shot(X)
        reduction = clone(self.reduction) if self.reduction is not None else SpanReduction()
        reduction.fit(X)
        if reduction.n_components_ == 0:
            raise ValueError(
                f"{who}: the population has rank 0 (every model is the same); there is "
                "nothing to embed"
            )
        codes = reduction.encode(X)
        inner = clone(self.inner)
        Z = inner.fit_encode(codes) if encode else inner.fit(codes)
        self.reduction_ = reduction
        self.n_components_ = inner.n_components_
        self.n_features_in_ = reduction.n_features_in_
        self.dtype_ = reduction.dtype_
        self.inner_ = inner
        return Z.to(self.dtype_) if encode else None

    def encode(self, X: Any) -> Tensor:
        """Codes ``inner_.encode(reduction_.encode(X))``: Tensor[N, D] (or lazy) -> Tensor[N, d]."""
        self._check_fitted("encode")
        return self.inner_.encode(self.reduction_.encode(X)).to(self.dtype_)

    def _encode(self, X: Tensor) -> Tensor:
        return self.inner_.encode(self.reduction_.encode(X))

    def _latent_dtype(self) -> torch.dtype:
        return self.inner_._latent_dtype()

    def _decode(self, C: Tensor) -> Tensor:
        R = self.inner_._decode(C.to(self.inner_._latent_dtype()))
        return self.reduction_._decode(R)

    def reconstruction_errors(self, X: Any, chunk_size: int | None = None) -> Tensor:
        """Per-model mean squared error over parameters of the round trip, Tensor[N]
        (read block by block, so ``X`` may be lazy)."""
        self._check_fitted("reconstruction_errors")
        who = f"{type(self).__name__}.reconstruction_errors"
        X = _keep_one_shot(X)
        red = self.reduction_
        codes = red._encode_reader(_Reader(X, who, red.block_size), who).to(red.dtype_)
        R = self.inner_.decode(self.inner_.encode(codes))
        return red._residual_errors(X, R, who)

    def reconstruction_error(self, X: Any) -> float:
        """Mean squared error over all parameters of ``decode(encode(X))`` vs ``X``."""
        return float(self.reconstruction_errors(X).mean())

    def _state(self) -> dict[str, Tensor]:
        state = {f"reduction.{k}": v for k, v in self.reduction_._state().items()}
        state.update({f"inner.{k}": v for k, v in self.inner_._state().items()})
        return state

    def _save_files(self, path: Path) -> None:
        self.reduction_._save_files(path)

    def _files_digest(self) -> str:
        return self.reduction_._files_digest()

    def _meta(self) -> dict[str, Any]:
        return {
            **super()._meta(),
            "reduction_": {
                "class": type(self.reduction_).__name__,
                "params": self.reduction_._json_params(),
                "fitted": self.reduction_._meta(),
            },
            "inner_": {
                "class": type(self.inner_).__name__,
                "params": self.inner_._json_params(),
                "fitted": self.inner_._meta(),
            },
        }

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        super()._restore(state, meta)
        reduction = clone(self.reduction) if self.reduction is not None else SpanReduction()
        reduction._restore(_sub_state(state, "reduction."), meta["reduction_"]["fitted"],
                           **options)
        inner = clone(self.inner)
        inner._restore(_sub_state(state, "inner."), meta["inner_"]["fitted"], **options)
        self.reduction_ = reduction
        self.inner_ = inner
