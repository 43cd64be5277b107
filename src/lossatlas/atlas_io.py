"""An atlas's run folder: whose run it is, what it records, and the stored map's reuse.

:func:`claim` makes the run one population's (rank 0 decides under torchrun);
:func:`write_population` records the population in ``RUN/population.json``;
:func:`map_config` is what ``RUN/embedding/embedding.json`` records of a map,
:func:`stored_map` the map stored under that same record (None otherwise) and
:func:`store_map` writes a fitted one (``RUN/embedding/map`` with
:func:`~lossatlas.atlas_checks.save_map`, the record, ``run.json["embedding"]``);
:func:`decoder_key` names the map's decoder for the fields evaluated through it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from . import atlas_checks, distributed
from .store import Run, atomic_write_json
from .vectors import VectorFile

if TYPE_CHECKING:
    from .evaluate import Evaluator
    from .manifold import ReducedEmbedding

__all__ = ["MAP", "claim", "decoder_key", "digest", "map_config", "store_map", "stored_map",
           "write_population"]

MAP = "map"  # RUN/embedding/map: the fitted map (Embedding.save)


def digest(t: Tensor) -> str:
    """The first 16 hex digits of the SHA-256 of ``t``'s bytes (on the CPU)."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def claim(run: Run, population, overwrite: bool) -> None:
    """One run, one population: refuse a run holding another population's results
    (StaleResultError), or with ``overwrite`` empty it and start afresh; rank 0
    decides under torchrun."""
    from .fingerprint import population_fingerprint
    from .store import StaleResultError

    error = None
    if distributed.is_main():
        try:
            if overwrite:
                run.clear_results()
            run.claim_population(population_fingerprint(population), {
                "models": len(population), "dim": int(population.space.dim),
                "bn": getattr(population, "bn", None)})
        except StaleResultError as err:
            error = str(err)
    error = distributed.broadcast_object(error)
    if error is not None:
        raise StaleResultError(error)


def write_population(path: Path, population, evaluator: Evaluator) -> None:
    """Write ``path / "population.json"``: the models' labels and paths, the parameter
    count, the BatchNorm policy and the loss's name."""
    atomic_write_json(path / "population.json", {
        "labels": population.labels, "paths": getattr(population, "paths", None),
        "dim": int(population.space.dim), "bn": evaluator.bn,
        "bn_text": evaluator.bn_text, "loss": evaluator.loss_name})


def map_config(method: str, dim: int, exact: bool, standardize: bool, seed: int,
               kwargs: dict, X: Tensor | VectorFile, include: dict[str, Tensor]
               ) -> dict[str, Any]:
    """The record of a map (``embedding.json``, ``run.json["embedding"]``): its settings
    and the digests of the population ``X`` and of the included points; a stored map is
    reused only under an equal record."""
    config = {"method": method, "dim": dim, "exact": exact, "standardize": standardize,
              "seed": seed, "kwargs": kwargs,
              "population": X.digest() if isinstance(X, VectorFile) else digest(X),
              "include": {k: digest(v) for k, v in include.items()}}
    if include and exact:  # the correction is pinned to zero at included points
        config["correction"] = "zero at included points"
    return config


def stored_map(folder: Path, config: dict, exact: bool, run: Path) -> ReducedEmbedding | None:
    """The map stored in ``folder`` when its ``embedding.json`` equals ``config``
    (:func:`~lossatlas.atlas_checks.load_map`), else None."""
    meta_path = folder / "embedding.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) == config:
        return atlas_checks.load_map(folder, MAP, exact, run)
    return None


def store_map(emb: ReducedEmbedding, folder: Path, config: dict, run: Run) -> None:
    """Store the fitted map in ``folder`` (:func:`~lossatlas.atlas_checks.save_map`), its
    record ``config`` as ``embedding.json`` and in ``run.json["embedding"]``."""
    atlas_checks.save_map(emb, folder, MAP)
    atomic_write_json(folder / "embedding.json", config)
    run.update("embedding", config)


def decoder_key(codes: Tensor, run: Run) -> str:
    """The key of the map's decoder: the codes' digest and the run's map record."""
    return digest(codes) + json.dumps(run.read().get("embedding", {}), sort_keys=True)
