"""The atlas's refined loss field: rounds of decoded latent points, stored and resumable.

:func:`refined_field` runs a :class:`~lossatlas.refine.Refinement` over a latent box,
each round evaluated by :func:`~lossatlas.fields.compute_field` into a field of the run
(so an interrupted call resumes), logging the plan and a time estimate from the first
chunk; :func:`box_field` is that over an atlas's latent box (:func:`latent_box`),
decoded by its map; :func:`model_distances` is each sample's distance to the nearest
model; :func:`field_dataset` is the refined field as the ``xarray.Dataset`` the run
stores (``RUN/fields/atlas.zarr``) and the report reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from . import distributed
from .evaluate import Evaluator
from .fields import compute_field
from .points import LatentSource
from .progress import progress_bar, progress_enabled
from .refine import RefinedField, Refinement, RefinePlan
from .store import Run
from .vectors import VectorFile

if TYPE_CHECKING:
    from .atlas import Atlas
    from .manifold import ReducedEmbedding

__all__ = ["box_field", "field_dataset", "latent_box", "model_distances", "refined_field"]

log = logging.getLogger("lossatlas.atlas")


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 5 s"`` or ``"2 h 10 min"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class _FieldClock:
    """The plan and the time estimate of a refined field, logged and (with a progress
    bar) written above the bar: an estimate from the first chunk evaluated, and a better
    one from the second when the first was slowed by a one-time warm-up (compiling,
    autotuning kernels)."""

    def __init__(self, name: str, plan: RefinePlan, show: bool):
        self.name, self.plan, self.show = name, plan, show
        self.bar = None
        self.estimate: float | None = None  # seconds for the whole field
        self._first: tuple[int, float] | None = None  # the first chunk's points, seconds
        self._chunks = 0

    def say(self, text: str) -> None:
        log.info("%s", text)
        if self.show and self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def chunk(self, points: int, seconds: float) -> None:
        """``compute_field``'s ``on_chunk``: the first two chunks give the estimate."""
        self._chunks += 1
        rate = points / max(seconds, 1e-9)
        total = self.plan.max_points
        if self._chunks == 1:
            self._first = (points, seconds)
            self.estimate = total / rate
            self.say(f"{self.name} estimate: first chunk of {points:,} points in {seconds:.2f} s "
                     f"({rate:,.0f} points/s): about {_duration(self.estimate)} for "
                     f"{total:,} points")
        elif self._chunks == 2 and self._first is not None and self.estimate is not None:
            p1, s1 = self._first
            later = s1 + max(total - p1, 0) / rate
            if later < 0.75 * self.estimate:  # the first chunk carried a warm-up
                self.estimate = later
                self.say(f"{self.name} estimate after the warm-up of the first chunk: "
                         f"{rate:,.0f} points/s: about {_duration(later)} for {total:,} "
                         "points")


def refined_field(evaluator: Evaluator, run: Run, decode: Callable[[Tensor], Tensor],
                  key: str, name: str, tag: str, ref: Refinement, chunk_points: int,
                  progress: bool | None) -> tuple[RefinedField, dict]:
    """Refine ``ref`` to the end, each round's pending latent points decoded by ``decode``
    (Tensor[P, d] -> Tensor[P, D]) and evaluated into the run's field
    ``NAME-TAG-rNNN`` (reused when stored: ``key`` identifies the decoder, ``tag`` the
    settings), ``chunk_points`` points per stored chunk.

    Returns the :class:`RefinedField` and its plan (:class:`RefinePlan` as a dict, with
    ``estimated_seconds`` from the first chunks evaluated; None when every round was
    stored already). The plan is logged before the first evaluation and the estimate
    once measured; with a progress bar (``progress``; None: auto) both are also written
    above it."""
    plan = ref.plan()
    show = progress_enabled(progress) and distributed.is_main()
    clock = _FieldClock(name, plan, show)
    with progress_bar(total=plan.max_points, progress=show, desc=name, unit="pt") as bar:
        clock.bar = bar
        clock.say(f"{name} plan: {plan.describe()}")
        for i in itertools.count():
            src = LatentSource(decode, ref.pending(), key)
            ds = compute_field(evaluator, src, run, f"{name}-{tag}-r{i:03d}", progress=False,
                               overwrite=False, chunk_points=chunk_points,
                               on_chunk=clock.chunk)
            ref.tell({v: ds[v].values.astype(np.float64) for v in ds.data_vars})
            bar.update(ref.evaluated - bar.n)
            if ref.done:
                break
        bar.total = ref.evaluated
        bar.refresh()
    return ref.result(), {**dataclasses.asdict(plan), "estimated_seconds": clock.estimate}


def field_dataset(f: RefinedField) -> xr.Dataset:
    """The refined field as stored: every value over ``sample`` (latent coordinates
    ``z0``, ``z1``, ...), ``level`` (-1 at the models), ``edges`` [edge, end],
    ``is_model``, ``model_sample`` (the sample at each model) and the box in ``attrs``."""
    d = f.coords.shape[1]
    ds = xr.Dataset(
        {k: ("sample", np.asarray(v, dtype=np.float64)) for k, v in f.values.items()},
        coords={f"z{i}": ("sample", f.coords[:, i]) for i in range(d)},
    )
    ds["level"] = ("sample", f.level)
    ds["edges"] = (("edge", "end"), f.edges)
    ds["is_model"] = ("sample", f.level == -1)
    ds["model_sample"] = ("model", f.extra_index)
    ds.attrs.update({"box_lo": f.lo.tolist(), "box_hi": f.hi.tolist(),
                     "resolution": f.resolution, "rounds": f.rounds})
    return ds


def latent_box(z: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``: the box around the codes ``z`` [P, d], widened by ``margin`` of its
    extent per side."""
    lo, hi = z.min(0), z.max(0)
    ext = np.maximum(hi - lo, 1e-6)
    return lo - margin * ext, hi + margin * ext


def box_field(atlas: Atlas, lo: np.ndarray, hi: np.ndarray, resolution: int, tol: float,
              budget: int, max_level: int, include_models: bool, progress: bool | None,
              corrected: bool, settings: list) -> tuple[RefinedField, dict]:
    """:func:`refined_field` over the box ``[lo, hi]`` decoded by the atlas's map with (or
    without) the residual correction (the models' codes as focus points, and as extra
    samples with ``include_models``), and its plan."""
    key = atlas._decoder_key() + ("" if corrected else "|raw")
    tag = hashlib.sha256(json.dumps([resolution, tol, budget, max_level, include_models,
                                     *settings, key]).encode()).hexdigest()[:8]
    codes = atlas.codes_.numpy()
    ref = Refinement(lo, hi, resolution=resolution, tol=tol,
                     budget=max(budget, resolution ** len(lo) + len(codes)),
                     max_level=max_level, extra_points=codes if include_models else None,
                     focus_points=codes)
    return refined_field(atlas.evaluator, atlas.run, partial(atlas.decode, corrected=corrected),
                         key, "atlas" if corrected else "atlas-raw", tag, ref,
                         atlas._chunk_points(), progress)


def model_distances(emb: ReducedEmbedding, X: Tensor | VectorFile, z: np.ndarray,
                    chunk: int = 4096) -> np.ndarray:
    """Euclidean distance (in parameter space) of each point decoded from ``z`` [P, d] to
    the nearest population model (rows of ``X``), float64 [P]: in span coordinates
    (:meth:`~lossatlas.manifold.SpanReduction.distances`), without decoding."""
    models = emb.span_codes(X)
    out = [emb.reduction_.distances(
        emb.decode_span(torch.as_tensor(z[i:i + chunk], dtype=torch.float32),
                        dtype=torch.float64), models).min(1).values
        for i in range(0, len(z), chunk)]
    return torch.cat(out).numpy().astype(np.float64)
