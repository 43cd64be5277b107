"""Embeddings of a population of flat parameter vectors, with decoders back to weights.

Every embedding is a scikit-learn-style estimator (`Embedding`): ``fit(X)`` returns
``self``; ``encode(X : Tensor[N, D]) -> Tensor[N, d]``; ``decode(C : Tensor[M, d],
device=None, chunk_size=None) -> Tensor[M, D]``; ``reconstruction_error(X) -> float``;
``save(path)`` / `load_embedding`. `SpanReduction` is the exact reduction of N models to
their (N-1)-dimensional affine span; `ReducedEmbedding` trains any embedding on those
coordinates. `make_embedding` builds one by name ("pca", "kpca", "umap", "ae"). The cluster
embeddings without inverse of the seed's comparison (MDS, Isomap) give codes only:
`cluster_embed`, and `variant_separation` measures how any codes separate the variants.
"""

from .autoencoder import AutoencoderEmbedding
from .base import Embedding, NotFittedError, clone, load_embedding
from .clustering import CLUSTERING_METHODS, cluster_embed, variant_separation
from .compose import ReducedEmbedding
from .linear import KernelPCAEmbedding, PCAEmbedding
from .registry import EMBEDDINGS, list_embeddings, make_embedding
from .roundtrip import reconstruction_table, roundtrip
from .span import BlockSource, SpanReduction, TensorBlocks, centered_gram
from .umap_embedding import UMAPEmbedding

__all__ = [
    "CLUSTERING_METHODS",
    "EMBEDDINGS",
    "AutoencoderEmbedding",
    "BlockSource",
    "Embedding",
    "KernelPCAEmbedding",
    "NotFittedError",
    "PCAEmbedding",
    "ReducedEmbedding",
    "SpanReduction",
    "TensorBlocks",
    "UMAPEmbedding",
    "centered_gram",
    "clone",
    "cluster_embed",
    "list_embeddings",
    "load_embedding",
    "make_embedding",
    "reconstruction_table",
    "roundtrip",
    "variant_separation",
]
