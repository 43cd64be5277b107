"""Batch size vs flatness (Keskar et al. 2017): sharpness, top eigenvalue and the
generalisation gap across a sweep of mini-batch sizes.

Every model of the sweep is the same MLP from the same initialisation, trained with
plain SGD at one learning rate until its training loss reaches the same target (or
an epoch cap), only the mini-batch size differs: the minima are compared at equal
training loss, as in Keskar et al. The survey's claim: large batches (accurate gradients) settle in sharp minima
that generalise worse; small batches (noisy gradients) are kept out of sharp ravines
and end in flat minima. Recorded for each final model, on the training set (mean
cross-entropy, eval mode): the top Hessian eigenvalue and trace
(:func:`~lossatlas.studies.model_sharpness`), the epsilon-sharpness
(:func:`lossatlas.curvature.sharpness`, radius ``rho``), and train / test loss and
error with their gaps.

Measured (the defaults: sklearn digits, 1024 training samples, MLP 64-64-10, SGD lr
0.1 to train loss 0.05; seed 0, one thread of an idle core, 11 s): batch sizes 8 / 32
/ 128 / 512 need 4 / 15 / 61 / 243 epochs (480-512 steps each); the top eigenvalue
grows with the batch, 0.53 / 0.57 / 0.60 / 0.60 (ratio 1.14, rank correlation 1), as
does the trace (8.5 -> 9.8) and the loss gap (0.079 -> 0.082 nats), while the
epsilon-sharpness at rho 0.05 falls slightly (0.0024 -> 0.0018) and the test error is
0.042 at batch 8, 0.036 above: on this small, easy problem the effect is the survey's
direction but small.

Run directory::

    OUT/run.json                  config and stage timings (lossatlas.store.Run)
    OUT/batch_size.json           summary (see :func:`run_batch_size`)
    OUT/batch_size.png            sharpness and top eigenvalue vs batch size; the gaps
    OUT/checkpoints/batch{B}_seed{S}_step{T}.safetensors (+ .json)   final models
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from ..progress import progress_bar
from ..recorder import Recorder
from ..store import Run, atomic_write_json
from .double_descent import model_sharpness

__all__ = ["batch_size_study", "plot_batch_size", "run_batch_size"]

log = logging.getLogger(__name__)


def plot_batch_size(summary: dict[str, Any]) -> Figure:
    """Left: top Hessian eigenvalue and epsilon-sharpness vs batch size (means over
    seeds); right: generalisation gaps (test - train loss, test - train error)."""
    rows = summary["models"]
    sizes = sorted({r["batch_size"] for r in rows})

    def mean(key: str) -> np.ndarray:
        return np.array([np.mean([r[key] for r in rows if r["batch_size"] == b]) for b in sizes])

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax, ax_gap = fig.subplots(1, 2)
    ax.plot(sizes, mean("lambda_max"), "o-", color="C3", label="top Hessian eigenvalue")
    ax.set_ylabel("top eigenvalue (nats / parameter²)", color="C3")
    ax2 = ax.twinx()
    ax2.plot(sizes, mean("sharpness"), "s--", color="C4",
             label=f"ε-sharpness (ρ = {summary['config']['rho']:g})")
    ax2.set_ylabel("ε-sharpness (nats)", color="C4")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize="small")
    ax_gap.plot(sizes, mean("loss_gap"), "o-", label="test - train loss (nats)")
    ax_gap.plot(sizes, mean("error_gap"), "s--", label="test - train error")
    ax_gap.legend(fontsize="small")
    for a in (ax, ax_gap):
        a.set_xscale("log", base=2)
        a.set_xlabel("mini-batch size")
    ax.set_title(f"SGD lr {summary['config']['lr']:g} to train loss "
                 f"{summary['config']['target_loss']:g}", fontsize="small")
    return fig


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def run_batch_size(
    out_dir: str | Path,
    batch_sizes: Sequence[int] = (8, 32, 128, 512),
    target_loss: float = 0.05,
    lr: float = 0.1,
    *,
    dataset: str = "digits",
    num_train: int = 1024,
    max_epochs: int = 3000,
    hidden: Sequence[int] = (64,),
    activation: str = "relu",
    seeds: Sequence[int] = (0,),
    rho: float = 0.05,
    exact_trace_max: int = 1000,
    num_probes: int = 60,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The built-in batch-size sweep; writes a run directory, returns its summary.

    Parameters
    ----------
    out_dir : run directory (created)
    batch_sizes : mini-batch sizes (each ``<= num_train``); a batch of ``num_train``
        is full-batch gradient descent
    target_loss : training stops after the first epoch whose full training-set loss
        (nats, eval mode) is at or below this
    lr : SGD learning rate (no momentum, no weight decay)
    max_epochs : the cap on epochs (a model stopped there has ``reached_target`` False)
    dataset : a registered dataset with flat or flattenable inputs ("digits", "mnist1d")
    num_train : training samples (the first of the train split); the test split is
        used whole
    hidden, activation : the MLP ``in -> hidden... -> classes``
    seeds : initialisation / shuffling seeds (the same initialisation for every batch
        size of a seed)
    rho : radius of the epsilon-sharpness ball (parameter units)
    exact_trace_max, num_probes : see :func:`~lossatlas.studies.model_sharpness`
    progress : a bar over the models

    Returns
    -------
    JSON-able dict: ``config``; ``models`` (one row per batch size and seed:
    batch_size, seed, steps, epochs, reached_target, train_loss / train_error, test_loss / test_error,
    loss_gap = test_loss - train_loss, error_gap = test_error - train_error,
    lambda_max, trace, sharpness (nats), checkpoint); ``spearman`` (rank
    correlations over the rows: batch size with lambda_max, sharpness, loss_gap;
    lambda_max with loss_gap; None when constant); ``lambda_max_ratio`` (mean at the
    largest batch / mean at the smallest); ``paths``.
    """
    from .. import data as datasets
    from .. import models
    from ..curvature import sharpness
    from ..surfaces.plot import save_figure
    from ..train import evaluate_split

    sizes = sorted({int(b) for b in batch_sizes})
    seeds = [int(s) for s in seeds]
    if not sizes or not seeds:
        raise ValueError("run_batch_size: batch_sizes and seeds must be non-empty")
    if int(max_epochs) < 1 or not lr > 0 or not target_loss >= 0:
        raise ValueError(f"run_batch_size: max_epochs must be >= 1, lr > 0 and target_loss "
                         f">= 0, got {max_epochs}, {lr}, {target_loss}")
    splits = datasets.create(dataset)
    if not 1 <= int(num_train) <= splits.num_train:
        raise ValueError(f"run_batch_size: num_train must be in [1, {splits.num_train}] (the "
                         f"train split of {dataset!r}), got {num_train}")
    if sizes[0] < 1 or sizes[-1] > int(num_train):
        raise ValueError(f"run_batch_size: batch sizes must be in [1, num_train={num_train}], "
                         f"got {sizes}")
    x = splits.x_train[: int(num_train)].flatten(1).float()
    y = splits.y_train[: int(num_train)]
    x_test, y_test = splits.x_test.flatten(1).float(), splits.y_test
    config = {
        "study": "batch_size", "dataset": dataset, "batch_sizes": sizes,
        "target_loss": float(target_loss), "max_epochs": int(max_epochs),
        "lr": float(lr), "optimizer": "sgd", "num_train": int(num_train),
        "hidden": [int(h) for h in hidden], "activation": activation, "seeds": seeds,
        "rho": float(rho), "exact_trace_max": int(exact_trace_max),
        "num_probes": int(num_probes), "in_features": int(x.shape[1]),
        "num_classes": int(splits.num_classes), "model": "mlp", "loss": "cross-entropy (nats)",
    }
    model_kwargs = {"in_features": config["in_features"], "hidden": tuple(config["hidden"]),
                    "num_classes": config["num_classes"], "activation": activation}
    out = Path(out_dir)
    run = Run(out, config=config)
    rows: list[dict[str, Any]] = []
    for seed, b in progress_bar([(s, b) for s in seeds for b in sizes], progress=progress,
                                desc="batch-size sweep", unit="model"):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = models.create("mlp", **model_kwargs)
        opt = torch.optim.SGD(model.parameters(), lr=float(lr))
        gen = torch.Generator().manual_seed(seed)
        model.train()
        steps = epochs = 0
        train_loss = math.inf
        while epochs < int(max_epochs) and train_loss > float(target_loss):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), b):
                idx = perm[i : i + b]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            epochs += 1
            train_loss, _ = evaluate_split(model, x, y)
        model.eval()
        train_loss, train_acc = evaluate_split(model, x, y)
        test_loss, test_acc = evaluate_split(model, x_test, y_test)
        sharp = model_sharpness(model, (x, y), exact_trace_max=exact_trace_max,
                                num_probes=num_probes, seed=seed)
        eps = float(sharpness([model], model, (x, y), rho=float(rho), seed=seed)[0])
        rec = Recorder(out, steps=[steps], name="batch{batch:05d}_seed{seed}_step{step}",
                       metadata={"variant": f"batch{b}", "batch": b, "seed": seed})
        path = rec.save(model, steps)
        rows.append({
            "batch_size": b, "seed": seed, "steps": steps, "epochs": epochs,
            "reached_target": bool(train_loss <= float(target_loss)),
            "train_loss": train_loss, "train_error": 1.0 - train_acc,
            "test_loss": test_loss, "test_error": 1.0 - test_acc,
            "loss_gap": test_loss - train_loss, "error_gap": train_acc - test_acc,
            "lambda_max": sharp["lambda_max"], "lambda_residual": sharp["lambda_residual"],
            "trace": sharp["trace"], "trace_method": sharp["trace_method"],
            "num_params": sharp["num_params"], "sharpness": eps,
            "checkpoint": str(path.relative_to(out)),
        })
        run.record_stage(f"batch{b}_seed{seed}", time.perf_counter() - t0)
        log.info("batch size %d seed %d: train %.3f test %.3f lambda %.3g sharpness %.3g",
                 b, seed, train_loss, test_loss, sharp["lambda_max"], eps)

    def mean_at(key: str, b: int) -> float:
        return float(np.mean([r[key] for r in rows if r["batch_size"] == b]))

    col = {k: [r[k] for r in rows] for k in ("batch_size", "lambda_max", "sharpness",
                                             "loss_gap")}
    small = mean_at("lambda_max", sizes[0])
    summary = {
        "config": config,
        "models": rows,
        "spearman": {
            "batch_size_lambda_max": _spearman(col["batch_size"], col["lambda_max"]),
            "batch_size_sharpness": _spearman(col["batch_size"], col["sharpness"]),
            "batch_size_loss_gap": _spearman(col["batch_size"], col["loss_gap"]),
            "lambda_max_loss_gap": _spearman(col["lambda_max"], col["loss_gap"]),
        },
        "lambda_max_ratio": mean_at("lambda_max", sizes[-1]) / small if small > 0 else math.nan,
        "paths": {"run": str(out / "run.json"), "summary": str(out / "batch_size.json"),
                  "figure": str(out / "batch_size.png"), "checkpoints": str(out / "checkpoints")},
    }
    save_figure(plot_batch_size(summary), out / "batch_size.png", dpi=120)
    atomic_write_json(out / "batch_size.json", summary)
    run.update("summary", "batch_size.json")
    return summary


batch_size_study = run_batch_size
"""The name the CLI would use (``lossatlas study batch-size``)."""
