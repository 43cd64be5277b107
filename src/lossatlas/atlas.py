"""The global atlas of a population: invertible map, refined loss field, merge tree.

One object per run, as in a notebook::

    atlas = Atlas(population, (X, y), "runs/mine")
    atlas.embed("ae", dim=2)        # span reduction + embedding, stored
    atlas.field(resolution=48)      # decoded loss field, refined near the models
    atlas.topology()                # merge tree, basins, models per basin
    atlas.faithfulness()            # how far to trust the map
    atlas.plot_landscape("landscape.png")

Every stage is stored in the run directory and reused when called again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import distributed
from .correction import ResidualCorrection
from .evaluate import Evaluator
from .fields import compute_field
from .points import LatentSource
from .progress import progress_bar, progress_enabled
from .refine import RefinedField, Refinement, RefinePlan
from .store import Run, atomic_write_json
from .vectors import VectorFile, parse_bytes, return_freed_memory

__all__ = ["Atlas"]

# decoded parameter vectors held at once when no memory budget is given
_DECODE_BYTES = 2**30

log = logging.getLogger(__name__)


def _range(a: np.ndarray) -> list[float]:
    """``[min, max]`` over the finite values (NaN when none)."""
    f = a[np.isfinite(a)]
    return [float(f.min()), float(f.max())] if f.size else [float("nan")] * 2


def _nanmedian(a: np.ndarray) -> float:
    f = a[np.isfinite(a)]
    return float(np.median(f)) if f.size else float("nan")


def _nanmean(a: np.ndarray) -> float:
    f = a[np.isfinite(a)]
    return float(np.mean(f)) if f.size else float("nan")


def _digest(t: Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class _FieldClock:
    """The plan and the time estimate of a refined field, logged and (with a progress
    bar) written above the bar: the estimate once, from the first chunk evaluated."""

    def __init__(self, name: str, plan: RefinePlan, show: bool):
        self.name, self.plan, self.show = name, plan, show
        self.bar = None
        self.estimate: float | None = None  # seconds for the whole field

    def say(self, text: str) -> None:
        log.info("%s", text)
        if self.show and self.bar is not None:
            self.bar.write(text, file=sys.stderr)

    def chunk(self, points: int, seconds: float) -> None:
        """``compute_field``'s ``on_chunk``: the first chunk gives the estimate."""
        if self.estimate is not None:
            return
        rate = points / max(seconds, 1e-9)
        self.estimate = self.plan.max_points / rate
        self.say(f"{self.name} estimate: first chunk of {points:,} points in {seconds:.2f} s "
                 f"({rate:,.0f} points/s): about {_duration(self.estimate)} for "
                 f"{self.plan.max_points:,} points")


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 5 s"`` or ``"2 h 10 min"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _embedding_kwargs(method: str, dim: int, seed: int, kwargs: dict) -> dict:
    key = "latent_dim" if method == "ae" else "n_components"
    out = {key: dim, **kwargs}
    if method in ("ae", "umap"):
        out.setdefault("seed", seed)
    if method == "ae":
        # on span coordinates an epoch costs microseconds; more of them buy faithfulness
        out.setdefault("epochs", 4000)
    return out


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
    loss_fn, device, precision, batch_size, backend, output : as in :class:`Evaluator`.
        The BatchNorm policy is the population's (``population.bn``).
    seed : int
        Seed of the embedding's training.
    memory_budget : int or str, optional
        Host memory (bytes, or ``"512MB"``, ``"4GiB"``) the stages may use beyond the
        model and data: the population and the span basis are read by blocks sized to
        it, points are decoded and evaluated in chunks that fit, and the basis is kept
        on disk (``RUN/embedding/reduction.components.safetensors``) when it would take
        more than a quarter of it. A memory-mapped population (``Population.
        from_checkpoints(..., out=)``) is always read by blocks. Default: no limit.
    overwrite : bool
        Empty the run directory of earlier results (:meth:`Run.clear_results`) and start
        afresh. Without it a run holding another population's results (its fingerprint
        in ``run.json["population"]``) is refused, and a stored field computed from other
        data or settings raises :class:`~lossatlas.store.StaleResultError`.

    Attributes (after each stage)
    -----------------------------
    codes_ : Tensor[N, d]      the models' latent codes (after ``embed``)
    field_ : RefinedField      samples, values and adjacency (after ``field``)
    tree_ : MergeTree          the simplified merge tree (after ``topology``)
    basins_ : int array [N]    basin of every model (after ``topology``)
    """

    def __init__(self, population, data, run_dir, loss_fn=None, device=None,
                 precision: str = "fp32", batch_size: int | None = None, seed: int = 0,
                 memory_budget: int | str | None = None, backend: str = "auto", output=None,
                 overwrite: bool = False):
        self.population = population
        # under torchrun: rank 0 fits the embedding and writes the run's files, every
        # rank evaluates its share of each field (no-op in a single process)
        distributed.init_from_env()
        if device is None and distributed.is_distributed():
            device = distributed.device()
        self.run = Run(run_dir)
        self._claim(population, overwrite)
        self.seed = seed
        self.memory_budget = None if memory_budget is None else parse_bytes(
            memory_budget, "Atlas: memory_budget")
        if self.memory_budget is not None:
            return_freed_memory()
        # the population's BatchNorm policy, the same at the models and between them
        self.evaluator = Evaluator(
            population.model(0), data, loss_fn=loss_fn, device=device, precision=precision,
            space=population.space, batch_size=batch_size, backend=backend,
            memory_budget=self._host_share(device), bn=getattr(population, "bn", None),
            output=output,
        )
        self.bn = self.evaluator.bn
        self.device = self.evaluator.device
        # Tensor[N, D] in memory, or a VectorFile read by rows and column blocks
        self.X = population.matrix if getattr(population, "is_mapped", False) else (
            population.as_points().float())
        atomic_write_json(self.path / "population.json", {
            "labels": population.labels, "paths": getattr(population, "paths", None),
            "dim": int(population.space.dim), "bn": self.bn,
            "bn_text": self.evaluator.bn_text, "loss": self.evaluator.loss_name})
        self._true: dict[str, Tensor] | None = None

    # ------------------------------------------------------------ helpers
    def _claim(self, population, overwrite: bool) -> None:
        """One run, one population: refuse a run holding another population's results
        (StaleResultError), or with ``overwrite`` empty it and start afresh; rank 0
        decides under torchrun."""
        from .fingerprint import population_fingerprint
        from .store import StaleResultError

        error = None
        if distributed.is_main():
            try:
                if overwrite:
                    self.run.clear_results()
                self.run.claim_population(population_fingerprint(population), {
                    "models": len(population), "dim": int(population.space.dim),
                    "bn": getattr(population, "bn", None)})
            except StaleResultError as err:
                error = str(err)
        error = distributed.broadcast_object(error)
        if error is not None:
            raise StaleResultError(error)

    @property
    def path(self) -> Path:
        return self.run.path

    def true_values(self) -> dict[str, Tensor]:
        """Loss and metrics of the population models themselves (Tensor[N] each)."""
        if self._true is None:
            parts = [self.evaluator.evaluate(rows) for _, rows in self._row_chunks()]
            self._true = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return self._true

    def eval_mode_values(self) -> dict[str, Tensor] | None:
        """Loss and metrics of every model in eval mode with its own stored BatchNorm
        statistics (the checkpoint as saved), Tensor[N] each; None for a model without
        BatchNorm statistics, or when the population does not keep them."""
        pop = self.population
        if self.bn == "none" or (self.bn == "recompute" and not getattr(pop, "statistics",
                                                                          None)):
            return None
        if self.bn == "own":
            return self.true_values()
        ev = Evaluator(pop.model(0), self.evaluator.data, loss_fn=self.evaluator.loss_fn,
                       device=self.device, precision=self.evaluator.precision, bn="own",
                       output=self.evaluator.output)
        return ev.evaluate(torch.stack([ev.space.flatten(pop.model(i))
                                        for i in range(len(pop))]))

    # ------------------------------------------------------- memory budget
    @property
    def _streamed(self) -> bool:
        return isinstance(self.X, VectorFile)

    def _host_share(self, device) -> int | None:
        """The evaluator's activation budget: a quarter of the memory budget when it
        evaluates on the CPU (on a GPU the budget, for host memory, does not apply)."""
        on_cpu = device is None and not torch.cuda.is_available() or (
            device is not None and torch.device(device).type == "cpu")
        return None if self.memory_budget is None or not on_cpu else self.memory_budget // 4

    def _rows_per_chunk(self) -> int:
        """Vectors of D parameters held at once: a quarter of the memory budget, or
        without one at most ``_DECODE_BYTES`` of them."""
        if self.memory_budget is None:
            return max(1, _DECODE_BYTES // (4 * self.X.shape[1]))
        return max(1, self.memory_budget // (4 * 4 * self.X.shape[1]))

    def _chunk_points(self) -> int:
        """Points decoded together per stored chunk of a field: under the memory budget
        on the CPU; else compute_field's default (4 evaluator chunks, at least 256)
        capped so the decoded vectors take at most ``_DECODE_BYTES`` (on a GPU they
        live in device memory) but hold at least one evaluator chunk."""
        if self.memory_budget is not None and self.device.type == "cpu":
            return self._rows_per_chunk()
        ev = self.evaluator.chunk_size
        cap = max(ev, _DECODE_BYTES // (4 * self.X.shape[1]))
        return min(cap, max(ev * 4, 256))

    def _row_chunks(self):
        """``(start, Tensor[n, D])`` chunks of the population's vectors."""
        n = self.X.shape[0]
        step = self._rows_per_chunk()
        for start in range(0, n, step):
            stop = min(n, start + step)
            rows = (self.X.rows(slice(start, stop)) if self._streamed
                    else self.X[start:stop])
            yield start, rows

    def _block_size(self) -> int | None:
        """Parameters per column block of the span reduction under the budget."""
        if self.memory_budget is None:
            return None
        # a float64 block (and each of its two temporaries) takes 1/8 of the budget
        return max(1024, self.memory_budget // (8 * 8 * self.X.shape[0]))

    def _population_digest(self) -> str:
        return self.X.digest() if self._streamed else _digest(self.X)

    def _span_points(self, R: Tensor) -> tuple[dict[str, Tensor], float]:
        """Loss and metrics of span coordinates ``R`` [N, k] (one row per model) decoded,
        and the mean squared error of the decoded points against the models' vectors;
        decoded and evaluated a chunk at a time."""
        parts, sse = [], 0.0
        for start, rows in self._row_chunks():
            pts = self.reduction_.decode(R[start:start + len(rows)].to(self.device),
                                         device=self.device)
            parts.append(self.evaluator.evaluate(pts))
            sse += float((rows - pts.cpu().float()).square_().sum())
            del pts, rows  # before the next chunk is read
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return out, sse / (self.X.shape[0] * self.X.shape[1])

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
        Stored in ``RUN/embedding/``; reused unless ``refit``. Under torchrun rank 0
        fits and stores it, the other ranks then load it.
        """
        include = {str(k): torch.as_tensor(v, dtype=torch.float32)
                   for k, v in (include or {}).items()}
        for name, pts in include.items():
            if pts.ndim != 2 or pts.shape[1] != self.X.shape[1]:
                raise ValueError(f"Atlas.embed: include[{name!r}] must be [P, {self.X.shape[1]}], "
                                 f"got {tuple(pts.shape)}")
        if include and self._streamed:
            raise ValueError("Atlas.embed: include= needs the population in memory (no "
                             "memory-mapped population or memory budget)")
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
        from .manifold import SpanReduction, load_embedding, make_embedding
        from .manifold.span import components_file

        t0 = time.perf_counter()
        folder = self.path / "embedding"
        config = {"method": method, "dim": dim, "exact": exact, "standardize": standardize,
                  "seed": self.seed, "kwargs": kwargs,
                  "population": self._population_digest(),
                  "include": {k: _digest(v) for k, v in include.items()}}
        if include and exact:  # the correction is pinned to zero at included points
            config["correction"] = "zero at included points"
        meta_path = folder / "embedding.json"
        if not refit and meta_path.exists() and json.loads(meta_path.read_text()) == config:
            try:
                self.reduction_ = load_embedding(folder / "reduction")
                self._span_codes = None
                self.inner_ = load_embedding(folder / "inner")
                state = load_file(str(folder / "codes.safetensors"))
            except Exception as err:  # noqa: BLE001 - a truncated or corrupt stored file
                reason = (str(err).splitlines() or [type(err).__name__])[0]
                raise ValueError(
                    f"run {self.path}: the stored embedding in {folder} cannot be read "
                    f"(truncated or corrupt? {type(err).__name__}: {reason}); rerun with "
                    "--overwrite (Atlas(overwrite=True)) or another --out") from err
            self.codes_ = state["codes"]
            self.include_codes_ = {k[len("include."):]: v for k, v in state.items()
                                   if k.startswith("include.")}
            self.correction_ = (ResidualCorrection.from_state(
                {k[4:]: v for k, v in state.items() if k.startswith("cor.")}) if exact else None)
            log.info("embedding reused from %s", folder)
            return self
        torch.manual_seed(self.seed)
        N, D = self.X.shape
        on_disk = self._streamed or (
            self.memory_budget is not None and 4 * N * D > self.memory_budget // 4)
        folder.mkdir(parents=True, exist_ok=True)
        extra = torch.cat(list(include.values())) if include else None
        self.reduction_ = SpanReduction(
            standardize=standardize, block_size=self._block_size(),
            components_path=components_file(folder / "reduction") if on_disk else None,
            device=self.device if self.device.type == "cuda" else None,
        ).fit(self.X if extra is None else torch.cat([self.X, extra]))
        if getattr(self.reduction_, "rank_", None) == 0:
            raise ValueError(
                f"Atlas.embed: the {len(self.X)} checkpoints of the population are all the "
                "same model (zero span: identical weights); a landscape needs models that "
                "differ (copies of one checkpoint?)")
        C = self.reduction_.encode(self.X).cpu()  # the inner embedding trains on the CPU
        self._span_codes = C
        self.inner_ = make_embedding(method, **_embedding_kwargs(method, dim, self.seed, kwargs))
        if extra is None:
            self.inner_.fit(C)
        else:  # the included points are fitted too, but are not population members
            self.inner_.fit(torch.cat([C, self.reduction_.encode(extra).cpu()]))
        self.codes_ = self.inner_.encode(C).float()
        self.include_codes_ = {k: self.encode(v) for k, v in include.items()}
        state = {"codes": self.codes_.contiguous(),
                 **{f"include.{k}": v.contiguous() for k, v in self.include_codes_.items()}}
        self.correction_ = None
        if exact:
            residual = C.double() - self.inner_.decode(self.codes_).double()
            # pinned to zero at included points: they are fitted by the map itself, and
            # the models' residuals must not be carried onto them
            self.correction_ = ResidualCorrection(
                self.codes_, residual,
                zero_at=torch.cat(list(self.include_codes_.values())) if include else None)
            state.update({f"cor.{k}": v.contiguous() for k, v in self.correction_.state().items()})
        folder.mkdir(parents=True, exist_ok=True)
        self.reduction_.save(folder / "reduction")
        self.inner_.save(folder / "inner")
        tmp = folder / ".codes.safetensors.tmp"
        save_file(state, str(tmp))
        tmp.replace(folder / "codes.safetensors")
        atomic_write_json(meta_path, config)
        self.run.update("embedding", config)
        self.run.record_stage("embed", time.perf_counter() - t0, method=method, dim=dim,
                              components=int(C.shape[1]))
        return self

    def _check(self, attr: str, stage: str) -> None:
        if not hasattr(self, attr):
            raise RuntimeError(f"Atlas: call {stage} first")

    def decode(self, z: Tensor, corrected: bool = True) -> Tensor:
        """Parameter vectors Tensor[P, D] of latent points z [P, d] (on z's device)."""
        self._check("codes_", "embed()")
        c = self.inner_.decode(z.float().cpu()).to(z.device)
        if corrected and self.correction_ is not None:
            c = c + self.correction_(z.double()).to(c.dtype)
        return self.reduction_.decode(c, device=z.device)

    def encode(self, points: Tensor) -> Tensor:
        """Latent codes Tensor[P, d] of parameter vectors [P, D] (e.g. curve points)."""
        self._check("codes_", "embed()")
        return self.inner_.encode(self.reduction_.encode(points.float())).float()

    def _decoder_key(self) -> str:
        return _digest(self.codes_) + json.dumps(self.run.read().get("embedding", {}),
                                                 sort_keys=True)

    # --------------------------------------------------------------- field
    def box(self, margin: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Latent box around the codes (the models' and any included points'), widened by
        ``margin`` of its extent per side."""
        self._check("codes_", "embed()")
        z = torch.cat([self.codes_, *getattr(self, "include_codes_", {}).values()]).numpy()
        lo, hi = z.min(0), z.max(0)
        ext = np.maximum(hi - lo, 1e-6)
        return lo - margin * ext, hi + margin * ext

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

        Before the first evaluation the plan (base grid, budget, most points, expected
        refinement rounds: :class:`~lossatlas.refine.RefinePlan`) is logged at INFO on
        ``lossatlas.atlas``, then an estimated time from the first chunk measured;
        ``progress`` (``None``: in a notebook or a terminal, see
        :func:`lossatlas.progress.progress_enabled`) shows one bar over all rounds with
        both lines above it. Returns the :class:`RefinedField` (also ``field_``); the
        plan is stored in ``run.json`` with the stage's time.
        """
        self._check("codes_", "embed()")
        t0 = time.perf_counter()
        lo, hi = self.box(margin)
        field, plan = self._refined_field(lo, hi, resolution, tol if refine else np.inf, budget,
                                    max_level, include_models, progress, corrected=True,
                                    settings=[margin, refine])
        field.values["distance"] = self._distances(field.coords)
        self.field_ = field
        self._n_base = resolution ** len(lo)
        self._save_field(field)
        self.run.record_stage("field", time.perf_counter() - t0, samples=field.n,
                              rounds=field.rounds, resolution=resolution, tol=tol,
                              budget=budget, box=[lo.tolist(), hi.tolist()], plan=plan)
        return field

    def _refined_field(self, lo: np.ndarray, hi: np.ndarray, resolution: int, tol: float,
                       budget: int, max_level: int, include_models: bool,
                       progress: bool | None, corrected: bool, settings: list
                       ) -> tuple[RefinedField, dict]:
        """The field over the box ``[lo, hi]`` decoded with (or without) the residual
        correction, each refinement round stored as a field of the run (resumable), and
        its plan (:class:`RefinePlan` as a dict, with ``estimated_seconds``: from the
        first chunk evaluated, None when every round was stored already).

        The plan (grid, budget, points, rounds) is logged before the first evaluation and
        the time it will take once the first chunk is measured; with a progress bar both
        are also written above it."""
        key = self._decoder_key() + ("" if corrected else "|raw")
        tag = hashlib.sha256(json.dumps([resolution, tol, budget, max_level, include_models,
                                         *settings, key]).encode()).hexdigest()[:8]
        prefix = "atlas" if corrected else "atlas-raw"
        ref = Refinement(lo, hi, resolution=resolution, tol=tol,
                         budget=max(budget, resolution ** len(lo) + len(self.codes_)),
                         max_level=max_level,
                         extra_points=self.codes_.numpy() if include_models else None,
                         focus_points=self.codes_.numpy())
        plan = ref.plan()
        show = progress_enabled(progress) and distributed.is_main()
        clock = _FieldClock(prefix, plan, show)
        decode = partial(self.decode, corrected=corrected)
        with progress_bar(total=plan.max_points, progress=show, desc=prefix, unit="pt") as bar:
            clock.bar = bar
            clock.say(f"{prefix} plan: {plan.describe()}")
            for i in itertools.count():
                src = LatentSource(decode, ref.pending(), key)
                ds = compute_field(self.evaluator, src, self.run, f"{prefix}-{tag}-r{i:03d}",
                                   progress=False, overwrite=False,
                                   chunk_points=self._chunk_points(), on_chunk=clock.chunk)
                ref.tell({v: ds[v].values.astype(np.float64) for v in ds.data_vars})
                bar.update(ref.evaluated - bar.n)
                if ref.done:
                    break
            bar.total = ref.evaluated
            bar.refresh()
        return ref.result(), {**dataclasses.asdict(plan), "estimated_seconds": clock.estimate}

    def raw_check(self, resolution: int | None = None, progress: bool | None = None) -> dict:
        """The map without the residual correction, beside the corrected atlas.

        A uniform grid over the same box (``resolution`` per axis, default the field's
        base grid) plus the models' codes, decoded by the embedding alone; its merge tree
        at the corrected atlas's threshold and the basins of the models. If the corrected
        atlas shows more basins with models than this one, the correction may have made
        them. Returns and stores (``RUN/raw_check.json``) both counts, the variants per
        basin, the basins mixing variants, and the median error at the models (decades).
        """
        from .topology import graph_merge_tree

        self._check("tree_", "topology()")
        t0 = time.perf_counter()
        res = int(resolution or self.field_.resolution)
        raw, _ = self._refined_field(self.field_.lo, self.field_.hi, res, np.inf, 0, 0, True,
                                  progress, corrected=False, settings=["raw"])
        values = raw.values["log10_loss"]
        tree = graph_merge_tree(values, raw.edges, threshold=float(self.tree_.threshold))
        basins = np.asarray(tree.labels).reshape(-1)[raw.extra_index]
        labels = [str(lab.get("variant", "?")) for lab in self.population.labels]
        t_log = np.log10(np.maximum(self.true_values()["loss"].double().numpy(), 1e-12))

        def per_basin(b: np.ndarray) -> list[dict]:
            return [dict(Counter(labels[i] for i in np.flatnonzero(b == k))) for k in
                    sorted(set(b.tolist()))]

        raw_groups, cor_groups = per_basin(basins), per_basin(self.basins_)
        out = {
            "resolution": res, "threshold": float(self.tree_.threshold),
            "num_variants": len(set(labels)),
            "raw": {"num_model_basins": len(raw_groups), "variants_per_basin": raw_groups,
                    "mixed_basins": sum(len(g) > 1 for g in raw_groups),
                    "median_decades_at_models": _nanmedian(
                        np.abs(values[raw.extra_index] - t_log))},
            "corrected": {"num_model_basins": len(cor_groups), "variants_per_basin": cor_groups,
                          "mixed_basins": sum(len(g) > 1 for g in cor_groups)},
        }
        atomic_write_json(self.path / "raw_check.json", out)
        self.run.record_stage("raw_check", time.perf_counter() - t0, samples=raw.n)
        return out

    def _distances(self, z: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Euclidean distance (in parameter space) of each decoded point to the nearest
        population model.

        Decoded points and models both lie in the span (the models up to float rounding),
        ``x = mean + (B^T c) * scale``, so the distance is ``|L^T (c - c_i)|`` with
        ``L L^T = M`` the Gram matrix of the scaled basis ``B * scale`` (the identity
        when unscaled): computed in span coordinates, without decoding.
        """
        red = self.reduction_
        if getattr(self, "_span_codes", None) is None:
            self._span_codes = red.encode(self.X)
        Cm = self._span_codes.double().cpu()
        k = Cm.shape[1]
        M = torch.zeros(k, k, dtype=torch.float64)
        D = red.n_features_in_
        step = red.block_size or max(1, 2**23 // max(1, k))
        for start in range(0, D, step):
            stop = min(D, start + step)
            B = red._comp_block(start, stop).double().cpu()
            if red.scale_ is not None:
                B = B * red.scale_[start:stop].double().cpu()
            M += B @ B.T
        L = torch.linalg.cholesky(M + 1e-12 * torch.eye(k, dtype=M.dtype)) if k else M
        Ym = Cm @ L
        out = []
        for i in range(0, len(z), chunk):
            zc = torch.as_tensor(z[i:i + chunk], dtype=torch.float32)
            c = self.inner_.decode(zc).double()
            if self.correction_ is not None:
                c = c + self.correction_(zc.double()).double()
            out.append(torch.cdist(c @ L, Ym).min(1).values)
        return torch.cat(out).numpy().astype(np.float64)

    def _save_field(self, f: RefinedField) -> None:
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
        self.run.save_dataset("atlas", ds)

    # ------------------------------------------------------------ topology
    def model_samples(self) -> np.ndarray:
        """Index of the field sample at each model's own code (Int[N])."""
        self._check("field_", "field()")
        if len(self.field_.extra_index) != len(self.population):
            raise RuntimeError("Atlas: the field was computed with include_models=False")
        return self.field_.extra_index

    def topology(self, threshold: float | str = 0.1, min_persistence: float = 0.01) -> Any:
        """Merge tree of log10 loss on the refined field; basins of every model.

        ``threshold``: persistence in decades (default 0.1: a basin must be at
        least 26% deeper in loss than the pass out of it), "auto" (largest gap of
        the persistence diagram) or a string like "10%" (fraction of the
        population's own log10-loss range, min to max over the models). Basins shallower than
        ``min_persistence`` decades (default 0.01, about 2%) are always merged:
        differences that small are within evaluation noise.
        """
        from .topology import auto_threshold, graph_merge_tree, graph_persistence

        self._check("field_", "field()")
        t0 = time.perf_counter()
        values = self.field_.values["log10_loss"]
        self.pairs_ = graph_persistence(values, self.field_.edges)
        if isinstance(threshold, str) and threshold.endswith("%"):
            own = values[self.model_samples()]
            own = own[np.isfinite(own)]
            threshold = float(threshold[:-1]) / 100 * float(np.ptp(own)) if len(own) else 0.0
        elif threshold == "auto":
            threshold = auto_threshold(self.pairs_)
        elif isinstance(threshold, str):
            raise ValueError(
                f"Atlas.topology: threshold must be a number (decades), 'auto' or 'N%', "
                f"got {threshold!r}"
            )
        threshold = max(float(threshold), float(min_persistence))
        self.tree_ = graph_merge_tree(values, self.field_.edges, threshold=threshold)
        labels = np.asarray(self.tree_.labels).reshape(-1)
        self.basins_ = labels[self.model_samples()]
        summary = self._basin_summary()
        atomic_write_json(self.path / "topology.json", summary)
        self.run.record_stage("topology", time.perf_counter() - t0,
                              basins=summary["num_basins"], threshold=summary["threshold"])
        return self.tree_

    def _basin_summary(self) -> dict:
        labels = self.population.labels
        minima = np.asarray(self.tree_.minima).reshape(-1)
        values = self.field_.values
        basins = []
        for b, m in enumerate(minima):
            members = np.flatnonzero(self.basins_ == b)
            variants = Counter(str(labels[i].get("variant", "?")) for i in members)
            basins.append({
                "basin": b, "min_loss": float(values["loss"][m]),
                "min_log10_loss": float(values["log10_loss"][m]),
                "coords": self.field_.coords[m].tolist(), "models": members.tolist(),
                "variants": dict(variants),
            })
        n_variants = len({str(lab.get("variant", "?")) for lab in labels})
        return {"num_basins": len(minima), "num_variants": n_variants,
                "num_model_basins": int(sum(1 for b in basins if b["models"])),
                "threshold": float(self.tree_.threshold) if hasattr(self.tree_, "threshold")
                else None,
                "basins": basins, "model_basin": self.basins_.tolist()}

    # -------------------------------------------------------- faithfulness
    def faithfulness(self) -> dict:
        """How far to trust the map, in decades of loss (log10), per model and median.

        - ``decoded_raw``: loss of decode(encode(model)) by the embedding alone vs true
        - ``field_at_model``: the field's sample at the model's code vs true
        - ``field_loo``: the field interpolated at the code from the other samples
          (the code's own sample left out) vs true: what the refined field shows
        - ``max_step_near_models``: largest log10-loss step across an edge at a model
        """
        self._check("field_", "field()")
        true = self.true_values()
        t_log = np.log10(np.maximum(true["loss"].double().numpy(), 1e-12))
        raw, recon = self._span_points(self.inner_.decode(self.codes_.float().cpu()))
        raw_log = np.log10(np.maximum(raw["loss"].double().numpy(), 1e-12))
        idx = self.model_samples()
        values = self.field_.values["log10_loss"]
        at_model = values[idx]
        keep = self.field_.level != -1
        loo = RefinedField(self.field_.coords[keep], {"v": values[keep]}, "v",
                           np.zeros((0, 2), dtype=int), self.field_.level[keep], 0,
                           self.field_.lo, self.field_.hi, self.field_.resolution)
        loo_vals = loo.interpolate(self.field_.coords[idx])
        edges = self.field_.edges
        steps = np.zeros(len(idx))
        for k, i in enumerate(idx):
            nb = np.concatenate([edges[edges[:, 0] == i, 1], edges[edges[:, 1] == i, 0]])
            d = np.abs(values[nb] - values[i])
            steps[k] = float(np.max(d[np.isfinite(d)])) if np.isfinite(d).any() else np.inf

        out = {
            "reconstruction_mse_raw": recon,
            "median_decades": {
                "decoded_raw": _nanmedian(np.abs(raw_log - t_log)),
                "field_at_model": _nanmedian(np.abs(at_model - t_log)),
                "field_loo": _nanmedian(np.abs(loo_vals - t_log)),
                "max_step_near_models": _nanmedian(steps),
            },
            "per_model": {
                "true_loss": true["loss"].tolist(), "decoded_raw_loss": raw["loss"].tolist(),
                "field_log10_at_model": at_model.tolist(), "field_log10_loo": loo_vals.tolist(),
                "max_step": steps.tolist(),
            },
            "decoded_loss_relative_error_median": _nanmedian(
                np.abs(raw["loss"].double().numpy() / true["loss"].double().numpy() - 1)),
            "bn": self.bn, "bn_text": self.evaluator.bn_text,
        }
        own = self.eval_mode_values()
        if own is not None:
            # each model's loss under the policy beside the checkpoint's own eval-mode loss
            out["per_model"]["eval_mode_loss"] = own["loss"].tolist()
        atomic_write_json(self.path / "faithfulness.json", out)
        return out

    # ------------------------------------------------------ reconstruction
    def reconstruction_table(self, methods: tuple[str, ...] = ("pca", "kpca", "umap", "ae"),
                             dim: int = 2, variants: dict[str, dict] | None = None,
                             clustering: tuple[str, ...] = ("mds", "isomap")) -> list[dict]:
        """The seed's Table 1 on this population: every method side by side.

        For each method (fitted on the span coordinates, ``dim`` latents, no
        residual correction): mean squared error over parameters of
        decode(encode(model)), and the loss of every decoded model against the
        model's own loss (per model, and the median relative error). ``variants``
        adds autoencoder options by name, e.g. ``{"ae-tanh": {"bounded": True}}``.
        Every row also has the variant separation of its codes (``silhouette``,
        ``nn_purity``: :func:`lossatlas.manifold.variant_separation`); the
        ``clustering`` methods (MDS, Isomap: no inverse) give only that, their loss
        columns None with the reason in ``not_computable``.
        Stored as ``RUN/reconstruction.json``.
        """
        from .manifold import SpanReduction, make_embedding, variant_separation
        from .manifold.clustering import clustering_row

        if getattr(self, "reduction_", None) is None:
            self.reduction_ = SpanReduction(block_size=self._block_size()).fit(self.X)
        C = self.reduction_.encode(self.X)
        true = self.true_values()["loss"].double()
        variant = [str(lab.get("variant", "?")) for lab in self.population.labels]
        specs = {m: (m, {}) for m in methods}
        specs.update({k: ("ae", v) for k, v in (variants or {}).items()})
        rows = []
        for name, (method, extra) in specs.items():
            t0 = time.perf_counter()
            try:
                emb = make_embedding(method, **_embedding_kwargs(method, dim, self.seed, extra))
                emb.fit(C)
            except (ImportError, ValueError, TypeError) as err:
                log.warning("reconstruction_table: %s skipped (%s)", name, err)
                rows.append({"method": name, "skipped": str(err)})
                continue
            codes = emb.encode(C)
            values, mse = self._span_points(emb.decode(codes).to(C.dtype))
            loss = values["loss"].double()
            rel = (loss / true - 1).abs()
            rows.append({
                "method": name, "options": extra,
                "mse": mse,
                "decoded_loss": loss.tolist(), "true_loss": true.tolist(),
                "median_rel_loss_error": float(rel[torch.isfinite(rel)].median())
                if torch.isfinite(rel).any() else float("inf"),
                **variant_separation(codes, variant),
                "seconds": round(time.perf_counter() - t0, 2),
            })
        for name in clustering:  # no inverse: the variant separation only
            t0 = time.perf_counter()
            try:
                row = clustering_row(name, C, variant, dim=dim, seed=self.seed)
            except ValueError as err:  # e.g. dim >= the number of models
                log.warning("reconstruction_table: %s skipped (%s)", name, err)
                rows.append({"method": name, "skipped": str(err)})
                continue
            rows.append({**row, "true_loss": true.tolist(),
                         "seconds": round(time.perf_counter() - t0, 2)})
        atomic_write_json(self.path / "reconstruction.json", {"dim": dim, "rows": rows})
        return rows

    # ------------------------------------------------------------ overlays
    def overlay(self, points: Tensor, name: str, labels: list[str] | None = None,
                partners: list[int] | None = None) -> dict:
        """Project parameter points (a curve, re-basined models, a trajectory) onto the map,
        as the seed's Table 2.

        Encodes ``points`` [P, D] to codes, decodes the codes back to parameters and
        evaluates them: ``projected_loss`` is the loss at the decoded projected points
        and ``median_abs_error`` the median of ``|projected - true|`` (nats) over the
        points (``mean_abs_error`` too). ``field_loss`` is the field read at the codes
        (what the map shows there). When the same points were fitted into the map
        under this name (``embed(include={name: points})``), the error of the included
        fit is reported too (``included_loss``, ``included_median_abs_error``: decoded
        at their fitted codes). Stored as ``RUN/overlays/NAME.json``; with a merge tree,
        the basin at each code, and with ``partners`` (population indices, one per point,
        e.g. the model each re-basined model was aligned onto) the partners' basins.
        """
        from scipy.spatial import cKDTree

        self._check("field_", "field()")
        points = torch.as_tensor(points, dtype=torch.float32)
        if points.ndim != 2 or points.shape[1] != self.X.shape[1]:
            raise ValueError(
                f"Atlas.overlay: points must be [P, {self.X.shape[1]}], got {tuple(points.shape)}"
            )
        true = self.evaluator.evaluate(points)["loss"].double().numpy()
        z = self.encode(points)
        codes = z.numpy().astype(np.float64)
        projected = self._decoded_loss(z)
        out: dict[str, Any] = {
            "name": name, "codes": codes.tolist(), "true_loss": true.tolist(),
            "projected_loss": projected.tolist(),
            "field_loss": (10.0 ** self.field_.interpolate(codes)).tolist(),
            "true_range": _range(true), "projected_range": _range(projected),
            "median_abs_error": _nanmedian(np.abs(projected - true)),
            "mean_abs_error": _nanmean(np.abs(projected - true)),
            "labels": labels or [str(i) for i in range(len(points))],
            "units": "nats",
        }
        out["mae"] = out["mean_abs_error"]  # the report's older key
        fitted = getattr(self, "include_codes_", {}).get(name)
        if fitted is not None and len(fitted) == len(points):
            inc = self._decoded_loss(fitted)
            out.update(included_codes=fitted.double().numpy().tolist(),
                       included_loss=inc.tolist(), included_range=_range(inc),
                       included_median_abs_error=_nanmedian(np.abs(inc - true)))
        if hasattr(self, "tree_"):
            nearest = cKDTree(self.field_.coords).query(codes)[1]
            out["basin"] = np.asarray(self.tree_.labels).reshape(-1)[nearest].tolist()
            if partners is not None:
                out["partner_basin"] = [int(self.basins_[i]) for i in partners]
                out["same_basin_as_partner"] = [
                    a == b for a, b in zip(out["basin"], out["partner_basin"], strict=True)]
        atomic_write_json(self.path / "overlays" / f"{name}.json", out)
        return out

    def _decoded_loss(self, z: Tensor) -> np.ndarray:
        """Loss (float64 [P]) of the parameters decoded from latent codes ``z`` [P, d]
        by the map (with its residual correction), a chunk at a time."""
        step = max(1, self._chunk_points())
        parts = [self.evaluator.evaluate(self.decode(z[i:i + step].to(self.device)))["loss"]
                 for i in range(0, len(z), step)]
        return torch.cat(parts).double().numpy()

    # ----------------------------------------------------------- summary
    def summary(self) -> dict:
        """A JSON-able summary of the stages done."""
        out: dict[str, Any] = {"run": str(self.path), "models": len(self.population),
                               "bn": self.bn, "loss": self.evaluator.loss_name}
        if hasattr(self, "codes_"):
            out["embedding"] = self.run.read().get("embedding")
        if hasattr(self, "field_"):
            out["field"] = {"samples": self.field_.n, "rounds": self.field_.rounds}
        if hasattr(self, "tree_"):
            s = self._basin_summary()
            out["basins"] = {"num_basins": s["num_basins"], "num_variants": s["num_variants"],
                             "num_model_basins": s["num_model_basins"],
                             "variants_per_basin": [b["variants"] for b in s["basins"]
                                                    if b["models"]]}
        return out

    # ------------------------------------------------------------- figures
    def plot_landscape(self, path=None, ax=None, trajectories: bool = True,
                       marker_values: dict[int, float] | None = None,
                       marker_label: str = ""):
        """Filled contours of log10 loss over the latent map with basins and models
        (optionally rings sized by a per-model value: see ``atlas_plot.plot_landscape``)."""
        from .atlas_plot import plot_landscape

        return plot_landscape(self, path=path, ax=ax, trajectories=trajectories,
                              marker_values=marker_values, marker_label=marker_label)
