"""``lossatlas list`` (the built-in models and datasets) and ``lossatlas train`` (a
population of variants with checkpoints)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from ._common import (
    Json,
    UsageError,
    Verbose,
    _check_device,
    _check_out,
    _finish,
    _handle,
    _kv,
    _number,
    _progress,
    _setup_logging,
    out,
)

__all__ = ["list_cmd", "train"]


@_handle
def list_cmd(what: str = typer.Argument("models", help="models | datasets")):
    """List the built-in models or datasets."""
    from .. import data, models

    if what == "models":
        names = models.list_models()
    elif what == "datasets":
        names = data.list_datasets()
    else:
        raise UsageError(f"list: expected 'models' or 'datasets', got {what!r}")
    for n in names:
        out.print(n)


# ------------------------------------------------------------------ train
@_handle
def train(
    out_dir: Path = typer.Option(..., "--out", help="Run directory for checkpoints and metrics.",
                                 callback=_check_out),
    model: str = typer.Option("mlp", help="Registered model name or package.module:function."),
    model_arg: list[str] = typer.Option(None, help="Model factory argument key=value."),
    data: str = typer.Option("mnist1d", help="Registered dataset or package.module:function."),
    data_arg: list[str] = typer.Option(None, help="Dataset factory argument key=value."),
    seeds: str = typer.Option("0", help="Comma-separated seeds."),
    lr: str = typer.Option(None, help="Comma-separated learning rates (grid)."),
    batch_size: str = typer.Option(None, help="Comma-separated batch sizes (grid)."),
    weight_decay: str = typer.Option(None, help="Comma-separated weight decays (grid)."),
    epochs: int = typer.Option(8, help="Epochs per variant.", callback=_number(minimum=1)),
    every: int = typer.Option(2, help="Save a checkpoint every k epochs.",
                              callback=_number(minimum=1)),
    device: str = typer.Option(None, help="cpu, cuda, ... (default: cuda if available).",
                               callback=_check_device),
    as_json: bool = Json,
    verbose: bool = Verbose,
):
    """Train a population: variants over a grid of seeds, learning rates, batch sizes and
    weight decays (default: the 7 demo variants), with a checkpoint every k epochs."""
    from ..train import read_metrics, train_population

    _setup_logging(verbose)
    t0 = time.perf_counter()
    grid = {}
    for key, val, cast in (("lr", lr, float), ("batch_size", batch_size, int),
                           ("weight_decay", weight_decay, float)):
        if val:
            try:
                grid[key] = [cast(v) for v in val.split(",")]
            except ValueError:
                raise UsageError(f"--{key.replace('_', '-')}: cannot parse {val!r}") from None
    try:
        seed_list = [int(s) for s in seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds: expected comma-separated integers, got {seeds!r}") from None
    pop = train_population(
        model, data, out_dir=out_dir, grid=grid or None, seeds=seed_list,
        checkpoint_every=every, epochs=epochs, model_kwargs=_kv(model_arg, "--model-arg"),
        data_kwargs=_kv(data_arg, "--data-arg"), device=device, progress=_progress(as_json),
    )
    metrics = read_metrics(out_dir)
    summary = {"run": str(out_dir), "checkpoints": len(pop), "variants": len(pop.variants),
               "seconds": round(time.perf_counter() - t0, 2)}
    if not as_json:
        _print_training_table(metrics)
    _finish(summary, as_json, "train")


def _print_training_table(metrics: dict) -> None:
    runs = metrics.get("runs", metrics) if isinstance(metrics, dict) else {}
    t = Table(title="final metrics per variant", title_justify="left")
    for c in ("run", "train loss", "train acc", "test loss", "test acc"):
        t.add_column(c)
    for key, rec in (runs.items() if isinstance(runs, dict) else []):
        epochs = rec.get("epochs") if isinstance(rec, dict) else None
        if not epochs:
            continue
        last = epochs[-1]
        t.add_row(str(key), *(f"{last.get(k, float('nan')):.4g}" for k in
                              ("train_loss", "train_accuracy", "test_loss", "test_accuracy")))
    if t.row_count:
        out.print(t)

