"""Two models' connectivity measured and written into a run directory, as ``lossatlas
connect A B`` does: the straight line, a trained low-loss curve (Garipov et al. 2018)
and, optionally, the per-layer barriers and noise tolerances. A whole population's
barrier matrix: :mod:`lossatlas.connectivity.population`.

>>> line, rep = connect_pair(model_a, model_b, (x, y), "runs/connect")  # doctest: +SKIP
>>> rep["line_barrier"], rep["curve_barrier"]                            # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import xarray as xr
from torch import nn

__all__ = ["connect_pair", "layer_noise_rows"]

CURVES = ("bezier", "polychain", "linear")


def layer_noise_rows(prof: xr.Dataset) -> dict[str, dict[str, float]]:
    """Per layer group of a `layerwise_profile`: its barriers (``barrier_<anchor>``, nats)
    and each model's noise tolerance (``tolerance_<model>``: the largest noise scale,
    relative to each filter's norm, keeping the loss rise under the threshold)."""
    rows: dict[str, dict[str, float]] = {}
    for g in prof["group"].values:
        row = {f"barrier_{an}": float(prof["barrier"].sel(group=g, anchor=an))
               for an in prof["barrier"]["anchor"].values}
        row.update({f"tolerance_{mod}": float(prof["tolerance"].sel(group=g, model=mod))
                    for mod in prof["model"].values})
        rows[str(g)] = row
    return rows


def connect_pair(model_a: nn.Module, model_b: nn.Module, data, out_dir: str | Path, *,
                 curve: str = "bezier", train_steps: int = 1000, points: int = 61,
                 layer_noise: bool = False,
                 noise_scales: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0),
                 noise_draws: int = 4, device=None,
                 bn: Literal["own", "recompute"] | None = None
                 ) -> tuple[xr.Dataset, dict[str, Any]]:
    """The loss along the straight line from ``model_a`` to ``model_b`` (``points``
    points, BatchNorm policy ``bn``) and, unless ``curve="linear"``, along a
    ``"bezier"`` or ``"polychain"`` curve trained for ``train_steps`` mini-batches (its
    points always under "recompute", the rule it trains by); with ``layer_noise``, per
    layer group the barrier with only that layer interpolated and each model's loss
    rise under filter-normalised noise of ``noise_scales`` (``noise_draws`` draws each).

    Writes into ``out_dir``: the fields ``line`` (and ``curve-<kind>``), ``line.png``
    (and ``curve-<kind>.png``, the curve's bends ``curve-<kind>.safetensors``), with
    ``layer_noise`` the field ``layer_noise``, and ``connect.json``; records the stage
    in ``run.json``.

    Returns ``(line, summary)``: the straight line's `xarray.Dataset` over ``t`` and the
    dict written as ``connect.json`` (barriers in nats: ``line_barrier``, with a curve
    ``curve_barrier``, ``curve_line_barrier``, ``arc_length``, ``line_length``; with
    ``layer_noise`` ``layers``, `layer_noise_rows`; ``figures``, wall ``seconds``).
    """
    from ..plotting import save_figure
    from ..store import Run, atomic_write_json
    from ..surfaces import plot_curve
    from .barriers import barrier_curve
    from .curves import train_curve

    if curve not in CURVES:
        raise ValueError(f"connect_pair: curve must be one of {', '.join(CURVES)}, "
                         f"got {curve!r}")
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    run = Run(out_dir)
    line = barrier_curve(model_a, model_b, data, points=points, device=device, bn=bn)
    run.save_dataset("line", line)
    summary: dict[str, Any] = {"bn": line.attrs["bn"],
                               "line_barrier": float(line.attrs["barrier"])}
    figs = [save_figure(plot_curve(line), out_dir / "line.png")]
    if curve != "linear":
        res = train_curve(model_a, model_b, data, kind=curve, steps=train_steps,
                          points=points, device=device)
        run.save_dataset(f"curve-{curve}", res.curve)
        figs.append(save_figure(plot_curve(res.curve), out_dir / f"curve-{curve}.png"))
        summary.update(curve=curve, curve_bn=res.curve.attrs.get("bn"),
                       curve_line_barrier=float(res.line_barrier),
                       curve_barrier=float(res.barrier),
                       arc_length=float(res.arc_length), line_length=float(res.line_length))
        from safetensors.torch import save_file

        save_file({"bends": res.bends.contiguous()}, str(out_dir / f"curve-{curve}.safetensors"))
    if layer_noise:
        from .layerwise import layerwise_profile, write_layer_noise

        prof = layerwise_profile(model_a, model_b, data, scales=tuple(noise_scales),
                                 num_draws=noise_draws, bn=bn, device=device)
        summary["layer_noise_store"] = str(write_layer_noise(out_dir, prof))
        summary["layers"] = layer_noise_rows(prof)
    summary.update(figures=[str(f) for f in figs], seconds=round(time.perf_counter() - t0, 2))
    atomic_write_json(out_dir / "connect.json", summary)
    run.record_stage("connect", summary["seconds"], curve=curve, layer_noise=layer_noise)
    return line, summary
