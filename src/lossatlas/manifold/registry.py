"""`make_embedding`: build an embedding by method name (the CLI's ``--method``).

Names: ``"pca"``, ``"kpca"``, ``"umap"``, ``"ae"`` (or a ``"package.module:function"``
factory spec). ``reduce=True`` wraps the result in `ReducedEmbedding`, so it is trained
on the population's exact span coordinates. ``None`` keyword arguments are dropped, so
CLI defaults never override the methods' own defaults.
"""

from __future__ import annotations

from typing import Any

from lossatlas.registry import Registry

from ..errors import InputTypeError
from .autoencoder import AutoencoderEmbedding
from .base import Embedding
from .compose import ReducedEmbedding
from .linear import KernelPCAEmbedding, PCAEmbedding
from .span import SpanReduction
from .umap_embedding import UMAPEmbedding

__all__ = ["EMBEDDINGS", "list_embeddings", "make_embedding"]

EMBEDDINGS = Registry("embedding method")
EMBEDDINGS.register("pca")(PCAEmbedding)
EMBEDDINGS.register("kpca")(KernelPCAEmbedding)
EMBEDDINGS.register("umap")(UMAPEmbedding)
EMBEDDINGS.register("ae")(AutoencoderEmbedding)


def list_embeddings(pattern: str = "*") -> list[str]:
    """Registered method names matching the fnmatch ``pattern``."""
    return EMBEDDINGS.list(pattern)


def make_embedding(
    method: str,
    *,
    reduce: bool = False,
    reduction: SpanReduction | None = None,
    **kwargs: Any,
) -> Embedding:
    """Build an unfitted embedding by name.

    Parameters
    ----------
    method : {"pca", "kpca", "umap", "ae"} or "package.module:function"
    reduce : bool
        Wrap in `ReducedEmbedding` (train on the exact span coordinates, N-1 of them).
    reduction : SpanReduction, optional
        The reduction to use with ``reduce=True`` (default ``SpanReduction()``).
    **kwargs
        Hyper-parameters of the method (``None`` values are dropped).

    Example
    -------
    >>> make_embedding("ae", reduce=True, n_components=2, epochs=1000)
    ReducedEmbedding(inner=AutoencoderEmbedding(n_components=2, ...), reduction=None)
    """
    if not isinstance(method, str):
        raise InputTypeError(
            f"make_embedding: method must be a name ({', '.join(EMBEDDINGS.list())}), got "
            f"{type(method).__name__}"
        )
    emb = EMBEDDINGS.create(method.strip().lower() if ":" not in method else method, **kwargs)
    if not isinstance(emb, Embedding):
        raise InputTypeError(
            f"make_embedding: factory {method!r} returned {type(emb).__name__}, expected a "
            "lossatlas.manifold.Embedding"
        )
    if reduction is not None and not reduce:
        raise ValueError("make_embedding: a reduction was given but reduce=False; pass reduce=True")
    return ReducedEmbedding(emb, reduction) if reduce else emb
