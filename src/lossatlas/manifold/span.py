"""Exact span reduction: N models live in an (N-1)-dimensional affine subspace.

Centre the population (``mean_``), accumulate the N x N Gram matrix
``G = Xc Xc^T`` over blocks of parameters (columns), eigendecompose ``G = U S^2 U^T`` in
float64 and form the orthonormal basis ``V = Xc^T U S^-1`` block by block. Encoding is
``(X - mean_) @ components_.T`` and decoding ``mean_ + C @ components_``; with all
non-degenerate components kept the population is reproduced exactly (to float
rounding), so any embedding can be trained on ``N-1`` coordinates instead of ``D``
parameters and decoded back through the basis.

The population may be a tensor, a numpy array (a ``np.memmap`` is read block by block),
a `BlockSource` (anything with ``blocks(block_size) -> Iterator[Tensor[N, b]]``), a
callable returning a fresh iterator of column blocks, or a one-shot iterator of column
blocks (its blocks are kept in memory, since the reduction reads the population twice).
A memory-mapped population (:class:`~lossatlas.vectors.VectorFile`) is a block source.

The basis ``components_`` ([r, D], about the population's size) is held in memory, or,
with ``components_path``, written block by block to a safetensors file and read from it
by blocks (decoding on the CPU streams it; on a GPU it is copied there once).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from ..errors import InputTypeError
from ..vectors import VectorFile, VectorFileWriter
from .base import Embedding, _as_population, _dtype_name, _out_dtype

__all__ = ["BlockSource", "SpanReduction", "TensorBlocks", "centered_gram", "components_file"]

# default block: about 64 MiB of float64 per block of columns
_BLOCK_BYTES = 64 * 2**20


@runtime_checkable
class BlockSource(Protocol):
    """A population read by blocks of parameters: yields ``Tensor[N, b]`` column blocks,
    left to right, that together cover all D parameters."""

    def blocks(self, block_size: int) -> Iterator[Tensor]: ...


class TensorBlocks:
    """Column blocks of a ``Tensor[N, D]`` or numpy array (e.g. a ``np.memmap``)."""

    def __init__(self, X: Tensor | np.ndarray):
        if X.ndim != 2:
            raise ValueError(f"TensorBlocks: expected a 2-D [N, D] array, got {tuple(X.shape)}")
        self.X = X

    def blocks(self, block_size: int) -> Iterator[Tensor]:
        D = self.X.shape[1]
        for start in range(0, D, block_size):
            block = self.X[:, start : start + block_size]
            if isinstance(block, np.ndarray):
                block = torch.from_numpy(np.array(block))  # a copy: memmaps are read here
            yield block


def _keep_one_shot(X: Any) -> Any:
    """A one-shot iterator of column blocks that must be read more than once: keep its
    blocks (one copy of the population)."""
    if isinstance(X, Tensor) or hasattr(X, "shape") or hasattr(X, "blocks") or callable(X):
        return X
    return list(X)


def _default_block_size(n_models: int) -> int:
    return max(1, _BLOCK_BYTES // (8 * max(n_models, 1)))


def components_file(path: str | os.PathLike) -> Path:
    """Where `SpanReduction.save(path)` keeps an on-disk basis: beside ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".components.safetensors")


class _Reader:
    """Normalised access to a population given in any accepted form."""

    def __init__(self, X: Any, who: str, block_size: int | None):
        self.who = who
        self.tensor: Tensor | None = None
        self.block_size = block_size
        if isinstance(X, (Tensor, np.ndarray)):
            if isinstance(X, Tensor):
                X = _as_population(X, who)
            elif X.ndim != 2:
                raise ValueError(f"{who}: expected a 2-D [N, D] array, got shape {X.shape}")
            self.tensor = X if isinstance(X, Tensor) else None
            self._source: Any = TensorBlocks(X)
            self._fn: Callable[[], Iterable[Tensor]] | None = None
            self.n_models = int(X.shape[0])
        elif isinstance(X, BlockSource):
            self._source, self._fn = X, None
            self.n_models = None
        elif callable(X):
            self._source, self._fn = None, X
            self.n_models = None
        elif isinstance(X, Iterable) and not isinstance(X, (str, bytes, dict)):
            cached = list(X)
            self._source, self._fn = None, lambda: iter(cached)
            self.n_models = None
        else:
            raise InputTypeError(
                f"{who}: expected a Tensor[N, D], a numpy array, a BlockSource (with "
                "blocks(block_size)), a callable returning an iterator of Tensor[N, b] column "
                f"blocks, or such an iterator; got {type(X).__name__}"
            )

    def blocks(self) -> Iterator[Tensor]:
        """Validated column blocks: floating Tensor[N, b] with a consistent N."""
        if self._fn is not None:
            it = iter(self._fn())
        else:
            bs = self.block_size or _default_block_size(self.n_models or 1024)
            it = self._source.blocks(bs)
        for i, block in enumerate(it):
            if isinstance(block, np.ndarray):
                block = torch.from_numpy(np.array(block))
            if not isinstance(block, Tensor) or block.ndim != 2:
                raise ValueError(
                    f"{self.who}: column block {i} must be a 2-D Tensor[N, b], got "
                    f"{type(block).__name__} of shape {tuple(getattr(block, 'shape', ()))}"
                )
            if self.n_models is None:
                self.n_models = int(block.shape[0])
            if block.shape[0] != self.n_models:
                raise ValueError(
                    f"{self.who}: column block {i} has {block.shape[0]} rows, expected "
                    f"{self.n_models} (one per model)"
                )
            if not block.is_floating_point():
                block = block.to(torch.float32)
            yield block


def _scale_floor(std: Tensor) -> Tensor:
    """Per-parameter scale with a floor: std below 1e-6 x RMS(std) is raised to it
    (zero-variance parameters are constant, so any positive scale represents them)."""
    rms = std.square().mean().sqrt()
    floor = 1e-6 * rms if rms > 0 else torch.ones((), dtype=std.dtype, device=std.device)
    return torch.maximum(std, floor)


def _concat(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)``, emptying the list as it goes (one copy in memory, not two)."""
    out = torch.empty(sum(len(p) for p in parts), dtype=parts[0].dtype, device=parts[0].device)
    start = 0
    while parts:
        p = parts.pop(0)
        out[start:start + len(p)] = p
        start += len(p)
    return out


def _gram_pass(
    reader: _Reader, standardize: bool, device: torch.device | None
) -> tuple[Tensor, Tensor, Tensor | None, torch.dtype]:
    """Passes over the blocks: mean [D], scale [D] or None, G [N, N] (float64).

    One pass without standardisation; with it, a first pass for the means and stds (the
    floor needs every std) and a second for the Gram matrix.
    """
    G: Tensor | None = None
    means: list[Tensor] = []
    stds: list[Tensor] = []
    in_dtype: torch.dtype | None = None
    for block in reader.blocks():
        in_dtype = block.dtype if in_dtype is None else in_dtype
        b = block.to(device=device or block.device, dtype=torch.float64, copy=True)  # modified below
        mu = b.mean(dim=0)
        b.sub_(mu)
        means.append(mu)
        if standardize:
            stds.append(b.square().mean(dim=0).sqrt())
        else:
            G = b @ b.T if G is None else G.addmm_(b, b.T)
        del b
    if in_dtype is None:
        raise ValueError(f"{reader.who}: the population has no parameters (no column blocks)")
    mean = _concat(means)
    scale = None
    if standardize:
        scale = _scale_floor(_concat(stds))
        start = 0
        for block in reader.blocks():
            b = block.to(device=mean.device, dtype=torch.float64)
            stop = start + b.shape[1]
            xc = (b - mean[start:stop]) / scale[start:stop]
            G = xc @ xc.T if G is None else G.addmm_(xc, xc.T)
            start = stop
    assert G is not None
    return G, mean, scale, in_dtype


def centered_gram(
    X: Any, *, block_size: int | None = None, standardize: bool = False
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The centred Gram matrix of a population, accumulated over blocks of parameters.

    Parameters
    ----------
    X : Tensor[N, D], numpy array, BlockSource, or callable/iterator of Tensor[N, b]
    block_size : int, optional
        Columns per block for tensors, arrays and block sources (default: ~64 MiB float64).
    standardize : bool
        Divide every parameter by its population std (floored) before the product.

    Returns
    -------
    G : Tensor[N, N] float64, ``Xc @ Xc.T`` with ``Xc = (X - mean) / scale``
    mean : Tensor[D] float64
    scale : Tensor[D] float64 or None
    """
    reader = _Reader(X, "centered_gram", block_size)
    G, mean, scale, _ = _gram_pass(reader, standardize, None)
    return G, mean, scale


class SpanReduction(Embedding):
    """Exact reduction of N models to (at most) N-1 coordinates of their affine span.

    Parameters
    ----------
    n_components : int, float or None
        ``None`` (default): every non-degenerate component, at most N-1 — the population
        is reproduced exactly. An int k keeps the k leading components (error if the
        population has fewer non-degenerate ones). A float in (0, 1) keeps the fewest
        leading components explaining that fraction of the variance.
    standardize : bool
        Divide each parameter by its population std before the decomposition (a floor of
        1e-6 x the RMS std applies to near-constant parameters); `decode` undoes it.
    tol : float, optional
        Relative singular-value threshold: components with ``s <= tol * s_max`` are
        degenerate. Default ``10 * sqrt(N * eps_float64)``, the resolution of the float64
        Gram route (about 5e-7 for N=12).
    block_size : int, optional
        Columns per block when reading the population (default: ~64 MiB of float64).
    device : torch.device or str, optional
        Where the Gram matrix and basis are computed and kept (default: the data's device).
    components_path : path, optional
        Write the basis to this safetensors file and keep it there (memory-mapped, read by
        blocks) instead of in memory: for populations larger than memory.

    Attributes
    ----------
    mean_ : Tensor[D]
    scale_ : Tensor[D] or None
    components_ : Tensor[r, D] or VectorFile
        Orthonormal rows (in standardised units when ``standardize``); a `VectorFile`
        with ``components_path``.
    singular_values_ : Tensor[r] float64
    explained_variance_ : Tensor[r] float64, ``s^2 / (N - 1)``
    explained_variance_ratio_ : Tensor[r] float64, fraction of the total variance
    n_components_ : int
        r, the number of kept components; 0 when every model is the same (then `encode`
        returns Tensor[N, 0] and `decode` returns ``mean_``; a warning says so).
    rank_ : int
        Number of non-degenerate components of the population.
    n_models_ : int
    n_features_in_ : int
    dtype_ : torch.dtype (float64 for float64 input, else float32)

    Example
    -------
    >>> X = torch.randn(12, 5000)
    >>> red = SpanReduction().fit(X)
    >>> C = red.encode(X)                    # Tensor[12, 11]
    >>> torch.allclose(red.decode(C), X, atol=1e-4)
    True
    """

    _fitted_attr = "components_"

    def __init__(
        self,
        n_components: int | float | None = None,
        *,
        standardize: bool = False,
        tol: float | None = None,
        block_size: int | None = None,
        device: torch.device | str | None = None,
        components_path: str | os.PathLike | None = None,
    ):
        self.n_components = n_components
        self.standardize = standardize
        self.tol = tol
        self.block_size = block_size
        self.device = device
        self.components_path = None if components_path is None else str(components_path)

    def fit(self, X: Any) -> SpanReduction:
        """Fit the basis of the population's span.

        X : Tensor[N, D], numpy array / memmap, BlockSource, or a callable (or one-shot
        iterator) of column blocks Tensor[N, b]. Returns ``self``.
        """
        who = f"{type(self).__name__}.fit"
        reader = _Reader(X, who, self.block_size)
        if reader.n_models is not None and reader.n_models < 2:
            raise ValueError(f"{who}: need at least 2 models, got {reader.n_models}")
        device = torch.device(self.device) if self.device is not None else None
        G, mean, scale, in_dtype = _gram_pass(reader, bool(self.standardize), device)
        N = G.shape[0]
        if N < 2:
            raise ValueError(f"{who}: need at least 2 models, got {N}")

        evals, evecs = torch.linalg.eigh(G)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        s_all = evals.clamp_min(0).sqrt()
        tol = self.tol if self.tol is not None else 10.0 * math.sqrt(N * np.finfo(np.float64).eps)
        s_max = float(s_all[0])
        rank = int((s_all > tol * s_max).sum()) if s_max > 0 else 0
        rank = min(rank, N - 1)
        k = self._choose_k(rank, s_all, N, who)
        if rank == 0:
            warnings.warn(
                f"{who}: every model is the same (zero variance); rank 0: encode returns "
                "Tensor[N, 0] and decode returns mean_",
                stacklevel=2,
            )
        U = evecs[:, :k]
        s = s_all[:k]
        # sign convention (as sklearn's u-based svd_flip): the largest |code| is positive
        if k:
            idx = U.abs().argmax(dim=0)
            signs = torch.sign(U[idx, torch.arange(k, device=U.device)])
            signs[signs == 0] = 1
            U = U * signs
        W = U / s if k else U  # [N, k]: V = Xc^T W

        self.dtype_ = _out_dtype(in_dtype)
        D = mean.shape[0]
        writer = None
        if self.components_path is not None:
            writer = VectorFileWriter(self.components_path, (k, D), "components_",
                                      dtype=self.dtype_)
            comps: Tensor | VectorFile = torch.empty(0)
        else:
            comps = torch.empty(k, D, dtype=self.dtype_, device=mean.device)
        start = 0
        try:
            for block in reader.blocks():
                xc = block.to(device=mean.device, dtype=torch.float64, copy=True)
                stop = start + xc.shape[1]
                xc.sub_(mean[start:stop])
                if scale is not None:
                    xc.div_(scale[start:stop])
                if k:
                    part = (W.T @ xc).to(self.dtype_)
                    if writer is not None:
                        writer.write_block(start, part)
                    else:
                        comps[:, start:stop] = part
                start = stop
            if writer is not None:
                comps = writer.commit()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise

        total = float(evals.clamp_min(0).sum())
        self.n_models_ = N
        self.n_features_in_ = D
        self.rank_ = rank
        self.n_components_ = k
        self.mean_ = mean.to(self.dtype_)
        self.scale_ = scale.to(self.dtype_) if scale is not None else None
        self.components_ = comps
        self.singular_values_ = s.cpu()
        self.explained_variance_ = (s.square() / (N - 1)).cpu()
        self.explained_variance_ratio_ = (s.square() / total).cpu() if total > 0 else s.cpu()
        self._device_cache: dict[torch.device, tuple[Tensor, Tensor, Tensor | None]] = {}
        self._metric: Tensor | None = None
        return self

    def _choose_k(self, rank: int, s_all: Tensor, N: int, who: str) -> int:
        k = self.n_components
        if k is None:
            return rank
        if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)):
            raise InputTypeError(f"{who}: n_components must be None, an int or a float, got {k!r}")
        if isinstance(k, (float, np.floating)):
            if not 0.0 < k < 1.0:
                raise ValueError(
                    f"{who}: a float n_components is a variance fraction in (0, 1), got {k}"
                )
            var = s_all[:rank].square()
            frac = torch.cumsum(var, 0) / var.sum() if rank else var
            found = int(torch.searchsorted(frac, torch.tensor(float(k), dtype=frac.dtype))) + 1
            return min(found, rank)
        k = int(k)
        if k < 1 or k > N - 1:
            raise ValueError(
                f"{who}: n_components={k} but {N} models span at most {N - 1} dimensions; "
                f"use 1 <= n_components <= {N - 1}, or None for all"
            )
        if k > rank:
            raise ValueError(
                f"{who}: n_components={k} but the population has only {rank} non-degenerate "
                "components (models repeat or lie in a lower-dimensional subspace); use "
                f"n_components <= {rank}, or None"
            )
        return k

    # -- basis on a device ----------------------------------------------------------------
    @property
    def on_disk(self) -> bool:
        """True when the basis is kept in a file (``components_path``)."""
        return isinstance(self.components_, VectorFile)

    def _comp_block(self, start: int, stop: int) -> Tensor:
        """Columns ``start:stop`` of the basis, on the mean's device."""
        if isinstance(self.components_, VectorFile):
            return self.components_.block(start, stop).to(self.mean_.device)
        return self.components_[:, start:stop]

    def _on(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
        if not self.on_disk and self.components_.device == device:
            return self.mean_, self.components_, self.scale_
        cache = self.__dict__.setdefault("_device_cache", {})
        if device not in cache:
            cache.clear()  # keep at most one extra copy of the basis
            comps = self.components_
            cache[device] = (
                self.mean_.to(device),
                comps.to_tensor(device) if isinstance(comps, VectorFile) else comps.to(device),
                None if self.scale_ is None else self.scale_.to(device),
            )
        return cache[device]

    def _metric_factor(self) -> Tensor:
        """``L`` (float64 [r, r], CPU) with ``L L^T = M``, the Gram matrix of the scaled
        basis ``components_ * scale_`` (the identity when unscaled), summed over column
        blocks; cached."""
        if self.__dict__.get("_metric") is None:
            k, D = self.n_components_, self.n_features_in_
            M = torch.zeros(k, k, dtype=torch.float64)
            step = self.block_size or max(1, 2**23 // max(1, k))
            for start in range(0, D, step):
                stop = min(D, start + step)
                B = self._comp_block(start, stop).double().cpu()
                if self.scale_ is not None:
                    B = B * self.scale_[start:stop].double().cpu()
                M += B @ B.T
            self._metric = (torch.linalg.cholesky(M + 1e-12 * torch.eye(k, dtype=M.dtype))
                            if k else M)
        return self._metric

    def distances(self, A: Tensor, B: Tensor) -> Tensor:
        """Euclidean distances in parameter space between points given by span coordinates.

        Points of the span decode to ``x = mean_ + (c @ components_) * scale_``, so
        ``|x_a - x_b| = |(c_a - c_b) @ L|`` with ``L L^T`` the Gram matrix of the scaled
        basis: computed in span coordinates, without decoding (one pass over the basis,
        cached). A point off the span is measured by its projection.

        A : Tensor[P, r], B : Tensor[Q, r] (r = ``n_components_``) -> Tensor[P, Q] float64
        on the CPU, in the units of the parameters.
        """
        self._check_fitted("distances")
        k = self.n_components_
        for name, T in (("A", A), ("B", B)):
            if not isinstance(T, Tensor) or T.ndim != 2 or T.shape[1] != k:
                raise ValueError(
                    f"SpanReduction.distances: {name} must be span coordinates Tensor[P, {k}], "
                    f"got {tuple(getattr(T, 'shape', ())) or type(T).__name__}")
        L = self._metric_factor()
        return torch.cdist(A.double().cpu() @ L, B.double().cpu() @ L)

    # -- encode / decode --------------------------------------------------------------------
    def encode(self, X: Any) -> Tensor:
        """Span coordinates ``(X - mean_) / scale_ @ components_.T``.

        X : Tensor[N, D] (or a numpy array / BlockSource / callable of column blocks, read
        block by block) -> Tensor[N, n_components_] of dtype ``dtype_`` (on X's device for
        tensors, else on the basis's device).
        """
        self._check_fitted("encode")
        who = f"{type(self).__name__}.encode"
        reader = _Reader(X, who, self.block_size)
        C = self._encode_reader(reader, who)
        out_device = reader.tensor.device if reader.tensor is not None else C.device
        return C.to(device=out_device, dtype=self.dtype_)

    def _encode(self, X: Tensor) -> Tensor:
        return self._encode_reader(_Reader(X, "encode", self.block_size), "encode")

    def _blocks_checked(self, reader: _Reader, who: str) -> Iterator[tuple[int, int, Tensor]]:
        """(start, stop, float64 block on the basis's device), checking the total width."""
        D = self.n_features_in_
        start = 0
        for block in reader.blocks():
            stop = start + block.shape[1]
            if stop > D:
                raise ValueError(f"{who}: expected vectors of {D} parameters (as fitted), got more")
            yield start, stop, block.to(device=self.mean_.device, dtype=torch.float64)
            start = stop
        if start != D:
            raise ValueError(f"{who}: expected vectors of {D} parameters (as fitted), got {start}")

    def _encode_reader(self, reader: _Reader, who: str) -> Tensor:
        """Codes in float64 on the basis's device, accumulated over column blocks."""
        mean, scale = self.mean_, self.scale_
        C: Tensor | None = None
        for start, stop, b in self._blocks_checked(reader, who):
            xc = b - mean[start:stop].double()
            if scale is not None:
                xc = xc / scale[start:stop].double()
            part = xc @ self._comp_block(start, stop).double().T
            C = part if C is None else C.add_(part)
        assert C is not None
        return C

    def _decode(self, C: Tensor) -> Tensor:
        if self.on_disk and C.device.type == "cpu":
            return self._decode_streamed(C)
        mean, comps, scale = self._on(C.device)
        if self.n_components_ == 0:
            return mean.expand(C.shape[0], -1).clone()
        Y = C.to(comps.dtype) @ comps
        if scale is not None:
            Y.mul_(scale)
        return Y.add_(mean)

    def _decode_streamed(self, C: Tensor) -> Tensor:
        """`_decode` reading an on-disk basis by column blocks (one block in memory)."""
        D = self.n_features_in_
        mean, scale = self.mean_.cpu(), None if self.scale_ is None else self.scale_.cpu()
        Y = mean.expand(C.shape[0], -1).clone()
        if self.n_components_ == 0:
            return Y
        step = self.block_size or _default_block_size(self.n_components_)
        C = C.to(self.dtype_)
        for start in range(0, D, step):
            stop = min(D, start + step)
            part = C @ self.components_.block(start, stop)
            if scale is not None:
                part.mul_(scale[start:stop])
            Y[:, start:stop] += part
        return Y

    def reconstruction_errors(self, X: Any, chunk_size: int | None = None) -> Tensor:
        """Per-model mean squared error over parameters of the round trip, Tensor[N].

        Accepts the same inputs as `fit` and reads them block by block.
        """
        self._check_fitted("reconstruction_errors")
        who = f"{type(self).__name__}.reconstruction_errors"
        X = _keep_one_shot(X)
        C = self._encode_reader(_Reader(X, who, self.block_size), who)
        return self._residual_errors(X, C, who)

    def reconstruction_error(self, X: Any) -> float:
        """Mean squared error over all parameters of ``decode(encode(X))`` vs ``X``."""
        return float(self.reconstruction_errors(X).mean())

    def _residual_errors(self, X: Any, C_hat: Tensor, who: str) -> Tensor:
        """Per-model MSE of ``X`` vs ``decode(C_hat)``, computed over column blocks."""
        reader = _Reader(X, who, self.block_size)
        mean, scale = self.mean_, self.scale_
        C_hat = C_hat.to(device=mean.device, dtype=torch.float64)
        sse: Tensor | None = None
        for start, stop, b in self._blocks_checked(reader, who):
            Y = C_hat @ self._comp_block(start, stop).double()
            if scale is not None:
                Y = Y * scale[start:stop].double()
            Y = Y + mean[start:stop].double()
            part = (b - Y).square().sum(dim=1)
            sse = part if sse is None else sse.add_(part)
        assert sse is not None
        return (sse / self.n_features_in_).cpu()

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, Tensor]:
        state = {
            "mean_": self.mean_,
            "singular_values_": self.singular_values_,
            "explained_variance_": self.explained_variance_,
            "explained_variance_ratio_": self.explained_variance_ratio_,
        }
        if not self.on_disk:
            state["components_"] = self.components_
        if self.scale_ is not None:
            state["scale_"] = self.scale_
        return state

    def _save_files(self, path: Path) -> None:
        """An on-disk basis goes beside the saved file (see `components_file`)."""
        if not self.on_disk:
            return
        target = components_file(path)
        if target.resolve() == self.components_.path.resolve():
            return
        comps = self.components_
        with VectorFileWriter(target, comps.shape, "components_", dtype=comps.dtype) as w:
            step = _default_block_size(max(1, comps.shape[0]))
            for start in range(0, comps.shape[1], step):
                w.write_block(start, comps.block(start, min(comps.shape[1], start + step)))

    def _files_digest(self) -> str:
        return self.components_.digest() if self.on_disk else ""

    def _meta(self) -> dict[str, Any]:
        return {
            **super()._meta(),
            "n_models_": int(self.n_models_),
            "rank_": int(self.rank_),
            "dtype_": _dtype_name(self.dtype_),
            "components_on_disk": bool(self.on_disk),
        }

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        super()._restore(state, meta)
        self.n_models_ = int(meta["n_models_"])
        self.rank_ = int(meta["rank_"])
        device = torch.device(self.device) if self.device is not None else torch.device("cpu")
        self.mean_ = state["mean_"].to(device)
        if meta.get("components_on_disk"):
            if options.get("_path") is None:
                raise ValueError("SpanReduction: an on-disk basis is restored by load_embedding")
            self.components_ = VectorFile(components_file(options["_path"]), "components_")
        else:
            self.components_ = state["components_"].to(device)
        self.scale_ = state["scale_"].to(device) if "scale_" in state else None
        self.singular_values_ = state["singular_values_"]
        self.explained_variance_ = state["explained_variance_"]
        self.explained_variance_ratio_ = state["explained_variance_ratio_"]
        self._device_cache = {}
        self._metric = None
