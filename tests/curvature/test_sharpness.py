import math

import pytest
import torch
from torch import nn

from lossatlas.curvature import max_loss_increase, sharpness
from lossatlas.space import ParamSpace


def _quadratic(A):
    return lambda w: (0.5 * w @ A @ w, A @ w)


def test_epsilon_sharpness_of_a_quadratic_is_half_rho2_lambda_max():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))[0]
    lam = torch.cat([torch.tensor([4.0, 2.0, -3.0]), torch.rand(17, generator=g)]).double()
    A = Q @ torch.diag(lam) @ Q.T
    rho = 0.1
    inc, delta = max_loss_increase(
        _quadratic(A), torch.zeros(20, dtype=torch.float64), rho, num_steps=100
    )
    assert inc == pytest.approx(0.5 * rho**2 * 4.0, rel=1e-6)
    assert float(delta.norm()) == pytest.approx(rho)
    assert float((delta @ Q[:, 0]).abs()) == pytest.approx(rho, rel=1e-4)


def test_adaptive_sharpness_on_a_diagonal_quadratic():
    # L(v) = 1/2 sum a_i (v_i - w_i)^2 around w: max over ||u|| <= rho of
    # 1/2 sum a_i w_i^2 u_i^2 = rho^2 / 2 * max_i a_i w_i^2
    a = torch.tensor([1.0, 4.0, 0.5, 2.0], dtype=torch.float64)
    w = torch.tensor([2.0, 0.5, 3.0, -1.0], dtype=torch.float64)

    def f(v):
        return 0.5 * (a * (v - w) ** 2).sum(), a * (v - w)

    rho = 0.2
    inc, delta = max_loss_increase(f, w, rho, scale=w.abs(), num_steps=200, step_size=2.0)
    assert inc == pytest.approx(0.5 * rho**2 * float((a * w**2).max()), rel=1e-6)
    assert float((delta / w.abs()).norm()) == pytest.approx(rho)


def test_sharpness_of_a_population_of_linear_models():
    # least squares with an orthonormal design: L(w) - L(w*) = 1/2 (w - w*)^T D (w - w*)
    n, d = 500, 3
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, d + 1, generator=g, dtype=torch.float64))[0]
    scales = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    x = Q[:, :d] * math.sqrt(n) * scales.sqrt()  # X^T X / n = diag(scales)
    model = nn.Linear(d, 1, bias=False).double()

    def mse(out, y):
        return 0.5 * ((out - y) ** 2).mean()

    points = []
    for s in (1.0, -2.0):
        w = torch.tensor([1.0, 0.3, -2.0], dtype=torch.float64) * s
        points.append(w)
    y = torch.stack([x @ p for p in points])  # each point is a minimum of its own data
    rho = 0.05
    for p, yy in zip(points, y, strict=True):
        data = (x, (yy + Q[:, d] * math.sqrt(n))[:, None])
        eps = sharpness(p[None], model, data, rho, num_steps=60, loss_fn=mse)
        assert eps.shape == (1,)
        assert float(eps[0]) == pytest.approx(0.5 * rho**2 * 2.0, rel=1e-5)
        ada = sharpness([p], model, data, rho, kind="adaptive", num_steps=200, loss_fn=mse)
        assert float(ada[0]) == pytest.approx(0.5 * rho**2 * float((scales * p**2).max()), rel=1e-5)
    with pytest.raises(ValueError, match="kind must be"):
        sharpness(points, model, data, kind="flat")
    with pytest.raises(ValueError, match=r"points must have shape \[P, 3\]"):
        sharpness(torch.zeros(2, 5), model, data)
    assert ParamSpace(model).dim == 3
