"""Batch size vs flatness: the sweep's reported numbers equal direct computations on its
checkpoints (the top eigenvalue against curvature.hessian_eigenvalues and a dense
autograd Hessian, the sharpness against curvature.sharpness, the losses and gaps against
a plain cross-entropy, the rank correlations against scipy)."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from torch.func import functional_call, hessian

from lossatlas import data as datasets
from lossatlas import models
from lossatlas.checkpoints import load_state_dict
from lossatlas.curvature import hessian_eigenvalues, sharpness
from lossatlas.studies import run_batch_size

CONFIG = {"batch_sizes": (16, 256), "num_train": 256, "hidden": (6,), "target_loss": 0.4,
          "lr": 0.1, "max_epochs": 400, "rho": 0.05}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("bs")
        return out, run_batch_size(out, **CONFIG, progress=False)
    finally:
        torch.set_num_threads(old)


def _load(out, row):
    model = models.create("mlp", in_features=64, hidden=CONFIG["hidden"], num_classes=10)
    model.load_state_dict(load_state_dict(out / row["checkpoint"]))
    return model.eval()


def _data():
    splits = datasets.create("digits")
    n = CONFIG["num_train"]
    return (splits.x_train[:n].flatten(1).float(), splits.y_train[:n],
            splits.x_test.flatten(1).float(), splits.y_test)


def test_sweep_writes_its_run(sweep):
    out, s = sweep
    assert json.loads((out / "batch_size.json").read_text()) == json.loads(json.dumps(s))
    assert (out / "batch_size.png").stat().st_size > 0
    assert [r["batch_size"] for r in s["models"]] == [16, 256]
    for r in s["models"]:
        assert r["reached_target"] and r["train_loss"] <= CONFIG["target_loss"]
        assert r["steps"] == r["epochs"] * -(-CONFIG["num_train"] // r["batch_size"])
    assert s["models"][1]["epochs"] > s["models"][0]["epochs"]  # full batch needs more passes


def test_reported_numbers_equal_direct_computations(sweep):
    out, s = sweep
    x, y, xt, yt = _data()
    for row in s["models"]:
        model = _load(out, row)
        top = float(hessian_eigenvalues(model, (x, y), k=1)[0])
        assert row["lambda_max"] == pytest.approx(top, rel=1e-4)
        eps = float(sharpness([model], model, (x, y), rho=CONFIG["rho"], seed=row["seed"])[0])
        assert row["sharpness"] == pytest.approx(eps, rel=1e-4)  # float32 ascent
        with torch.no_grad():
            tr = float(nn.functional.cross_entropy(model(x), y))
            te = float(nn.functional.cross_entropy(model(xt), yt))
            err = float((model(xt).argmax(-1) != yt).float().mean())
        assert row["train_loss"] == pytest.approx(tr, rel=1e-5)
        assert row["test_loss"] == pytest.approx(te, rel=1e-5)
        assert row["loss_gap"] == pytest.approx(te - tr, abs=1e-5)
        assert row["test_error"] == pytest.approx(err, abs=1e-6)
    rows = s["models"]
    ref = spearmanr([r["batch_size"] for r in rows], [r["lambda_max"] for r in rows]).statistic
    assert s["spearman"]["batch_size_lambda_max"] == pytest.approx(ref)
    assert s["lambda_max_ratio"] == pytest.approx(rows[1]["lambda_max"] / rows[0]["lambda_max"])


def test_top_eigenvalue_equals_the_dense_hessian(sweep):
    out, s = sweep
    row = s["models"][0]
    model = _load(out, row).double()
    x, y, _, _ = _data()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(w):
        parts, i = {}, 0
        for n, sh in zip(names, shapes, strict=True):
            parts[n] = w[i:i + sh.numel()].view(sh)
            i += sh.numel()
        return nn.functional.cross_entropy(functional_call(model, parts, (x.double(),)), y)

    H = hessian(loss)(flat)
    assert row["num_params"] == flat.numel() == 64 * 6 + 6 + 6 * 10 + 10
    assert row["lambda_max"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)
    assert row["trace_method"] == "exact"
    assert row["trace"] == pytest.approx(float(H.trace()), rel=1e-4)


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="batch sizes must be in \\[1, num_train=64\\]"):
        run_batch_size(tmp_path, batch_sizes=(8, 128), num_train=64)
    with pytest.raises(ValueError, match="target_loss"):
        run_batch_size(tmp_path, target_loss=-1.0)
