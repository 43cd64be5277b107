"""Evaluate a point source into a labelled field, stored chunk by chunk when a run is given.

Under ``torchrun`` (see :mod:`lossatlas.distributed`) the chunks are shared out
across the ranks; the result is the same as in one process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import numpy as np
import torch.distributed
import xarray as xr
from tqdm.auto import tqdm

from . import distributed
from .evaluate import Evaluator
from .fingerprint import evaluator_fingerprint
from .points import MAX_GRID_POINTS, PointSource
from .scale import log10_loss
from .store import FieldWriter, Run

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
    max_points: int | None = MAX_GRID_POINTS,
    on_chunk: Callable[[int, float], None] | None = None,
) -> xr.Dataset:
    """Loss and metrics at every point of ``source``, as an ``xarray.Dataset``.

    With ``run`` and ``name`` the field is stored in ``run/fields/NAME.zarr`` as it
    is computed; calling again after an interruption computes only the chunks
    that are missing (the points must be the same, checked by fingerprint).

    Returns a Dataset with dims ``source.dims`` and variables ``loss`` (mean loss
    per sample) and ``accuracy`` (fraction), plus any extra metrics; non-finite
    losses (diverged points) are kept as NaN/inf and counted in
    ``attrs["nonfinite"]``.

    ``on_chunk(points, seconds)`` is called after every chunk this call evaluates (not
    those resumed or reused) with its number of points and the seconds it took to make
    and evaluate them (e.g. to estimate the time left).

    A source of more than ``max_points`` points (default 10**7) is refused before
    anything is allocated; pass ``max_points=None`` to lift the limit.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is joined on first
    use (:func:`lossatlas.distributed.init_from_env`) and the chunks are shared
    out: with a run, rank 0 creates the store, the i-th pending chunk is computed
    and written by rank ``i % world_size``, and every rank returns the complete
    field once all are done; without a run the ranks' chunks are gathered. Every
    rank evaluates with rank 0's ``chunk_size`` and ``batch_size``; the values are
    those of a single-process run with the same sizes (pass them to the
    :class:`Evaluator` to be independent of free memory). A killed rank loses only
    its unfinished chunks.
    """
    if max_points is not None and source.size > max_points:
        raise ValueError(
            f"compute_field: {source.size:.3g} points (grid {' x '.join(map(str, source.shape))})"
            f" is over the limit of {max_points:.3g}; lower the resolution or pass "
            "max_points=None"
        )
    variables = _variables(evaluator)
    distributed.init_from_env()
    chunk_points = chunk_points or max(evaluator.chunk_size * 4, 256)
    # every rank must cut the field the same way and evaluate with the same sizes (the
    # defaults depend on free memory): rank 0's are used
    chunk_points = distributed.broadcast_object(chunk_points)
    if distributed.is_distributed():
        evaluator.use_sizes(*distributed.broadcast_object(
            (evaluator.chunk_size, evaluator.batch_size)))
    attrs = {"precision": evaluator.precision, "samples": evaluator.num_samples, **(attrs or {})}
    _check_device(evaluator)
    t0 = time.perf_counter()
    if run is None:
        ds = _compute_in_memory(evaluator, source, variables, chunk_points, progress,
                                on_chunk)
        ds.attrs.update(attrs)
    else:
        if not name:
            raise ValueError("compute_field: a run was given without a field name")
        # reused or resumed only when computed from the same points, data and settings
        ev_fp = evaluator_fingerprint(evaluator)
        if run.has_field(name) and not overwrite:
            run.check_field(name, source, ev_fp)  # StaleResultError naming what changed
            log.info("field %s already complete in %s; reusing it", name, run.path)
            ds = run.open_field(name)
            ds.attrs["nonfinite"] = int((~np.isfinite(ds["loss"].values)).sum())
            return ds
        with run.locked():  # one writer per run directory (rank 0 holds it under torchrun)
            writer, pending = _open_writer(run, name, source, variables, chunk_points, attrs,
                                           overwrite, ev_fp)
            skipped = writer.num_chunks - len(pending)
            mine = distributed.shard(pending)
            resumed = source.size - sum(_chunk_points(writer, k) for k in pending)
            bar = tqdm(
                total=resumed + sum(_chunk_points(writer, k) for k in mine), initial=resumed,
                unit="pt", disable=not progress or not distributed.is_main(), desc=f"field {name}",
            )
            for k in mine:
                start, stop = writer.chunk_range(k)
                tc = time.perf_counter()
                res = evaluator.evaluate(source.points(start, stop, evaluator.device))
                writer.write(k, {v: res[v].numpy() for v in variables})
                bar.update(stop - start)
                if on_chunk is not None:
                    on_chunk(stop - start, time.perf_counter() - tc)
            bar.close()
            distributed.barrier()  # every chunk is on disk
            if distributed.is_main():
                writer.finish()
                seconds = time.perf_counter() - t0
                run.record_stage(
                    f"field:{name}", seconds, points=source.size, chunks_resumed=skipped,
                    ranks=distributed.world_size(), source=source.describe(),
                )
            distributed.barrier()  # the field is marked complete
        ds = run.open_field(name)
    loss = ds["loss"].values
    ds.attrs["nonfinite"] = int((~np.isfinite(loss)).sum())
    if ds.attrs["nonfinite"]:
        log.warning("%d of %d points have a non-finite loss", ds.attrs["nonfinite"], loss.size)
    return ds


def _chunk_points(writer: FieldWriter, k: int) -> int:
    start, stop = writer.chunk_range(k)
    return stop - start


def _check_device(evaluator: Evaluator) -> None:
    """Warn when, distributed on GPUs, the evaluator is not on this rank's GPU."""
    if not distributed.is_distributed() or evaluator.device.type != "cuda":
        return
    index = evaluator.device.index
    mine = distributed.device()
    if index is not None and index != mine.index:
        log.warning("compute_field: rank %d evaluates on %s, not on its own GPU %s; build the "
                    "Evaluator with device=lossatlas.distributed.device()",
                    distributed.rank(), evaluator.device, mine)


def _open_writer(
    run: Run, name: str, source: PointSource, variables: list[str], chunk_points: int,
    attrs: dict, overwrite: bool, ev_fp: dict | None = None,
) -> tuple[FieldWriter, list[int]]:
    """The field's writer and its pending chunks, the same on every rank.

    Rank 0 alone creates (or checks) the zarr template and lists the pending
    chunks; the others open the template once it exists.
    """
    if not distributed.is_distributed():
        writer = run.begin_field(name, source, variables, chunk_points, attrs, overwrite,
                                 ev_fp)
        return writer, writer.pending()
    error: str | None = None
    pending: list[int] = []
    failure: BaseException | None = None
    if distributed.is_main():
        try:
            writer = run.begin_field(name, source, variables, chunk_points, attrs, overwrite,
                                     ev_fp)
            pending = writer.pending()
        except Exception as err:  # noqa: BLE001 - re-raised below, after telling the others
            failure, error = err, str(err)
    error, pending = distributed.broadcast_object((error, pending))
    if failure is not None:
        raise failure
    if error is not None:
        raise ValueError(f"compute_field: rank 0 could not open field {name!r}: {error}")
    if not distributed.is_main():
        writer = run.begin_field(name, source, variables, chunk_points, attrs, overwrite=False,
                                 evaluator_fp=ev_fp)
    return writer, pending


def _compute_in_memory(
    evaluator: Evaluator, source: PointSource, variables: list[str], chunk_points: int,
    progress: bool, on_chunk: Callable[[int, float], None] | None = None,
) -> xr.Dataset:
    flat = {v: np.empty(source.size, dtype=np.float32) for v in variables}
    starts = distributed.shard(list(range(0, source.size, chunk_points)))
    done: dict[int, dict[str, np.ndarray]] = {}
    total = sum(min(source.size, s + chunk_points) - s for s in starts)
    with tqdm(total=total, disable=not progress or not distributed.is_main(), desc="field",
              unit="pt") as bar:
        for start in starts:
            stop = min(source.size, start + chunk_points)
            tc = time.perf_counter()
            res = evaluator.evaluate(source.points(start, stop, evaluator.device))
            done[start] = {v: res[v].numpy() for v in variables}
            bar.update(stop - start)
            if on_chunk is not None:
                on_chunk(stop - start, time.perf_counter() - tc)
    if distributed.is_distributed():
        gathered: list = [None] * distributed.world_size()
        torch.distributed.all_gather_object(gathered, done)
        done = {k: v for part in gathered for k, v in part.items()}
    for start, values in done.items():
        for v in variables:
            flat[v][start:start + len(values[v])] = values[v]
    ds = xr.Dataset(
        {v: (source.dims, flat[v].reshape(source.shape)) for v in variables},
        coords={d: source.coords[d] for d in source.dims},
    )
    ds.attrs["source"] = json.dumps(source.describe())
    ds["loss"].attrs["units"] = "mean loss per sample (nats for cross-entropy)"
    return ds
