"""Double descent: the sweep runs end to end, its checkpoints form a Population, and the
recorded sharpness equals the dense Hessian's."""

from __future__ import annotations

import json

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
