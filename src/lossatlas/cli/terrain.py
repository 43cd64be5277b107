"""CLI verbs of terrain: ``lossatlas hessian`` and ``lossatlas llc`` (one model or a population)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    _BN,
    _DATA,
    _DATA_ARG,
    _DEVICE,
    _MODEL_ARG,
    _OVERWRITE_RUN,
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
    _handle,
    _headline_finite,
    _load_data,
    _load_models,
    _load_population,
    _matrix_table,
    _model_factory,
    _number,
    _record_stage,
    _setup_logging,
)

__all__ = ["hessian", "llc_cmd"]


def _single_or_population(checkpoint, population):
    if (checkpoint is None) == (population is None):
        raise UsageError("give one checkpoint MODEL, or --population DIR (not both)")


def _terrain_table(table: dict):
    """Per-model terrain (the measures present in ``table``) as a printable table."""
    cols = [c for c in ("loss", "top_eigenvalue", "trace", "trace_std", "llc_mean", "llc_std")
            if c in table and len(table[c]) == len(table["models"])]
    rows = [[table[c][i] for c in cols] for i in range(len(table["models"]))]
    return _matrix_table(f"terrain per model (BatchNorm: {table.get('bn')})", table["models"],
                         rows, cols)


@_handle
def hessian(
    checkpoint: Path = typer.Argument(None, help="A checkpoint (or use --population)."),
    k: int = typer.Option(5, "--k", "-k", "--top", help="The k largest eigenvalues (Lanczos, "
                          "largest first; --top: the old name, deprecated).",
                            callback=_number(minimum=1)),
    trace: bool = typer.Option(False, "--trace", help="Also the trace (Hutch++)."),
    density: bool = typer.Option(False, "--density", help="Also the spectral density (SLQ) "
                                 "and its negative-eigenvalue mass."),
    bottom: int = typer.Option(None, "--bottom", help="Also the K smallest eigenvalues "
                               "(Lanczos, smallest first; negative: descent directions).",
                               callback=_number(minimum=1)),
    saddle: bool = typer.Option(False, "--saddle-check", help="Verdict: is the checkpoint a "
                                "saddle (a negative eigenvalue) or a minimum?"),
    saddle_tol: float = typer.Option(0.05, "--saddle-tol", help="With --saddle-check: "
                                     "eigenvalues below -tol x the largest magnitude count "
                                     "as negative.", callback=_number("nonnegative")),
    population: str = typer.Option(None, help="Population mode: dir or train run."),
    model: str = _RUN_MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    trust_run: bool = _TRUST_RUN, data_arg: list[str] = _DATA_ARG,
    test_data: str = _TEST_DATA, split: str = _SPLIT, samples: int = _SAMPLES,
    bn: str = _BN, device: str = _DEVICE,
    out_dir: Path = typer.Option(Path("runs/hessian"), "--out", help="Run directory.",
                                 callback=_check_out),
    overwrite: bool = _OVERWRITE_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Hessian spectrum of the mean loss: top (and bottom) eigenvalues, trace, density,
    saddle verdict (eval mode)."""
    from ..batchnorm import resolve_policy
    from ..curvature import (
        hessian_density,
        hessian_eigen,
        hessian_trace_estimate,
        plot_density,
        saddle_check,
    )
    from ..curvature.population import population_terrain
    from ..store import atomic_write_json
    from ..surfaces import save_figure

    _setup_logging(verbose)
    _single_or_population(checkpoint, population)
    if population is not None and (bottom or density or saddle):
        raise UsageError("--bottom, --density and --saddle-check measure one checkpoint; "
                         "drop them with --population")
    if not saddle_tol < 1:
        raise UsageError(f"--saddle-tol must be in [0, 1), got {saddle_tol}")
    t0 = time.perf_counter()
    _eval_options(bn, None, None)
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    if population is not None:
        measures = ["eigenvalues"] + (["trace"] if trace else [])
        table = population_terrain(_load_population(population, model, kwargs, trust_run), xy,
                                   out_dir, measures, k=k, device=device, bn=bn,
                                   overwrite=overwrite)
        summary = {"models": len(table["models"]), "store": str(out_dir / "terrain.json"),
                   "seconds": round(time.perf_counter() - t0, 2)}
        _record_stage(out_dir, "hessian", summary["seconds"], models=summary["models"])
        _finish(summary, as_json, "hessian (population)", [_terrain_table(table)])
        return
    (m,) = _load_models([checkpoint], factory)
    eig = hessian_eigen(m, xy, k=k, device=device, bn=bn)
    summary: dict = {"eigenvalues": [float(v) for v in eig.eigenvalues],
                     "bn": resolve_policy(m, bn, "hessian")}
    if trace:
        tr = hessian_trace_estimate(m, xy, device=device, bn=bn)
        summary.update(trace=float(tr.trace), trace_std=float(tr.std))
    if bottom:
        low = hessian_eigen(m, xy, k=bottom, device=device, bn=bn, which="smallest")
        summary["smallest_eigenvalues"] = [float(v) for v in low.eigenvalues]
    if density:
        dens = hessian_density(m, xy, device=device, bn=bn)
        summary["negative_mass"] = dens.negative_mass()  # fraction of the spectrum below 0
        fig = plot_density(dens)
        fig = getattr(fig, "figure", fig)
        summary["density_figure"] = str(save_figure(fig, out_dir / "density.png"))
    if saddle:
        sc = saddle_check(m, xy, k=bottom or 1, tol=saddle_tol, device=device, bn=bn)
        summary.update({f"saddle_{k}": v for k, v in sc.as_dict().items()})
        summary["saddle_verdict"] = "saddle" if sc.is_saddle else "minimum"
    summary["top_eigenvalue"] = summary["eigenvalues"][0]
    _headline_finite(summary["top_eigenvalue"], "hessian: the top eigenvalue")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out_dir / "hessian.json", summary)
    _record_stage(out_dir, "hessian", summary["seconds"], k=k, bottom=bottom or 0)
    _finish(summary, as_json, "hessian")


@_handle
def llc_cmd(
    checkpoint: Path = typer.Argument(None, help="A checkpoint (or use --population)."),
    chains: int = typer.Option(8, help="SGLD chains (run together with vmap).",
                               callback=_number(minimum=1)),
    draws: int = typer.Option(200, help="Draws per chain.", callback=_number(minimum=1)),
    burnin: int = typer.Option(0, help="Burn-in steps per chain.",
                               callback=_number("nonnegative")),
    epsilon: float = typer.Option(1e-3, help="SGLD step size.", callback=_number("positive")),
    nbeta: float = typer.Option(
        None, help="n * beta, the inverse temperature times the samples (default: "
        "devinterp's default m / ln m for SGLD batch size m: Watanabe's WBIC temperature "
        "1 / ln n with the batch size for n).", callback=_number("positive")),
    gamma: float = typer.Option(100.0, help="Localisation strength.",
                                callback=_number("nonnegative")),
    batch_size: int = typer.Option(32, help="SGLD mini-batch size.",
                                   callback=_number(minimum=1)),
    population: str = typer.Option(None, help="Population mode: dir or train run."),
    model: str = _RUN_MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    trust_run: bool = _TRUST_RUN, data_arg: list[str] = _DATA_ARG,
    test_data: str = _TEST_DATA, split: str = _SPLIT, samples: int = _SAMPLES,
    bn: str = _BN, device: str = _DEVICE,
    out_dir: Path = typer.Option(Path("runs/llc"), "--out", help="Run directory.",
                                 callback=_check_out),
    overwrite: bool = _OVERWRITE_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Local learning coefficient by SGLD with localisation (chains, diagnostics, trace plot)."""
    from ..curvature import llc, plot_llc_trace
    from ..curvature.population import population_terrain
    from ..store import atomic_write_json
    from ..surfaces import save_figure

    _setup_logging(verbose)
    _single_or_population(checkpoint, population)
    t0 = time.perf_counter()
    _eval_options(bn, None, None)
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    sgld = {"num_chains": chains, "num_draws": draws, "num_burnin_steps": burnin,
            "epsilon": epsilon, "nbeta": nbeta, "gamma": gamma, "batch_size": batch_size}
    out_dir.mkdir(parents=True, exist_ok=True)
    if population is not None:
        table = population_terrain(_load_population(population, model, kwargs, trust_run), xy,
                                   out_dir, ["llc"], llc_kwargs=sgld, device=device, bn=bn,
                                   overwrite=overwrite)
        summary = {"models": len(table["models"]), "store": str(out_dir / "terrain.json"),
                   "seconds": round(time.perf_counter() - t0, 2)}
        _record_stage(out_dir, "llc", summary["seconds"], models=summary["models"])
        _finish(summary, as_json, "llc (population)", [_terrain_table(table)])
        return
    (m,) = _load_models([checkpoint], factory)
    res = llc(m, xy, device=device, bn=bn, **sgld)
    fig = plot_llc_trace(res)
    fig = getattr(fig, "figure", fig)
    d = sum(p.numel() for p in m.parameters())
    summary = {"llc_mean": float(res["llc_mean"]), "llc_std": float(res["llc_std"]),
               # what a reader needs to place the value: a regular model of d
               # parameters has LLC d/2; smaller means a degenerate (flatter) minimum
               "parameters": d, "regular_model_llc (d/2)": d / 2,
               "nbeta": float(res["nbeta"]), "samples": len(xy[1]), "batch_size": batch_size,
               "chains": chains, "draws": draws, "burnin": burnin,
               "warnings": res.get("warnings", []),
               "trace_figure": str(save_figure(fig, out_dir / "llc_trace.png")),
               "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_json(out_dir / "llc.json", summary)
    _record_stage(out_dir, "llc", summary["seconds"], chains=chains, draws=draws)
    _headline_finite(summary["llc_mean"], "llc: llc_mean")
    _finish(summary, as_json, "llc")
