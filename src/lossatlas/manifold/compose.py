"""`ReducedEmbedding`: any embedding trained on the exact span coordinates.

``ReducedEmbedding(inner, SpanReduction())`` fits the span reduction to the population
(``D`` parameters -> ``N - 1`` coordinates, exact on the population), then fits ``inner``
to those coordinates. Encoding and decoding compose; the inner embedding (small: ``N - 1``
outputs) decodes on the CPU, then the basis on the requested device, chunk by chunk. The
population may be lazy (anything `SpanReduction.fit` accepts): only the span coordinates
reach ``inner``. With ``exact=True`` a `ResidualCorrection` of the inner decoder's
residuals makes every population model decode exactly to itself at its code: the atlas's
map, fitted, stored and loaded as one estimator.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..correction import ResidualCorrection
from ..errors import InputTypeError
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
    exact : bool
        Add a smooth residual correction (:class:`~lossatlas.correction.ResidualCorrection`)
        so that every model of the population decodes exactly to itself at its code;
        ``decode(..., corrected=False)`` gives the inner decoder alone.

    Attributes
    ----------
    reduction_ : SpanReduction, fitted copy of ``reduction``
    inner_ : Embedding, fitted copy of ``inner``
    codes_ : Tensor[N, d], the population's codes as fitted
    include_codes_ : dict name -> Tensor[P, d], codes of the points fitted with ``include=``
    correction_ : ResidualCorrection or None (``exact=False``)
    n_components_ : int, the inner latent dimension d
    n_features_in_ : int, D
    dtype_ : torch.dtype

    Example
    -------
    >>> emb = ReducedEmbedding(AutoencoderEmbedding(n_components=2), exact=True).fit(X)
    >>> Z = emb.encode(X)                                                  # Tensor[N, 2]
    >>> W = emb.decode(Z, device="cuda", chunk_size=256)                   # Tensor[N, D]
    >>> emb.inner_.loss_history_                                           # the AE's losses
    """

    _fitted_attr = "inner_"

    def __init__(self, inner: Embedding, reduction: SpanReduction | None = None,
                 exact: bool = False):
        self.inner = inner
        self.reduction = reduction
        self.exact = exact

    @classmethod
    def from_fitted(cls, reduction: SpanReduction, inner: Embedding, codes: Tensor,
                    correction: ResidualCorrection | None = None,
                    include_codes: Mapping[str, Tensor] | None = None) -> ReducedEmbedding:
        """The estimator of an already fitted ``reduction`` and ``inner`` (fitted on the
        reduction's coordinates), the population's ``codes`` Tensor[N, d] and optionally
        its ``correction`` (then ``exact``); nothing is refitted."""
        for name, part in (("reduction", reduction), ("inner", inner)):
            if not isinstance(part, Embedding) or not part.is_fitted:
                raise InputTypeError(f"ReducedEmbedding.from_fitted: {name} must be a fitted "
                                     f"lossatlas Embedding, got {part!r}")
        emb = cls(clone(inner), clone(reduction), exact=correction is not None)
        emb._set_fitted(reduction, inner, codes, correction, include_codes)
        return emb

    def _set_fitted(self, reduction: SpanReduction, inner: Embedding, codes: Tensor | None,
                    correction: ResidualCorrection | None,
                    include_codes: Mapping[str, Tensor] | None) -> None:
        self.reduction_ = reduction
        self.inner_ = inner
        self.n_components_ = inner.n_components_
        self.n_features_in_ = reduction.n_features_in_
        self.dtype_ = reduction.dtype_
        self.codes_ = codes
        self.include_codes_ = dict(include_codes or {})
        self.correction_ = correction

    def fit(self, X: Any, include: Mapping[str, Tensor] | None = None) -> ReducedEmbedding:
        """Fit the reduction, then ``inner`` on the span coordinates (then the correction);
        returns ``self``.

        X : Tensor[N, D], numpy array / memmap, BlockSource, or a callable (or one-shot
        iterator) of column blocks Tensor[N, b].
        include : mapping name -> Tensor[P, D], optional
            Extra points (curves, trajectories, re-basined models) the reduction and the
            inner embedding are fitted on too, without being population members: the
            correction pins only the population (and is zero at them, see
            ``ResidualCorrection(zero_at=)``). Their codes are ``include_codes_``. Needs
            ``X`` as a Tensor.
        """
        self._fit(X, encode=False, include=include)
        return self

    def fit_encode(self, X: Any) -> Tensor:
        """``fit(X)`` and the population's codes (from the inner embedding's ``fit_encode``)."""
        return self._fit(X, encode=True)

    def _fit(self, X: Any, encode: bool, include: Mapping[str, Tensor] | None = None
             ) -> Tensor | None:
        who = f"{type(self).__name__}.fit"
        if not isinstance(self.inner, Embedding):
            raise InputTypeError(
                f"{who}: inner must be a lossatlas Embedding (e.g. AutoencoderEmbedding()), "
                f"got {type(self.inner).__name__}"
            )
        if self.reduction is not None and not isinstance(self.reduction, SpanReduction):
            raise InputTypeError(
                f"{who}: reduction must be a SpanReduction or None, got "
                f"{type(self.reduction).__name__}"
            )
        include = dict(include or {})
        if include and not isinstance(X, Tensor):
            raise ValueError(f"{who}: include= needs the population X as a Tensor[N, D] in "
                             f"memory, got {type(X).__name__}")
        for name, pts in include.items():
            if not isinstance(pts, Tensor) or pts.ndim != 2 or pts.shape[1] != X.shape[1]:
                raise ValueError(f"{who}: include[{name!r}] must be a Tensor[P, {X.shape[1]}], "
                                 f"got {tuple(getattr(pts, 'shape', ()))}")
        X = _keep_one_shot(X)
        extra = torch.cat(list(include.values())) if include else None
        reduction = clone(self.reduction) if self.reduction is not None else SpanReduction()
        reduction.fit(X if extra is None else torch.cat([X, extra]))
        if reduction.n_components_ == 0:
            raise ValueError(
                f"{who}: the population has rank 0: its {reduction.n_models_} models are all "
                "the same model (zero span: identical weights; copies of one checkpoint?); "
                "there is nothing to embed"
            )
        codes = reduction.encode(X).cpu()  # the inner embedding trains on the CPU
        inner = clone(self.inner)
        Z = None
        if encode:
            Z = inner.fit_encode(codes)
        elif extra is None:
            inner.fit(codes)
        else:  # the included points are fitted too, but are not population members
            inner.fit(torch.cat([codes, reduction.encode(extra).cpu()]))
        self._set_fitted(reduction, inner, None, None, None)
        self._span_codes = codes  # kept for span_codes(); not saved
        self.codes_ = (Z if Z is not None else inner.encode(codes)).to(self.dtype_)
        self.include_codes_ = {k: self.encode(v) for k, v in include.items()}
        if self.exact:
            residual = codes.double() - inner.decode(self.codes_).double()
            self.correction_ = ResidualCorrection(
                self.codes_, residual,
                zero_at=torch.cat(list(self.include_codes_.values())) if include else None)
        return self.codes_ if encode else None

    def encode(self, X: Any) -> Tensor:
        """Codes ``inner_.encode(reduction_.encode(X))``: Tensor[N, D] (or lazy) -> Tensor[N, d]."""
        self._check_fitted("encode")
        return self.inner_.encode(self.reduction_.encode(X)).to(self.dtype_)

    def _encode(self, X: Tensor) -> Tensor:
        return self.inner_.encode(self.reduction_.encode(X))

    def _latent_dtype(self) -> torch.dtype:
        return self.inner_._latent_dtype()

    def decode(self, C: Tensor, device: torch.device | str | None = None,
               chunk_size: int | None = None, corrected: bool = True) -> Tensor:
        """Parameter vectors of latent points: Tensor[M, d] -> Tensor[M, D] on ``device``.

        As `Embedding.decode`; ``corrected=False`` leaves the residual correction out (the
        inner decoder alone; the same as ``True`` without ``exact``).
        """
        self._check_fitted("decode")
        return self._decode_rows(C, device, chunk_size,
                                 partial(self._decode, corrected=corrected))

    def _decode(self, C: Tensor, corrected: bool = True) -> Tensor:
        return self.reduction_._decode(self._span(C, corrected, None))

    def _span(self, C: Tensor, corrected: bool, dtype: torch.dtype | None) -> Tensor:
        """Span coordinates [M, r] of latent points C (validated, latent dtype) on C's
        device: the inner decoder on the CPU, plus the correction added in ``dtype``."""
        R = self.inner_.decode(C, device="cpu").to(C.device)
        if dtype is not None:
            R = R.to(dtype)
        if corrected and self.correction_ is not None:
            R = R + self.correction_(C.double()).to(R.dtype)
        return R

    def decode_span(self, C: Tensor, corrected: bool = True,
                    dtype: torch.dtype | None = None) -> Tensor:
        """Span coordinates of latent points (what `decode` sends through the basis).

        C : Tensor[M, d] -> Tensor[M, r] on C's device, in ``dtype`` (default the inner
        embedding's; the correction is added in it). Feed `SpanReduction.distances` with
        it to measure parameter-space distances without decoding.
        """
        self._check_fitted("decode_span")
        if not isinstance(C, Tensor) or C.ndim != 2 or C.shape[1] != self.n_components_:
            raise ValueError(f"{type(self).__name__}.decode_span: expected latent points "
                             f"Tensor[M, {self.n_components_}], got "
                             f"{tuple(getattr(C, 'shape', ())) or type(C).__name__}")
        return self._span(C.to(self._latent_dtype()), corrected, dtype)

    def span_codes(self, X: Any) -> Tensor:
        """The population's span coordinates Tensor[N, r] (CPU): kept from `fit`, else
        (after `load`) ``reduction_.encode(X)`` of the population ``X`` fitted on, kept."""
        self._check_fitted("span_codes")
        if self.__dict__.get("_span_codes") is None:
            self._span_codes = self.reduction_.encode(X).cpu()
        return self._span_codes

    def reconstruction_errors(self, X: Any, chunk_size: int | None = None) -> Tensor:
        """Per-model mean squared error over parameters of the round trip by the inner
        decoder (without the correction, which reproduces the population by construction),
        Tensor[N] float64 (read block by block, so ``X`` may be lazy)."""
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
        if self.codes_ is not None:
            state["codes_"] = self.codes_.contiguous()
        state.update({f"include.{k}": v.contiguous() for k, v in self.include_codes_.items()})
        if self.correction_ is not None:
            state.update({f"correction.{k}": v.contiguous()
                          for k, v in self.correction_.state().items()})
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
            "include": list(self.include_codes_),
        }

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        super()._restore(state, meta)
        reduction = clone(self.reduction) if self.reduction is not None else SpanReduction()
        reduction._restore(_sub_state(state, "reduction."), meta["reduction_"]["fitted"],
                           **options)
        inner = clone(self.inner)
        inner._restore(_sub_state(state, "inner."), meta["inner_"]["fitted"], **options)
        cor = _sub_state(state, "correction.")
        self._set_fitted(
            reduction, inner, state.get("codes_"),
            ResidualCorrection.from_state(cor) if cor else None,
            {k: state[f"include.{k}"] for k in meta.get("include", [])})
