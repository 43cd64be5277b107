"""``lossatlas surface interp|random|plane|pca|hessian``: 1-D/2-D/3-D slices of the loss
landscape, evaluated into a run directory with their figures
(:func:`lossatlas.surfaces.runner.run_slice`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ._common import (
    EVALUATION,
    Inputs,
    Json,
    Loaded,
    UsageError,
    Verbose,
    _check_name,
    _finish,
    _handle,
    _number,
    _progress,
    _setup_logging,
    out_option,
)

__all__ = ["surface_hessian", "surface_interp", "surface_pca", "surface_plane",
           "surface_random"]


def _load(inputs: Inputs) -> Loaded:
    """The shared options loaded; under torchrun without ``--device``, this rank's device."""
    from .. import distributed

    if distributed.init_from_env() and inputs.device is None:
        inputs = dataclasses.replace(inputs, device=str(distributed.device()))
    return inputs.load()


def _write_slice(kind: str, sl, ev, out_dir: Path, name: str, overwrite: bool,
                 as_json: bool, extra: dict | None = None) -> None:
    """Evaluate, draw and summarise the slice (`run_slice`) and print the summary (rank 0)."""
    from ..surfaces.runner import run_slice

    _, summary = run_slice(kind, sl, ev, out_dir, name, overwrite=overwrite,
                           progress=_progress(as_json))
    if summary is not None:
        _finish({**summary, **(extra or {})}, as_json, f"surface {kind}")


_OUT = out_option("runs/surface")
_NAME = typer.Option(None, help="Field name in the run (default: the slice kind).",
                     callback=_check_name)
_OVERWRITE = typer.Option(False, help="Recompute a stored field from scratch.")
_RES = typer.Option(51, help="Grid points per axis.", callback=_number(minimum=1))


@_handle
def surface_interp(
    a: Path, b: Path,
    points: int = typer.Option(25, "--points", "--steps", help="Points on [0, 1] (--steps: "
                               "the old name, deprecated).", callback=_number(minimum=2)),
    extrapolate: float = typer.Option(0.0, help="Extend t by this much on both sides.",
                                      callback=_number("nonnegative")),
    inputs: Inputs = EVALUATION, out_dir: Path = _OUT, name: str = _NAME,
    overwrite: bool = _OVERWRITE, as_json: bool = Json, verbose: bool = Verbose,
):
    """Loss along the straight line between checkpoints A and B."""
    import math

    from ..points import MAX_GRID_POINTS
    from ..surfaces import interpolation

    _setup_logging(verbose)
    if not math.isfinite(extrapolate) or extrapolate < 0:
        raise UsageError(f"--extrapolate must be a finite number >= 0, got {extrapolate}")
    if points < 2 or (points - 1) * (1 + 2 * extrapolate) + 1 > MAX_GRID_POINTS:
        raise UsageError(f"--points {points} with --extrapolate {extrapolate}: need 2 to "
                         f"{MAX_GRID_POINTS} points on the path")
    loaded = _load(inputs)
    ma, mb = loaded.models([a, b])
    ev = loaded.evaluator(ma)
    sl = interpolation(ma, mb, points=points, extrapolate=extrapolate, space=ev.space)
    _write_slice("interp", sl, ev, out_dir, name or "interp", overwrite, as_json)


@_handle
def surface_random(
    checkpoint: Path, dim: int = typer.Option(2, help="1, 2 or 3 random directions."),
    resolution: int = _RES, span: float = typer.Option(1.0, help="Coordinates in [-span, span].",
                               callback=_number("positive")),
    normalization: str = typer.Option("filter", help="filter | layer | model | none"),
    ignore: str = typer.Option("biasbn", help="biasbn (zero 1-D parameters) or none"),
    seed: int = typer.Option(0, help="Seed of the directions."),
    inputs: Inputs = EVALUATION, out_dir: Path = _OUT, name: str = _NAME,
    overwrite: bool = _OVERWRITE, as_json: bool = Json, verbose: bool = Verbose,
):
    """Slice around one checkpoint along random (filter-normalised) directions."""
    from ..surfaces import random_slice

    _setup_logging(verbose)
    loaded = _load(inputs)
    (m,) = loaded.models([checkpoint])
    ev = loaded.evaluator(m)
    sl = random_slice(m, dim=dim, resolution=resolution, span=span,
                      normalization=normalization, ignore=None if ignore == "none" else ignore,
                      seed=seed, space=ev.space)
    _write_slice("random", sl, ev, out_dir, name or f"random{dim}d", overwrite, as_json)


@_handle
def surface_plane(
    a: Path, b: Path, c: Path, resolution: int = _RES,
    margin: float = typer.Option(0.2, help="Extra room around the three models.",
                                 callback=_number("nonnegative")),
    inputs: Inputs = EVALUATION, out_dir: Path = _OUT, name: str = _NAME,
    overwrite: bool = _OVERWRITE, as_json: bool = Json, verbose: bool = Verbose,
):
    """The plane through three checkpoints."""
    from ..surfaces import plane

    _setup_logging(verbose)
    loaded = _load(inputs)
    ma, mb, mc = loaded.models([a, b, c])
    ev = loaded.evaluator(ma)
    sl = plane(ma, mb, mc, resolution=resolution, margin=margin, space=ev.space)
    _write_slice("plane", sl, ev, out_dir, name or "plane", overwrite, as_json)


@_handle
def surface_pca(
    trajectory: list[Path] = typer.Argument(..., help="Checkpoints in training order "
                                            "(files, a directory or a glob)."),
    resolution: int = _RES, margin: float = typer.Option(0.2, help="Extra room.",
                                                         callback=_number("nonnegative")),
    inputs: Inputs = EVALUATION, out_dir: Path = _OUT, name: str = _NAME,
    overwrite: bool = _OVERWRITE, as_json: bool = Json, verbose: bool = Verbose,
):
    """The PCA plane of a training trajectory, with the checkpoints projected onto it."""
    from ..population import Population
    from ..surfaces import pca_plane

    _setup_logging(verbose)
    loaded = _load(inputs)
    src = [str(p) for p in trajectory] if len(trajectory) > 1 else str(trajectory[0])
    pop = Population.from_checkpoints(src, inputs.model, factory_kwargs=loaded.factory_kwargs,
                                      bn=inputs.bn)
    if len(pop) < 4:
        raise UsageError(f"surface pca: need at least 4 checkpoints (two directions from the "
                         f"differences to the last, centred), got {len(pop)}")
    sl = pca_plane(pop.as_points(), resolution=resolution, margin=margin, space=pop.space)
    extra = {"explained_variance": [round(float(v), 4) for v in sl.explained_variance],
             "max_projection_error": float(max(sl.projection_error))}
    _write_slice("pca", sl, loaded.evaluator(pop.model(len(pop) - 1), space=pop.space),
                 out_dir, name or "pca", overwrite, as_json, extra)


@_handle
def surface_hessian(
    checkpoint: Path,
    dim: int = typer.Option(2, help="1, 2 or 3 Hessian eigenvector directions."),
    which: str = typer.Option("largest", help="largest (sharpest directions) | smallest "
                              "(most negative curvature)."),
    resolution: int = _RES,
    span: float = typer.Option(1.0, help="Coordinates in [-span, span] (parameter distance).",
                               callback=_number("positive")),
    seed: int = typer.Option(0, help="Seed of Lanczos' start vector."),
    inputs: Inputs = EVALUATION.without("output_key", "loss"), out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Slice around one checkpoint along its top (or bottom) Hessian eigenvectors; the
    eigenvalues (loss per squared parameter) are printed with the slice."""
    from ..surfaces import hessian_slice

    _setup_logging(verbose)
    if dim not in (1, 2, 3):
        raise UsageError(f"--dim must be 1, 2 or 3, got {dim}")
    if which not in ("largest", "smallest"):
        raise UsageError(f"--which must be 'largest' or 'smallest', got {which!r}")
    loaded = _load(inputs)
    (m,) = loaded.models([checkpoint])
    ev = loaded.evaluator(m)
    sl = hessian_slice(m, loaded.xy, dim=dim, resolution=resolution, span=span, which=which,
                       space=ev.space, bn=inputs.bn, device=inputs.device, seed=seed)
    extra = {"which": which, "eigenvalues": list(sl.info["eigenvalues"])}
    _write_slice("hessian", sl, ev, out_dir, name or f"hessian_{which}{dim}d", overwrite,
                 as_json, extra)
