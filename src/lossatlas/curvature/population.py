"""Terrain of a population: the curvature measures of its models, stored in a run.

:func:`population_terrain` computes :func:`~lossatlas.curvature.terrain` for a
population's (final) models and stores it in a run directory with
:func:`write_terrain`, merged (:func:`merge_terrain`) with the measures already stored
there for the same models. ``write_terrain`` also stores :meth:`Atlas.terrain`'s result.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["merge_terrain", "population_terrain", "write_terrain"]


# the setting of terrain()'s attrs that belongs to each measure's variable
_SETTING_OF = {"k": "eigenvalues", "num_probes": "trace", "rho": "epsilon_sharpness",
               "llc_kwargs": "llc_mean"}


def merge_terrain(old, new):
    """``new`` terrain measures added to the ``old`` stored ones (``hessian`` then ``llc``
    into one run keeps both): new variables replace old ones of the same name (and those
    sharing a dimension other than ``model`` with them, e.g. eigenvalues at another
    ``rank``); each setting in attrs is the one its measure was computed with. ``new``
    alone when the models, the mode or the BatchNorm policy differ."""
    if (old is None or "model" not in old.dims or "model" not in new.dims
            or list(old["model"].values) != list(new["model"].values)
            or any(old.attrs.get(a) != new.attrs.get(a) for a in ("mode", "bn"))):
        return new
    other_dims = set(new.dims) - {"model"}
    keep = [v for v in old.data_vars
            if v not in new.data_vars and not set(old[v].dims) & other_dims]
    rest = old[keep].drop_vars([c for c in old.coords if c != "model" and c in other_dims],
                               errors="ignore")
    merged = rest.merge(new, compat="override", join="exact")
    attrs = dict(old.attrs)
    for key, value in new.attrs.items():
        if key not in _SETTING_OF or _SETTING_OF[key] in new.data_vars:
            attrs[key] = value
    merged.attrs = attrs
    return merged


def write_terrain(out_dir: str | os.PathLike, ds: xr.Dataset, indices: Sequence[int], *,
                  population: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Store a terrain (:func:`~lossatlas.curvature.terrain` or :meth:`Atlas.terrain`
    result, dim ``model``) of the population models ``indices`` in the run ``out_dir``.

    Merged (:func:`merge_terrain`) with the measures stored there for the same
    ``indices``, written as ``OUT/fields/terrain.zarr`` and ``OUT/terrain.json``. With
    ``population``, the run is first claimed for it (:func:`lossatlas.fingerprint.claim_run`;
    ``overwrite`` starts it afresh); without, the caller has claimed it.

    Returns the JSON table written: ``models`` (the ``model`` coordinate as text),
    ``indices``, ``bn`` and one list per measure, in the dataset's units (Hessian
    eigenvalues and trace of the loss in nats per squared parameter unit, sharpness as
    a loss increase in nats, LLC dimensionless).
    """
    from ..fingerprint import claim_run
    from ..store import Run, atomic_write_json

    out_dir = Path(out_dir)
    idx = [int(i) for i in indices]
    if "model" not in ds.dims or ds.sizes["model"] != len(idx):
        raise ValueError(
            f"write_terrain: the terrain has {ds.sizes.get('model', 0)} models (dim 'model') "
            f"but {len(idx)} indices were given")
    run = Run(out_dir)
    if population is not None:
        claim_run(run, population, overwrite)
    old = run.open_field("terrain") if run.has_field("terrain") else None
    stored = json.loads((out_dir / "terrain.json").read_text()) if (
        out_dir / "terrain.json").is_file() else {}
    ds = merge_terrain(old if stored.get("indices") == idx else None, ds)
    run.save_dataset("terrain", ds)
    table = {"models": [str(m) for m in ds["model"].values], "indices": idx,
             "bn": ds.attrs.get("bn")}
    for v in ds.data_vars:
        table[v] = np.asarray(ds[v].values).tolist()
    atomic_write_json(out_dir / "terrain.json", table)
    return table


def population_terrain(pop, xy, out_dir: Path, measures=("eigenvalues", "trace", "sharpness"),
                       k: int = 3, llc_kwargs: dict | None = None, device=None,
                       final_only: bool = True, num_probes: int = 99,
                       bn: str | None = None, overwrite: bool = False) -> dict:
    """Terrain (top eigenvalues, trace, sharpness, LLC) of a population's models, each
    model with its own stored BatchNorm statistics (``bn="own"``) or statistics
    recomputed at it (default): :func:`~lossatlas.curvature.terrain` then
    :func:`write_terrain`.

    Stored as ``OUT/fields/terrain.zarr`` (dim ``model``) and ``OUT/terrain.json``,
    merged with the measures already stored there for the same models (see
    :func:`merge_terrain`). A run holding another population's results is refused
    before anything is computed, or with ``overwrite`` started afresh
    (:meth:`Run.claim_population`). Returns the table written (see `write_terrain`).
    """
    from ..fingerprint import claim_run
    from ..store import Run
    from .terrain import terrain

    claim_run(Run(out_dir), pop, overwrite)
    idx = pop.final_indices() if final_only else list(range(len(pop)))
    names = [f"{pop.labels[i].get('variant', i)}" + (f"/e{pop.labels[i]['epoch']}"
             if not final_only and "epoch" in pop.labels[i] else "") for i in idx]
    models = [pop.model(i) for i in idx]  # the checkpoints as saved, statistics included
    ds = terrain(models, models[0], xy, measures=list(measures), k=k, num_probes=num_probes,
                 llc_kwargs=llc_kwargs, device=device, labels=names, bn=bn)
    return write_terrain(out_dir, ds, idx)
