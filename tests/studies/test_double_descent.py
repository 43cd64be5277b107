"""Double descent: the sweep runs end to end, its checkpoints form a Population, and the
recorded sharpness equals the dense Hessian's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from lossatlas import data as datasets
from lossatlas import models
from lossatlas.checkpoints import load_state_dict
from lossatlas.studies import (
    double_descent_population,
    flip_labels,
    interpolation_threshold,
    run_double_descent,
    surface_flatness,
)

CONFIG = {"widths": (2, 4, 8, 16, 32, 64, 256), "num_train": 200, "steps": 600,
          "label_noise": 0.2, "dataset": "digits", "lr": 3e-3}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("dd")
    summary = run_double_descent(out, **CONFIG)
    torch.set_num_threads(old)
    return out, summary


def test_sweep_runs_end_to_end(sweep):
    out, summary = sweep
    assert json.loads((out / "double_descent.json").read_text()) == json.loads(
        json.dumps(summary))
    assert (out / "double_descent.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "run.json").read_text())["summary"] == "double_descent.json"
    rows = summary["models"]
    assert [r["width"] for r in rows] == list(CONFIG["widths"])
    assert rows[-1]["train_error"] == 0.0  # the widest model interpolates the noisy labels
    assert rows[0]["train_error"] > 0.2  # the narrowest cannot
    # the threshold: the first width whose train error is 0 (measured: 16)
    first_zero = next(r["width"] for r in rows if r["train_error"] == 0.0)
    assert summary["interpolation_threshold"] == first_zero
    for r in rows:
        assert r["lambda_max"] > 0 and r["trace"] > 0 and (out / r["checkpoint"]).exists()
    pop = double_descent_population(out, 8)
    assert len(pop) == 1 and pop.labels[0]["width"] == 8
    with pytest.raises(ValueError, match="width 5 is not in the sweep"):
        double_descent_population(out, 5)


def _test_errors_from_checkpoints(out, summary) -> list[float]:
    """Each model's test error recomputed from its checkpoint on disk (clean test labels)."""
    cfg = summary["config"]
    splits = datasets.create("digits")
    x, y = splits.x_test.flatten(1).float(), splits.y_test
    errors = []
    for r in summary["models"]:
        model = models.create("mlp", in_features=64, hidden=(r["width"],), num_classes=10)
        model.load_state_dict(load_state_dict(out / r["checkpoint"]))
        with torch.no_grad():
            errors.append(float((model(x).argmax(1) != y).float().mean()))
    assert cfg["seeds"] == [0]  # one model per width: its error is the width's
    return errors


def test_double_descent_peak(sweep):
    """Test error (recomputed from the checkpoints): classical U below the interpolation
    threshold, a peak at it, a second descent beyond it. Measured (seed 0): 0.617, 0.325
    (best, width 4), 0.364 (peak, width 8: train error 0.02), 0.283 (threshold 16), 0.233,
    0.208, 0.197 (width 256); lambda_max 3.0 at width 4, 0.07 at 256."""
    out, summary = sweep
    widths = [r["width"] for r in summary["models"]]
    err = np.asarray(_test_errors_from_checkpoints(out, summary))
    np.testing.assert_allclose([r["test_error"] for r in summary["models"]], err, atol=1e-9)
    # the summary's figures, by hand from the recomputed errors
    threshold = summary["interpolation_threshold"]
    below = [i for i, w in enumerate(widths) if w < threshold]
    best = min(below, key=lambda i: err[i])
    peak = best + int(np.argmax(err[best:]))
    assert summary["classical_best_width"] == widths[best]
    assert summary["peak_test_error_width"] == widths[peak]
    assert summary["peak_test_error"] == pytest.approx(err[peak])
    assert summary["final_test_error"] == pytest.approx(err[-1])
    # the shape: the first descent ends before the threshold, the error then rises to a
    # peak within a factor 2 of the threshold (by more than 10 of the 360 test samples),
    # and falls again well below it (second descent)
    assert err[0] > err[best] + 0.1
    assert widths[best] < widths[peak] and threshold / 2 <= widths[peak] <= threshold
    assert err[peak] > err[best] + 10 / 360
    assert err[-1] < err[peak] - 0.1 and err[-1] < err[best]
    # sharpness: largest below the threshold, at least 10x smaller at the widest model
    lam = [r["lambda_max"] for r in summary["models"]]
    assert widths[int(np.argmax(lam))] < threshold and max(lam) > 10 * lam[-1]


def test_recorded_sharpness_equals_the_dense_hessian(sweep):
    out, summary = sweep
    row = summary["models"][0]  # width 2: 160 parameters
    cfg = summary["config"]
    model = models.create("mlp", in_features=64, hidden=(2,), num_classes=10).double()
    model.load_state_dict({k: v.double() for k, v in load_state_dict(
        out / row["checkpoint"]).items()})
    splits = datasets.create("digits")
    x = splits.x_train[: cfg["num_train"]].double()
    y, _ = flip_labels(splits.y_train[: cfg["num_train"]], 10, cfg["label_noise"],
                       seed=cfg["data_seed"])
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(w):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = w[i:i + s.numel()].view(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    H = hessian(loss)(flat)
    assert row["num_params"] == flat.numel() == 160
    assert row["trace_method"] == "exact"
    assert row["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)
    assert row["trace"] == pytest.approx(float(H.trace()), rel=1e-4)


def test_label_noise_and_threshold_helpers():
    y = torch.arange(100) % 10
    noisy, flipped = flip_labels(y, 10, 0.3, seed=1)
    assert int(flipped.sum()) == 30
    assert bool((noisy[flipped] != y[flipped]).all()) and torch.equal(noisy[~flipped], y[~flipped])
    assert interpolation_threshold([32, 4, 8], [0.0, 0.3, 0.0]) == 8
    assert interpolation_threshold([4, 8], [0.3, 0.1]) is None
    with pytest.raises(ValueError, match="fraction"):
        flip_labels(y, 10, 1.5)


def test_filter_normalised_surfaces_across_the_sweep(tmp_path):
    """The stored surfaces equal the loss evaluated directly at ``w + a d1 + b d2`` (the
    filter-normalised random directions of the model's seed); the flatness numbers are
    those of the stored field."""
    from lossatlas.space import ParamSpace
    from lossatlas.store import Run
    from lossatlas.surfaces import random_direction

    torch.set_num_threads(1)
    s = run_double_descent(tmp_path, widths=(2, 24), num_train=100, steps=150, lr=3e-3,
                           dataset="digits", surfaces=True, surface_resolution=5,
                           surface_span=0.5, progress=False)
    assert (tmp_path / "double_descent_surfaces.png").stat().st_size > 0
    assert s["flattest_surface_width"] in (2, 24) and s["sharpest_surface_width"] in (2, 24)
    splits = datasets.create("digits")
    x = splits.x_train[:100].flatten(1).float()
    y, _ = flip_labels(splits.y_train[:100], 10, 0.2, seed=0)
    for row in s["models"]:
        ds = Run(tmp_path).open_field(row["surface"])
        loss = ds["loss"].values
        assert loss.shape == (5, 5)
        assert loss[2, 2] == pytest.approx(row["train_loss"], rel=1e-5)  # the centre
        flat = surface_flatness(loss, row["train_loss"], 0.1)
        assert {k: row[k] for k in flat} == pytest.approx(flat)
        model = models.create("mlp", in_features=64, hidden=(row["width"],), num_classes=10)
        model.load_state_dict(load_state_dict(tmp_path / row["checkpoint"]))
        space = ParamSpace(model)
        gen = torch.Generator().manual_seed(row["seed"])
        d1, d2 = (random_direction(model, "filter", "biasbn", generator=gen, space=space)
                  for _ in range(2))
        w = space.flatten(model)
        a, b = float(ds["alpha"][4]), float(ds["beta"][1])
        space.load_into(model, w + a * d1 + b * d2)
        with torch.no_grad():
            direct = float(nn.functional.cross_entropy(model(x), y))
        assert loss[4, 1] == pytest.approx(direct, rel=1e-5)


def test_surface_flatness_on_a_known_grid():
    grid = np.array([[1.0, 1.05], [1.3, np.inf]])
    out = surface_flatness(grid, 1.0, tol=0.1)
    assert out["surface_mean_rise"] == pytest.approx((0 + 0.05 + 0.3) / 3)
    assert out["surface_max_rise"] == pytest.approx(0.3)
    assert out["surface_flat_fraction"] == 0.5  # the diverged point is not flat
    with pytest.raises(ValueError, match="NaN or infinite"):
        surface_flatness(np.full(3, np.nan), 0.0)


def test_plot_double_descent_draws_only(tmp_path):
    """The figure is returned, not written; path= still writes it (deprecated)."""
    from lossatlas.studies import plot_double_descent

    rows = [{"width": w, "seed": s, "test_error": e, "train_error": 0.5 / w,
             "lambda_max": float(w), "trace": 10.0 * w}
            for w, e in ((2, 0.3), (8, 0.5), (32, 0.2)) for s in (0, 1)]
    summary = {"models": rows, "interpolation_threshold": 8,
               "config": {"label_noise": 0.2, "num_train": 100}}
    fig = plot_double_descent(summary)
    assert not list(tmp_path.iterdir())
    err_ax = fig.axes[0]
    assert list(err_ax.lines[0].get_ydata()) == [0.3, 0.5, 0.2]  # test error by width
    with pytest.warns(DeprecationWarning, match="plot_double_descent: path= is deprecated"):
        plot_double_descent(summary, tmp_path / "dd.png")
    assert (tmp_path / "dd.png").read_bytes()[:4] == b"\x89PNG"
