"""CLI verb of the survey's studies: ``lossatlas study eos|double-descent``."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from ._common import (
    Json,
    UsageError,
    Verbose,
    _check_out,
    _finish,
    _handle,
    _number,
    _setup_logging,
)

__all__ = ["study"]


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated numbers, got {text!r}") from None


@_handle
def study(
    name: str = typer.Argument(..., help="eos | double-descent"),
    out_dir: Path = typer.Option(None, "--out", help="Run directory (default runs/NAME).",
                                 callback=_check_out),
    lrs: str = typer.Option("0.1,0.2,0.4", help="eos: comma-separated learning rates."),
    widths: str = typer.Option("1,2,4,8,12,16,24,32,48,64,128,256,512",
                               help="double-descent: comma-separated MLP widths."),
    steps: int = typer.Option(None, help="Training steps (default: the study's own).",
                              callback=_number(minimum=1)),
    label_noise: float = typer.Option(0.2, help="double-descent: fraction of flipped labels.",
                                      callback=_number("nonnegative")),
    seed: int = typer.Option(0, help="Seed."),
    as_json: bool = Json, verbose: bool = Verbose,
):
    """Built-in studies of the survey: the edge of stability (top Hessian eigenvalue
    against 2/eta under full-batch GD) and double descent (test error and sharpness
    against width, interpolation threshold marked)."""
    from ..studies import double_descent_study, eos_study

    _setup_logging(verbose)
    t0 = time.perf_counter()
    out_dir = out_dir or Path("runs") / name
    if name == "eos":
        kwargs = {"steps": steps} if steps else {}
        res = eos_study(out_dir, lrs=_floats(lrs, "--lrs"), seed=seed, **kwargs)
    elif name == "double-descent":
        ws = tuple(int(w) for w in _floats(widths, "--widths"))
        if any(w < 1 for w in ws):
            raise UsageError(f"--widths must be >= 1, got {widths!r}")
        kwargs = {"steps": steps} if steps else {}
        res = double_descent_study(out_dir, widths=ws, label_noise=label_noise,
                                   seeds=(seed,), **kwargs)
    else:
        raise UsageError(f"study: expected 'eos' or 'double-descent', got {name!r}")
    summary = {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    summary.update(run=str(out_dir), seconds=round(time.perf_counter() - t0, 2))
    if as_json:
        summary = {**res, **summary}
    _finish(summary, as_json, f"study {name}")
