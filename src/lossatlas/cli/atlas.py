"""``lossatlas atlas``: the global atlas of a population (embedding, refined loss field,
merge tree and basins), through :func:`lossatlas.pipeline.build_atlas`."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import (
    POPULATION,
    Inputs,
    Json,
    UsageError,
    Verbose,
    _check_threshold,
    _finish,
    _handle,
    _matrix_table,
    _number,
    _progress,
    _setup_logging,
    out_option,
)

__all__ = ["atlas"]


@_handle
def atlas(
    population: str = typer.Option(..., help="Checkpoint directory, glob, or a train run."),
    inputs: Inputs = POPULATION.plus("output_key", "loss", "precision"),
    method: str = typer.Option("ae", help="ae | pca | kpca | umap"),
    dim: int = typer.Option(2, help="Latent dimension (2 to 4)."),
    resolution: int = typer.Option(48, help="Base grid points per latent axis.",
                                   callback=_number(minimum=2)),
    budget: int = typer.Option(6000, help="Most field samples after refinement.",
                               callback=_number("positive")),
    tol: float = typer.Option(0.1, help="Refine cells whose corners differ by more (decades).",
                              callback=_number("positive")),
    threshold: str = typer.Option("0.1", help="Persistence threshold: decades, 'auto' or "
                                  "'N%' of the population's log-loss range.",
                                  callback=_check_threshold),
    memory_budget: str = typer.Option(
        None, help="Host memory the stages may use, e.g. 4GB: the checkpoints are streamed "
        "into RUN/population.safetensors and read by blocks (populations larger than memory)."),
    holdout: float = typer.Option(
        0.0, help="Fraction of the checkpoints left out of the map's fit; their projection "
        "error (loss at the decoded projected point vs true, nats) is reported.",
        callback=_number("nonnegative")),
    check_saddles: bool = typer.Option(
        False, "--check-saddles", help="After the topology: at each merge-tree saddle, "
        "decoded, is there a negative full-space Hessian eigenvalue (a true saddle) or not "
        "(an artefact of the map)? Writes RUN/fields/saddles.zarr."),
    saddle_k: int = typer.Option(1, "--saddle-k", help="With --check-saddles: smallest "
                                 "eigenvalues per saddle.", callback=_number(minimum=1)),
    saddle_tol: float = typer.Option(0.05, "--saddle-tol", help="With --check-saddles: "
                                     "eigenvalues below -tol x the largest magnitude count "
                                     "as negative.", callback=_number("nonnegative")),
    out_dir: Path = out_option("runs/atlas"),
    overwrite: bool = typer.Option(
        False, help="Empty the run directory of earlier results and start afresh (needed "
        "when it holds another population's, or fields computed on other data)."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """The global atlas: embedding, refined loss field, merge tree and basins."""
    from ..pipeline import build_atlas
    from ..points import MAX_GRID_POINTS
    from ..vectors import parse_bytes

    _setup_logging(verbose)
    if not 1 <= dim <= 4:
        raise UsageError(f"--dim must be 1 to 4, got {dim}")
    if resolution < 2 or resolution**dim > MAX_GRID_POINTS:
        raise UsageError(f"--resolution {resolution} with --dim {dim}: the base grid must have "
                         f"2 to {MAX_GRID_POINTS} points per side^dim")
    loaded = inputs.load()
    mem = None if memory_budget is None else parse_bytes(memory_budget, "--memory-budget")
    pop = loaded.population(population, stream_to=None if mem is None
                            else out_dir / "population.safetensors")
    if len(pop) < 3:
        raise UsageError(f"atlas: need at least 3 models, got {len(pop)} from {population}")
    if holdout and not 0.0 < holdout < 1.0:
        raise UsageError(f"--holdout must be a fraction in (0, 1), got {holdout}")
    evaluation = inputs.evaluation()
    atlas_, summary = build_atlas(pop, loaded.xy, out_dir, method, dim, resolution, budget,
                                  tol, threshold, inputs.device, inputs.precision,
                                  progress=_progress(as_json), memory_budget=mem,
                                  output=evaluation["output"],
                                  loss_fn=evaluation["loss_fn"], holdout=holdout or None,
                                  overwrite=overwrite, data=loaded.measured_on())
    if summary is None:  # not rank 0 under torchrun
        return
    tables = []
    if check_saddles:
        if not saddle_tol < 1:
            raise UsageError(f"--saddle-tol must be in [0, 1), got {saddle_tol}")
        from ..curvature import atlas_saddles
        from ..curvature.reports import SADDLE_COLUMNS, saddle_rows

        ds = atlas_saddles(atlas_, k=saddle_k, tol=saddle_tol, progress=_progress(as_json))
        rows = saddle_rows(ds)
        summary.update(saddles=len(rows), true_saddles=sum(r["is_saddle"] for r in rows),
                       saddles_store=str(out_dir / "fields" / "saddles.zarr"))
        if as_json:
            summary["saddle_table"] = rows
        elif rows:
            tables.append(_matrix_table(
                "merge-tree saddles (basins joined), full-space Hessian",
                [f"{r['basins'][0]}-{r['basins'][1]}" for r in rows],
                [[float(r[c]) for c in SADDLE_COLUMNS] for r in rows], list(SADDLE_COLUMNS)))
    _finish(summary, as_json, "atlas", tables)
