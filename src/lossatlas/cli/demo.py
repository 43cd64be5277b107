"""``lossatlas demo``: the whole pipeline on built-in data (:func:`lossatlas.demo.run_demo`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ._common import (
    _DEVICE,
    Json,
    UsageError,
    Verbose,
    _check_out,
    _finish,
    _handle,
    _number,
    _progress,
    _setup_logging,
    _table,
    err,
    out,
)

__all__ = ["demo"]


def _terrain_of_final_models(path: Path) -> Table | None:
    """The demo's terrain (``OUT/terrain.json``) as a table: one row per final model."""
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    cols = [c for c in ("top_eigenvalue", "trace", "epsilon_sharpness", "adaptive_sharpness",
                        "llc_mean") if c in table]
    if not cols:
        return None
    t = Table(title="terrain of the final models", title_justify="left")
    t.add_column("model")
    for c in cols:
        t.add_column(c)
    for i, name in enumerate(table["models"]):
        row = []
        for c in cols:
            v = table[c][i]
            v = v[0] if isinstance(v, list) else v
            row.append(f"{v:.4g}")
        t.add_row(name, *row)
    return t


@_handle
def demo(
    out_dir: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory.",
                                 callback=_check_out),
    epochs: int = typer.Option(8, help="Epochs per variant.", callback=_number(minimum=1)),
    every: int = typer.Option(2, help="Checkpoint every k epochs.", callback=_number(minimum=1)),
    samples: int = typer.Option(2000, help="Training samples the landscape is measured on.",
                                callback=_number(minimum=1)),
    resolution: int = typer.Option(40, help="Base grid of the atlas field.",
                                   callback=_number(minimum=2)),
    budget: int = typer.Option(4000, help="Field samples after refinement.",
                               callback=_number("positive")),
    threads: int = typer.Option(1, help="CPU threads (small models run best on one)."),
    device: str = _DEVICE, as_json: bool = Json, verbose: bool = Verbose,
):
    """Train 7 MLP variants on MNIST-1D, draw slices, build the atlas, measure connectivity
    and terrain, map a small BatchNorm CNN population on digits (sub-run RUN/bn_cnn) and
    write the reports."""
    import torch

    from ..demo import run_demo

    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    _setup_logging(verbose)
    summary = run_demo(out_dir, epochs=epochs, every=every, samples=samples,
                       resolution=resolution, budget=budget, device=device,
                       progress=_progress(as_json))
    terrain = _terrain_of_final_models(out_dir / "terrain.json")
    if terrain is not None:
        err.print(terrain)
    _finish(summary, as_json, "demo")
    if not as_json:
        bn_rows = {k: v for k, v in summary["bn_cnn"].items() if not isinstance(v, (dict, list))}
        out.print(_table("BatchNorm CNN population (sub-run bn_cnn)", bn_rows))
        out.print(f"figures and fields in {out_dir}")
        out.print(f"report: {summary['report']}")
