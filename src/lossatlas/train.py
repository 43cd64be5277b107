"""Train a population: hyper-parameter variants x seeds, with checkpoints along the way.

The Globscope setup: several variants of one model (batch size, learning rate,
weight decay, optimizer) trained from seeded initialisations, a checkpoint every
few epochs. A run directory looks like::

    OUT/train.json                                  model, data, variants, seeds, timings
    OUT/run.json                                    lossatlas run record (stage "train")
    OUT/checkpoints/A_seed0_epoch000.safetensors    weights (state_dict)
    OUT/checkpoints/A_seed0_epoch000.json           labels: variant, seed, epoch, step, hparams
    OUT/metrics/A_seed0.jsonl                       per-epoch metrics, line by line
    OUT/metrics.json                                all runs' per-epoch metrics (atomic)

Determinism: the initialisation is drawn after ``torch.manual_seed(seed)`` (so the
variants of one seed start from the same weights) and the mini-batch order from a
``torch.Generator`` seeded from ``(seed, variant name)``; on the CPU the same call
gives bit-identical checkpoints. Resuming: a run (variant, seed) whose final
checkpoint exists is skipped; an unfinished one is trained again from the start.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import InputTypeError
from .population import TRAIN_MANIFEST, Population, resolve_model_factory
from .progress import progress_bar
from .recorder import Recorder, read_jsonl, select_steps
from .store import atomic_write_json

__all__ = [
    "HPARAM_DEFAULTS",
    "PlannedRun",
    "default_demo_variants",
    "evaluate_split",
    "expand_variants",
    "merge_manifest",
    "plan_runs",
    "read_metrics",
    "train_population",
]

log = logging.getLogger(__name__)

HPARAM_DEFAULTS: dict[str, Any] = {
    "lr": 0.05,
    "batch_size": 64,
    "weight_decay": 0.0,
    "momentum": 0.9,
    "optimizer": "sgd",
    "epochs": 10,
    "init": "shared",
}
"""Hyper-parameters of a variant not given explicitly (``epochs=`` of
:func:`train_population` overrides ``epochs``)."""

_OPTIMIZERS = ("sgd", "adam", "adamw")
_ABBREV = {"lr": "lr", "batch_size": "bs", "weight_decay": "wd", "momentum": "m", "epochs": "ep"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.+=-]*$")


def default_demo_variants() -> list[dict[str, Any]]:
    """Seven Globscope-like variants A-G for the MLP on MNIST-1D (8 epochs each).

    They differ in learning rate, batch size, weight decay and optimizer, so that
    they end in different places: A is the reference, B/E take larger batches with a
    smaller and a larger rate, C small batches, D is Adam (markedly different), F
    plain SGD without momentum, G strong weight decay.
    """
    return [
        {"name": "A", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "weight_decay": 0.0},
        {"name": "B", "optimizer": "sgd", "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4},
        {"name": "C", "optimizer": "sgd", "lr": 0.02, "batch_size": 32, "weight_decay": 0.0},
        {"name": "D", "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "weight_decay": 0.0},
        {"name": "E", "optimizer": "sgd", "lr": 0.1, "batch_size": 256, "weight_decay": 1e-4},
        {"name": "F", "optimizer": "sgd", "lr": 0.2, "batch_size": 64, "momentum": 0.0,
         "weight_decay": 0.0},
        {"name": "G", "optimizer": "sgd", "lr": 0.05, "batch_size": 64, "weight_decay": 5e-3},
    ]  # fmt: skip


# ----------------------------------------------------------------------------- variants
def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _grid_name(point: Mapping[str, Any]) -> str:
    return "-".join(f"{_ABBREV.get(k, '')}{_fmt(v)}" for k, v in point.items())


def expand_variants(
    variants: Sequence[Mapping[str, Any]] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    epochs: int | None = None,
) -> list[dict[str, Any]]:
    """Complete, validated variant dicts (``name`` + every key of `HPARAM_DEFAULTS`).

    ``variants``: explicit dicts; ``grid``: ``{hparam: [values]}`` whose cartesian
    product gives the variants (named like ``lr0.1-bs64-wd0``); neither: the demo
    variants. ``epochs`` sets the epochs of variants that do not give their own.
    """
    where = "train_population"
    if variants is not None and grid is not None:
        raise ValueError(f"{where}: give variants= or grid=, not both")
    if grid is not None:
        if not isinstance(grid, Mapping) or not grid:
            raise ValueError(f"{where}: grid must be a non-empty dict of hparam -> list of values")
        keys = list(grid)
        for k in keys:
            if k not in HPARAM_DEFAULTS:
                raise ValueError(
                    f"{where}: unknown grid key {k!r}; allowed: {', '.join(HPARAM_DEFAULTS)}"
                )
            if isinstance(grid[k], (str, bytes)) or not isinstance(grid[k], Iterable):
                raise ValueError(f"{where}: grid[{k!r}] must be a list of values, got {grid[k]!r}")
        variants = []
        for values in itertools.product(*(list(grid[k]) for k in keys)):
            point = dict(zip(keys, values, strict=True))
            variants.append({"name": _grid_name(point), **point})
    elif variants is None:
        variants = default_demo_variants()
    if isinstance(variants, Mapping) or not variants:
        raise ValueError(f"{where}: variants must be a non-empty list of dicts")
    out: list[dict[str, Any]] = []
    for i, v in enumerate(variants):
        if not isinstance(v, Mapping):
            raise InputTypeError(f"{where}: variant {i} is a {type(v).__name__}, expected a dict")
        unknown = [k for k in v if k != "name" and k not in HPARAM_DEFAULTS]
        if unknown:
            raise ValueError(
                f"{where}: variant {v.get('name', i)!r} has unknown key {unknown[0]!r}; "
                f"allowed: name, {', '.join(HPARAM_DEFAULTS)}"
            )
        hp = {**HPARAM_DEFAULTS, **({"epochs": epochs} if epochs is not None else {}), **v}
        hp.pop("name", None)
        name = str(v.get("name") or _grid_name({k: v[k] for k in v if k != "name"}) or "default")
        if not _NAME_RE.match(name):
            raise ValueError(
                f"{where}: variant name {name!r} must start with a letter or digit and hold "
                "only letters, digits and . + = - _"
            )
        _check_hparams(name, hp)
        out.append({"name": name, **hp})
    names = [v["name"] for v in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: variant names must be unique; repeated: {dup}")
    return out


def _check_hparams(name: str, hp: dict[str, Any]) -> None:
    where = f"train_population: variant {name!r}"
    if hp["optimizer"] not in _OPTIMIZERS:
        raise ValueError(
            f"{where}: optimizer must be one of {_OPTIMIZERS}, got {hp['optimizer']!r}"
        )
    if not (isinstance(hp["lr"], (int, float)) and hp["lr"] > 0):
        raise ValueError(f"{where}: lr must be a positive number, got {hp['lr']!r}")
    if int(hp["batch_size"]) != hp["batch_size"] or hp["batch_size"] < 1:
        raise ValueError(f"{where}: batch_size must be an int >= 1, got {hp['batch_size']!r}")
    if int(hp["epochs"]) != hp["epochs"] or hp["epochs"] < 1:
        raise ValueError(f"{where}: epochs must be an int >= 1, got {hp['epochs']!r}")
    if hp["init"] not in ("shared", "own"):
        raise ValueError(f"{where}: init must be 'shared' (variants of a seed start from one "
                         f"initialisation) or 'own', got {hp['init']!r}")
    if hp["weight_decay"] < 0 or hp["momentum"] < 0:
        raise ValueError(f"{where}: weight_decay and momentum must be >= 0")
    hp["batch_size"], hp["epochs"] = int(hp["batch_size"]), int(hp["epochs"])
    hp["lr"], hp["weight_decay"] = float(hp["lr"]), float(hp["weight_decay"])
    hp["momentum"] = float(hp["momentum"])


def _make_optimizer(model: nn.Module, hp: Mapping[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if hp["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    cls = torch.optim.Adam if hp["optimizer"] == "adam" else torch.optim.AdamW
    return cls(params, lr=hp["lr"], weight_decay=hp["weight_decay"])


# ----------------------------------------------------------------------------- data, model
def _resolve_data(data: Any, data_kwargs: Mapping[str, Any] | None) -> tuple[Any, str | None]:
    if isinstance(data, str):
        from . import data as data_mod

        return data_mod.create(data, **dict(data_kwargs or {})), data
    needed = ("x_train", "y_train", "x_test", "y_test")
    missing = [a for a in needed if not hasattr(data, a)]
    if missing:
        raise InputTypeError(
            f"train_population: data must be a dataset name, a 'pkg.mod:fn' spec or an object "
            f"with {', '.join(needed)} (e.g. lossatlas.data.DatasetSplits); "
            f"{type(data).__name__} lacks {missing[0]}"
        )
    if data_kwargs:
        raise ValueError("train_population: data_kwargs apply only when data is a name or spec")
    return data, None


def _factory_fn(model: Any) -> Callable[..., Any] | None:
    if isinstance(model, str):
        if ":" in model:
            from .registry import resolve_factory

            return resolve_factory(model)
        from .models import MODELS

        return MODELS.get(model)
    return model if callable(model) else None


def _infer_model_kwargs(model: Any, split: Any, model_kwargs: Mapping[str, Any] | None) -> dict:
    """Fill ``in_features``, ``num_classes`` and ``p`` from the data when the factory takes
    them and they are not given."""
    kwargs = dict(model_kwargs or {})
    fn = _factory_fn(model)
    try:
        params = inspect.signature(fn).parameters if fn is not None else {}
    except (TypeError, ValueError):
        params = {}
    guesses: dict[str, Any] = {}
    x = split.x_train
    if isinstance(x, torch.Tensor) and x.is_floating_point():  # not for dict / tuple inputs
        guesses["in_features"] = math.prod(tuple(x.shape[1:]))
    num_classes = getattr(split, "num_classes", None)
    if num_classes is not None:
        guesses["num_classes"] = int(num_classes)
    meta = getattr(split, "meta", None) or {}
    if "p" in meta:
        guesses["p"] = int(meta["p"])
    for k, v in guesses.items():
        if k in params and kwargs.get(k) is None:
            kwargs[k] = v
            log.debug("train_population: model %s=%s (from the data)", k, v)
    return kwargs


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def evaluate_split(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy (fraction) of ``model`` on ``(x [N, ...], y [N])``,
    one full pass in eval mode (the model's train/eval mode is restored)."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device)
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        yb = y[i : i + batch_size]
        loss += F.cross_entropy(out, yb, reduction="sum")
        correct += (out.argmax(-1) == yb).sum()
    model.train(was_training)
    n = x.shape[0]
    return float(loss) / n, float(correct) / n


def _stable_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _checkpoint_epochs(epochs: int, every: int) -> list[int]:
    return sorted({*range(0, epochs + 1, every), epochs})


def _stem(name: str, seed: int) -> Callable[[dict[str, Any]], str]:
    def stem(labels: dict[str, Any]) -> str:
        epoch = labels.get("epoch")
        if isinstance(epoch, int):
            return f"{name}_seed{seed}_epoch{epoch:03d}"
        return f"{name}_seed{seed}_step{int(labels['step']):07d}"

    return stem


def _hparams(v: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in HPARAM_DEFAULTS}


def _train_one(
    build: Callable[[], nn.Module],
    split: Any,
    variant: Mapping[str, Any],
    seed: int,
    checkpoint_every: int,
    out_dir: Path,
    device: torch.device,
    extra_steps: Mapping[str, Any] | None,
    on_epoch: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Train one (variant, seed); returns its metrics record."""
    name, hp = variant["name"], _hparams(variant)
    t0 = time.perf_counter()
    # "shared": every variant of a seed starts from one initialisation; "own": its own
    torch.manual_seed(seed if hp["init"] == "shared" else _stable_seed(seed, f"{name}/init"))
    model = build().to(device)
    model.train()
    gen = torch.Generator().manual_seed(_stable_seed(seed, name))
    opt = _make_optimizer(model, hp)
    x, y = split.x_train, split.y_train
    n, bs, epochs = x.shape[0], hp["batch_size"], hp["epochs"]
    spe = math.ceil(n / bs)
    total = epochs * spe
    steps = {e * spe for e in _checkpoint_epochs(epochs, checkpoint_every)}
    extra: set[int] = set()
    if extra_steps:
        opts = dict(extra_steps)
        sched = select_steps(opts.pop("steps", "log"), total_steps=total, **opts)
        extra = {s for s in (sched.steps or range(0, total + 1, int(sched.every))) if s % spe}
    rec = Recorder(
        out_dir,
        steps=sorted(steps | extra),
        metadata={"variant": name, "seed": int(seed), **hp},
        name=_stem(name, seed),
        metrics_file=f"metrics/{name}_seed{seed}.jsonl",
    )
    rows: list[dict[str, Any]] = []

    def record(epoch: int, step: int, train_running: float | None, seconds: float) -> None:
        tr_loss, tr_acc = evaluate_split(model, x, y)
        te_loss, te_acc = evaluate_split(model, split.x_test, split.y_test)
        row = {
            "epoch": epoch,
            "step": step,
            "train_loss": tr_loss,
            "train_accuracy": tr_acc,
            "test_loss": te_loss,
            "test_accuracy": te_acc,
            "train_loss_running": train_running,
            "seconds": round(seconds, 4),
        }
        rec.step(model, step, {k: v for k, v in row.items() if k not in ("epoch", "step")},
                 labels={"epoch": epoch})
        rows.append(row)
        on_epoch(row)

    record(0, 0, None, 0.0)
    step = 0
    for epoch in range(1, epochs + 1):
        te = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        xs, ys = x[perm], y[perm]
        running = torch.zeros((), device=device)
        for b in range(spe):
            xb, yb = xs[b * bs : (b + 1) * bs], ys[b * bs : (b + 1) * bs]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach() * xb.shape[0]
            step += 1
            if step in extra:
                rec.step(model, step, labels={"epoch": round(step / spe, 6)})
        running_loss = float(running) / n
        if not math.isfinite(running_loss):
            log.warning("train_population: %s seed %d: non-finite loss in epoch %d",
                        name, seed, epoch)
        record(epoch, step, running_loss, time.perf_counter() - te)
    seconds = time.perf_counter() - t0
    return {
        "variant": name,
        "seed": int(seed),
        "hparams": hp,
        "steps_per_epoch": spe,
        "total_steps": total,
        "seconds": round(seconds, 3),
        "checkpoints": [str(p.relative_to(out_dir)) for p in rec.paths],
        "epochs": rows,
    }


def read_metrics(out_dir: str | os.PathLike) -> dict[str, Any]:
    """``OUT/metrics.json``: ``{"runs": {"A_seed0": {"variant", "seed", "hparams",
    "steps_per_epoch", "seconds", "epochs": [{"epoch", "step", "train_loss",
    "train_accuracy", "test_loss", "test_accuracy", ...}, ...]}, ...}}``."""
    path = Path(out_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"read_metrics: {path} not found; train into {out_dir} first")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) run of a :func:`train_population` call: ``variant`` is the
    complete variant dict (``name`` + every hyper-parameter, see :func:`expand_variants`),
    ``seed`` its seed, ``checkpoint_every`` the epochs between checkpoints."""

    variant: Mapping[str, Any]
    seed: int
    checkpoint_every: int

    @property
    def name(self) -> str:
        """The variant's name."""
        return str(self.variant["name"])

    @property
    def key(self) -> str:
        """``"{variant}_seed{seed}"``: the run's key in ``metrics.json`` and ``run.json``."""
        return f"{self.name}_seed{self.seed}"

    @property
    def epochs(self) -> int:
        """Epochs the run trains for."""
        return int(self.variant["epochs"])

    def checkpoint_files(self, out_dir: str | os.PathLike) -> list[Path]:
        """The per-epoch checkpoints the run writes into ``out_dir`` (epoch 0, every
        ``checkpoint_every`` epochs, the final epoch), in order."""
        stem = _stem(self.name, self.seed)
        return [Path(out_dir) / "checkpoints" / f"{stem({'epoch': e})}.safetensors"
                for e in _checkpoint_epochs(self.epochs, self.checkpoint_every)]

    def finished(self, out_dir: str | os.PathLike) -> bool:
        """Whether ``out_dir`` holds the run's final checkpoint with its labels sidecar
        (a finished run, skipped when trained again)."""
        final = self.checkpoint_files(out_dir)[-1]
        return final.is_file() and final.with_suffix(".json").is_file()


def plan_runs(
    variants: Sequence[Mapping[str, Any]] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Iterable[int] = (0,),
    epochs: int | None = None,
    checkpoint_every: int = 1,
) -> list[PlannedRun]:
    """The runs :func:`train_population` trains for these arguments, in its order
    (variants as given, then seeds); validated (``ValueError`` naming the argument)."""
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
        raise ValueError(
            f"train_population: checkpoint_every must be an int >= 1 (epochs), "
            f"got {checkpoint_every!r}"
        )
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"train_population: seeds must be a non-empty list of distinct ints, got {seeds}"
        )
    return [PlannedRun(v, seed, int(checkpoint_every))
            for v in expand_variants(variants, grid, epochs) for seed in seeds]


def _same_config(old: Mapping[str, Any], new: Mapping[str, Any], out_dir: Path) -> None:
    for key in ("model", "model_kwargs", "data", "data_kwargs"):
        if key in old and json.loads(json.dumps(old[key], default=str)) != json.loads(
            json.dumps(new[key], default=str)
        ):
            raise ValueError(
                f"train_population: {out_dir} holds a run with {key}={old[key]!r}, this call "
                f"has {key}={new[key]!r}; use another out_dir to keep populations apart"
            )


def merge_manifest(old: Mapping[str, Any], config: Mapping[str, Any],
                   plan: Sequence[PlannedRun], out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``train.json`` of ``out_dir`` after this call: ``config`` (model, data and
    their arguments, checkpoint_every, device) with the variants and seeds of ``old``
    (the manifest already there, ``{}`` if none) and of ``plan`` (a variant of the same
    name: this call's), and ``old``'s timings. A ``config`` whose model or data differ
    from ``old``'s raises ``ValueError`` naming the key and ``out_dir``."""
    _same_config(old, config, Path(out_dir))
    variants = {v["name"]: v for v in old.get("variants", [])}
    variants.update({r.name: dict(r.variant) for r in plan})
    return {**config, "variants": list(variants.values()),
            "seeds": sorted(set(old.get("seeds", [])) | {r.seed for r in plan}),
            "timings": dict(old.get("timings", {}))}


def _read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, ``{}`` when there is no such file."""
    return json.loads(path.read_text()) if path.is_file() else {}


# ----------------------------------------------------------------------------- run or skip
def _skip(run: PlannedRun, out_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics record of a finished run (from ``metrics.json``, else its JSON-lines
    file), after checking it was trained with the planned hyper-parameters."""
    _check_resumed(run.checkpoint_files(out_dir)[-1], run.variant, out_dir)
    if run.key not in metrics["runs"]:
        metrics["runs"][run.key] = _metrics_from_jsonl(out_dir, run.variant, run.seed)
    return metrics["runs"][run.key]


def _show_epoch(bar: Any, key: str, row: dict[str, Any]) -> None:
    """Advance the progress bar by a trained epoch and show the run's test accuracy."""
    if row["epoch"] > 0:
        bar.update(1)
    bar.set_postfix(run=key, test_acc=f"{row['test_accuracy']:.3f}")


def train_population(
    model: str | Callable[..., nn.Module] = "mlp",
    data: Any = "mnist1d",
    *,
    out_dir: str | os.PathLike,
    variants: Sequence[Mapping[str, Any]] | None = None,
    seeds: Iterable[int] = (0,),
    grid: Mapping[str, Sequence[Any]] | None = None,
    checkpoint_every: int = 1,
    epochs: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    data_kwargs: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    recorder: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
) -> Population:
    """Train every variant x seed and return the population of their checkpoints.

    Parameters
    ----------
    model : registered model name, ``"pkg.mod:fn"`` spec, or callable returning an nn.Module
        ``in_features``, ``num_classes`` (and ``p``) are taken from the data when the
        factory accepts them and ``model_kwargs`` does not set them.
    data : dataset name / spec (``lossatlas.data.create``) or an object with
        ``x_train [N, ...]``, ``y_train [N]``, ``x_test``, ``y_test`` tensors
    out_dir : run directory (created; re-running resumes, see below)
    variants : list of dicts with ``name``, ``lr``, ``batch_size``, ``weight_decay``,
        ``momentum``, ``optimizer`` ("sgd", "adam", "adamw") and ``epochs``; missing
        keys from `HPARAM_DEFAULTS`. Default: :func:`default_demo_variants`.
    seeds : initialisation / shuffling seeds; every variant is trained with each
    grid : ``{hparam: [values]}``; the cartesian product replaces ``variants``
    checkpoint_every : save a checkpoint every k epochs (epoch 0 = initialisation and
        the final epoch always)
    epochs : epochs of variants that do not set their own (default 10)
    model_kwargs, data_kwargs : factory arguments
    device : default CUDA when available, else CPU
    progress : show a tqdm bar over epochs
    recorder : extra checkpoints inside epochs, as :func:`~lossatlas.recorder.select_steps`
        options, e.g. ``{"steps": "log", "num": 20}`` (named ``..._step0000012``, with a
        fractional ``epoch`` label); metrics are only recorded per epoch
    num_threads : torch CPU threads while training (restored afterwards); default: leave
        as set. Small models train fastest with 1; on a busy machine more threads can
        be many times slower.

    Returns
    -------
    Population of every checkpoint of the requested runs, ordered by variant (as
    given), seed, epoch/step. Metrics: :func:`read_metrics` (``OUT/metrics.json``).

    The work is planned (:func:`plan_runs`), the run's ``train.json`` merged with the
    one already in ``out_dir`` (:func:`merge_manifest`), then each planned run trained
    or skipped: a run whose final checkpoint exists (with its labels sidecar,
    :meth:`PlannedRun.finished`) is skipped; its hyper-parameters must equal the
    requested ones. Runs are not resumed mid-way.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = plan_runs(variants, grid, seeds, epochs, checkpoint_every)
    split, data_spec = _resolve_data(data, data_kwargs)
    kwargs = _infer_model_kwargs(model, split, model_kwargs)
    build, model_spec = resolve_model_factory(model, kwargs)
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )

    manifest_path = out_dir / TRAIN_MANIFEST
    manifest = merge_manifest(_read_json(manifest_path), {
        "model": model_spec,
        "model_kwargs": kwargs,
        "data": data_spec,
        "data_kwargs": dict(data_kwargs or {}),
        # where the data came from in words, also when given as an object (not compared)
        "data_source": split.describe() if hasattr(split, "describe") else None,
        "checkpoint_every": int(checkpoint_every),
        "device": str(dev),
    }, plan, out_dir)
    atomic_write_json(manifest_path, manifest)

    metrics_path = out_dir / "metrics.json"
    metrics = _read_json(metrics_path)
    metrics.setdefault("runs", {})
    split_dev = SimpleNamespace(
        **{a: getattr(split, a).to(dev) for a in ("x_train", "y_train", "x_test", "y_test")}
    )

    bar = progress_bar(progress=progress, total=sum(r.epochs for r in plan), desc="train",
                       unit="epoch")
    paths: list[Path] = []
    trained, skipped = [], []
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        for run in plan:
            if run.finished(out_dir):
                record = _skip(run, out_dir, metrics)
                skipped.append(run.key)
                bar.update(run.epochs)
                log.info("train_population: %s done already, skipped", run.key)
            else:
                record = _train_one(build, split_dev, run.variant, run.seed,
                                    run.checkpoint_every, out_dir, dev, recorder,
                                    functools.partial(_show_epoch, bar, run.key))
                metrics["runs"][run.key] = record
                atomic_write_json(metrics_path, metrics)
                trained.append(run.key)
                last = record["epochs"][-1]
                log.info(
                    "train_population: %s: %.2fs, test accuracy %.3f, test loss %.4f",
                    run.key, record["seconds"], last["test_accuracy"], last["test_loss"],
                )
            names = record.get("checkpoints") or [
                str(p.relative_to(out_dir)) for p in run.checkpoint_files(out_dir)]
            paths.extend(out_dir / p for p in names)
    finally:
        bar.close()
        torch.set_num_threads(old_threads)
    atomic_write_json(metrics_path, metrics)
    seconds = time.perf_counter() - t_start
    manifest["timings"] = {
        **manifest["timings"],
        **{k: metrics["runs"][k]["seconds"] for k in trained},
        "last_call_seconds": round(seconds, 3),
    }
    atomic_write_json(manifest_path, manifest)
    try:
        from .store import Run

        Run(out_dir).record_stage(
            "train", seconds, trained=trained, skipped=skipped, device=str(dev)
        )
    except Exception as err:  # the run record is a convenience, never fatal
        log.warning("train_population: could not update run.json (%s)", err)
    log.info(
        "train_population: %d runs trained, %d skipped, %.2fs", len(trained), len(skipped), seconds
    )
    return Population.from_checkpoints(paths, model, kwargs)


def _check_resumed(final: Path, v: Mapping[str, Any], out_dir: Path) -> None:
    labels = json.loads(final.with_suffix(".json").read_text())
    for k, want in _hparams(v).items():
        if k in labels and labels[k] != want:
            raise ValueError(
                f"train_population: variant {v['name']!r} in {out_dir} was trained with "
                f"{k}={labels[k]!r}, this call asks {k}={want!r}; rename the variant or use "
                "another out_dir"
            )


def _metrics_from_jsonl(out_dir: Path, v: Mapping[str, Any], seed: int) -> dict[str, Any]:
    rows = read_jsonl(out_dir / "metrics" / f"{v['name']}_seed{seed}.jsonl")
    return {"variant": v["name"], "seed": seed, "hparams": _hparams(v), "epochs": rows}
