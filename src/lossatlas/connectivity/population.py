"""Barrier matrices of a population: compute, write and draw, apart.

:func:`population_barrier_matrices` computes the loss-barrier matrix of a population's
models before (and after weight matching onto the first) alignment;
:func:`write_barriers` stores them in a run directory; :func:`plot_barriers` draws them
side by side; :func:`population_barriers` does all three (what the demo runs);
:func:`connect_population` does it for a population's final models in a run claimed for
it (what ``lossatlas connect --population`` runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._compat import renamed_argument

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from torch import nn

__all__ = ["connect_population", "plot_barriers", "population_barrier_matrices",
           "population_barriers", "write_barriers"]


@renamed_argument("steps", "points")
def population_barrier_matrices(
    models: Sequence[nn.Module], names: Sequence[str], data, align: bool = False,
    device=None, points: int = 25, bn: Literal["own", "recompute"] | None = None,
    loss_fn=None,
) -> dict[str, xr.DataArray]:
    """Loss-barrier matrices (Entezari definition, nats) of ``models`` on ``data``.

    Returns ``{"before": DataArray[model, model]}`` and, with ``align``, ``"after"``:
    the matrix once every model is permuted onto ``models[0]`` by weight matching (the
    permutation spec traced once, on the data's first samples). ``points`` points on each
    straight path; ``bn`` the BatchNorm policy (default: statistics recomputed at every
    point); ``loss_fn`` as in :func:`barrier_matrix` (default cross-entropy).
    """
    from ..symmetry import permutation_spec, weight_matching
    from .barriers import barrier_matrix

    mats = {"before": barrier_matrix(models, data, points=points, names=names, device=device,
                                     bn=bn, loss_fn=loss_fn)}
    if align:
        ref = models[0]
        spec = permutation_spec(ref, data=data)
        aligned = [ref] + [weight_matching(ref, m, spec) for m in models[1:]]
        mats["after"] = barrier_matrix(aligned, data, points=points, names=names,
                                       device=device, bn=bn, loss_fn=loss_fn)
    return mats


def write_barriers(out_dir: str | Path, mats: dict[str, xr.DataArray], names: Sequence[str],
                   align: bool) -> dict[str, Any]:
    """Store ``mats`` (from :func:`population_barrier_matrices`) in the run directory
    ``out_dir``: fields ``barriers`` (and ``barriers_aligned``), variable
    ``loss_barrier`` in nats, and ``OUT/connectivity.json`` (names, definition, units,
    BatchNorm policy, alignment, the matrices as lists). Returns the JSON dict."""
    from ..store import Run, atomic_write_json

    out_dir = Path(out_dir)
    run = Run(out_dir)
    for k, v in mats.items():
        v = v.copy()
        v.attrs["units"] = "nats"
        run.save_dataset("barriers" if k == "before" else "barriers_aligned",
                         v.to_dataset(name="loss_barrier"))
    result = {
        "names": list(names), "definition": "entezari", "units": "nats",
        "bn": mats["before"].attrs.get("bn"),
        "alignment": "weight matching onto the first model" if align else None,
        **{k: np.asarray(v.values).tolist() for k, v in mats.items()},
    }
    atomic_write_json(out_dir / "connectivity.json", result)
    return result


def plot_barriers(mats: dict[str, xr.DataArray], names: Sequence[str],
                  axes: Sequence[Axes] | None = None) -> list[Axes]:
    """The barrier matrices side by side (one heat map each, a shared colour scale from 0
    in nats); on ``axes`` (one per matrix) or a new figure. Returns the axes."""
    if axes is None:
        from matplotlib.figure import Figure

        grid = Figure(figsize=(5.2 * len(mats), 4.4)).subplots(1, len(mats), squeeze=False)
        axes = list(grid[0])
    fig = axes[0].figure
    vmax = max(float(np.nanmax(np.asarray(v.values))) for v in mats.values())
    for ax, (k, v) in zip(axes, mats.items(), strict=True):
        im = ax.imshow(np.asarray(v.values), cmap="cividis", vmin=0, vmax=max(vmax, 1e-9))
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_title(f"loss barrier, {k} alignment")
        fig.colorbar(im, ax=ax, label="barrier (nats)")
    fig.tight_layout()
    return list(axes)


@renamed_argument("steps", "points")
def population_barriers(models: Sequence[nn.Module], names: Sequence[str], xy,
                        out_dir: str | Path, align_models: bool, device=None,
                        points: int = 25, progress: bool = False,
                        bn: Literal["own", "recompute"] | None = None) -> dict[str, Any]:
    """Barrier matrices of ``models`` before (and after weight matching onto the first),
    under the BatchNorm policy ``bn`` (default: statistics recomputed at every point).

    Writes the fields, ``OUT/connectivity.json`` (matrices in nats, names, definition)
    and ``OUT/barriers.png``; returns the JSON dict. (``progress`` is accepted for
    callers that pass it; the barrier evaluation shows none.)
    """
    from ..plotting import save_figure

    mats = population_barrier_matrices(models, names, xy, align_models, device, points, bn)
    result = write_barriers(out_dir, mats, names, align_models)
    save_figure(plot_barriers(mats, names)[0].figure, Path(out_dir) / "barriers.png",
                close=True)
    return result


def connect_population(pop: Any, xy, out_dir: str | Path, align_models: bool = False,
                       device=None, points: int = 25, progress: bool = False,
                       bn: Literal["own", "recompute"] | None = None,
                       overwrite: bool = False) -> dict[str, Any]:
    """``lossatlas connect --population`` as a library call: the barrier matrices of the
    final model of every run of the :class:`~lossatlas.population.Population` ``pop``
    (:meth:`~lossatlas.population.Population.final_indices`, named by their
    ``variant`` label, else their index), through :func:`population_barriers` into the
    run ``out_dir``, which is first claimed for ``pop`` (a run holding another
    population's results is refused; ``overwrite`` starts it afresh:
    :func:`lossatlas.fingerprint.claim_run`).

    Returns :func:`population_barriers`'s dict (matrices in nats, ``names``, ...).
    """
    from ..fingerprint import claim_run
    from ..store import Run

    claim_run(Run(out_dir), pop, overwrite)  # one run directory, one population
    idx = pop.final_indices()
    names = [str(pop.labels[i].get("variant", i)) for i in idx]
    return population_barriers([pop.model(i) for i in idx], names, xy, out_dir, align_models,
                               device, points=points, progress=progress, bn=bn)
