"""``lossatlas atlas``: the global atlas of a population (embedding, refined loss field,
merge tree and basins), through :func:`lossatlas.pipeline.build_atlas`."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import (
    _BN,
    _DATA,
    _DATA_ARG,
    _DEVICE,
    _LOSS,
    _MODEL_ARG,
    _OUTPUT_KEY,
    _PRECISION,
    _RUN_MODEL,
    _SAMPLES,
    _SPLIT,
    _TEST_DATA,
    _TRUST_RUN,
    Json,
    UsageError,
    Verbose,
    _check_out,
    _check_threshold,
    _eval_options,
    _finish,
    _handle,
    _load_data,
    _load_population,
    _matrix_table,
    _model_factory,
    _number,
    _progress,
    _setup_logging,
)

__all__ = ["atlas"]


@_handle
def atlas(
    population: str = typer.Option(..., help="Checkpoint directory, glob, or a train run."),
    model: str = _RUN_MODEL, model_arg: list[str] = _MODEL_ARG, data: str = _DATA,
    trust_run: bool = _TRUST_RUN, data_arg: list[str] = _DATA_ARG,
    test_data: str = _TEST_DATA, split: str = _SPLIT, samples: int = _SAMPLES,
    bn: str = _BN, output_key: str = _OUTPUT_KEY, loss: str = _LOSS,
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
    device: str = _DEVICE, precision: str = _PRECISION,
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
    out_dir: Path = typer.Option(Path("runs/atlas"), "--out", help="Run directory.",
                                 callback=_check_out),
    overwrite: bool = typer.Option(
        False, help="Empty the run directory of earlier results and start afresh (needed "
        "when it holds another population's, or fields computed on other data)."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """The global atlas: embedding, refined loss field, merge tree and basins."""
    from ..pipeline import build_atlas, measured_on
    from ..points import MAX_GRID_POINTS
    from ..vectors import parse_bytes

    _setup_logging(verbose)
    if not 1 <= dim <= 4:
        raise UsageError(f"--dim must be 1 to 4, got {dim}")
    if resolution < 2 or resolution**dim > MAX_GRID_POINTS:
        raise UsageError(f"--resolution {resolution} with --dim {dim}: the base grid must have "
                         f"2 to {MAX_GRID_POINTS} points per side^dim")
    opts = _eval_options(bn, output_key, loss)
    splits, xy = _load_data(data, data_arg, split, samples, test_data)
    factory, kwargs = _model_factory(model, model_arg, splits)
    mem = None if memory_budget is None else parse_bytes(memory_budget, "--memory-budget")
    stream = None if mem is None else out_dir / "population.safetensors"
    pop = _load_population(population, model, kwargs, trust_run, out=stream, bn=bn)
    if len(pop) < 3:
        raise UsageError(f"atlas: need at least 3 models, got {len(pop)} from {population}")
    held_out = None
    if holdout:
        if not 0.0 < holdout < 1.0:
            raise UsageError(f"--holdout must be a fraction in (0, 1), got {holdout}")
        from ..fingerprint import population_fingerprint

        whole = population_fingerprint(pop)
        pop, held_out = pop.holdout(holdout)
        # the run holds the whole population's results (a later hessian/llc/connect of it
        # into the same --out is the same population)
        pop.__dict__["_lossatlas_fingerprint"] = whole
    atlas_, summary = build_atlas(pop, xy, out_dir, method, dim, resolution, budget, tol, threshold,
                             device, precision, progress=_progress(as_json), memory_budget=mem,
                             output=opts["output"], loss_fn=opts["loss_fn"], held_out=held_out,
                             overwrite=overwrite,
                             data=measured_on(splits, split, len(xy[1]), samples))
    if summary is None:  # not rank 0 under torchrun
        return
    tables = []
    if check_saddles:
        if not saddle_tol < 1:
            raise UsageError(f"--saddle-tol must be in [0, 1), got {saddle_tol}")
        from ..curvature import atlas_saddles

        ds = atlas_saddles(atlas_, k=saddle_k, tol=saddle_tol, progress=_progress(as_json))
        summary.update(saddles=int(ds.sizes["saddle"]), true_saddles=int(ds["is_saddle"].sum()),
                       saddles_store=str(out_dir / "fields" / "saddles.zarr"))
        if as_json:
            summary["saddle_table"] = _saddle_rows(ds)
        elif ds.sizes["saddle"]:
            tables.append(_saddle_table(ds))
    _finish(summary, as_json, "atlas", tables)


_SADDLE_COLUMNS = ("map_log10_loss", "loss", "grad_norm", "min_eigenvalue", "max_eigenvalue",
                   "negative_count", "is_saddle")


def _saddle_rows(ds) -> list[dict]:
    """One dict per merge-tree saddle of ``atlas_saddles``' dataset: basins joined, the
    map's log10 loss, the full-space loss (nats), gradient norm, smallest and largest
    eigenvalue (loss per squared parameter), negative count and verdict."""
    rows = []
    for i in range(int(ds.sizes["saddle"])):
        row = {"basins": [int(b) for b in ds["basins"].values[i]]}
        for c in _SADDLE_COLUMNS:
            v = ds[c].values[i]
            v = v[0] if c == "min_eigenvalue" else v
            row[c] = bool(v) if c == "is_saddle" else (int(v) if c == "negative_count"
                                                       else float(v))
        rows.append(row)
    return rows


def _saddle_table(ds):
    """`_saddle_rows` as a printable table (verdict: 1 a true saddle, 0 a map artefact)."""
    rows = _saddle_rows(ds)
    names = [f"{r['basins'][0]}-{r['basins'][1]}" for r in rows]
    return _matrix_table("merge-tree saddles (basins joined), full-space Hessian", names,
                         [[float(r[c]) for c in _SADDLE_COLUMNS] for r in rows],
                         list(_SADDLE_COLUMNS))

