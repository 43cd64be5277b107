"""``lossatlas surface interp|random|plane|pca``: 1-D/2-D/3-D slices of the loss
landscape, evaluated into a run directory with their figures
(:func:`lossatlas.pipeline.write_slice`)."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import typer

from ._common import (
    _BN,
    _DATA,
    _DATA_ARG,
    _DEVICE,
    _LOSS,
    _MODEL,
    _MODEL_ARG,
    _OUTPUT_KEY,
    _PRECISION,
    _SAMPLES,
    _SPLIT,
    _TEST_DATA,
    Json,
    UsageError,
    Verbose,
    _check_name,
    _check_out,
    _eval_options,
    _finish,
    _handle,
    _load_data,
    _load_models,
    _model_factory,
    _number,
    _progress,
    _setup_logging,
)

__all__ = ["surface_hessian", "surface_interp", "surface_pca", "surface_plane",
           "surface_random"]


def _surface_common(model, model_arg, data, data_arg, split, samples, device, precision,
                    test_data=None, ev_options: dict | None = None):
    from .. import distributed
    from ..evaluate import Evaluator

    if distributed.init_from_env() and device is None:
        device = str(distributed.device())
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    return splits, xy, factory, kwargs, functools.partial(
        Evaluator, data=xy, device=device, precision=precision, **(ev_options or {}))


#: Grids of more points than this get an estimate of their time and memory (a warning),
#: and are refused when the estimate is over the machine's memory or a week.
WARN_GRID_POINTS = 10**6
#: Host bytes per grid point of a 2-D slice with its figures (measured: a 3000 x 3000
#: random slice took 3.8 GB, most of it matplotlib's contours and 3-D surface).
BYTES_PER_POINT = {1: 64, 2: 420, 3: 16}


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _human_seconds(t: float) -> str:
    if t < 120:
        return f"{t:.0f} s"
    if t < 7200:
        return f"{t / 60:.0f} min"
    return f"{t / 3600:.1f} h" if t < 172800 else f"{t / 86400:.1f} days"


def _check_grid_cost(sl, ev) -> None:
    """A grid of over `WARN_GRID_POINTS` points: estimate its memory (`BYTES_PER_POINT`)
    and time (a few points timed on this device) and warn, or refuse (one line with the
    estimate) when it would not fit the machine's memory or would take over a week."""
    import math
    import os

    shape = tuple(int(n) for n in sl.source.shape)
    points = math.prod(shape)
    if points <= WARN_GRID_POINTS:
        return
    memory = points * BYTES_PER_POINT.get(len(shape), 16)
    probe = min(32, points)
    x = sl.source.points(0, probe)
    ev.evaluate(x[:4])  # warm-up
    t = time.perf_counter()
    ev.evaluate(x)
    seconds = (time.perf_counter() - t) / probe * points
    grid = " x ".join(map(str, shape))
    estimate = (f"a grid of {grid} = {points:.3g} points: about {_human_bytes(memory)} of "
                f"memory and {_human_seconds(seconds)} on {ev.device}")
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = None
    if available is not None and memory > available:
        raise UsageError(f"{estimate}, over the {_human_bytes(available)} of free memory; "
                         "lower --resolution")
    if seconds > 7 * 86400:
        raise UsageError(f"{estimate}; lower --resolution")
    sys.stderr.write(f"warning: {estimate}\n")

def _write_slice(kind, sl, ev, out_dir: Path, name: str, overwrite: bool, as_json: bool,
                 extra: dict | None = None):
    """Refuse (or warn about) a costly grid, evaluate and draw the slice
    (:func:`~lossatlas.pipeline.write_slice`) and print its summary (rank 0)."""
    import numpy as np

    from .. import distributed
    from ..pipeline import write_slice
    from ..store import Run

    t0 = time.perf_counter()
    run = Run(out_dir)
    if overwrite or not run.has_field(name):
        _check_grid_cost(sl, ev)
    ds, figs = write_slice(kind, sl, ev, out_dir, name, overwrite=overwrite,
                           progress=_progress(as_json))
    if not distributed.is_main():
        return ds
    loss = ds["loss"].values
    finite = loss[np.isfinite(loss)]
    summary = {
        "field": name, "kind": kind, "shape": "x".join(map(str, ds["loss"].shape)),
        "points": int(loss.size), "min_loss": float(finite.min()) if finite.size else None,
        "max_loss": float(finite.max()) if finite.size else None,
        "nonfinite": int(ds.attrs.get("nonfinite", 0)),
        "seconds": round(time.perf_counter() - t0, 2),
        "points_per_second": round(loss.size / max(time.perf_counter() - t0, 1e-9), 1),
        "store": str(run.field_path(name)), "figures": [str(f) for f in figs], **(extra or {}),
    }
    _finish(summary, as_json, f"surface {kind}")
    return ds


_OUT = typer.Option(Path("runs/surface"), "--out", help="Run directory.", callback=_check_out)
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
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
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
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    ma, mb = _load_models([a, b], factory)
    ev = make_ev(ma)
    sl = interpolation(ma, mb, steps=points, extrapolate=extrapolate, space=ev.space)
    _write_slice("interp", sl, ev, out_dir, name or "interp", overwrite, as_json)


@_handle
def surface_random(
    checkpoint: Path, dim: int = typer.Option(2, help="1, 2 or 3 random directions."),
    resolution: int = _RES, span: float = typer.Option(1.0, help="Coordinates in [-span, span].",
                               callback=_number("positive")),
    normalization: str = typer.Option("filter", help="filter | layer | model | none"),
    ignore: str = typer.Option("biasbn", help="biasbn (zero 1-D parameters) or none"),
    seed: int = typer.Option(0, help="Seed of the directions."),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Slice around one checkpoint along random (filter-normalised) directions."""
    from ..surfaces import random_slice

    _setup_logging(verbose)
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    (m,) = _load_models([checkpoint], factory)
    ev = make_ev(m)
    sl = random_slice(m, ndim=dim, resolution=resolution, span=span,
                      normalization=normalization, ignore=None if ignore == "none" else ignore,
                      seed=seed, space=ev.space)
    _write_slice("random", sl, ev, out_dir, name or f"random{dim}d", overwrite, as_json)


@_handle
def surface_plane(
    a: Path, b: Path, c: Path, resolution: int = _RES,
    margin: float = typer.Option(0.2, help="Extra room around the three models.",
                                 callback=_number("nonnegative")),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """The plane through three checkpoints."""
    from ..surfaces import plane

    _setup_logging(verbose)
    _, _, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                samples, device, precision, test_data,
                                                _eval_options(bn, output_key, loss))
    ma, mb, mc = _load_models([a, b, c], factory)
    ev = make_ev(ma)
    sl = plane(ma, mb, mc, resolution=resolution, margin=margin, space=ev.space)
    _write_slice("plane", sl, ev, out_dir, name or "plane", overwrite, as_json)


@_handle
def surface_pca(
    trajectory: list[Path] = typer.Argument(..., help="Checkpoints in training order "
                                            "(files, a directory or a glob)."),
    resolution: int = _RES, margin: float = typer.Option(0.2, help="Extra room.",
                                                         callback=_number("nonnegative")),
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
    device: str = _DEVICE, precision: str = _PRECISION, out_dir: Path = _OUT,
    name: str = _NAME, overwrite: bool = _OVERWRITE, as_json: bool = Json,
    verbose: bool = Verbose,
):
    """The PCA plane of a training trajectory, with the checkpoints projected onto it."""
    from ..population import Population
    from ..surfaces import pca_plane

    _setup_logging(verbose)
    opts = _eval_options(bn, output_key, loss)
    _, _, factory, kwargs, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                     samples, device, precision, test_data,
                                                     opts)
    src = [str(p) for p in trajectory] if len(trajectory) > 1 else str(trajectory[0])
    pop = Population.from_checkpoints(src, model, factory_kwargs=kwargs, bn=bn)
    if len(pop) < 4:
        raise UsageError(f"surface pca: need at least 4 checkpoints (two directions from the "
                         f"differences to the last, centred), got {len(pop)}")
    sl = pca_plane(pop.as_points(), resolution=resolution, margin=margin, space=pop.space)
    extra = {"explained_variance": [round(float(v), 4) for v in sl.explained_variance],
             "max_projection_error": float(max(sl.projection_error))}
    _write_slice("pca", sl, make_ev(pop.model(len(pop) - 1), space=pop.space), out_dir,
                 name or "pca", overwrite, as_json, extra)



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
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, test_data: str = _TEST_DATA, split: str = _SPLIT,
    samples: int = _SAMPLES, bn: str = _BN, device: str = _DEVICE,
    precision: str = _PRECISION, out_dir: Path = _OUT, name: str = _NAME,
    overwrite: bool = _OVERWRITE, as_json: bool = Json, verbose: bool = Verbose,
):
    """Slice around one checkpoint along its top (or bottom) Hessian eigenvectors; the
    eigenvalues (loss per squared parameter) are printed with the slice."""
    from ..surfaces import hessian_slice

    _setup_logging(verbose)
    if dim not in (1, 2, 3):
        raise UsageError(f"--dim must be 1, 2 or 3, got {dim}")
    if which not in ("largest", "smallest"):
        raise UsageError(f"--which must be 'largest' or 'smallest', got {which!r}")
    _, xy, factory, _, make_ev = _surface_common(model, model_arg, data, data_arg, split,
                                                 samples, device, precision, test_data,
                                                 _eval_options(bn, None, None))
    (m,) = _load_models([checkpoint], factory)
    ev = make_ev(m)
    sl = hessian_slice(m, xy, ndim=dim, resolution=resolution, span=span, which=which,
                       space=ev.space, bn=bn, device=device, seed=seed)
    extra = {"which": which, "eigenvalues": list(sl.info["eigenvalues"])}
    _write_slice("hessian", sl, ev, out_dir, name or f"hessian_{which}{dim}d", overwrite,
                 as_json, extra)
