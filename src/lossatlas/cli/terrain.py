"""CLI verbs of terrain: ``lossatlas hessian`` and ``lossatlas llc`` (one model,
:mod:`lossatlas.curvature.reports`, or a population,
:func:`lossatlas.curvature.population.population_terrain`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    _OVERWRITE_RUN,
    _POPULATION_MODE,
    POPULATION,
    Inputs,
    Json,
    Loaded,
    UsageError,
    Verbose,
    _finish,
    _handle,
    _headline_finite,
    _matrix_table,
    _number,
    _record_stage,
    _setup_logging,
    out_option,
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


def _population_terrain(verb: str, loaded: Loaded, population: str, out_dir: Path,
                        overwrite: bool, as_json: bool, **measure) -> None:
    """Population mode of ``hessian`` / ``llc``: `population_terrain` into ``OUT``, its
    per-model table printed."""
    from ..curvature.population import population_terrain

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    i = loaded.inputs
    table = population_terrain(loaded.population(population), loaded.xy, out_dir,
                               device=i.device, bn=i.bn, overwrite=overwrite, **measure)
    summary = {"models": len(table["models"]), "store": str(out_dir / "terrain.json"),
               "seconds": round(time.perf_counter() - t0, 2)}
    _record_stage(out_dir, verb, summary["seconds"], models=summary["models"])
    _finish(summary, as_json, f"{verb} (population)", [_terrain_table(table)])


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
    population: str = _POPULATION_MODE, inputs: Inputs = POPULATION,
    out_dir: Path = out_option("runs/hessian"), overwrite: bool = _OVERWRITE_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Hessian spectrum of the mean loss: top (and bottom) eigenvalues, trace, density,
    saddle verdict (eval mode)."""
    from ..curvature.reports import hessian_report

    _setup_logging(verbose)
    _single_or_population(checkpoint, population)
    if population is not None and (bottom or density or saddle):
        raise UsageError("--bottom, --density and --saddle-check measure one checkpoint; "
                         "drop them with --population")
    if not saddle_tol < 1:
        raise UsageError(f"--saddle-tol must be in [0, 1), got {saddle_tol}")
    loaded = inputs.load()
    if population is not None:
        _population_terrain("hessian", loaded, population, out_dir, overwrite, as_json,
                            measures=["eigenvalues"] + (["trace"] if trace else []), k=k)
        return
    (m,) = loaded.models([checkpoint])
    summary = hessian_report(m, loaded.xy, out_dir, k=k, trace=trace, bottom=bottom,
                             density=density, saddle=saddle, saddle_tol=saddle_tol,
                             device=inputs.device, bn=inputs.bn)
    _headline_finite(summary["top_eigenvalue"], "hessian: the top eigenvalue")
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
    population: str = _POPULATION_MODE, inputs: Inputs = POPULATION,
    out_dir: Path = out_option("runs/llc"), overwrite: bool = _OVERWRITE_RUN,
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Local learning coefficient by SGLD with localisation (chains, diagnostics, trace plot)."""
    from ..curvature.reports import llc_report

    _setup_logging(verbose)
    _single_or_population(checkpoint, population)
    loaded = inputs.load()
    sgld = {"num_chains": chains, "num_draws": draws, "num_burnin_steps": burnin,
            "epsilon": epsilon, "nbeta": nbeta, "gamma": gamma, "batch_size": batch_size}
    if population is not None:
        _population_terrain("llc", loaded, population, out_dir, overwrite, as_json,
                            measures=["llc"], llc_kwargs=sgld)
        return
    (m,) = loaded.models([checkpoint])
    summary = llc_report(m, loaded.xy, out_dir, device=inputs.device, bn=inputs.bn, **sgld)
    _headline_finite(summary["llc_mean"], "llc: llc_mean")
    _finish(summary, as_json, "llc")
