"""The global atlas of a population: invertible map, refined loss field, merge tree.

One object per run, as in a notebook::

    atlas = Atlas(population, (X, y), "runs/mine")
    atlas.embed("ae", dim=2)        # span reduction + embedding (+ correction), stored
    atlas.field(resolution=48)      # decoded loss field, refined near the models
    atlas.topology()                # merge tree, basins, models per basin
    atlas.faithfulness()            # how far to trust the map
    atlas.connect()                 # barrier matrices before / after alignment
    atlas.terrain()                 # Hessian spectrum, trace, sharpness per model
    save_figure(atlas.plot_landscape().figure, "landscape.png")

Every stage is stored in the run directory and reused when called again. ``Atlas``
coordinates; the work is done elsewhere. The map is one estimator
(:class:`~lossatlas.manifold.ReducedEmbedding` with ``exact=True``) fitted in
:mod:`lossatlas.atlas_embed` and stored in the run by :mod:`lossatlas.atlas_io`; the
field runs in :mod:`lossatlas.atlas_field`, the merge tree's threshold in
:mod:`lossatlas.atlas_topology`, the checks of the map in :mod:`lossatlas.atlas_checks`,
the measures at the models (align, connect, terrain) in :mod:`lossatlas.atlas_models`,
the summary in :mod:`lossatlas.atlas_summary`; sizes under a memory budget come from
:class:`~lossatlas.budget.MemoryBudget`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from . import atlas_checks, atlas_field, atlas_io, atlas_models, atlas_summary, distributed
from .atlas_embed import as_include, fit_map
from .atlas_models import Alignment
from .atlas_topology import resolve_threshold
from .budget import MemoryBudget
from .errors import NotComputedError
from .evaluate import Evaluator
from .refine import RefinedField
from .store import Run, atomic_write_json
from .vectors import VectorFile

__all__ = ["Alignment", "Atlas"]

log = logging.getLogger(__name__)


def _map_attribute(name: str, doc: str) -> property:
    def get(self: Atlas) -> Any:
        emb = self.__dict__.get("embedding_")
        if emb is None:
            raise AttributeError(f"Atlas.{name}: call embed() first")
        return getattr(emb, name)
    return property(get, doc=doc)


class Atlas:
    """The global loss landscape of a population, stored in a run directory.

    Parameters
    ----------
    population : Population
        Models of one architecture (``.space``, ``.as_points()``, ``.labels``, ``.model(i)``).
    data : (X, y) tensors, Dataset or DataLoader
        The data the loss is measured on (as in :class:`Evaluator`).
    run_dir : path
        Where every stage is stored (created if missing).
    loss_fn, device, precision, batch_size, backend, output, compile : as in :class:`Evaluator`
        (``compile=True``: each point's forward through ``torch.compile``, what pays on
        large models such as transformers; the values are the same up to rounding).
        The BatchNorm policy is the population's (``population.bn``).
    seed : int
        Seed of the embedding's training.
    memory_budget : int or str, optional
        Host memory (bytes, or ``"512MB"``, ``"4GiB"``) the stages may use beyond the
        model and data (:class:`~lossatlas.budget.MemoryBudget`): the population and the
        span basis are read by blocks sized to it, points are decoded and evaluated in
        chunks that fit, and the basis is kept on disk
        (``RUN/embedding/map.components.safetensors``) when it would take more than a
        quarter of it. A memory-mapped population (``Population.from_checkpoints(...,
        out=)``) is always read by blocks. Default: no limit.
    overwrite : bool
        Empty the run directory of earlier results (:meth:`Run.clear_results`) and start
        afresh. Without it a run holding another population's results (its fingerprint
        in ``run.json["population"]``) is refused, and a stored field computed from other
        data or settings raises :class:`~lossatlas.store.StaleResultError`.

    Attributes (after each stage)
    -----------------------------
    embedding_ : ReducedEmbedding  the map (after ``embed``); ``codes_`` Tensor[N, d],
        ``include_codes_``, ``reduction_``, ``inner_``, ``correction_`` are its attributes
    field_ : RefinedField      samples, values and adjacency (after ``field``)
    tree_ : MergeTree          the simplified merge tree (after ``topology``)
    basins_ : int array [N]    basin of every model (after ``topology``)
    """

    codes_ = _map_attribute("codes_", "The models' latent codes Tensor[N, d].")
    include_codes_ = _map_attribute("include_codes_", "Codes of ``embed(include=)`` points.")
    reduction_ = _map_attribute("reduction_", "The fitted SpanReduction.")
    inner_ = _map_attribute("inner_", "The embedding fitted on the span coordinates.")
    correction_ = _map_attribute("correction_", "The ResidualCorrection, or None.")

    def __init__(self, population, data, run_dir, loss_fn=None, device=None,
                 precision: str = "fp32", batch_size: int | None = None, seed: int = 0,
                 memory_budget: int | str | None = None, backend: str = "auto", output=None,
                 overwrite: bool = False, compile: bool | str = False):
        self.population, self.data, self.loss_fn = population, data, loss_fn
        # under torchrun: rank 0 fits the embedding and writes the run's files, every
        # rank evaluates its share of each field (no-op in a single process)
        distributed.init_from_env()
        if device is None and distributed.is_distributed():
            device = distributed.device()
        self.run = Run(run_dir)
        atlas_io.claim(self.run, population, overwrite)
        self.seed = seed
        self.budget = MemoryBudget.parse(memory_budget, len(population),
                                         int(population.space.dim), "Atlas: memory_budget")
        self.memory_budget = self.budget.bytes
        # the population's BatchNorm policy, the same at the models and between them
        self.evaluator = Evaluator(
            population.model(0), data, loss_fn=loss_fn, device=device, precision=precision,
            space=population.space, batch_size=batch_size, backend=backend,
            memory_budget=self.budget.evaluator_share(device),
            bn=getattr(population, "bn", None), output=output, compile=compile,
        )
        self.bn = self.evaluator.bn
        self.device = self.evaluator.device
        # Tensor[N, D] in memory, or a VectorFile read by rows and column blocks
        self.X = population.matrix if getattr(population, "is_mapped", False) else (
            population.as_points().float())
        atlas_io.write_population(self.path, population, self.evaluator)
        self._true: dict[str, Tensor] | None = None

    # ------------------------------------------------------------ helpers
    @property
    def path(self) -> Path:
        return self.run.path

    def _check(self, attr: str, stage: str) -> None:
        if attr not in self.__dict__:
            raise NotComputedError(f"Atlas: call {stage} first")

    @property
    def _streamed(self) -> bool:
        return isinstance(self.X, VectorFile)

    def _row_chunks(self):
        """``(start, Tensor[n, D])`` chunks of the population's vectors."""
        n, step = self.X.shape[0], self.budget.rows_per_chunk()
        for start in range(0, n, step):
            stop = min(n, start + step)
            yield start, (self.X.rows(slice(start, stop)) if self._streamed
                          else self.X[start:stop])

    def _chunk_points(self) -> int:
        return self.budget.chunk_points(self.device, self.evaluator.chunk_size)

    def true_values(self) -> dict[str, Tensor]:
        """Loss and metrics of the population models themselves (Tensor[N] each)."""
        if self._true is None:
            parts = [self.evaluator.evaluate(rows) for _, rows in self._row_chunks()]
            self._true = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return self._true

    def eval_mode_values(self) -> dict[str, Tensor] | None:
        """Loss and metrics of every model in eval mode with its own stored BatchNorm
        statistics (the checkpoint as saved), Tensor[N] each; None for a model without
        BatchNorm statistics, or when the population does not keep them
        (:func:`lossatlas.atlas_models.eval_mode_values`)."""
        return atlas_models.eval_mode_values(self)

    # --------------------------------------------------------------- embed
    def embed(self, method: str = "ae", dim: int = 2, exact: bool = True, refit: bool = False,
              standardize: bool = False, include: dict[str, Tensor] | None = None,
              **kwargs: Any) -> Atlas:
        """Span reduction, then ``method`` in {"ae", "pca", "kpca", "umap"} with ``dim`` latents.

        ``exact=True`` adds a smooth residual correction so every model decodes
        exactly to itself at its code (see :class:`ResidualCorrection`).
        ``include={"name": Tensor[P, D]}`` fits extra points (curves, trajectories,
        re-basined models) into the map without making them population members: the
        span and the embedding are fitted on them too, the residual correction is not
        (it pins only the models), and they take no part in basins or variants. Their
        codes are ``include_codes_[name]``; :meth:`overlay` of the same points under the
        same name then reports the error of the included fit beside the projection.
        The map is one :class:`~lossatlas.manifold.ReducedEmbedding` (``embedding_``),
        stored with ``Embedding.save`` in ``RUN/embedding/map`` (the codes also in
        ``codes.safetensors``, for the report); reused unless ``refit``. Under torchrun
        rank 0 fits and stores it, the other ranks then load it.
        """
        include = as_include(include, self.X.shape[1], self._streamed)
        if distributed.is_distributed():
            if distributed.is_main():
                self._embed(method, dim, exact, refit, standardize, include, **kwargs)
            distributed.barrier()
            if not distributed.is_main():
                self._embed(method, dim, exact, False, standardize, include, **kwargs)
            return self
        return self._embed(method, dim, exact, refit, standardize, include, **kwargs)

    def _embed(self, method: str, dim: int, exact: bool, refit: bool, standardize: bool,
               include: dict[str, Tensor], **kwargs: Any) -> Atlas:
        t0 = time.perf_counter()
        folder = self.path / "embedding"
        config = atlas_io.map_config(method, dim, exact, standardize, self.seed, kwargs,
                                     self.X, include)
        stored = None if refit else atlas_io.stored_map(folder, config, exact, self.path)
        if stored is not None:
            self.embedding_ = stored
            log.info("embedding reused from %s", folder)
            return self
        emb = fit_map(self.X, include, folder, method=method, dim=dim, exact=exact,
                      standardize=standardize, seed=self.seed, kwargs=kwargs,
                      budget=self.budget, device=self.device)
        self.embedding_ = emb
        atlas_io.store_map(emb, folder, config, self.run)
        self.run.record_stage("embed", time.perf_counter() - t0, method=method, dim=dim,
                              components=int(emb.reduction_.n_components_))
        return self

    def decode(self, z: Tensor, corrected: bool = True) -> Tensor:
        """Parameter vectors Tensor[P, D] of latent points z [P, d] (on z's device)."""
        self._check("embedding_", "embed()")
        return self.embedding_.decode(z.float(), device=z.device, corrected=corrected)

    def encode(self, points: Tensor) -> Tensor:
        """Latent codes Tensor[P, d] of parameter vectors [P, D] (e.g. curve points)."""
        self._check("embedding_", "embed()")
        return self.embedding_.encode(points.float()).float()

    def _decoder_key(self) -> str:
        return atlas_io.decoder_key(self.codes_, self.run)

    # --------------------------------------------------------------- field
    def box(self, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Latent box around the codes (the models' and any included points'), widened by
        ``margin`` of its extent per side."""
        self._check("embedding_", "embed()")
        z = torch.cat([self.codes_, *self.include_codes_.values()]).numpy()
        return atlas_field.latent_box(z, margin)

    def field(self, resolution: int = 48, margin: float = 0.2, refine: bool = True,
              tol: float = 0.1, budget: int = 6000, max_level: int = 6,
              include_models: bool = True, progress: bool | None = None) -> RefinedField:
        """The loss field over the latent box, refined where the loss changes fast.

        Starts from a ``resolution``^d grid plus the models' codes; with ``refine``
        splits cells whose corners differ by more than ``tol`` decades of loss,
        prioritising cells holding models, until ``budget`` samples. Each round is
        stored as a field of the run, so an interrupted call resumes.
        ``include_models=False`` leaves the models' codes out of the samples (to
        measure what a grid alone shows; topology then needs them, so it refuses).
        ``distance`` is each sample's distance to the nearest model (parameter units).

        Before the first evaluation the plan (:class:`~lossatlas.refine.RefinePlan`) is
        logged at INFO on ``lossatlas.atlas``, then an estimated time from the first chunk
        measured; ``progress`` (``None``: in a notebook or a terminal) shows one bar over
        all rounds with both lines above it. Returns the :class:`RefinedField` (also
        ``field_``); the plan is stored in ``run.json`` with the stage's time.
        """
        self._check("embedding_", "embed()")
        t0 = time.perf_counter()
        lo, hi = self.box(margin)
        field, plan = self._refined_field(lo, hi, resolution, tol if refine else np.inf,
                                          budget, max_level, include_models, progress,
                                          corrected=True, settings=[margin, refine])
        field.values["distance"] = atlas_field.model_distances(self.embedding_, self.X,
                                                               field.coords)
        self.field_ = field
        self.run.save_dataset("atlas", atlas_field.field_dataset(field))
        self.run.record_stage("field", time.perf_counter() - t0, samples=field.n,
                              rounds=field.rounds, resolution=resolution, tol=tol,
                              budget=budget, box=[lo.tolist(), hi.tolist()], plan=plan)
        return field

    def _refined_field(self, lo: np.ndarray, hi: np.ndarray, resolution: int, tol: float,
                       budget: int, max_level: int, include_models: bool,
                       progress: bool | None, corrected: bool, settings: list
                       ) -> tuple[RefinedField, dict]:
        """:func:`~lossatlas.atlas_field.refined_field` over the box ``[lo, hi]`` decoded
        with (or without) the residual correction, and its plan
        (:func:`~lossatlas.atlas_field.box_field`)."""
        return atlas_field.box_field(self, lo, hi, resolution, tol, budget, max_level,
                                     include_models, progress, corrected, settings)

    def raw_check(self, resolution: int | None = None, progress: bool | None = None) -> dict:
        """The map without the residual correction, beside the corrected atlas
        (:func:`lossatlas.atlas_checks.raw_check`); stored as ``RUN/raw_check.json``."""
        self._check("tree_", "topology()")
        return atlas_checks.raw_check(self, resolution, progress)

    # ------------------------------------------------------------ topology
    def model_samples(self) -> np.ndarray:
        """Index of the field sample at each model's own code (Int[N])."""
        self._check("field_", "field()")
        if len(self.field_.extra_index) != len(self.population):
            raise NotComputedError("Atlas: the field was computed with include_models=False")
        return self.field_.extra_index

    def topology(self, threshold: float | str = 0.1, min_persistence: float = 0.01) -> Any:
        """Merge tree of log10 loss on the refined field; basins of every model.

        ``threshold``: persistence in decades (default 0.1: a basin must be at
        least 26% deeper in loss than the pass out of it), "auto" (largest gap of
        the persistence diagram) or a string like "10%" (fraction of the
        population's own log10-loss range, min to max over the models). Basins shallower
        than ``min_persistence`` decades (default 0.01, about 2%) are always merged:
        differences that small are within evaluation noise.
        """
        from .topology import graph_merge_tree, graph_persistence

        self._check("field_", "field()")
        t0 = time.perf_counter()
        values = self.field_.values["log10_loss"]
        self.pairs_ = graph_persistence(values, self.field_.edges)
        threshold = resolve_threshold(threshold, min_persistence, self.pairs_,
                                      lambda: values[self.model_samples()])
        self.tree_ = graph_merge_tree(values, self.field_.edges, threshold=threshold)
        self.basins_ = np.asarray(self.tree_.labels).reshape(-1)[self.model_samples()]
        summary = atlas_checks.basin_summary(self)
        atomic_write_json(self.path / "topology.json", summary)
        self.run.record_stage("topology", time.perf_counter() - t0,
                              basins=summary["num_basins"], threshold=summary["threshold"])
        return self.tree_

    # ------------------------------------------------- checks of the map
    def faithfulness(self) -> dict:
        """How far to trust the map, in decades of loss (log10), per model and median
        (:func:`lossatlas.atlas_checks.faithfulness`); stored as ``RUN/faithfulness.json``."""
        self._check("field_", "field()")
        out = atlas_checks.faithfulness(self)
        atomic_write_json(self.path / "faithfulness.json", out)
        return out

    def reconstruction_table(self, methods: tuple[str, ...] = ("pca", "kpca", "umap", "ae"),
                             dim: int = 2, variants: dict[str, dict] | None = None,
                             clustering: tuple[str, ...] = ("mds", "isomap")) -> list[dict]:
        """The seed's Table 1 on this population: every method side by side
        (:func:`lossatlas.atlas_checks.reconstruction_table`); stored as
        ``RUN/reconstruction.json``."""
        rows = atlas_checks.reconstruction_table(self, methods, dim, variants, clustering)
        atomic_write_json(self.path / "reconstruction.json", {"dim": dim, "rows": rows})
        return rows

    def overlay(self, points: Tensor, name: str, labels: list[str] | None = None,
                partners: list[int] | None = None) -> dict:
        """Parameter points (a curve, re-basined models, a trajectory) projected onto the
        map (:func:`lossatlas.atlas_checks.overlay`); stored as ``RUN/overlays/NAME.json``."""
        self._check("field_", "field()")
        out = atlas_checks.overlay(self, points, name, labels, partners)
        atomic_write_json(self.path / "overlays" / f"{name}.json", out)
        return out

    # ------------------------------------------------- the population's models
    def align(self, reference: int = 0, indices: Sequence[int] | None = None) -> Alignment:
        """The models (default all; population ``indices``) permuted onto the model
        ``reference`` by weight matching (:func:`lossatlas.symmetry.weight_matching`, the
        permutation spec traced once on the atlas's data); returns an :class:`Alignment`."""
        return atlas_models.align(self, reference, indices)

    def connect(self, align: bool = True, curves: bool | Sequence[tuple[int, int]] = False,
                points: int = 25, indices: Sequence[int] | None = None,
                **curve_kwargs: Any) -> dict[str, Any]:
        """Loss barriers between the models (default all; population ``indices``).

        Returns ``{"before": DataArray[model, model]}`` (Entezari barriers, nats, on the
        atlas's data, loss and BatchNorm policy, ``points`` points per path) and,
        with ``align``, ``"after"``: once every model is permuted onto the first by
        weight matching (:func:`lossatlas.connectivity.population_barrier_matrices`).
        ``curves`` (True: every pair; or pairs of population indices) adds ``"curves"``:
        ``{(i, j): CurveResult}`` of :func:`lossatlas.connectivity.train_curve` between
        the pair (the aligned models with ``align``), ``curve_kwargs`` passed on (``steps``:
        optimiser steps, ``kind``, ``num_bends``, ``lr``, ``seed``, ...).
        """
        return atlas_models.connect(self, align, curves, points, indices, curve_kwargs)

    def terrain(self, indices: Sequence[int] | None = None,
                measures: Sequence[str] = ("eigenvalues", "trace", "sharpness"),
                **kwargs: Any) -> xr.Dataset:
        """Local qualifiers (top Hessian eigenvalues, trace, sharpness, LLC) at the models
        (default all; population ``indices``): :func:`lossatlas.curvature.terrain` on the
        atlas's data, loss and BatchNorm policy, ``kwargs`` passed on (``k``,
        ``num_probes``, ``rho``, ``llc_kwargs``, ...). Returns its ``xarray.Dataset`` over
        ``model`` (coordinates: the model names)."""
        return atlas_models.terrain(self, indices, measures, **kwargs)

    # ----------------------------------------------------------- summary
    def summary(self) -> dict:
        """A JSON-able summary of the stages done
        (:func:`lossatlas.atlas_summary.summary`)."""
        return atlas_summary.summary(self)

    def plot_landscape(self, path=None, ax=None, trajectories: bool = True,
                       marker_values: dict[int, float] | None = None,
                       marker_label: str = ""):
        """Filled contours of log10 loss over the latent map with basins and models
        (:func:`lossatlas.atlas_plot.plot_landscape`); returns the Axes. ``path`` is
        deprecated: save with :func:`lossatlas.plotting.save_figure`."""
        from .atlas_plot import plot_landscape

        return plot_landscape(self, path=path, ax=ax, trajectories=trajectories,
                              marker_values=marker_values, marker_label=marker_label)
