"""Model-wise double descent (Belkin et al. 2019, Nakkiran et al. 2020) with the sharpness
of every final model.

A sweep over MLP widths on a small training set with label noise, each model
trained to (near) interpolation by full-batch Adam without regularisation. Test
error is classically U-shaped below the *interpolation threshold* (the smallest
width that fits the noisy training set), peaks near it, and falls again beyond
it; the survey links the peak to the sharpest minimum of the sweep and the
second descent to flat, degenerate minima. Each final model's top Hessian
eigenvalue (Lanczos) and Hessian trace (exact for small models, Hutch++
otherwise) of the mean training cross-entropy are recorded with its errors.

Measured (one CPU thread, seed 0; the defaults: sklearn digits, 1000 training
samples, 20 % of labels flipped, one-hidden-layer ReLU MLPs, full-batch Adam
lr 1e-3 for up to 2000 steps, 13 widths in ~100 s): the noisy training set is
fitted from width 32 (train error 0.004 at 24); test error (clean labels)
falls to 0.15 at width 8, rises to 0.21-0.25 at widths 12-64 (peak 0.25 at
24), then falls again to 0.13 at 512. lambda_max (2.8) and the trace (82) peak
at width 16, just below the threshold, and fall 20x and 40x by width 512 (0.13,
1.9). MNIST-1D with 4000 training samples (``dataset="mnist1d"``,
``num_train=4000``, ~4.5 min) shows the same shape: test error 0.51 at width 16,
peak 0.64 at 128 (train error 0.005; 0 from 256), 0.56 at 512; lambda_max 14
and trace 540 at 128, down to 0.96 and 23 at 512. With only 400 MNIST-1D samples
the test error stays near 0.75 at every width.

With ``surfaces=True`` every final model also gets a filter-normalised random 2-D
slice of the training loss (Li et al. 2018; :func:`lossatlas.surfaces.random_slice`),
the survey's picture of the sharpest minimum at the threshold and the widening basins
beyond it, summarised by :func:`surface_flatness`. Measured (digits, 200 samples, 300
steps, widths 2 / 8 / 24 / 64, a 9 x 9 plane over [-1, 1]^2; ~1 min on the loaded
2-core CPU): the threshold is width 24, and its surface is the sharpest (mean rise
3.9 nats; 3.8 at width 8, 2.0 at 64, where 10 % of the plane stays within 0.1 nats
of the centre against 2.5 % at 24); the underfit width 2 is flat at a high loss (1.5).

Run directory::

    OUT/run.json                       config and stage timings (lossatlas.store.Run)
    OUT/double_descent.json            summary: per model width, seed, parameters,
                                       train/test error and loss, lambda_max, trace;
                                       the interpolation threshold
    OUT/double_descent.png             test/train error and sharpness vs width, the
                                       threshold marked
    OUT/double_descent_surfaces.png    (``surfaces=True``) filter-normalised random 2-D
                                       loss surfaces of every width (first seed)
    OUT/fields/surface_width{W}_seed{S}.zarr   (``surfaces=True``) those surfaces
    OUT/checkpoints/width{W}_seed{S}_step{T}.safetensors (+ .json labels)
        the final models; those of one width form a Population
        (:func:`double_descent_population`); different widths are different
        architectures, so the sweep as a whole is one Population per width.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .._compat import save_legacy_plot
from ..curvature import hessian_eigen, hessian_trace_estimate
from ..population import Population
from ..progress import progress_bar
from ..recorder import Recorder
from ..store import Run, atomic_write_json
from ..surfaces.plot import save_figure

__all__ = [
    "double_descent_population",
    "plot_double_descent_surfaces",
    "surface_flatness",
    "double_descent_study",
    "flip_labels",
    "interpolation_threshold",
    "model_sharpness",
    "plot_double_descent",
    "run_double_descent",
]

log = logging.getLogger(__name__)


def flip_labels(
    y: Tensor, num_classes: int, fraction: float, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Replace a random ``fraction`` of the labels by a different class, uniformly.

    Returns ``(noisy Tensor[N], flipped BoolTensor[N])``; ``y`` is not changed.
    """
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"flip_labels: fraction must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(int(seed))
    n = y.shape[0]
    flipped = torch.zeros(n, dtype=torch.bool)
    flipped[torch.randperm(n, generator=gen)[: int(round(float(fraction) * n))]] = True
    shift = torch.randint(1, num_classes, (n,), generator=gen)
    noisy = torch.where(flipped, (y + shift) % num_classes, y)
    return noisy, flipped


def _errors(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    with torch.no_grad():
        out = model(x)
        loss = float(nn.functional.cross_entropy(out, y))
        err = float((out.argmax(-1) != y).double().mean())
    return err, loss


def model_sharpness(
    model: nn.Module,
    data,
    *,
    exact_trace_max: int = 1000,
    num_probes: int = 60,
    seed: int = 0,
) -> dict[str, Any]:
    """Top Hessian eigenvalue and trace of the mean cross-entropy over ``data``.

    Parameters
    ----------
    model : nn.Module (eval mode)
    data : (X, y) tensors
    exact_trace_max : int
        Models with at most this many parameters get the exact trace (``D``
        Hessian-vector products); larger ones Hutch++ with ``num_probes``.

    Returns
    -------
    dict: ``lambda_max`` (loss per squared parameter), ``lambda_residual``,
    ``trace``, ``trace_std`` (0 when exact), ``trace_method``, ``num_params``.
    """
    num_params = sum(p.numel() for p in model.parameters())
    eig = hessian_eigen(model, data, k=1, seed=seed, tol=1e-6)
    method = "exact" if num_params <= int(exact_trace_max) else "hutch++"
    tr = hessian_trace_estimate(
        model, data, method=method, num_probes=int(num_probes), seed=seed,
        probe_batch=min(64, num_params),
    )
    return {
        "lambda_max": float(eig.eigenvalues[0]),
        "lambda_residual": float(eig.residuals[0]),
        "trace": float(tr.trace),
        "trace_std": float(tr.std),
        "trace_method": method,
        "num_params": int(num_params),
    }


def interpolation_threshold(
    widths: Sequence[int], train_errors: Sequence[float], tol: float = 0.0
) -> int | None:
    """The smallest width whose training error (on the noisy labels) is ``<= tol``
    (None if none interpolates). Widths are sorted first; with several seeds per
    width give the mean error per width."""
    pairs = sorted(zip(widths, train_errors, strict=True))
    for w, e in pairs:
        if e <= tol:
            return int(w)
    return None


def _train_full_batch(model: nn.Module, x: Tensor, y: Tensor, steps: int, lr: float) -> int:
    """Full-batch Adam on the mean cross-entropy; stops early once every sample is
    fitted with margin (train loss < 1e-3). Returns the steps taken."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    step = 0
    for step in range(1, int(steps) + 1):  # noqa: B007 - returned
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if float(loss.detach()) < 1e-3:
            break
    model.eval()
    return step


def plot_double_descent(summary: dict[str, Any], path: str | Path | None = None) -> Figure:
    """Train/test error (left axis) and ``lambda_max`` / trace (right panel) vs width,
    means over seeds, the interpolation threshold dashed. Returns the two-panel Figure
    (write it with :func:`lossatlas.plotting.save_figure`); ``path`` is deprecated."""
    rows = summary["models"]
    widths = sorted({r["width"] for r in rows})

    def mean(key: str) -> np.ndarray:
        return np.array([np.mean([r[key] for r in rows if r["width"] == w]) for w in widths])

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    ax.plot(widths, mean("test_error"), "o-", label="test error (clean labels)")
    ax.plot(widths, mean("train_error"), "s--", label="train error (noisy labels)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("hidden width")
    ax.set_ylabel("error (fraction)")
    ax.set_title(f"label noise {summary['config']['label_noise']:g}, "
                 f"{summary['config']['num_train']} train samples")
    ax2.plot(widths, mean("lambda_max"), "o-", color="C3", label="top eigenvalue")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("hidden width")
    ax2.set_ylabel("top Hessian eigenvalue (nats / parameter²)", color="C3")
    ax3 = ax2.twinx()
    ax3.plot(widths, mean("trace"), "s--", color="C4", label="trace")
    ax3.set_yscale("log")
    ax3.set_ylabel("Hessian trace (nats / parameter²)", color="C4")
    thr = summary.get("interpolation_threshold")
    for a in (ax, ax2):
        if thr is not None:
            a.axvline(thr, color="grey", ls=":", label=f"interpolation threshold ({thr})")
    ax.legend(fontsize="small")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize="small")
    save_legacy_plot("plot_double_descent", fig, path, dpi=120)
    return fig


def surface_flatness(loss: np.ndarray, centre_loss: float, tol: float = 0.1) -> dict[str, float]:
    """Flatness numbers of a loss surface ``loss`` (any shape) around its centre.

    Returns ``surface_mean_rise`` (mean of ``loss - centre_loss`` over the finite
    points, nats), ``surface_max_rise`` (nats) and ``surface_flat_fraction`` (the
    fraction of all points with ``loss <= centre_loss + tol``; diverged points count
    as not flat).
    """
    v = np.asarray(loss, dtype=float).ravel()
    fin = np.isfinite(v)
    if not fin.any():
        raise ValueError("surface_flatness: every loss value is NaN or infinite")
    rise = v[fin] - float(centre_loss)
    return {"surface_mean_rise": float(rise.mean()), "surface_max_rise": float(rise.max()),
            "surface_flat_fraction": float((rise <= float(tol)).sum() / v.size)}


def plot_double_descent_surfaces(summary: dict[str, Any], fields: dict[int, Any]) -> Figure:
    """Filled contours of the log10 training loss on each width's random filter-normalised
    plane (``fields``: width -> xarray Dataset), one panel (and colour bar) per width."""
    from ..surfaces import plot_contour

    widths = sorted(fields)
    ncols = min(4, len(widths))
    nrows = -(-len(widths) // ncols)
    fig = Figure(figsize=(3.8 * ncols, 3.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    thr = summary.get("interpolation_threshold")
    for ax, w in zip(axes, widths, strict=False):
        plot_contour(fields[w], ax=ax, points={})
        mark = " (threshold)" if thr == w else ""
        rise = np.mean([r["surface_mean_rise"] for r in summary["models"] if r["width"] == w])
        ax.set_title(f"width {w}{mark}: mean rise {rise:.2g} nats", fontsize="small")
        ax.set_xlabel("α (filter-normalised units)", fontsize="small")
        ax.set_ylabel("β (filter-normalised units)", fontsize="small")
    for ax in axes[len(widths):]:
        ax.set_visible(False)
    return fig


def _peak(widths: list[int], test_error: list[float], threshold: int | None) -> dict[str, Any]:
    """The classical optimum (lowest test error below the threshold) and the peak (highest
    test error at or beyond it), as widths and errors."""
    err = np.asarray(test_error)
    below = [i for i, w in enumerate(widths) if threshold is None or w < threshold]
    best = min(below, key=lambda i: err[i]) if below else 0
    peak = best + int(np.argmax(err[best:]))
    return {
        "classical_best_width": widths[best], "classical_best_test_error": float(err[best]),
        "peak_test_error_width": widths[peak], "peak_test_error": float(err[peak]),
        "final_test_error": float(err[-1]),
    }


def _surface(model: nn.Module, data: tuple[Tensor, Tensor], run: Run, name: str,
              config: dict[str, Any], seed: int):
    """The filter-normalised random plane around ``model`` (training loss), stored in
    ``run`` as field ``name``; an xarray Dataset with dims (alpha, beta)."""
    from ..evaluate import Evaluator
    from ..surfaces import random_slice, slice_field

    sl = random_slice(model, dim=2, resolution=config["surface_resolution"],
                      span=config["surface_span"], normalization="filter", ignore="biasbn",
                      seed=seed)
    return slice_field(Evaluator(model, data), sl, run=run, name=name, overwrite=True)


def _model_kwargs(config: dict[str, Any], width: int) -> dict[str, Any]:
    return {
        "in_features": config["in_features"],
        "hidden": (int(width),) * config["depth"],
        "num_classes": config["num_classes"],
        "activation": config["activation"],
    }


def run_double_descent(
    out_dir: str | Path,
    widths: Sequence[int] = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512),
    num_train: int = 1000,
    num_samples: int = 5000,
    label_noise: float = 0.2,
    steps: int = 2000,
    *,
    dataset: str = "digits",
    lr: float = 1e-3,
    depth: int = 1,
    activation: str = "relu",
    seeds: Sequence[int] = (0,),
    train_tol: float = 0.0,
    exact_trace_max: int = 1000,
    num_probes: int = 60,
    data_seed: int = 0,
    surfaces: bool = False,
    surface_resolution: int = 21,
    surface_span: float = 1.0,
    surface_tol: float = 0.1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The built-in double-descent sweep; writes a run directory, returns its summary.

    Parameters
    ----------
    out_dir : run directory (created)
    widths : hidden widths of the MLP ``40 -> width x depth -> 10``
    num_train : training samples (the first of the dataset's train split)
    num_samples : MNIST-1D samples generated (the test split is the last 20 %);
        ignored for other datasets
    dataset : a registered dataset (``lossatlas.data.create``) of flat or flattenable
        inputs, e.g. "mnist1d" or "digits"
    label_noise : fraction of training labels replaced by another class
    steps : full-batch Adam steps at most per model (stops once train loss < 1e-3)
    lr : Adam learning rate
    seeds : initialisation seeds (one model per width and seed)
    train_tol : training error counted as interpolation (``<=``; e.g. 0.005)
    exact_trace_max, num_probes : see :func:`model_sharpness`
    data_seed : seed of the label noise
    surfaces : also a filter-normalised random 2-D slice of the training loss (noisy
        labels) around every final model, ``surface_resolution`` points a side over
        ``[-surface_span, surface_span]`` (multiples of the filter-normalised
        directions; biases and norms not perturbed), directions from
        ``random_slice(..., seed=<the model's seed>)``; stored as fields, drawn in ``double_descent_surfaces.png``
    surface_tol : loss rise (nats) counted as flat by :func:`surface_flatness`
    progress : a bar over the models

    Returns
    -------
    JSON-able dict: ``config``; ``models`` (one row per width and seed: width,
    seed, num_params, steps, train_error / train_loss (noisy labels),
    clean_train_error, test_error / test_loss, lambda_max, trace, trace_std,
    trace_method, checkpoint); ``interpolation_threshold`` (width, or None);
    ``classical_best_width`` / ``classical_best_test_error`` (lowest test error
    below the threshold), ``peak_test_error_width`` / ``peak_test_error`` (highest
    at or above that width), ``final_test_error`` (widest model);
    ``sharpest_width`` (largest mean lambda_max); ``paths``. With ``surfaces``,
    every row also has ``surface`` (the field's name), ``surface_centre_loss`` and
    the :func:`surface_flatness` numbers, and the summary ``flattest_surface_width``
    / ``sharpest_surface_width`` (smallest / largest mean ``surface_mean_rise``).
    """
    from .. import data as datasets
    from .. import models

    widths = sorted({int(w) for w in widths})
    if not widths or widths[0] < 1:
        raise ValueError(f"run_double_descent: widths must be positive integers, got {widths}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_double_descent: seeds is empty")
    splits = datasets.create(
        dataset, **({"num_samples": int(num_samples)} if dataset == "mnist1d" else {})
    )
    if not 1 <= int(num_train) <= splits.num_train:
        raise ValueError(
            f"run_double_descent: num_train must be in [1, {splits.num_train}] "
            f"(the train split of {dataset!r}), got {num_train}"
        )
    config = {
        "study": "double_descent", "dataset": dataset, "widths": widths, "num_train": int(num_train),
        "num_samples": int(num_samples), "label_noise": float(label_noise), "steps": int(steps),
        "lr": float(lr), "depth": int(depth), "activation": activation, "seeds": seeds,
        "train_tol": float(train_tol), "exact_trace_max": int(exact_trace_max),
        "num_probes": int(num_probes), "data_seed": int(data_seed),
        "surfaces": bool(surfaces), "surface_resolution": int(surface_resolution),
        "surface_span": float(surface_span), "surface_tol": float(surface_tol),
        "surface_normalization": "filter", "surface_ignore": "biasbn",
        "in_features": int(np.prod(splits.input_shape)), "num_classes": int(splits.num_classes),
        "model": "mlp", "loss": "cross-entropy (nats)",
    }
    out = Path(out_dir)
    run = Run(out, config=config)
    x = splits.x_train[: int(num_train)].flatten(1).float()
    y_clean = splits.y_train[: int(num_train)]
    y, _ = flip_labels(y_clean, splits.num_classes, label_noise, seed=data_seed)
    x_test, y_test = splits.x_test.flatten(1).float(), splits.y_test
    rows: list[dict[str, Any]] = []
    fields: dict[int, Any] = {}
    for width, seed in progress_bar([(w, s) for w in widths for s in seeds], progress=progress,
                                    desc="double descent", unit="model"):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = models.create("mlp", **_model_kwargs(config, width))
        taken = _train_full_batch(model, x, y, int(steps), float(lr))
        train_err, train_loss = _errors(model, x, y)
        clean_err, _ = _errors(model, x, y_clean)
        test_err, test_loss = _errors(model, x_test, y_test)
        sharp = model_sharpness(
            model, (x, y), exact_trace_max=exact_trace_max, num_probes=num_probes, seed=seed
        )
        rec = Recorder(
            out, steps=[taken], name="width{width:04d}_seed{seed}_step{step}",
            metadata={"variant": f"width{width}", "width": width, "seed": seed},
        )
        path = rec.save(model, taken)
        rows.append({
            "width": width, "seed": seed, "steps": taken, "train_error": train_err,
            "train_loss": train_loss, "clean_train_error": clean_err,
            "test_error": test_err, "test_loss": test_loss, **sharp,
            "checkpoint": str(path.relative_to(out)),
        })
        if surfaces:
            name = f"surface_width{width:04d}_seed{seed}"
            ds = _surface(model, (x, y), run, name, config, seed)
            rows[-1].update(surface=name,
                            surface_centre_loss=train_loss,
                            **surface_flatness(ds["loss"].values, train_loss, surface_tol))
            fields.setdefault(width, ds)
        run.record_stage(f"width{width}_seed{seed}", time.perf_counter() - t0)
        log.info("double descent: width %d seed %d: train %.3f test %.3f lambda %.3g",
                 width, seed, train_err, test_err, sharp["lambda_max"])
    mean_by = {
        key: [float(np.mean([r[key] for r in rows if r["width"] == w])) for w in widths]
        for key in ("train_error", "test_error", "lambda_max")
    }
    threshold = interpolation_threshold(widths, mean_by["train_error"], float(train_tol))
    summary = {
        "config": config,
        "models": rows,
        "interpolation_threshold": threshold,
        **_peak(widths, mean_by["test_error"], threshold),
        "sharpest_width": widths[int(np.argmax(mean_by["lambda_max"]))],
        "paths": {"run": str(out / "run.json"), "summary": str(out / "double_descent.json"),
                  "figure": str(out / "double_descent.png"),
                  "checkpoints": str(out / "checkpoints")},
    }
    if surfaces:
        rise = [float(np.mean([r["surface_mean_rise"] for r in rows if r["width"] == w]))
                for w in widths]
        summary["flattest_surface_width"] = widths[int(np.argmin(rise))]
        summary["sharpest_surface_width"] = widths[int(np.argmax(rise))]
        summary["paths"]["surfaces"] = str(out / "double_descent_surfaces.png")
        save_figure(plot_double_descent_surfaces(summary, fields),
                    out / "double_descent_surfaces.png", dpi=110)
    save_figure(plot_double_descent(summary), out / "double_descent.png", dpi=120)
    atomic_write_json(out / "double_descent.json", summary)
    run.update("summary", "double_descent.json")
    return summary


def double_descent_population(out_dir: str | Path, width: int) -> Population:
    """The final models of one width of a :func:`run_double_descent` run (one per seed)
    as a :class:`~lossatlas.population.Population`."""
    import json

    out = Path(out_dir)
    summary_path = out / "double_descent.json"
    if not summary_path.exists():
        raise FileNotFoundError(
            f"double_descent_population: {summary_path} not found; run run_double_descent first"
        )
    summary = json.loads(summary_path.read_text())
    config = summary["config"]
    paths = [out / r["checkpoint"] for r in summary["models"] if r["width"] == int(width)]
    if not paths:
        raise ValueError(
            f"double_descent_population: width {width} is not in the sweep of {out} "
            f"(widths {config['widths']})"
        )
    return Population.from_checkpoints(paths, "mlp", factory_kwargs=_model_kwargs(config, width))


double_descent_study = run_double_descent
"""The name the CLI uses (``lossatlas study double-descent``); same as :func:`run_double_descent`."""
