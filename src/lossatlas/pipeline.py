"""The pipelines the CLI and the demo run, as library functions a notebook can call.

:func:`build_atlas` (embed, field, topology, faithfulness and figures of a population,
with the summary the CLI prints), :func:`write_slice` (a slice of the landscape
evaluated into a run directory, with its figures) and :func:`measured_on` (what data
the loss is measured on, for the report).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

    from .atlas import Atlas
    from .evaluate import Evaluator

__all__ = ["build_atlas", "measured_on", "write_slice"]


def _hold_out(pop, fraction: float, seed: int = 0) -> tuple[Any, Any]:
    """``(kept, held_out)`` of :meth:`Population.holdout`, the kept part carrying the
    whole population's fingerprint: the run it is mapped into holds the whole
    population's results (a later ``hessian``/``llc``/``connect`` of the whole population
    into the same run is the same population)."""
    from .fingerprint import population_fingerprint

    whole = population_fingerprint(pop)
    kept, held = pop.holdout(fraction, seed=seed)
    kept.__dict__["_lossatlas_fingerprint"] = whole
    return kept, held


def build_atlas(pop, xy, out_dir: str | Path, method: str, dim: int, resolution: int,
                budget: int, tol: float, threshold: str, device, precision, progress: bool,
                embed_kwargs: dict | None = None, memory_budget: int | None = None,
                output=None, loss_fn=None, held_out=None, overwrite: bool = False,
                data: dict[str, str] | None = None, holdout: float | None = None
                ) -> tuple[Atlas, dict[str, Any] | None]:
    """Embed, field, topology, faithfulness (with the residual correction and without it,
    and at the ``held_out`` population's checkpoints, which the map was not fitted to)
    and figures; returns (atlas, summary). ``data`` describes the data
    (``DatasetSplits.describe()`` and what the loss is measured on), stored in
    ``atlas_summary.json`` for the report. ``holdout``: a fraction in (0, 1) of ``pop``
    set aside as ``held_out`` (see :func:`_hold_out`; seed 0), the map fitted to the rest."""
    from . import distributed
    from .atlas import Atlas
    from .atlas_plot import plot_atlas_persistence, plot_atlas_tree, plot_landscape, save_figure
    from .store import atomic_write_json

    if holdout:
        if held_out is not None:
            raise ValueError("build_atlas: give holdout= (a fraction of pop) or held_out= "
                             "(a population), not both")
        pop, held_out = _hold_out(pop, holdout)
    out_dir = Path(out_dir)
    atlas = Atlas(pop, xy, out_dir, device=device, precision=precision,
                  memory_budget=memory_budget, output=output, loss_fn=loss_fn,
                  overwrite=overwrite)
    atlas.embed(method, dim=dim, **(embed_kwargs or {}))
    atlas.field(resolution=resolution, budget=budget, tol=tol, progress=progress)
    try:
        thr: float | str = float(threshold)
    except ValueError:
        thr = threshold
    atlas.topology(threshold=thr)
    faith = atlas.faithfulness()
    raw = atlas.raw_check(resolution=min(resolution, 32), progress=progress)
    held = None
    if held_out is not None and len(held_out):
        held = atlas.overlay(held_out.as_points(), "holdout",
                             labels=[str(lab.get("variant", i)) for i, lab in
                                     enumerate(held_out.labels)])
    if not distributed.is_main():  # under torchrun rank 0 draws and reports
        return atlas, None
    plots = [(plot_landscape, "landscape.png")] if dim == 2 else []
    plots += [(plot_atlas_tree, "merge_tree.png"), (plot_atlas_persistence, "persistence.png")]
    figs = [save_figure(plot(atlas).figure, out_dir / name) for plot, name in plots]
    s = atlas.summary()
    summary = {
        "run": str(out_dir), "models": len(pop), "method": method, "dim": dim,
        "bn": atlas.bn, "bn_text": atlas.evaluator.bn_text, "loss": s["loss"], "samples": s["field"]["samples"], "basins": s["basins"]["num_basins"],
        "basins_with_models": s["basins"]["num_model_basins"],
        "variants": s["basins"]["num_variants"],
        "variants_per_basin": s["basins"]["variants_per_basin"],
        "reconstruction_mse": faith["reconstruction_mse_raw"],
        "decoded_loss_rel_error_median": faith["decoded_loss_relative_error_median"],
        "field_error_decades_median": faith["median_decades"]["field_loo"],
        "basins_with_models_uncorrected": raw["raw"]["num_model_basins"],
        "mixed_basins": raw["corrected"]["mixed_basins"],
        "mixed_basins_uncorrected": raw["raw"]["mixed_basins"],
        "figures": [str(f) for f in figs],
    }
    if held is not None:
        summary.update(holdout_models=len(held_out),
                       holdout_median_abs_error=held["median_abs_error"])
    if data:
        summary["data"] = dict(data)
    atomic_write_json(out_dir / "atlas_summary.json", summary)
    return atlas, summary


def write_slice(kind: str, sl, ev: Evaluator, out_dir: str | Path, name: str,
                overwrite: bool = False, progress: bool = True
                ) -> tuple[xr.Dataset, list[Path]]:
    """Evaluate the slice ``sl`` (a 1-D, 2-D or 3-D point source of
    :mod:`lossatlas.surfaces`) with ``ev`` into the field ``name`` of the run directory
    ``out_dir`` (resumed unless ``overwrite``) and draw it there: ``NAME.png`` (a curve,
    a contour, or for ``kind="pca"`` the trajectory) and, in 2-D, ``NAME_3d.png``.

    Returns ``(field, figure paths)``; under torchrun only rank 0 draws (the others
    return no figures).
    """
    from . import distributed
    from .store import Run
    from .surfaces import plot_contour, plot_curve, plot_surface, plot_trajectory, save_figure
    from .surfaces.slices import slice_field

    out_dir = Path(out_dir)
    ds = slice_field(ev, sl, Run(out_dir), name, progress=progress, overwrite=overwrite)
    figs: list[Path] = []
    if not distributed.is_main():
        return ds, figs
    small = any(n < 2 for n in ds["loss"].shape)
    ndim = len(sl.dims)
    if ndim == 1:
        figs.append(save_figure(plot_curve(ds), out_dir / f"{name}.png"))
    elif ndim == 2 and not small:
        if kind == "pca":
            figs.append(save_figure(plot_trajectory(sl, ds), out_dir / f"{name}.png"))
        else:
            figs.append(save_figure(plot_contour(ds, points=sl.anchors or None),
                                    out_dir / f"{name}.png"))
        figs.append(save_figure(plot_surface(ds), out_dir / f"{name}_3d.png"))
    return ds, figs


def measured_on(splits, split: str, n: int, samples: int | None) -> dict[str, str]:
    """``splits.describe()`` (a `DatasetSplits`) plus the samples the landscape's loss is
    measured on: the first ``n`` (when cut to ``samples``) or all ``n`` of the
    ``split`` ("train" or "test")."""
    part = "training data" if split == "train" else "test data"
    if split == "test" and splits.test_is_train:
        part = "training data (no held-out test data)"
    cut = f"the first {n} samples" if samples is not None else f"all {n} samples"
    return {**splits.describe(), "loss measured on": f"{cut} of the {part}"}
