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

CONFIG = {"widths": (2, 8, 48), "num_train": 200, "steps": 300, "label_noise": 0.2,
          "dataset": "digits", "lr": 3e-3}


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
    assert (out / "double_descent.png").stat().st_size > 0
    assert json.loads((out / "run.json").read_text())["summary"] == "double_descent.json"
    rows = summary["models"]
    assert [r["width"] for r in rows] == [2, 8, 48]
    assert rows[-1]["train_error"] == 0.0  # the widest model interpolates the noisy labels
    assert rows[0]["train_error"] > 0.2  # the narrowest cannot
    assert summary["interpolation_threshold"] in (8, 48)
    for r in rows:
        assert r["lambda_max"] > 0 and r["trace"] > 0 and (out / r["checkpoint"]).exists()
    pop = double_descent_population(out, 8)
    assert len(pop) == 1 and pop.labels[0]["width"] == 8
    with pytest.raises(ValueError, match="width 5 is not in the sweep"):
        double_descent_population(out, 5)


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
