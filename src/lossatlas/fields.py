"""Evaluate a point source into a labelled field, stored chunk by chunk when a run is given."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .evaluate import Evaluator
from .points import PointSource
from .store import Run

__all__ = ["compute_field", "log10_loss"]

log = logging.getLogger(__name__)


def _variables(evaluator: Evaluator) -> list[str]:
    return ["loss", *evaluator.metrics]


def compute_field(
    evaluator: Evaluator,
    source: PointSource,
    run: Run | None = None,
    name: str | None = None,
    chunk_points: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Loss and metrics at every point of ``source``, as an ``xarray.Dataset``.

    With ``run`` and ``name`` the field is stored in ``run/fields/NAME.zarr`` as it
    is computed; calling again after an interruption computes only the chunks
    that are missing (the points must be the same, checked by fingerprint).

    Returns a Dataset with dims ``source.dims`` and variables ``loss`` (mean loss
    per sample) and ``accuracy`` (fraction), plus any extra metrics; non-finite
    losses (diverged points) are kept as NaN/inf and counted in
    ``attrs["nonfinite"]``.
    """
    variables = _variables(evaluator)
    chunk_points = chunk_points or max(evaluator.chunk_size * 4, 256)
    attrs = {"precision": evaluator.precision, "samples": evaluator.num_samples, **(attrs or {})}
    t0 = time.perf_counter()
    if run is None:
        ds = _compute_in_memory(evaluator, source, variables, chunk_points, progress)
        ds.attrs.update(attrs)
    else:
        if not name:
            raise ValueError("compute_field: a run was given without a field name")
        if run.has_field(name) and not overwrite:
            log.info("field %s already complete in %s; reusing it", name, run.path)
            return run.open_field(name)
        writer = run.begin_field(name, source, variables, chunk_points, attrs, overwrite)
        pending = writer.pending()
        skipped = writer.num_chunks - len(pending)
        bar = tqdm(
            total=source.size, disable=not progress, desc=f"field {name}", unit="pt",
            initial=source.size - sum(np.subtract(*writer.chunk_range(k)[::-1]) for k in pending),
        )
        for k in pending:
            start, stop = writer.chunk_range(k)
            res = evaluator.evaluate(source.points(start, stop, evaluator.device))
            writer.write(k, {v: res[v].numpy() for v in variables})
            bar.update(stop - start)
        bar.close()
        writer.finish()
        ds = run.open_field(name)
        seconds = time.perf_counter() - t0
        run.record_stage(
            f"field:{name}", seconds, points=source.size, chunks_resumed=skipped,
            source=json.loads(ds.attrs.get("source", "{}")),
        )
    loss = ds["loss"].values
    ds.attrs["nonfinite"] = int((~np.isfinite(loss)).sum())
    if ds.attrs["nonfinite"]:
        log.warning("%d of %d points have a non-finite loss", ds.attrs["nonfinite"], loss.size)
    return ds


def _compute_in_memory(
    evaluator: Evaluator, source: PointSource, variables: list[str], chunk_points: int,
    progress: bool,
) -> xr.Dataset:
    flat = {v: np.empty(source.size, dtype=np.float32) for v in variables}
    with tqdm(total=source.size, disable=not progress, desc="field", unit="pt") as bar:
        for start in range(0, source.size, chunk_points):
            stop = min(source.size, start + chunk_points)
            res = evaluator.evaluate(source.points(start, stop, evaluator.device))
            for v in variables:
                flat[v][start:stop] = res[v].numpy()
            bar.update(stop - start)
    ds = xr.Dataset(
        {v: (source.dims, flat[v].reshape(source.shape)) for v in variables},
        coords={d: source.coords[d] for d in source.dims},
    )
    ds.attrs["source"] = json.dumps(source.describe())
    ds["loss"].attrs["units"] = "mean loss per sample (nats for cross-entropy)"
    return ds


def log10_loss(ds: xr.Dataset, floor: float = 1e-12) -> xr.DataArray:
    """``log10(max(loss, floor))`` of a field; NaN losses become +inf (diverged)."""
    loss = ds["loss"].fillna(np.inf)
    out = np.log10(np.maximum(loss, floor))
    out.attrs["units"] = "log10 of mean loss"
    return out
