"""Edge of stability: the warm-started tracker is exact on a quadratic; the built-in
study saturates at 2/eta."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lossatlas.studies import SharpnessTracker, gd_sharpness_trace, run_eos, top_eigen


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def _least_squares(n: int = 200, d: int = 60):
    gen = torch.Generator().manual_seed(0)
    scales = torch.linspace(0.2, 3.0, d, dtype=torch.float64)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * scales
    y = torch.randn(n, generator=gen, dtype=torch.float64)
    xt = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    true = float(torch.linalg.eigvalsh(xt.T @ xt / n)[-1])  # Hessian = [X 1]^T [X 1] / n
    model = nn.Linear(d, 1).double()
    return model, (x, y), true


def test_tracker_is_exact_on_a_quadratic_at_every_recorded_step():
    model, data, true = _least_squares()
    trace = gd_sharpness_trace(model, data, lr=0.05, steps=40, every=5, loss_fn=_half_mse,
                               max_iter=10, tol=1e-10)
    assert trace["step"] == list(range(0, 41, 5))
    assert not trace["diverged"]
    for lam in trace["lambda_max"]:
        assert lam == pytest.approx(true, rel=1e-8)
    assert trace["loss"][-1] < trace["loss"][0]
    # warm start: after the cold first call, the constant top eigenvector is found at once
    assert max(trace["num_hvp"][1:]) <= 3


def test_top_eigen_matches_the_dense_hessian_of_a_small_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(32, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (32,))
    from torch.func import functional_call, hessian

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(w):
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = w[i:i + s.numel()].view(s)
            i += s.numel()
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    true = float(torch.linalg.eigvalsh(hessian(loss)(flat))[-1])
    res = top_eigen(model, (x, y), max_iter=flat.numel(), tol=1e-12)
    assert res.value == pytest.approx(true, rel=1e-8)
    tracker = SharpnessTracker((x, y))
    assert tracker(model, 0) == pytest.approx(true, rel=1e-6)
    assert tracker.steps_ == [0] and tracker.vector_ is not None


def test_builtin_study_saturates_at_two_over_eta(tmp_path):
    summary = run_eos(tmp_path, lrs=(0.1, 0.4), steps=300, width=64, num_samples=1000)
    assert (tmp_path / "eos.png").stat().st_size > 0
    assert (tmp_path / "run.json").exists()
    assert json.loads((tmp_path / "eos.json").read_text())["largest_stable_lr"] == 0.4
    by_lr = {r["lr"]: r for r in summary["runs"]}
    big, small = by_lr[0.4], by_lr[0.1]
    assert big["stable"] and small["stable"]
    assert big["reached_step"] is not None  # progressive sharpening up to 2/eta ...
    assert big["lambda_peak"] > 1.3 * big["lambda_initial"]
    assert abs(big["final_ratio"] - 1.0) < 0.2  # ... and it stays there
    assert abs(big["tail_ratio"] - 1.0) < 0.2
    assert small["reached_step"] is None and small["final_ratio"] < 0.8
    json.dumps(summary)
