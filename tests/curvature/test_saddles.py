"""Negative curvature: the smallest Hessian eigenvalues, the negative mass of the
spectral density and the saddle check, against dense autograd Hessians."""

import math

import numpy as np
import pytest
import torch
from conftest import full_hessian, tiny_data, tiny_mlp
from torch import nn
from torch.func import functional_call

from lossatlas.curvature import (
    MatrixOperator,
    atlas_saddles,
    hessian_density,
    hessian_eigen,
    lanczos,
    saddle_check,
    spectral_density,
)
from lossatlas.curvature.lanczos import _generator
from lossatlas.space import ParamSpace


def _abs_cos(a, b):
    return float((a @ b).abs() / (a.norm() * b.norm()))


class Quadratic(nn.Module):
    """Two parameters ``w = (a, b)``; every sample's output is ``q(a, b)`` (loss = its mean)."""

    def __init__(self, a: float, b: float, hessian: list[list[float]]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([a, b], dtype=torch.float64))
        self.register_buffer("h", torch.tensor(hessian, dtype=torch.float64))

    def forward(self, x):
        return (0.5 * self.w @ self.h @ self.w).expand(x.shape[0])


def _mean(out, _y):
    return out.mean()


def _xy(n=8):
    return torch.zeros(n, 1, dtype=torch.float64), torch.zeros(n)


def test_lanczos_smallest_on_an_indefinite_matrix():
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    lam = torch.cat([torch.tensor([5.0, -7.0, -7.0, -2.0]), torch.linspace(-1, 1, 36)]).double()
    A = Q @ torch.diag(lam) @ Q.T
    res = lanczos(MatrixOperator(A), k=3, num_iter=40, which="smallest")
    torch.testing.assert_close(res.eigenvalues, torch.tensor([-7.0, -7.0, -2.0]).double())
    for v, val in zip(res.eigenvectors, res.eigenvalues, strict=True):
        torch.testing.assert_close(A @ v, val * v, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="which must be"):
        lanczos(MatrixOperator(A), k=1, which="middle")


def test_smallest_hessian_eigenpairs_match_dense(problem):
    model, x, y, H = problem
    evals, evecs = torch.linalg.eigh(H)
    assert float(evals[0]) < 0  # the tanh MLP at initialisation has negative curvature
    res = hessian_eigen(model, (x, y), k=3, which="smallest", tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, evals[:3], rtol=1e-6, atol=1e-9)
    for i in range(3):
        assert _abs_cos(res.eigenvectors[i], evecs[:, i]) > 1 - 1e-6
    with pytest.raises(ValueError, match="needs method='lanczos'"):
        hessian_eigen(model, (x, y), k=1, which="smallest", method="power")


def test_negative_mass_per_run_equals_the_projection_on_negative_eigenvectors():
    g = torch.Generator().manual_seed(2)
    n = 30
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    lam = torch.linspace(-3, 5, n, dtype=torch.float64)
    A = Q @ torch.diag(lam) @ Q.T
    runs, seed = 4, 7
    dens = spectral_density(MatrixOperator(A), num_iter=n, num_runs=runs, seed=seed)
    # the same Rademacher start vectors, then |P_neg v|^2 / |v|^2 exactly
    gen = _generator(seed, torch.device("cpu"))
    v = (2 * torch.randint(0, 2, (runs, n), generator=gen) - 1).double()
    proj = (v @ Q[:, lam < 0]).pow(2).sum(1) / v.pow(2).sum(1)
    torch.testing.assert_close(dens.mass_below(0.0), proj, atol=1e-8, rtol=0)
    assert dens.negative_mass() == pytest.approx(float(proj.mean()), abs=1e-8)
    # broadened: the integral of the plotted density below 0
    below = dens.grid <= 0
    integral = float(torch.trapezoid(dens.density[below], dens.grid[below]))
    assert dens.negative_mass(broadened=True) == pytest.approx(integral, abs=2e-3)
    # moving the cut past every eigenvalue gives all or nothing
    assert dens.negative_mass(tol=3.5) == pytest.approx(0.0, abs=1e-12)
    assert float(dens.mass_below(5.5).mean()) == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        dens.negative_mass(tol=-1.0)


def test_negative_mass_of_a_model_matches_the_dense_count(problem):
    model, x, y, H = problem
    evals = torch.linalg.eigvalsh(H)
    frac = float((evals < 0).double().mean())
    dens = hessian_density(model, (x, y), num_iter=H.shape[0], num_runs=100, seed=0)
    runs = dens.mass_below(0.0)
    stderr = float(runs.std()) / math.sqrt(len(runs))
    assert 0 < frac < 1
    assert abs(dens.negative_mass() - frac) < 4 * stderr + 1e-3


def test_saddle_of_a_two_parameter_quadratic():
    Hq = [[2.0, 0.5], [0.5, -2.0]]
    x, y = _xy()
    at0 = saddle_check(Quadratic(0.0, 0.0, Hq), (x, y), k=2, loss_fn=_mean)
    dense = torch.linalg.eigvalsh(torch.tensor(Hq, dtype=torch.float64))
    torch.testing.assert_close(at0.min_eigenvalues, dense, rtol=1e-10, atol=1e-12)
    assert at0.max_eigenvalue == pytest.approx(float(dense[1]), rel=1e-10)
    assert at0.is_saddle and at0.negative_count == 1
    assert at0.grad_norm == 0.0 and at0.loss == 0.0
    # the descent direction: q decreases along it to second order
    d = at0.directions[0]
    assert float(0.5 * d @ torch.tensor(Hq).double() @ d) < 0
    # off the critical point the curvature is the same (a quadratic), the gradient is not
    off = saddle_check(Quadratic(1.0, 0.0, Hq), (x, y), loss_fn=_mean)
    assert off.is_saddle and off.grad_norm == pytest.approx(math.hypot(2.0, 0.5))
    # a bowl has no negative eigenvalue
    bowl = saddle_check(Quadratic(0.0, 0.0, [[2.0, 0.5], [0.5, 1.0]]), (x, y), k=2,
                        loss_fn=_mean)
    assert not bowl.is_saddle and bowl.negative_count == 0
    assert bowl.as_dict()["is_saddle"] is False


def test_two_layer_linear_net_at_the_origin_is_a_saddle():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g).double()
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5]]).double()).squeeze(1)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()

    def mse(out, target):
        return ((out.squeeze(-1) - target) ** 2).mean()

    H = full_hessian(model, x, y, loss_fn=mse)
    evals = torch.linalg.eigvalsh(H)
    res = saddle_check(model, (x, y), k=2, loss_fn=mse)
    torch.testing.assert_close(res.min_eigenvalues, evals[:2], rtol=1e-8, atol=1e-10)
    # at w = 0 the Hessian is [[0, -2 C], [-2 C^T, 0]] with C = E[x y]: eigenvalues +-2|C|
    c = 2 * (x * y[:, None]).mean(0).norm()
    assert float(evals[0]) == pytest.approx(-float(c), rel=1e-8)
    assert res.is_saddle and res.grad_norm == pytest.approx(0.0, abs=1e-12)


def _tiny_bn_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).double()


def test_saddle_check_of_a_batchnorm_cnn_matches_dense():
    model = _tiny_bn_cnn()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 1, 4, 4, generator=g).float().double()
    y = torch.randint(0, 3, (48,), generator=g)
    with torch.no_grad():  # running statistics of the data, then held fixed (bn="own")
        model.train()(x)
    model.eval()
    space = ParamSpace(model)
    buffers = dict(model.named_buffers())

    def loss(w):
        out = functional_call(model, {**space.unflatten(w), **buffers}, (x,))
        return nn.functional.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(loss, space.flatten(model))
    evals = torch.linalg.eigvalsh(H)
    res = saddle_check(model, (x, y), k=2, bn="own")
    torch.testing.assert_close(res.min_eigenvalues, evals[:2], rtol=1e-6, atol=1e-8)
    assert res.max_eigenvalue == pytest.approx(float(evals[-1]), rel=1e-6)
    assert res.is_saddle == bool(evals[0] < -0.05 * evals.abs().max())


def test_atlas_saddles_are_checked_at_the_decoded_points(tmp_path):
    from lossatlas.atlas import Atlas
    from lossatlas.population import Population
    from lossatlas.symmetry import permutation_spec, permute_model, random_permutation

    torch.manual_seed(0)
    x, y = tiny_data()
    x = x.float()
    model = tiny_mlp(dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    # three copies of one minimum, permuted: the map between them has passes
    spec = permutation_spec(model, x[:2])
    gen = torch.Generator().manual_seed(3)
    models = [model] + [permute_model(model, spec, random_permutation(spec, gen))
                        for _ in range(2)]
    atlas = Atlas(Population.from_models(models), (x, y), tmp_path / "run")
    atlas.embed("pca", dim=2)
    atlas.field(resolution=16, refine=False)
    tree = atlas.topology(threshold=0.01)
    assert len(tree.saddle_values) >= 1
    ds = atlas_saddles(atlas, k=2)
    assert ds.sizes["saddle"] == len(tree.saddle_values)
    space = ParamSpace(model)
    for s in range(ds.sizes["saddle"]):
        w = atlas.decode(torch.tensor(ds["z"].values[s:s + 1], dtype=torch.float32))[0]
        ref = tiny_mlp(dtype=torch.float64)
        space.load_into(ref, w.double())
        H = full_hessian(ref, x.double(), y)
        evals = torch.linalg.eigvalsh(H)
        np.testing.assert_allclose(ds["min_eigenvalue"].values[s], evals[:2].numpy(),
                                   rtol=1e-3, atol=1e-4)
        assert bool(ds["is_saddle"].values[s]) == bool(evals[0] < -0.05 * evals.abs().max())
        # the full-space loss at the decoded saddle is the map's value there
        assert math.log10(float(ds["loss"].values[s])) == pytest.approx(
            float(ds["map_log10_loss"].values[s]), abs=1e-4)
    # the passes between the permuted copies bend down as much as the basins bend up;
    # the trained model itself is a near-minimum: a tiny negative eigenvalue (about 0.1%
    # of the largest), below the verdict's tolerance
    assert bool(ds["is_saddle"].all())
    at_model = saddle_check(model, (x, y), k=2)
    assert not at_model.is_saddle and float(at_model.min_eigenvalues[0]) < 0
    assert saddle_check(model, (x, y), k=2, tol=1e-6).is_saddle
    stored = atlas.run.open_field("saddles")
    np.testing.assert_array_equal(stored["is_saddle"].values, ds["is_saddle"].values)
    assert atlas.run.read()["stages"]["saddles"]["saddles"] == ds.sizes["saddle"]
    with pytest.raises(RuntimeError, match=r"call Atlas.field\(\) first"):
        fresh = Atlas(Population.from_models(models), (x, y), tmp_path / "fresh")
        fresh.embed("pca", dim=2)
        atlas_saddles(fresh)
