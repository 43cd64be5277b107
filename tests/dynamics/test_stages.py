import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lossatlas.dynamics import llc_stages, stage_boundaries


def test_critical_points_of_a_cubic_over_log_step():
    u = np.linspace(0, np.log(1e4), 90)
    steps = np.exp(u)
    values = -(u - 2) * (u - 4) * (u - 6)  # extrema at 4 -+ 2/sqrt(3)
    noisy = values + np.random.default_rng(0).normal(0, 0.05, u.size)
    for smoothing in ("savgol", "gaussian"):
        res = stage_boundaries(steps, noisy, smoothing=smoothing, width=0.6)
        kinds = [b["kind"] for b in res.boundaries]
        assert kinds == ["min", "max"], (smoothing, res.boundaries)
        got = np.log(res.boundary_steps)
        assert got == pytest.approx([4 - 2 / np.sqrt(3), 4 + 2 / np.sqrt(3)], abs=0.2)


def test_plateau_end_and_uneven_steps():
    rng = np.random.default_rng(1)
    steps = np.unique(np.exp(rng.uniform(0, 10, 70)).round())
    u = np.log(steps)
    values = np.where(u < 5, 1.0, 1.0 + 2 * np.tanh(u - 5))
    res = stage_boundaries(np.r_[0.0, steps], np.r_[1.0, values], width=0.5)
    assert res.boundaries[0]["kind"] == "plateau_end"
    assert np.log(res.boundaries[0]["step"]) == pytest.approx(5.0, abs=0.4)


def test_llc_stages_with_a_stub_estimator():
    u = np.linspace(0, np.log(5000), 40)
    curve = np.sin(u)  # maximum at pi/2, minimum at 3 pi/2 (within range up to 8.5)
    models = [nn.Linear(1, 1) for _ in u]
    for m, v in zip(models, curve, strict=True):
        m.llc_value = float(v)
    res = llc_stages(np.exp(u), models, estimate=lambda m: m.llc_value,
                     stage_kwargs={"width": 0.5})
    assert res.values == pytest.approx(curve)
    assert [b["kind"] for b in res.boundaries][:2] == ["max", "min"]
    assert np.log(res.boundary_steps[:2]) == pytest.approx([np.pi / 2, 3 * np.pi / 2], abs=0.25)


# ----------------------------------------------- the real estimator on real checkpoints
class _Product(nn.Module):
    """y = a b x: a two-layer scalar linear network (float64)."""

    def __init__(self, init: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([init], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([init], dtype=torch.float64))

    def forward(self, x):
        return self.a * self.b * x


def _half_mse(out, y):
    return 0.5 * ((out - y) ** 2).mean()


def _laplace_llc(model: nn.Module, data, nbeta: float, gamma: float) -> float:
    """What the SGLD estimator converges to where the loss is quadratic around ``w*``:
    the localised tempered posterior is Gaussian with precision ``P = nbeta H + gamma I``
    and mean ``m = -nbeta P^-1 g``, so ``E[nbeta (L - L*)] = nbeta (g.m + m.H m / 2 +
    tr(H P^-1) / 2)`` (g, H: gradient and dense autograd Hessian at ``w*``)."""
    x, y = data
    w0 = torch.cat([model.a.detach(), model.b.detach()])

    def loss(w):
        return _half_mse(w[0] * w[1] * x, y)

    g = torch.autograd.functional.jacobian(loss, w0)
    H = torch.autograd.functional.hessian(loss, w0)
    P = nbeta * H + gamma * torch.eye(2, dtype=H.dtype)
    Pinv = torch.linalg.inv(P)
    m = -nbeta * Pinv @ g
    return float(nbeta * (g @ m + 0.5 * m @ H @ m + 0.5 * torch.trace(H @ Pinv)))


def test_llc_stages_with_the_real_estimator_on_trained_checkpoints():
    """Gradient descent on y = a b x from a small balanced start sits on the saddle at 0,
    then learns c = 1 in a sharp drop of the loss and settles on the minimum a b = 1.
    The LLC (real SGLD estimator) must start at its value at the saddle, dip while the
    loss falls fast and rise to its value at the minimum (both from the Hessian), with
    its stage boundary (the minimum of the LLC curve) where the training loss falls
    fastest: an independent signal read from the training log, not from the LLC."""
    n = 200
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, 2, generator=g, dtype=torch.float64))[0] * math.sqrt(n)
    x, noise = Q[:, :1], Q[:, 1:]  # orthonormal: L = (a b - 1)^2 / 2 + 1/2 exactly
    data = (x, x + noise)
    model = _Product(0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    steps = np.unique(np.geomspace(40, 2000, 25).round().astype(int))
    checkpoints, train_loss = [], []
    for step in range(1, int(steps[-1]) + 1):
        opt.zero_grad()
        loss = _half_mse(model(x), data[1])
        loss.backward()
        opt.step()
        train_loss.append(loss.item())
        if step in steps:
            checkpoints.append(copy.deepcopy(model))
    sgld = dict(nbeta=50.0, gamma=100.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two parameters: a second thread only adds contention
    try:
        res = llc_stages(steps, checkpoints, data, stage_kwargs={"width": 0.4},
                         loss_fn=_half_mse,
                         epsilon=1e-3, num_chains=16, num_draws=150, num_burnin_steps=100,
                         batch_size=n, progress=False, **sgld)
    finally:
        torch.set_num_threads(threads)
    # the known levels: near the saddle (-1/3 at it) and at the minimum (+1/4)
    first, last = (_laplace_llc(checkpoints[i], data, **sgld) for i in (0, -1))
    assert first == pytest.approx(-1 / 3, abs=0.05) and last == pytest.approx(0.25, abs=1e-6)
    # measured: -0.44 (the saddle mixes slowly) and 0.26
    assert res.values[0] == pytest.approx(first, abs=0.1)
    assert res.values[-1] == pytest.approx(last, abs=0.03)
    # the stage boundary: the LLC's minimum where the loss falls fastest (step 429;
    # measured: the minimum at step 384, a factor 1.12 off)
    fastest = 1 + int(np.argmax(-np.diff(train_loss))) + 1
    kinds = [b["kind"] for b in res.boundaries]
    assert kinds.count("min") == 1, res.boundaries
    low = res.boundaries[kinds.index("min")]
    assert np.log(low["step"]) == pytest.approx(np.log(fastest), abs=0.2)
    assert low["value"] < first - 1  # a dip far below both levels
    # before it one plateau (the saddle) ends, after it the LLC settles at the minimum
    assert kinds[0] == "plateau_end" and res.boundaries[0]["step"] < low["step"]
    assert all(b["step"] > low["step"] for b in res.boundaries[kinds.index("min") + 1:])
