"""CLI verbs of connectivity and symmetry: ``lossatlas connect`` (two models,
:func:`lossatlas.connectivity.pair.connect_pair`, or a population,
:func:`lossatlas.connectivity.population.connect_population`) and ``lossatlas align``
(:func:`lossatlas.symmetry.pair.align_pair`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    _OVERWRITE_RUN,
    EVALUATION,
    POPULATION,
    Inputs,
    Json,
    Loaded,
    UsageError,
    Verbose,
    _finish,
    _floats,
    _handle,
    _headline_finite,
    _matrix_table,
    _number,
    _progress,
    _setup_logging,
    out_option,
)

__all__ = ["align", "connect"]


def _connect_population(loaded: Loaded, population: str, align_models: bool, out_dir: Path,
                        overwrite: bool, as_json: bool) -> None:
    """Population mode of ``connect``: the barrier matrices of the population's final
    models (`connect_population`) into ``OUT``, printed as tables."""
    import numpy as np

    from ..connectivity.population import connect_population

    t0 = time.perf_counter()
    pop = loaded.population(population)
    res = connect_population(pop, loaded.xy, out_dir, align_models, loaded.inputs.device,
                             progress=_progress(as_json), bn=loaded.inputs.bn,
                             overwrite=overwrite)
    summary = {"models": len(res["names"]), "bn": res["bn"],
               "mean_barrier_before": float(np.mean(res["before"]))}
    if "after" in res:
        summary["mean_barrier_after"] = float(np.mean(res["after"]))
    summary.update(store=str(out_dir / "connectivity.json"),
                   seconds=round(time.perf_counter() - t0, 2))
    tables = [_matrix_table(f"barrier (nats), {k} alignment", res["names"], res[k])
              for k in ("before", "after") if k in res]
    _finish(summary, as_json, "connect (population)", tables)


def _layer_table(rows: dict[str, dict[str, float]]):
    """`layer_noise_rows` as a printable table."""
    cols = list(next(iter(rows.values()))) if rows else []
    return _matrix_table("per layer: barrier (loss) and noise tolerance (scale)", list(rows),
                         [[r[c] for c in cols] for r in rows.values()], cols)


@_handle
def connect(
    a: Path = typer.Argument(None, help="First checkpoint."),
    b: Path = typer.Argument(None, help="Second checkpoint."),
    curve: str = typer.Option("bezier", help="bezier | polychain | linear"),
    train_steps: int = typer.Option(1000, help="Curve training steps (mini-batches).",
                                    callback=_number(minimum=1)),
    points: int = typer.Option(61, help="Points evaluated along the path.",
                               callback=_number(minimum=2)),
    population: str = typer.Option(None, help="Population mode: checkpoint dir or train run; "
                                   "writes the barrier matrix of its final models."),
    align_models: bool = typer.Option(False, "--align", help="Population mode: also the "
                                      "matrix after weight matching."),
    layer_noise: bool = typer.Option(
        False, "--layer-noise", help="Also per layer: the barrier with only that layer "
        "interpolated, and each model's loss rise under filter-normalised noise in that "
        "layer alone (writes RUN/fields/layer_noise.zarr)."),
    noise_scales: str = typer.Option("0.05,0.1,0.2,0.5,1.0", "--noise-scales",
                                     help="With --layer-noise: comma-separated noise scales "
                                     "(relative to each filter's norm)."),
    noise_draws: int = typer.Option(4, "--noise-draws", help="With --layer-noise: noise "
                                    "draws per layer and scale.", callback=_number(minimum=1)),
    inputs: Inputs = POPULATION, out_dir: Path = out_option("runs/connect"),
    overwrite: bool = _OVERWRITE_RUN, as_json: bool = Json, verbose: bool = Verbose,
):
    """Loss along the straight path and along a trained curve between two models
    (Garipov et al. 2018), or the barrier matrix of a population."""
    from ..connectivity.pair import CURVES, connect_pair

    _setup_logging(verbose)
    if population is None and (a is None or b is None):
        raise UsageError("give two checkpoints A B, or --population DIR")
    if layer_noise and population is not None:
        raise UsageError("--layer-noise compares two checkpoints A B; drop it with --population")
    scales = _floats(noise_scales, "--noise-scales")
    if any(not v > 0 for v in scales):
        raise UsageError(f"--noise-scales must be numbers > 0, got {noise_scales!r}")
    loaded = inputs.load()
    if population is not None:
        _connect_population(loaded, population, align_models, out_dir, overwrite, as_json)
        return
    if curve not in CURVES:
        raise UsageError(f"--curve must be bezier, polychain or linear, got {curve!r}")
    ma, mb = loaded.models([a, b])
    line, summary = connect_pair(ma, mb, loaded.xy, out_dir, curve=curve,
                                 train_steps=train_steps, points=points,
                                 layer_noise=layer_noise, noise_scales=scales,
                                 noise_draws=noise_draws, device=inputs.device, bn=inputs.bn)
    _headline_finite(summary["line_barrier"], "connect: line_barrier", line["loss"].values)
    _finish(summary, as_json, "connect",
            [_layer_table(summary["layers"])] if layer_noise else None)


@_handle
def align(
    a: Path = typer.Argument(..., help="Reference checkpoint."),
    b: Path = typer.Argument(..., help="Checkpoint permuted onto A."),
    method: str = typer.Option("weight", help="weight | activation | ot (optimal transport, "
                               "MLPs; soft for unequal widths)"),
    ot_solver: str = typer.Option("exact", help="With --method ot: exact | sinkhorn"),
    reg: float = typer.Option(0.01, help="With --method ot sinkhorn: entropic regularisation.",
                              callback=_number("positive")),
    rescale: bool = typer.Option(False, help="Also remove ReLU positive rescaling."),
    signs: bool = typer.Option(False, "--signs", help="With --method weight: also flip the "
                               "signs of odd-activation (tanh) units (signed permutations)."),
    repair: bool = typer.Option(False, help="Also the midpoint with REPAIRed (or reset) "
                                "channel statistics (Jordan et al. 2022)."),
    points: int = typer.Option(25, "--points", "--steps", help="Points on the straight path "
                               "for barriers (--steps: the old name, deprecated).",
                              callback=_number(minimum=2)),
    inputs: Inputs = EVALUATION.without("test_data", "bn", "output_key", "loss", "precision"),
    out_dir: Path = out_option("runs/align"), as_json: bool = Json, verbose: bool = Verbose,
):
    """Permute B onto A (weight or activation matching); distances and barriers before
    and after, side by side; the aligned B saved as safetensors."""
    from ..symmetry.pair import align_pair

    _setup_logging(verbose)
    if method not in ("weight", "activation", "ot"):
        raise UsageError(f"--method must be 'weight', 'activation' or 'ot', got {method!r}")
    if ot_solver not in ("exact", "sinkhorn"):
        raise UsageError(f"--ot-solver must be 'exact' or 'sinkhorn', got {ot_solver!r}")
    loaded = inputs.load()
    ma, mb = loaded.models([a, b])
    if signs and (method != "weight" or rescale):
        raise UsageError("--signs works with --method weight and without --rescale")
    summary = align_pair(ma, mb, loaded.xy, out_dir, method=method, ot_solver=ot_solver,
                         reg=reg, rescale=rescale, signs=signs, repair=repair, points=points,
                         device=inputs.device, name=f"{Path(b).stem}_aligned")
    _finish(summary, as_json, "align")
