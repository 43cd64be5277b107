"""CLI verbs of connectivity and symmetry: ``lossatlas connect`` and ``lossatlas align``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

from ._common import (
    _BN,
    _DATA,
    _DATA_ARG,
    _DEVICE,
    _MODEL,
    _MODEL_ARG,
    _RUN_MODEL,
    _SAMPLES,
    _SPLIT,
    _TEST_DATA,
    _TRUST_RUN,
    Json,
    UsageError,
    Verbose,
    _check_out,
    _eval_options,
    _finish,
    _floats,
    _handle,
    _headline_finite,
    _load_data,
    _load_models,
    _load_population,
    _matrix_table,
    _model_factory,
    _number,
    _progress,
    _setup_logging,
)

__all__ = ["align", "connect"]


def _pair_paths(a: Path | None, b: Path | None, population: str | None) -> None:
    if population is None and (a is None or b is None):
        raise UsageError("give two checkpoints A B, or --population DIR")


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
    model: str = _RUN_MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    trust_run: bool = _TRUST_RUN, data_arg: list[str] = _DATA_ARG,
    test_data: str = _TEST_DATA, split: str = _SPLIT, samples: int = _SAMPLES,
    bn: str = _BN, device: str = _DEVICE,
    out_dir: Path = typer.Option(Path("runs/connect"), "--out", help="Run directory.",
                                 callback=_check_out),
    overwrite: bool = typer.Option(
        False, help="With --population: empty the run directory of earlier results and "
        "start afresh (needed when it holds another population's)."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Loss along the straight path and along a trained curve between two models
    (Garipov et al. 2018), or the barrier matrix of a population."""
    from ..connectivity import barrier_curve, train_curve
    from ..connectivity.population import population_barriers
    from ..store import Run, atomic_write_json
    from ..surfaces import plot_curve, save_figure

    _setup_logging(verbose)
    _pair_paths(a, b, population)
    if layer_noise and population is not None:
        raise UsageError("--layer-noise compares two checkpoints A B; drop it with --population")
    scales = _floats(noise_scales, "--noise-scales")
    if any(not v > 0 for v in scales):
        raise UsageError(f"--noise-scales must be numbers > 0, got {noise_scales!r}")
    t0 = time.perf_counter()
    _eval_options(bn, None, None)
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    run = Run(out_dir)
    if population is not None:
        pop = _load_population(population, model, kwargs, trust_run)
        from ..fingerprint import claim_run

        claim_run(run, pop, overwrite)  # one run directory, one population
        idx = pop.final_indices()
        names = [str(pop.labels[i].get("variant", i)) for i in idx]
        res = population_barriers([pop.model(i) for i in idx], names, xy, out_dir,
                                  align_models, device, progress=_progress(as_json), bn=bn)
        summary = {"models": len(idx), "bn": res["bn"],
                   "mean_barrier_before": float(np.mean(res["before"]))}
        if "after" in res:
            summary["mean_barrier_after"] = float(np.mean(res["after"]))
        summary.update(store=str(out_dir / "connectivity.json"),
                       seconds=round(time.perf_counter() - t0, 2))
        tables = [_matrix_table(f"barrier (nats), {k} alignment", res["names"], res[k])
                  for k in ("before", "after") if k in res]
        _finish(summary, as_json, "connect (population)", tables)
        return
    if curve not in ("bezier", "polychain", "linear"):
        raise UsageError(f"--curve must be bezier, polychain or linear, got {curve!r}")
    ma, mb = _load_models([a, b], factory)
    line = barrier_curve(ma, mb, xy, steps=points, device=device, bn=bn)
    run.save_dataset("line", line)
    summary = {"bn": line.attrs["bn"], "line_barrier": float(line.attrs["barrier"])}
    figs = [save_figure(plot_curve(line), out_dir / "line.png")]
    if curve != "linear":
        res = train_curve(ma, mb, xy, kind=curve, steps=train_steps, points=points,
                          device=device)
        run.save_dataset(f"curve-{curve}", res.curve)
        figs.append(save_figure(plot_curve(res.curve), out_dir / f"curve-{curve}.png"))
        # a trained curve's points carry no statistics of their own: its loss (and the
        # straight line's beside it) is always under "recompute", the rule it trains by
        summary.update(curve=curve, curve_bn=res.curve.attrs.get("bn"),
                       curve_line_barrier=float(res.line_barrier),
                       curve_barrier=float(res.barrier),
                       arc_length=float(res.arc_length), line_length=float(res.line_length))
        from safetensors.torch import save_file

        save_file({"bends": res.bends.contiguous()}, str(out_dir / f"curve-{curve}.safetensors"))
    tables = []
    if layer_noise:
        from ..connectivity import layerwise_profile, write_layer_noise

        prof = layerwise_profile(ma, mb, xy, scales=scales, num_draws=noise_draws, bn=bn,
                                 device=device)
        summary["layer_noise_store"] = str(write_layer_noise(out_dir, prof))
        tables.append(_layer_table(prof))
        if as_json:
            summary["layers"] = _layer_rows(prof)
    summary.update(figures=[str(f) for f in figs], seconds=round(time.perf_counter() - t0, 2))
    atomic_write_json(out_dir / "connect.json", summary)
    run.record_stage("connect", summary["seconds"], curve=curve, layer_noise=layer_noise)
    _headline_finite(summary["line_barrier"], "connect: line_barrier", line["loss"].values)
    _finish(summary, as_json, "connect", tables)


def _layer_rows(prof) -> dict[str, dict[str, float]]:
    """Per layer group of a `layerwise_profile`: its barriers (per anchor) and each model's
    noise tolerance (loss units; the largest noise scale keeping the rise under the
    threshold)."""
    rows: dict[str, dict[str, float]] = {}
    for g in prof["group"].values:
        row = {f"barrier_{an}": float(prof["barrier"].sel(group=g, anchor=an))
               for an in prof["barrier"]["anchor"].values}
        row.update({f"tolerance_{mod}": float(prof["tolerance"].sel(group=g, model=mod))
                    for mod in prof["model"].values})
        rows[str(g)] = row
    return rows


def _layer_table(prof):
    """`_layer_rows` as a printable table."""
    rows = _layer_rows(prof)
    cols = list(next(iter(rows.values()))) if rows else []
    return _matrix_table("per layer: barrier (loss) and noise tolerance (scale)", list(rows),
                         [[r[c] for c in cols] for r in rows.values()], cols)


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
    model: str = _MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    data_arg: list[str] = _DATA_ARG, split: str = _SPLIT, samples: int = _SAMPLES,
    device: str = _DEVICE,
    out_dir: Path = typer.Option(Path("runs/align"), "--out", help="Run directory.",
                                 callback=_check_out),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Permute B onto A (weight or activation matching); distances and barriers before
    and after, side by side; the aligned B saved as safetensors."""
    from ..checkpoints import save_state_dict
    from ..store import atomic_write_json
    from ..symmetry import align as align_models
    from ..symmetry import compare_alignment

    _setup_logging(verbose)
    if method not in ("weight", "activation", "ot"):
        raise UsageError(f"--method must be 'weight', 'activation' or 'ot', got {method!r}")
    if ot_solver not in ("exact", "sinkhorn"):
        raise UsageError(f"--ot-solver must be 'exact' or 'sinkhorn', got {ot_solver!r}")
    t0 = time.perf_counter()
    splits, xy = _load_data(data, data_arg, split, samples)
    factory, _ = _model_factory(model, model_arg, splits)
    ma, mb = _load_models([a, b], factory)
    if signs and (method != "weight" or rescale):
        raise UsageError("--signs works with --method weight and without --rescale")
    if method == "ot" or signs:
        from ..connectivity import barrier
        from ..symmetry import ot_align, parameter_distance, permutation_spec, weight_matching

        if signs:
            aligned = weight_matching(ma, mb, spec=permutation_spec(ma, data=xy),
                                      device=device, signs=True)
        else:
            aligned = ot_align(ma, mb, method=ot_solver, reg=reg)
        table = None
        summary = {"loss_barrier_none": barrier(ma, mb, xy, steps=points, device=device),
                   "loss_barrier_aligned": barrier(ma, aligned, xy, steps=points,
                                                   device=device),
                   "distance_none": parameter_distance(ma, mb)["distance"],
                   "distance_aligned": parameter_distance(ma, aligned)["distance"]}
    else:
        from ..symmetry import permutation_spec

        spec = permutation_spec(ma, data=xy)  # traced once, on the data's first samples
        table = compare_alignment(ma, mb, xy, method=method, rescale=rescale, steps=points,
                                  device=device, spec=spec)
        _, aligned = align_models(ma, mb, method, xy, rescale, spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_state_dict(aligned.state_dict(), out_dir / f"{Path(b).stem}_aligned.safetensors")
    if table is not None:
        summary = {f"{k}_{al}": float(table[k].sel(alignment=al)) for k in table.data_vars
                   for al in ("none", "aligned")}
    if repair:
        from ..evaluate import Evaluator
        from ..space import ParamSpace
        from ..symmetry import interpolate
        from ..symmetry import repair as repair_midpoint

        ev = Evaluator(ma, xy, device=device, space=ParamSpace(ma, buffers=True))
        mids = [interpolate(ma, aligned, 0.5), repair_midpoint(ma, aligned, 0.5, xy)]
        plain, fixed = ev.evaluate_models(mids)["loss"].tolist()
        summary.update(midpoint_loss_aligned=plain, midpoint_loss_repaired=fixed)
    summary.update(method=method + ("+signs" if signs else ""), aligned_checkpoint=str(path),
                   seconds=round(time.perf_counter() - t0, 2))
    atomic_write_json(out_dir / "align.json", summary)
    _finish(summary, as_json, "align")
