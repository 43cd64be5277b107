"""Barriers along straight paths: hand-computed definitions, endpoints, matrices, BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas import models
from lossatlas.connectivity import (
    barrier,
    barrier_curve,
    barrier_from_values,
    barrier_matrix,
)
from lossatlas.symmetry import reset_bn


class Bump(nn.Module):
    """One scalar parameter ``w``; its "loss" is ``4 - w**2`` on any data."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))

    def forward(self, x):
        return (4.0 - self.w**2) * torch.ones(x.shape[0], 2)


def _mean_output(out, _y):
    return out.mean()


def test_definitions_on_values():
    t = np.linspace(0, 1, 5)
    v = np.array([1.0, 3.0, 2.0, 1.5, 2.0])
    # linear interpolation of the endpoints: 1 + t -> excess [0, 1.75, 0.5, -0.25, 0]
    assert barrier_from_values(v, t, "entezari") == pytest.approx(1.75)
    assert barrier_from_values(v, t, "midpoint") == pytest.approx(0.5)
    assert barrier_from_values(v, t, "mean") == pytest.approx(1.5)
    batch = barrier_from_values(np.stack([v, v * 2]), t, "mean")
    assert batch.shape == (2,) and batch[1] == pytest.approx(3.0)


def test_definitions_on_a_hand_made_1d_model():
    # w(t) = -1 + 3t, L(t) = 4 - (3t - 1)^2: L0 = 3, L1 = 0, max L = 4 at t = 1/3,
    # excess over 3(1 - t) is 9t - 9t^2 (max 2.25 at t = 1/2), L(1/2) = 3.75.
    data = (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    a, b = Bump(-1.0), Bump(2.0)
    kw = dict(points=7, loss_fn=_mean_output, device="cpu")
    assert barrier(a, b, data, "entezari", **kw) == pytest.approx(2.25, abs=1e-5)
    assert barrier(a, b, data, "midpoint", **kw) == pytest.approx(2.25, abs=1e-5)
    assert barrier(a, b, data, "mean", **kw) == pytest.approx(2.5, abs=1e-5)
    ds = barrier_curve(a, b, data, "mean", **kw)
    assert ds.attrs["definition"] == "mean" and ds.attrs["barrier"] == pytest.approx(2.5, abs=1e-5)
    np.testing.assert_allclose(ds["loss"].values, 4 - (3 * ds["t"].values - 1) ** 2, atol=1e-5)


def test_bad_options_are_named():
    data = (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="definition"):
        barrier(Bump(0), Bump(1), data, definition="max")
    with pytest.raises(ValueError, match="odd"):
        barrier(Bump(0), Bump(1), data, definition="midpoint", points=10)
    with pytest.raises(ValueError, match="metric"):
        barrier(Bump(0), Bump(1), data, metric="acc")


@pytest.fixture(scope="module")
def mlp_pair(digits, train):
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(0)
    a = train(models.create("mlp", in_features=64, hidden=(32,)), x, y, steps=100, seed=0)
    torch.manual_seed(1)
    b = train(models.create("mlp", in_features=64, hidden=(32,)), x, y, steps=100, seed=1)
    return a, b


def test_self_barrier_is_zero_and_endpoints_are_the_models_losses(mlp_pair, digits):
    a, b = mlp_pair
    data = (digits.x_test, digits.y_test)
    assert barrier(a, a, data) == pytest.approx(0.0, abs=1e-6)
    ds = barrier_curve(a, b, data, points=9)
    with torch.no_grad():
        la = nn.functional.cross_entropy(a(digits.x_test), digits.y_test).item()
        lb = nn.functional.cross_entropy(b(digits.x_test), digits.y_test).item()
        acc_b = (b(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
    assert ds["loss"].values[0] == pytest.approx(la, rel=1e-5)
    assert ds["loss"].values[-1] == pytest.approx(lb, rel=1e-5)
    assert ds["error"].values[-1] == pytest.approx(1 - acc_b, abs=1e-6)
    assert set(ds.dims) == {"t"} and ds.attrs["definition"] == "entezari"
    # the Entezari barrier, recomputed from the curve: max_t [L(t) - ((1-t) L(0) + t L(1))]
    t, v = ds["t"].values, ds["loss"].values
    assert ds.attrs["barrier"] == pytest.approx(float(np.max(v - ((1 - t) * v[0] + t * v[-1]))),
                                                rel=1e-6, abs=1e-9)
    assert "error_barrier" in ds.attrs


def test_barrier_matrix_matches_pairwise_barriers(mlp_pair, digits):
    a, b = mlp_pair
    c = models.create("mlp", in_features=64, hidden=(32,))
    data = (digits.x_test, digits.y_test)
    mat = barrier_matrix([a, b, c], data, names=["a", "b", "c"], points=9)
    assert mat.dims == ("model_i", "model_j") and mat.shape == (3, 3)
    np.testing.assert_allclose(mat.values, mat.values.T)
    assert np.all(np.diag(mat.values) == 0)
    assert mat.sel(model_i="a", model_j="c") == pytest.approx(barrier(a, c, data, points=9), abs=1e-5)
    ref, paths = barrier_matrix([a, b, c], data, reference=1, metric="error", points=9, names="abc",
                                return_paths=True)
    assert ref.shape == (3, 1) and ref.sel(model_i="b").item() == 0
    assert paths["loss"].dims == ("pair", "t") and paths["loss"].shape == (3, 9)
    assert ref.sel(model_i="a").item() == pytest.approx(
        barrier(a, b, data, metric="error", points=9), abs=1e-6)


def test_batchnorm_statistics_recomputed_at_each_point():
    torch.manual_seed(0)
    r1, r2 = models.create("resnet20", num_classes=3), models.create("resnet20", num_classes=3)
    x, y = torch.randn(24, 3, 16, 16), torch.randint(0, 3, (24,))
    ds = barrier_curve(r1, r2, (x, y), points=3, bn="recompute", device="cpu")
    assert ds.attrs["bn"] == "recompute"
    reset = reset_bn(r1, (x, y))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(reset(x), y).item()
    assert ds["loss"].values[0] == pytest.approx(expected, rel=1e-4)
    own = barrier_curve(r1, r2, (x, y), points=3, bn="own", device="cpu")
    assert own["loss"].values[0] != pytest.approx(expected, rel=1e-3)
