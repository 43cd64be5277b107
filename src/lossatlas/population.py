"""A population: models of one architecture as flat vectors in one ParamSpace, with labels.

Labels are plain dicts; the ones lossatlas reads are ``variant``, ``seed``, ``epoch``
and ``step`` (any others, e.g. hyper-parameters, are carried along)::

    pop = Population.open("runs/demo/train")   # a train run, its own model
    pop = Population.open("ckpts/*.pt", "mlp")  # checkpoints (folder, glob, file, list)
    pop.as_points()            # Tensor[N, D]
    pop.select(variant="A")    # a smaller Population
    pop.trajectories()         # {"A/seed0": [0, 1, 2, ...], ...} ordered by epoch/step
    net = pop.model(3)         # a fresh nn.Module holding the 4th model's weights

The vectors are held in memory (``[N, D]`` float32), or, for populations larger than
memory, in a memory-mapped population file (:class:`~lossatlas.vectors.VectorFile`) read
by rows and column blocks: ``Population.from_checkpoints(..., out="pop.safetensors")``
streams the checkpoints into such a file one at a time, and
``Population.from_safetensors(path, mmap=True)`` reopens one. :attr:`matrix` gives the
vectors in whichever form they are held, for readers that work by blocks
(:class:`~lossatlas.manifold.SpanReduction` does).
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .batchnorm import POLICY_TEXT, resolve_policy
from .checkpoints import SUFFIXES, load_state_dict, match_state_dict, read_labels
from .errors import InputTypeError, LossatlasError
from .space import ParamSpace, batchnorm_stat_names
from .vectors import VectorFile, VectorFileWriter

__all__ = [
    "Population", "PopulationSourceError", "TRAIN_MANIFEST", "UntrustedRunError",
    "check_run_factory", "is_train_run", "load_population", "natural_key",
    "resolve_model_factory", "run_key", "source_kind",
]

log = logging.getLogger(__name__)

TRAIN_MANIFEST = "train.json"
_FORMAT = "lossatlas.population/1"
LABEL_COLUMNS = ("variant", "seed", "epoch", "step")

Factory = Callable[..., nn.Module] | str


# ----------------------------------------------------------------------------- helpers
def natural_key(text: str) -> list:
    """Sort key ordering digit runs numerically (``epoch9`` before ``epoch10``)."""
    parts = re.split(r"(\d+)", str(text))
    return [int(p) if i % 2 else p for i, p in enumerate(parts)]


def _callable_spec(fn: Any) -> str | None:
    """``"module:qualname"`` of an importable callable, else None."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or module == "__main__":
        return None
    return f"{module}:{qualname}"


def resolve_model_factory(
    factory: Factory, factory_kwargs: Mapping[str, Any] | None = None
) -> tuple[Callable[[], nn.Module], str | None]:
    """A zero-argument builder of fresh models, and a spec string to store (or None).

    ``factory``: a callable (function or ``nn.Module`` class) returning an
    ``nn.Module``, a ``"package.module:function"`` spec, or a registered model name
    (``"mlp"``, ``"resnet20"``, ...). ``None`` keyword arguments are dropped.
    """
    kwargs = {k: v for k, v in (factory_kwargs or {}).items() if v is not None}
    if isinstance(factory, str):
        if ":" in factory:
            from .registry import resolve_factory

            fn = resolve_factory(factory)  # FactoryError naming the spec
        else:
            from .models import MODELS

            fn = MODELS.get(factory)  # UnknownNameError naming the name
        spec: str | None = factory
    elif callable(factory):
        fn, spec = factory, _callable_spec(factory)
    else:
        raise InputTypeError(
            f"model factory must be a callable, a 'package.module:function' spec or a "
            f"registered model name, got {type(factory).__name__}"
        )
    name = factory if isinstance(factory, str) else getattr(fn, "__name__", repr(fn))

    def build() -> nn.Module:
        model = fn(**kwargs)
        if not isinstance(model, nn.Module):
            raise InputTypeError(
                f"model factory {name!r} returned {type(model).__name__}, expected an nn.Module"
            )
        return model

    return build, spec


class PopulationSourceError(FileNotFoundError, LossatlasError):
    """A path given as a population is none of what :meth:`Population.open` reads: no
    train run, no folder holding checkpoints, no checkpoint file, no glob pattern
    matching any (a ``FileNotFoundError``, as before; the message names the path)."""


def _expand_one(item: str | os.PathLike, who: str) -> list[Path]:
    text = str(item)
    p = Path(text)
    if p.is_dir():
        found = [f for f in p.iterdir() if f.is_file() and f.suffix in SUFFIXES]
        # macOS AppleDouble files (._name) hold no tensors; any other file a name
        # starting with a dot (..__seed4.safetensors) is a checkpoint like the rest
        skipped = [f for f in found if f.name.startswith("._")]
        for f in skipped:
            log.warning("%s: skipped %s (a macOS AppleDouble file, not a checkpoint)", who, f)
        found = [f for f in found if f not in skipped]
        if not found:
            raise PopulationSourceError(
                f"{who}: directory {text} holds no checkpoints ({', '.join(SUFFIXES)}) and "
                f"is not a train run (no {text}/checkpoints/ folder)"
            )
        return sorted(found, key=lambda f: natural_key(f.name))
    if glob.has_magic(text):
        found = [
            Path(f) for f in glob.glob(text, recursive=True)
            if Path(f).suffix in SUFFIXES and Path(f).is_file()
        ]
        if not found:
            raise PopulationSourceError(
                f"{who}: pattern {text!r} matches no checkpoint files ({', '.join(SUFFIXES)})"
            )
        return sorted(found, key=lambda f: natural_key(str(f)))
    if not p.is_file():
        raise PopulationSourceError(
            f"{who}: {text} not found (expected a train run, a folder of checkpoints, a "
            "checkpoint file or a glob pattern)")
    return [p]


def _expand(source: str | os.PathLike | Iterable[str | os.PathLike],
            who: str = "Population.from_checkpoints") -> list[Path]:
    """Directory / glob (sorted naturally) / file / list of those (list order kept)."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise ValueError(f"{who}: the list of checkpoints is empty")
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        for p in _expand_one(item, who):
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(p)
    return out


def _check_finite(state: Mapping[str, Tensor], space: ParamSpace, source: str) -> str | None:
    """A one-line message naming the first tensor of ``space`` with NaN/inf, else None."""
    for s in space:
        t = state[s.name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            return (
                f"checkpoint {source}: tensor {s.name!r} has {bad} non-finite value(s) "
                f"(NaN/inf) of {t.numel()}; the run diverged? pass nonfinite='skip' to leave "
                "such checkpoints out"
            )
    return None


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return -math.inf
    return float(value)


def run_key(labels: Mapping[str, Any]) -> str:
    """Key of the training run a checkpoint belongs to: ``"{variant}/seed{seed}"``
    (``"{variant}"`` without a seed label; variant ``"?"`` if missing)."""
    variant = labels.get("variant", "?")
    seed = labels.get("seed")
    return f"{variant}" if seed is None else f"{variant}/seed{seed}"


def _order_key(labels: Mapping[str, Any]) -> tuple[float, float]:
    return (_num(labels.get("epoch")), _num(labels.get("step")))


def _matches(value: Any, want: Any) -> bool:
    if callable(want):
        return bool(want(value))
    if isinstance(want, (list, tuple, set, frozenset)):
        return value in want
    return value == want


def _layout(space: ParamSpace) -> list[list]:
    return [[s.name, list(s.shape), s.is_buffer] for s in space]


def _reuse(out: str | os.PathLike, meta: Mapping[str, str]) -> VectorFile | None:
    """The population file ``out`` if it exists and was written from the same sources
    with the same layout and options, else None (labels are read afresh by the caller:
    a sidecar may have changed)."""
    if not Path(out).is_file():
        return None
    try:
        vf = VectorFile(out, "vectors")
    except (ValueError, OSError):
        return None
    same = ("sources", "nonfinite", "layout", "buffers", "bn", "factory", "factory_kwargs")
    return vf if all(vf.metadata.get(k) == meta[k] for k in same) else None


def _other_buffers(model: nn.Module, space: ParamSpace) -> dict[str, Tensor]:
    """Float buffers of ``model`` that are neither laid out nor BatchNorm statistics
    (constants such as positional tables or masks), by name."""
    known = set(space.names) | set(batchnorm_stat_names(model))
    return {n: b for n, b in model.named_buffers() if b.is_floating_point() and n not in known}


def _check_constant(state: Mapping[str, Tensor], constants: Mapping[str, Tensor],
                    source: str) -> None:
    """Refuse a checkpoint whose float buffer outside the vectors differs from the
    factory's: every point would silently use the factory's value instead."""
    for name, ref in constants.items():
        if name in state and not torch.equal(state[name].detach().to(ref), ref):
            raise ValueError(
                f"Population: buffer {name!r} of {source} differs from the model factory's; "
                "it is not in the vectors, so every point would use the factory's value. "
                "Use bn='own', which lays out every float buffer")


def _file_metadata(labels: Sequence[Mapping[str, Any]], paths: Sequence[str] | None,
                   space: ParamSpace, spec: str | None,
                   factory_kwargs: Mapping[str, Any] | None, bn: str = "none"
                   ) -> dict[str, str]:
    """The metadata of a population file (all values JSON strings)."""
    return {
        "format": _FORMAT,
        "labels": json.dumps(list(labels), default=str),
        "paths": json.dumps(None if paths is None else list(paths)),
        "layout": json.dumps(_layout(space)),
        "buffers": json.dumps(bool(space.buffers)),
        "bn": json.dumps(bn),
        "factory": json.dumps(spec),
        "factory_kwargs": json.dumps(dict(factory_kwargs or {}), default=str),
    }


# ----------------------------------------------------------------------------- Population
class Population:
    """Models of one architecture as flat vectors in one :class:`ParamSpace`, with labels.

    Parameters
    ----------
    space : ParamSpace
        The layout shared by all models.
    vectors : Tensor[N, D] or VectorFile
        One flat parameter vector per model (``D = space.dim``), in memory or in a
        memory-mapped population file.
    labels : list of N dicts
        ``variant``, ``seed``, ``epoch``, ``step`` and any other labels.
    paths : list of N str, optional
        Where each model came from (checkpoint files).
    factory : callable() -> nn.Module, optional
        Builds a fresh model of the architecture (needed by :meth:`model`).
    factory_spec : str, optional
        The factory as a registered name or ``"pkg.mod:fn"`` (stored by
        :meth:`to_safetensors` so the file can be reopened without one).
    factory_kwargs : dict, optional
        Keyword arguments of ``factory_spec``.
    bn : {"none", "own", "recompute"}
        The BatchNorm policy the population is evaluated under
        (:mod:`lossatlas.batchnorm`): ``"own"`` when the vectors hold each model's
        statistics, ``"recompute"`` when they are re-estimated at every point.
    statistics : dict of name -> Tensor[N, *shape], optional
        Each model's stored BatchNorm running statistics when they are not in the
        vectors (under "recompute"): :meth:`model` writes them back, so that
        ``model(i)`` is the checkpoint as saved (its eval-mode loss is comparable).
    """

    def __init__(
        self,
        space: ParamSpace,
        vectors: Tensor | VectorFile,
        labels: Sequence[Mapping[str, Any]],
        paths: Sequence[str | os.PathLike] | None = None,
        factory: Callable[[], nn.Module] | None = None,
        factory_spec: str | None = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        bn: str = "none",
        statistics: Mapping[str, Tensor] | None = None,
    ):
        if not isinstance(space, ParamSpace):
            raise InputTypeError(
                f"Population: space must be a ParamSpace, got {type(space).__name__}")
        if (not isinstance(vectors, (Tensor, VectorFile)) or vectors.ndim != 2
                or vectors.shape[1] != space.dim):
            shape = (tuple(vectors.shape) if isinstance(vectors, (Tensor, VectorFile))
                     else type(vectors).__name__)
            raise ValueError(f"Population: vectors must be Tensor[N, {space.dim}], got {shape}")
        if len(labels) != vectors.shape[0]:
            raise ValueError(
                f"Population: {vectors.shape[0]} vectors but {len(labels)} label dicts"
            )
        if paths is not None and len(paths) != vectors.shape[0]:
            raise ValueError(f"Population: {vectors.shape[0]} vectors but {len(paths)} paths")
        self.space = space
        self._vectors = vectors
        self._labels = [dict(lab) for lab in labels]
        self.paths = None if paths is None else [str(p) for p in paths]
        self.factory = factory
        self.factory_spec = factory_spec
        self.factory_kwargs = dict(factory_kwargs or {})
        if bn not in POLICY_TEXT:
            raise ValueError(f"Population: bn must be one of {sorted(POLICY_TEXT)}, got {bn!r}")
        if bn == "own" and not space.buffer_names:
            raise ValueError("Population: bn='own' but the vectors hold no BatchNorm statistics")
        self.bn = bn
        self.statistics = None if statistics is None else dict(statistics)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_checkpoints(
        cls,
        source: str | os.PathLike | Iterable[str | os.PathLike],
        factory: Factory,
        factory_kwargs: Mapping[str, Any] | None = None,
        bn: Literal["own", "recompute"] | None = None,
        nonfinite: Literal["raise", "skip"] = "raise",
        out: str | os.PathLike | None = None,
    ) -> Population:
        """Load checkpoints of one architecture.

        Parameters
        ----------
        source : directory, glob pattern (``**`` allowed), file, or a list of those
            Directories and globs are sorted naturally by name (``epoch9`` <
            ``epoch10``); a list keeps its order. ``.pt``/``.pth``/``.bin`` (read with
            ``weights_only=True``), Lightning ``.ckpt`` and ``.safetensors``.
        factory : callable, ``"pkg.mod:fn"`` spec or registered model name
            Builds the architecture the weights are matched against.
        factory_kwargs : dict, optional
        bn : {"recompute", "own"}, optional
            The BatchNorm policy (:mod:`lossatlas.batchnorm`), for models with
            BatchNorm. ``"recompute"`` (default): the vectors hold parameters only and
            the statistics are re-estimated at every evaluated point; each checkpoint's
            stored statistics are kept in :attr:`statistics` (``model(i)`` restores
            them). ``"own"``: the vectors also hold each checkpoint's statistics
            (variances as logarithms), which are interpolated / decoded with the weights.
        nonfinite : {"raise", "skip"}
            A checkpoint with NaN/inf in a laid-out tensor raises `CheckpointError`
            naming the file and tensor (default), or is left out with a warning.
        out : path, optional
            Stream the vectors into this population file (one checkpoint in memory at a
            time) and return a memory-mapped population: for populations larger than
            memory. The file is written atomically; reopen it with
            ``from_safetensors(out, mmap=True)``. An existing ``out`` written from the
            same checkpoint files (paths and contents, by hash) is reused.

        Labels come from :func:`lossatlas.checkpoints.read_labels` (sidecar JSON,
        directory ``labels.json``, file name). A checkpoint that does not fit the
        architecture raises `CheckpointError` naming the file and the tensor.
        """
        from .checkpoints import CheckpointError

        if nonfinite not in ("raise", "skip"):
            raise ValueError(
                f"Population.from_checkpoints: nonfinite must be 'raise' or 'skip', "
                f"got {nonfinite!r}"
            )
        build, spec = resolve_model_factory(factory, factory_kwargs)
        paths = _expand(source)
        template = build()
        bn = resolve_policy(template, bn, "Population.from_checkpoints")
        space = ParamSpace(template, buffers=bn == "own")
        constants = _other_buffers(template, space)
        stat_names = batchnorm_stat_names(template) if bn == "recompute" else []
        stats: dict[str, list[Tensor]] = {k: [] for k in stat_names}
        log.info("Population: BatchNorm policy %s", POLICY_TEXT[bn])
        all_labels = [read_labels(p) for p in paths]
        writer = None
        if out is not None:
            # by content (blake2b of each file, read once): a checkpoint rewritten in place
            # with its size and modification time kept is still noticed
            from .fingerprint import file_digest

            sources = json.dumps([[str(p), file_digest(p)] for p in paths])
            meta = {**_file_metadata(all_labels, [str(p) for p in paths], space, spec,
                                     factory_kwargs, bn), "sources": sources,
                    "nonfinite": nonfinite}
            reused = _reuse(out, meta)
            if reused is not None:
                log.info("Population: reusing %s (written from the same checkpoints)", out)
                kept_paths = json.loads(reused.metadata["paths"])
                where = {str(p): i for i, p in enumerate(paths)}
                return cls(space, reused, [all_labels[where[p]] for p in kept_paths],
                           kept_paths, factory=build, factory_spec=spec,
                           factory_kwargs=factory_kwargs, bn=bn)
            writer = VectorFileWriter(out, (len(paths), space.dim), metadata=meta)
            vectors: Tensor | VectorFile = torch.empty(0)
        else:
            vectors = torch.empty(len(paths), space.dim, dtype=space.dtype)
        kept: list[int] = []
        try:
            for i, p in enumerate(paths):
                state = match_state_dict(load_state_dict(p), template, p)
                problem = _check_finite(state, space, str(p))
                if problem is not None:
                    if nonfinite == "raise":
                        raise CheckpointError(problem)
                    log.warning("Population: skipped %s", problem)
                    continue
                row = space.flatten(state, source=str(p))
                _check_constant(state, constants, str(p))
                for k in stat_names:
                    stats[k].append(state[k].detach().to(space.dtype).clone())
                if writer is not None:
                    writer.write_rows(len(kept), row)
                else:
                    vectors[len(kept)] = row
                kept.append(i)
            if not kept:
                raise CheckpointError(
                    f"Population.from_checkpoints: every checkpoint of {source} has non-finite "
                    "weights"
                )
            labels = [all_labels[i] for i in kept]
            kept_paths = [str(paths[i]) for i in kept]
            if writer is not None:
                writer.metadata = {**_file_metadata(labels, kept_paths, space, spec,
                                                    factory_kwargs, bn), "sources": sources,
                                   "nonfinite": nonfinite}
                vectors = writer.commit(len(kept))
            else:
                vectors = vectors[: len(kept)]
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        log.info("Population: loaded %d checkpoints, D=%d", len(kept), space.dim)
        return cls(
            space, vectors, labels, kept_paths,
            factory=build, factory_spec=spec, factory_kwargs=factory_kwargs, bn=bn,
            statistics={k: torch.stack(v) for k, v in stats.items()} if stat_names else None,
        )

    @classmethod
    def from_models(
        cls,
        models: Sequence[nn.Module],
        labels: Sequence[Mapping[str, Any]] | None = None,
        bn: Literal["own", "recompute"] | None = None,
    ) -> Population:
        """A population of in-memory models of one architecture (their weights are copied).

        ``labels`` default to ``{"index": i}``. :meth:`model` builds copies of the
        first model with the i-th weights written in. ``bn``: the BatchNorm policy, as
        in :meth:`from_checkpoints`.
        """
        models = list(models)
        if not models:
            raise ValueError("Population.from_models: the list of models is empty")
        if labels is not None and len(labels) != len(models):
            raise ValueError(
                f"Population.from_models: {len(models)} models but {len(labels)} label dicts"
            )
        bn = resolve_policy(models[0], bn, "Population.from_models")
        space = ParamSpace(models[0], buffers=bn == "own")
        constants = _other_buffers(models[0], space)
        vectors = torch.empty(len(models), space.dim, dtype=space.dtype)
        for i, m in enumerate(models):
            vectors[i] = space.flatten(m, source=f"model {i}")
            _check_constant(dict(m.named_buffers()), constants, f"model {i}")
        stat_names = batchnorm_stat_names(models[0]) if bn == "recompute" else []
        stats = {k: torch.stack([dict(m.named_buffers())[k].detach().cpu().to(space.dtype)
                                 for m in models]) for k in stat_names}
        template = copy.deepcopy(models[0]).cpu()
        labels = [{"index": i} for i in range(len(models))] if labels is None else labels
        return cls(space, vectors, labels, None, factory=lambda: copy.deepcopy(template), bn=bn,
                   statistics=stats or None)

    @classmethod
    def from_run(
        cls,
        run_dir: str | os.PathLike,
        factory: Factory | None = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        bn: Literal["own", "recompute"] | None = None,
        nonfinite: Literal["raise", "skip"] = "raise",
        out: str | os.PathLike | None = None,
        *,
        trust_run: bool = False,
    ) -> Population:
        """The checkpoints written by :func:`lossatlas.train.train_population` into ``run_dir``.

        ``factory`` (default: the one ``run_dir/train.json`` names) builds the
        architecture the checkpoints are matched against. A run file is data, never
        code: the factory it names is used only if it is a registered name (``"mlp"``,
        looked up in :data:`lossatlas.models.MODELS`, nothing imported) or
        ``trust_run=True``; a ``"package.module:function"`` spec raises
        :class:`UntrustedRunError` naming it. A ``factory`` given here is always the
        one used (the run's is then never resolved). ``factory_kwargs`` update the
        run's ``model_kwargs`` when the factory is the run's own (named or by default),
        else they are the factory's only arguments. ``out`` streams the vectors into a
        memory-mapped population file (see `from_checkpoints`).
        """
        run_dir = Path(run_dir)
        manifest_path = run_dir / TRAIN_MANIFEST
        manifest: dict[str, Any] = {}
        if manifest_path.is_file():
            manifest = _read_manifest(manifest_path)
        elif factory is None:
            raise FileNotFoundError(
                f"Population.from_run: {manifest_path} not found; is {run_dir} a training run? "
                "(or pass factory= and use Population.from_checkpoints)"
            )
        named = manifest.get("model")
        run_kwargs = manifest.get("model_kwargs") or {}
        if not isinstance(run_kwargs, dict):
            raise ValueError(
                f"Population.from_run: {manifest_path}: model_kwargs must be a JSON object, "
                f"got {type(run_kwargs).__name__}"
            )
        if factory is None:
            if named is None:
                raise ValueError(
                    f"Population.from_run: {manifest_path} names no importable model factory "
                    "(trained with a local callable); pass factory="
                )
            check_run_factory(named, manifest_path, "model", trust_run=trust_run)
            factory = named
            factory_kwargs = {**run_kwargs, **(factory_kwargs or {})}
        elif named is not None and named == (
            factory if isinstance(factory, str) else _callable_spec(factory)
        ):
            factory_kwargs = {**run_kwargs, **(factory_kwargs or {})}
        ckpt_dir = run_dir / "checkpoints"
        return cls.from_checkpoints(
            str(ckpt_dir / "*.safetensors"), factory, factory_kwargs=factory_kwargs,
            bn=bn, nonfinite=nonfinite, out=out,
        )

    @classmethod
    def open(
        cls,
        source: str | os.PathLike | Iterable[str | os.PathLike],
        factory: Factory | None = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        *,
        bn: Literal["own", "recompute"] | None = None,
        nonfinite: Literal["raise", "skip"] = "raise",
        out: str | os.PathLike | None = None,
        trust_run: bool = False,
    ) -> Population:
        """The population at ``source``, whatever its form: the one loader behind every
        ``--population`` of the CLI.

        ``source`` is a train run (a :func:`~lossatlas.train.train_population` run
        directory: read by :meth:`from_run`), or checkpoints (read by
        :meth:`from_checkpoints`): a folder of them, a glob pattern (``**`` allowed),
        one checkpoint file or a list of those; :func:`source_kind` tells which.

        ``factory`` builds the architecture the checkpoints are matched against: required
        for checkpoints; for a run it defaults to the one its ``train.json`` names, used
        only if it is a registered name or ``trust_run`` (see :meth:`from_run`), and a
        factory given here always wins. ``factory_kwargs``: its arguments (for the run's
        own factory they update the run's ``model_kwargs``). ``bn``, ``nonfinite``,
        ``out``: see :meth:`from_checkpoints`.

        Raises :class:`PopulationSourceError` (a ``FileNotFoundError``) naming ``source``
        when it is none of these, ``ValueError`` for checkpoints without a factory.
        """
        kind = source_kind(source, "Population.open")
        if kind == "run":
            return cls.from_run(source, factory, factory_kwargs, bn=bn, nonfinite=nonfinite,
                                out=out, trust_run=trust_run)
        if factory is None:
            shown = source if isinstance(source, (str, os.PathLike)) else "this list"
            raise ValueError(
                f"Population.open: {shown} is not a training run (no checkpoints/ folder) but "
                f"checkpoints ({kind}); give the model factory they are matched against"
            )
        return cls.from_checkpoints(source, factory, factory_kwargs, bn=bn,
                                    nonfinite=nonfinite, out=out)

    # ---------------------------------------------------------------- basics
    def __len__(self) -> int:
        return self._vectors.shape[0]

    @property
    def dim(self) -> int:
        """Length D of every flat vector."""
        return self.space.dim

    @property
    def labels(self) -> list[dict[str, Any]]:
        """One label dict per model (copies)."""
        return [dict(lab) for lab in self._labels]

    def __repr__(self) -> str:
        return (
            f"Population(n={len(self)}, dim={self.dim}, variants={len(self.variants)}, "
            f"runs={len(self.trajectories())})"
        )

    @property
    def is_mapped(self) -> bool:
        """True when the vectors live in a memory-mapped population file."""
        return isinstance(self._vectors, VectorFile)

    @property
    def matrix(self) -> Tensor | VectorFile:
        """The vectors as held: Tensor[N, D], or a :class:`VectorFile` read by blocks."""
        return self._vectors

    def as_points(self) -> Tensor:
        """All models as points Tensor[N, D] (in memory: not a copy, do not modify in
        place; mapped: a copy of the whole file, so prefer :attr:`matrix` for large ones)."""
        if isinstance(self._vectors, VectorFile):
            return self._vectors.to_tensor()
        return self._vectors

    def vector(self, i: int) -> Tensor:
        """The flat vector Tensor[D] of model ``i``."""
        if isinstance(self._vectors, VectorFile):
            return self._vectors.row(i)
        return self._vectors[i]

    def model(self, i: int) -> nn.Module:
        """A fresh ``nn.Module`` (from the factory) holding the weights of model ``i``.

        BatchNorm statistics not in the vectors are the model's stored ones
        (:attr:`statistics`) when known; other tensors outside the vectors keep the
        factory's initial values.
        """
        if self.factory is None:
            raise ValueError(
                "Population.model: this population has no model factory; build it with "
                "from_checkpoints/from_run/from_models, or pass factory= to Population"
            )
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"Population.model: index {i} out of range for {n} models")
        m = self.factory()
        self.space.load_into(m, self.vector(i))
        if self.statistics:
            own = dict(m.named_buffers())
            with torch.no_grad():
                for k, v in self.statistics.items():
                    own[k].copy_(v[i])
        return m

    # ---------------------------------------------------------------- labels
    def label_table(self) -> dict[str, list[Any]]:
        """Columns ``{label: [value per model]}``: variant, seed, epoch, step first,
        then any other labels in order of appearance; None where a model lacks one."""
        keys = list(LABEL_COLUMNS)
        for lab in self._labels:
            keys.extend(k for k in lab if k not in keys)
        return {k: [lab.get(k) for lab in self._labels] for k in keys}

    @property
    def variants(self) -> list[Any]:
        """Unique ``variant`` labels in order of first appearance."""
        out: list[Any] = []
        for lab in self._labels:
            v = lab.get("variant")
            if v is not None and v not in out:
                out.append(v)
        return out

    def indices(self, **filters: Any) -> list[int]:
        """Indices of the models whose labels match every filter.

        A filter value is compared for equality, or membership if it is a list /
        tuple / set, or called if it is callable: ``indices(variant=["A", "B"],
        epoch=lambda e: e >= 5)``.
        """
        out = []
        for i, lab in enumerate(self._labels):
            if all(k in lab and _matches(lab[k], want) for k, want in filters.items()):
                out.append(i)
        return out

    def subset(self, indices: Sequence[int]) -> Population:
        """A population of the models at ``indices`` (in memory: vectors copied; mapped:
        a view of the same file)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if isinstance(self._vectors, VectorFile):
            vectors: Tensor | VectorFile = self._vectors.take(idx.numpy())
        else:
            vectors = self._vectors.index_select(0, idx)
        return Population(
            self.space,
            vectors,
            [self._labels[i] for i in idx.tolist()],
            None if self.paths is None else [self.paths[i] for i in idx.tolist()],
            factory=self.factory,
            factory_spec=self.factory_spec,
            factory_kwargs=self.factory_kwargs,
            bn=self.bn,
            statistics=None if self.statistics is None else {
                k: v.index_select(0, idx) for k, v in self.statistics.items()},
        )

    def select(self, **filters: Any) -> Population:
        """The models whose labels match ``filters`` (see :meth:`indices`)."""
        idx = self.indices(**filters)
        if not idx:
            known = {k: sorted({str(v) for v in col if v is not None})[:8]
                     for k, col in self.label_table().items() if k in filters}
            raise ValueError(f"Population.select: no model matches {filters}; labels: {known}")
        return self.subset(idx)

    def holdout(self, fraction: float, seed: int = 0) -> tuple[Population, Population]:
        """``(kept, held_out)``: a random ``fraction`` of the models (at least one, and at
        least 3 kept) set aside, e.g. to measure a map's error at checkpoints it was not
        fitted to. Deterministic for a ``seed``; both keep the population's order."""
        n = len(self)
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"Population.holdout: fraction must be in (0, 1), got {fraction}")
        k = max(1, round(float(fraction) * n))
        if n - k < 3:
            raise ValueError(f"Population.holdout: holding out {k} of {n} models leaves fewer "
                             "than 3 to fit")
        gen = torch.Generator().manual_seed(int(seed))
        held = sorted(torch.randperm(n, generator=gen)[:k].tolist())
        kept = [i for i in range(n) if i not in set(held)]
        return self.subset(kept), self.subset(held)

    def trajectories(self) -> dict[str, list[int]]:
        """``{run key: [indices ordered by (epoch, step)]}``; the run key is
        ``"{variant}/seed{seed}"`` (see :func:`run_key`)."""
        groups: dict[str, list[int]] = {}
        for i, lab in enumerate(self._labels):
            groups.setdefault(run_key(lab), []).append(i)
        return {
            k: sorted(v, key=lambda i: (*_order_key(self._labels[i]), i))
            for k, v in groups.items()
        }

    def final_indices(self) -> list[int]:
        """Index of the last checkpoint (by epoch, step) of every variant/seed run."""
        return [idx[-1] for idx in self.trajectories().values()]

    def final(self) -> Population:
        """The last checkpoint of every variant/seed run."""
        return self.subset(self.final_indices())

    # --------------------------------------------------------------- storage
    def to_safetensors(self, path: str | os.PathLike) -> Path:
        """Write the stacked vectors ``[N, D]`` and, as JSON in the file's metadata, the
        labels, paths, layout and factory spec; atomically (temporary file, rename), a
        chunk of models at a time."""
        meta = _file_metadata(self._labels, self.paths, self.space, self.factory_spec,
                              self.factory_kwargs, self.bn)
        chunk = max(1, (64 * 2**20) // (4 * max(1, self.dim)))
        with VectorFileWriter(path, (len(self), self.dim), dtype=self.space.dtype,
                              metadata=meta) as writer:
            for start in range(0, len(self), chunk):
                stop = min(len(self), start + chunk)
                rows = (self._vectors.rows(slice(start, stop))
                        if isinstance(self._vectors, VectorFile) else self._vectors[start:stop])
                writer.write_rows(start, rows)
        return Path(path)

    @classmethod
    def from_safetensors(
        cls,
        path: str | os.PathLike,
        factory: Factory | None = None,
        factory_kwargs: Mapping[str, Any] | None = None,
        mmap: bool = False,
    ) -> Population:
        """Read a file written by :meth:`to_safetensors` (or ``from_checkpoints(out=)``);
        the factory defaults to the stored spec. The factory's layout must equal the
        stored one. ``mmap=True`` leaves the vectors on disk, read by rows and blocks."""
        from safetensors import safe_open

        from .checkpoints import CheckpointError

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"Population.from_safetensors: {p} not found")
        try:
            f = safe_open(str(p), framework="pt")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type
            raise CheckpointError(
                f"Population.from_safetensors: {p} could not be read (truncated or not a "
                f"safetensors file?): {err}"
            ) from err
        with f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT or "vectors" not in f.keys():  # noqa: SIM118
                raise CheckpointError(
                    f"Population.from_safetensors: {p} is not a population file "
                    f"(format {meta.get('format')!r}, expected {_FORMAT!r}); for single "
                    "checkpoints use Population.from_checkpoints"
                )
            vectors = VectorFile(p, "vectors") if mmap else f.get_tensor("vectors")
        if factory is None:
            factory = json.loads(meta.get("factory", "null"))
            if factory is None:
                raise ValueError(
                    f"Population.from_safetensors: {p} stores no importable model factory; "
                    "pass factory="
                )
            if factory_kwargs is None:
                factory_kwargs = json.loads(meta.get("factory_kwargs", "{}"))
        build, spec = resolve_model_factory(factory, factory_kwargs)
        template = build()
        buffers = json.loads(meta.get("buffers", "false"))
        bn = json.loads(meta.get("bn", "null"))
        if bn is None and buffers and batchnorm_stat_names(template):
            raise CheckpointError(
                f"Population.from_safetensors: {p} was written by an older lossatlas that laid "
                "out BatchNorm variances without a log scale; write it again from the "
                "checkpoints")
        bn = resolve_policy(template, bn, "Population.from_safetensors")
        space = ParamSpace(template, buffers=buffers)
        stored = json.loads(meta["layout"])
        mine = _layout(space)
        if stored != mine:
            for a, b in zip(stored, mine, strict=False):
                if a != b:
                    raise CheckpointError(
                        f"Population.from_safetensors: {p}: tensor {a[0]!r} shape {a[1]} does "
                        f"not match the factory's {b[0]!r} shape {b[1]}"
                    )
            raise CheckpointError(
                f"Population.from_safetensors: {p} has {len(stored)} tensors, the factory's "
                f"model {len(mine)}"
            )
        return cls(
            space,
            vectors,
            json.loads(meta["labels"]),
            json.loads(meta.get("paths", "null")),
            factory=build,
            factory_spec=spec,
            factory_kwargs=factory_kwargs,
            bn=bn,
        )


# ----------------------------------------------------------------------------- run directories
# factories of lossatlas itself that the runs it writes name by spec (run_grokking's)
BUILTIN_SPECS = frozenset({"lossatlas.dynamics.grokking:modular_mlp"})


class UntrustedRunError(ValueError, LossatlasError):
    """A run file names a ``"package.module:function"`` factory that lossatlas does not
    import and call unless the caller names that factory or passes ``trust_run=True``."""


def is_train_run(source: Any) -> bool:
    """True when ``source`` is a :func:`~lossatlas.train.train_population` run directory
    (it holds a ``checkpoints/`` folder), False for a checkpoint folder, glob, file or list."""
    if not isinstance(source, (str, os.PathLike)):
        return False
    return (Path(source) / "checkpoints").is_dir()


SourceKind = Literal["run", "folder", "glob", "file", "list"]


def source_kind(source: Any, who: str = "source_kind") -> SourceKind:
    """What ``source`` is as a population: ``"run"`` (a train run, see
    :func:`is_train_run`), ``"folder"`` (a directory holding checkpoints), ``"glob"`` (a
    pattern matching checkpoint files), ``"file"`` (one existing file) or ``"list"`` (a
    list of those). The one place that decides it (:meth:`Population.open` reads by it).

    Raises :class:`PopulationSourceError` naming ``source`` (and ``who``) when it is
    none of these: missing, a folder without checkpoints, a pattern matching none, or an
    empty list (``ValueError``).
    """
    if is_train_run(source):
        return "run"
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, (bytes, Mapping)) or not isinstance(source, Iterable):
            raise InputTypeError(
                f"{who}: a population source is a path, a glob pattern or a list of paths, "
                f"got {type(source).__name__}")
        _expand(source, who)
        return "list"
    _expand_one(source, who)  # PopulationSourceError naming it when it is none
    if Path(source).is_dir():
        return "folder"
    return "file" if Path(source).is_file() else "glob"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a JSON run manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def check_run_factory(
    spec: Any, where: str | os.PathLike, kind: Literal["model", "data"] = "model", *,
    trust_run: bool = False,
) -> None:
    """Refuse a factory named by a run file (``where``) unless it is safe to resolve.

    A plain name (no ``:``) is only looked up in a registry
    (:data:`lossatlas.models.MODELS`, the datasets of :mod:`lossatlas.data`): allowed, as
    are the few specs of lossatlas's own factories in :data:`BUILTIN_SPECS`. Any other
    ``"package.module:function"`` spec would be imported and called: allowed only with
    ``trust_run=True``, else :class:`UntrustedRunError` names the file, the factory and
    how to allow it. (A factory the caller names is the caller's, and is never checked.)
    """
    if not isinstance(spec, str):
        raise ValueError(
            f"{where} names the {kind} factory {spec!r}: expected a registered name or a "
            "'package.module:function' spec"
        )
    if trust_run or ":" not in spec or spec in BUILTIN_SPECS:
        return
    option, argument = ("--model", "factory") if kind == "model" else ("--data", "data")
    raise UntrustedRunError(
        f"{where} names the {kind} factory {spec!r}, which lossatlas does not import and run "
        f"on a run file's word: pass {option} {spec} if you trust it, or --trust-run "
        f"(Python: {argument}={spec!r} or trust_run=True)"
    )


def load_population(
    source: str | os.PathLike | Iterable[str | os.PathLike],
    model: Factory | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    *,
    trust_run: bool = False,
    bn: Literal["own", "recompute"] | None = None,
    nonfinite: Literal["raise", "skip"] = "raise",
    out: str | os.PathLike | None = None,
) -> Population:
    """A population from a training run or from checkpoints: :meth:`Population.open`
    under the argument names ``model`` / ``model_kwargs`` (kept for compatibility).

    Parameters
    ----------
    source : a :func:`~lossatlas.train.train_population` run directory (one holding
        ``checkpoints/``, see :func:`is_train_run`), or anything
        :meth:`Population.from_checkpoints` takes (folder, glob, file, list)
    model : callable, ``"pkg.mod:fn"`` spec or registered name
        The architecture the checkpoints are matched against; required for
        checkpoints. For a run, default the factory its ``train.json`` names, used only
        if it is a registered name or ``trust_run`` (see :meth:`Population.from_run`);
        a ``model`` given here always wins and the run's is never resolved.
    model_kwargs : dict, optional
        The factory's arguments; for the run's own factory they update its
        ``model_kwargs``.
    trust_run : bool
        Let the run's ``train.json`` name a factory to import and call.
    bn, nonfinite, out : see :meth:`Population.from_checkpoints`
    """
    return Population.open(source, model, model_kwargs, bn=bn, nonfinite=nonfinite, out=out,
                           trust_run=trust_run)
