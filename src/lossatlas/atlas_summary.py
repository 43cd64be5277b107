"""The summary of an atlas: a JSON-able dict of the stages done (``Atlas.summary``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import atlas_checks

if TYPE_CHECKING:
    from .atlas import Atlas

__all__ = ["summary"]


def summary(atlas: Atlas) -> dict[str, Any]:
    """``run`` (the run directory), ``models``, ``bn``, ``loss``, and per stage done:
    ``embedding`` (the map's record in ``run.json``), ``field`` (samples, rounds),
    ``basins`` (counts and the variants per basin holding models)."""
    out: dict[str, Any] = {"run": str(atlas.path), "models": len(atlas.population),
                           "bn": atlas.bn, "loss": atlas.evaluator.loss_name}
    if "embedding_" in atlas.__dict__:
        out["embedding"] = atlas.run.read().get("embedding")
    if "field_" in atlas.__dict__:
        out["field"] = {"samples": atlas.field_.n, "rounds": atlas.field_.rounds}
    if "tree_" in atlas.__dict__:
        s = atlas_checks.basin_summary(atlas)
        out["basins"] = {"num_basins": s["num_basins"], "num_variants": s["num_variants"],
                         "num_model_basins": s["num_model_basins"],
                         "variants_per_basin": [b["variants"] for b in s["basins"]
                                                if b["models"]]}
    return out
