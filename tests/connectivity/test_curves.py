"""Bezier / polychain curves: the pure point function and training that lowers the barrier."""

from __future__ import annotations

import pytest
import torch

from lossatlas import models
from lossatlas.connectivity import curve_points, evaluate_curve, train_curve


def test_curve_points_endpoints_and_straight_bends():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
    bend = torch.randn(7, generator=gen)
    t = torch.linspace(0, 1, 11)
    for kind in ("bezier", "polychain"):
        pts = curve_points(bend, a, b, t, kind)
        assert pts.shape == (11, 7)
        torch.testing.assert_close(pts[0], a)
        torch.testing.assert_close(pts[-1], b)
        straight = curve_points((a + b) / 2, a, b, t, kind)  # bend on the midpoint
        torch.testing.assert_close(straight, torch.lerp(a[None], b[None], t[:, None]))
    torch.testing.assert_close(curve_points(bend, a, b, 0.5, "polychain"), bend)
    quad = 0.25 * a + 0.5 * bend + 0.25 * b
    torch.testing.assert_close(curve_points(bend, a, b, 0.5, "bezier"), quad)
    two = torch.stack([bend, -bend])
    torch.testing.assert_close(curve_points(two, a, b, torch.tensor([1 / 3]), "polychain")[0], bend)
    with pytest.raises(ValueError, match="kind"):
        curve_points(bend, a, b, t, "spline")


@pytest.fixture(scope="module")
def pair(digits, train):
    x, y = digits.x_train, digits.y_train
    torch.manual_seed(0)
    a = train(models.create("mlp", in_features=64, hidden=(64,)), x, y, steps=300, seed=0)
    torch.manual_seed(1)
    b = train(models.create("mlp", in_features=64, hidden=(64,)), x, y, steps=300, seed=1)
    return a, b


def test_bezier_training_lowers_the_maximum_loss(pair, digits):
    a, b = pair
    data = (digits.x_train, digits.y_train)
    res = train_curve(a, b, data, kind="bezier", steps=300, lr=1e-2, weight_decay=1e-4,
                      device="cpu")
    print(f"\nbezier barrier {res.barrier:.4f} vs straight {res.line_barrier:.4f}; "
          f"arc length {res.arc_length:.2f} vs {res.line_length:.2f}")
    assert res.line_barrier > 0.1
    assert res.barrier < 0.25 * res.line_barrier
    assert res.curve["loss"].max() < res.line["loss"].max()
    assert res.curve.sizes["t"] == 61 and res.curve.attrs["definition"] == "entezari"
    assert res.arc_length >= res.line_length * (1 - 1e-6)
    assert res.bends.shape == (1, res.space.dim)
    # endpoints stay fixed; re-evaluating from the bends reproduces the curve
    assert res.curve["loss"].values[0] == pytest.approx(res.line["loss"].values[0], rel=1e-6)
    again = evaluate_curve(a, res.bends, res.space.flatten(a), res.space.flatten(b), data,
                           points=61, device="cpu")
    assert again["loss"].values == pytest.approx(res.curve["loss"].values, rel=1e-5)


def test_polychain_with_batchnorm_runs_and_recomputes_statistics():
    torch.manual_seed(0)
    a, b = models.create("resnet20", num_classes=3), models.create("resnet20", num_classes=3)
    x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 3, (32,))
    before = {k: v.clone() for k, v in a.state_dict().items()}
    res = train_curve(a, b, (x, y), kind="polychain", steps=3, batch_size=16, points=5,
                      optimizer="sgd", lr=1e-3, device="cpu")
    assert res.curve.attrs["bn"] == "recompute" and res.curve.sizes["t"] == 5
    assert all(torch.equal(before[k], v) for k, v in a.state_dict().items())  # nothing leaks
