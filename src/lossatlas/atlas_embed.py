"""Fitting an atlas's map: the points ``Atlas.embed(include=)`` adds, the embedding's
defaults, and the one estimator (:class:`~lossatlas.manifold.ReducedEmbedding`) fitted
under the atlas's memory budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .atlas_io import MAP
from .budget import MemoryBudget
from .vectors import VectorFile

if TYPE_CHECKING:
    from .manifold import ReducedEmbedding

__all__ = ["as_include", "embedding_kwargs", "fit_map"]


def embedding_kwargs(method: str, dim: int, seed: int, kwargs: dict) -> dict:
    """The constructor arguments of embedding ``method`` with ``dim`` latents: ``kwargs``
    over the atlas's defaults (``seed`` for "ae" and "umap", 4000 epochs for "ae")."""
    out = {"n_components": dim, **kwargs}
    if method in ("ae", "umap"):
        out.setdefault("seed", seed)
    if method == "ae":
        # on span coordinates an epoch costs microseconds; more of them buy faithfulness
        out.setdefault("epochs", 4000)
    return out


def as_include(include: dict[str, Tensor] | None, width: int, streamed: bool
               ) -> dict[str, Tensor]:
    """``embed(include=)`` as float32 tensors by name; ValueError unless each is
    [P, ``width``] and the population is in memory (not ``streamed``)."""
    include = {str(k): torch.as_tensor(v, dtype=torch.float32)
               for k, v in (include or {}).items()}
    for name, pts in include.items():
        if pts.ndim != 2 or pts.shape[1] != width:
            raise ValueError(f"Atlas.embed: include[{name!r}] must be [P, {width}], "
                             f"got {tuple(pts.shape)}")
    if include and streamed:
        raise ValueError("Atlas.embed: include= needs the population in memory (no "
                         "memory-mapped population or memory budget)")
    return include


def fit_map(X: Tensor | VectorFile, include: dict[str, Tensor], folder: Path, *,
            method: str, dim: int, exact: bool, standardize: bool, seed: int, kwargs: dict,
            budget: MemoryBudget, device: torch.device) -> ReducedEmbedding:
    """The map fitted on the population ``X`` (and the ``include`` points): span reduction
    by blocks of ``budget``, its basis on disk beside ``folder / MAP`` when ``X`` is
    streamed or the budget says so, then ``method`` with ``dim`` latents (seeded by
    ``seed``) and with ``exact`` the residual correction."""
    from .manifold import ReducedEmbedding, SpanReduction, make_embedding
    from .manifold.span import components_file

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    on_disk = isinstance(X, VectorFile) or budget.basis_on_disk()
    reduction = SpanReduction(
        standardize=standardize, block_size=budget.block_size(),
        components_path=components_file(folder / MAP) if on_disk else None,
        device=device if device.type == "cuda" else None)
    inner = make_embedding(method, **embedding_kwargs(method, dim, seed, kwargs))
    return ReducedEmbedding(inner, reduction, exact=exact).fit(X, include=include)
