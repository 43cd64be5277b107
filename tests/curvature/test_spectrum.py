import math

import pytest
import torch

from lossatlas.curvature import (
    HVP,
    MatrixOperator,
    exact_trace,
    group_spectra,
    hessian_density,
    hessian_eigen,
    hessian_eigenvalues,
    hessian_trace,
    hessian_trace_estimate,
    hutch_plusplus,
    hutchinson,
    lanczos,
    power_iteration,
)
from lossatlas.space import ParamSpace


def _abs_cos(a, b):
    return (a @ b).abs() / (a.norm() * b.norm())


def test_lanczos_matches_full_eigendecomposition(problem):
    model, x, y, H = problem
    evals, evecs = torch.linalg.eigh(H)
    top = evals.flip(0)[:5]
    res = hessian_eigen(model, (x, y), k=5, tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, top, rtol=1e-6, atol=1e-10)
    assert res.eigenvectors.shape == (5, H.shape[0])
    for i in range(5):
        assert _abs_cos(res.eigenvectors[i], evecs[:, -1 - i]) > 1 - 1e-6
    assert bool(res.converged.all())
    # the public contract: Tensor[k], largest first
    vals = hessian_eigenvalues(model, (x, y), k=3)
    assert vals.shape == (3,) and bool((vals[:-1] >= vals[1:]).all())
    torch.testing.assert_close(vals, top[:3], rtol=1e-6, atol=1e-10)


def test_lanczos_on_an_indefinite_matrix_with_degeneracy():
    g = torch.Generator().manual_seed(0)
    Qm = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    lam = torch.cat([torch.tensor([5.0, 5.0, 3.0, -7.0]), torch.linspace(-1, 1, 36)]).double()
    A = Qm @ torch.diag(lam) @ Qm.T
    res = lanczos(MatrixOperator(A), k=4, num_iter=40)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([5.0, 5.0, 3.0, 1.0]).double())
    # power iteration finds the largest magnitude first
    p = power_iteration(MatrixOperator(A), k=1, max_iter=500, tol=1e-10)
    assert abs(float(p.eigenvalues[0]) + 7.0) < 1e-6


def test_power_iteration_matches(problem):
    model, x, y, H = problem
    top = torch.linalg.eigvalsh(H).flip(0)[:2]
    res = hessian_eigen(model, (x, y), k=2, method="power", tol=1e-9, num_iter=2000)
    torch.testing.assert_close(res.eigenvalues, top, rtol=1e-5, atol=1e-9)


def test_group_eigenvalues_are_those_of_the_block(problem):
    model, x, y, H = problem
    idx = ParamSpace(model).mask("0.").nonzero().squeeze(1)
    top = torch.linalg.eigvalsh(H[idx][:, idx]).flip(0)[:3]
    res = hessian_eigen(model, (x, y), k=3, group="0.", tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, top, rtol=1e-6, atol=1e-10)
    assert bool((res.eigenvectors[:, ParamSpace(model).mask("2.")] == 0).all())
    ds = group_spectra(model, (x, y), k=2)
    assert list(ds.group.values) == ["0", "2"]
    assert ds.eigenvalues.sel(group="0").values[0] == pytest.approx(float(top[0]), rel=1e-6)
    idx2 = ParamSpace(model).mask("2.").nonzero().squeeze(1)
    assert float(ds.trace.sel(group="2")) == pytest.approx(float(H[idx2, idx2].sum()), rel=1e-9)


def test_exact_and_stochastic_traces(problem):
    model, x, y, H = problem
    exact = float(torch.trace(H))
    assert hessian_trace(model, (x, y), method="exact") == pytest.approx(exact, rel=1e-9)
    op = HVP(model, (x, y))
    assert exact_trace(op).trace == pytest.approx(exact, rel=1e-9)
    # Rademacher Hutchinson: variance 2 sum_{i != j} H_ij^2 per probe
    sd1 = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum()))
    for seed in range(3):
        est = hutchinson(op, 200, seed=seed)
        assert abs(est.trace - exact) < 4 * sd1 / math.sqrt(200)
        assert est.std == pytest.approx(sd1 / math.sqrt(200), rel=0.3)
    pp = hutch_plusplus(op, 30, seed=0)
    assert abs(pp.trace - exact) < 4 * sd1 / math.sqrt(10)
    assert pp.num_hvp == 30
    # with as many probes as dimensions Hutch++ is (nearly) exact
    many = hessian_trace_estimate(model, (x, y), num_probes=3 * H.shape[0])
    assert many.trace == pytest.approx(exact, rel=1e-8)
    assert hessian_trace(model, (x, y)) == pytest.approx(exact, rel=0.05)


def test_density_integrates_to_one_and_has_the_right_moments(problem):
    model, x, y, H = problem
    n = H.shape[0]
    lam = torch.linalg.eigvalsh(H)
    dens = hessian_density(model, (x, y), num_iter=n, num_runs=200, seed=0)
    area = torch.trapezoid(dens.density, dens.grid)
    assert float(area) == pytest.approx(1.0, abs=1e-6)
    mean = float(torch.trapezoid(dens.grid * dens.density, dens.grid))
    m2 = float(torch.trapezoid(dens.grid**2 * dens.density, dens.grid))
    sd1 = math.sqrt(2 * float((H**2).sum() - (H.diagonal() ** 2).sum())) / n
    assert abs(mean - float(lam.mean())) < 4 * sd1 / math.sqrt(200)
    H2 = H @ H
    sd2 = math.sqrt(2 * float((H2**2).sum() - (H2.diagonal() ** 2).sum())) / n
    assert abs(m2 - dens.sigma**2 - float((lam**2).mean())) < 4 * sd2 / math.sqrt(200)
    assert dens.moment(1) == pytest.approx(mean, rel=1e-6, abs=1e-12)
    # Ritz values of full-length runs are the eigenvalues
    torch.testing.assert_close(dens.nodes[0], lam, rtol=1e-6, atol=1e-8)
    assert dens.grid.min() <= lam.min() and dens.grid.max() >= lam.max()


def test_bad_k_and_methods(problem):
    model, x, y, _ = problem
    with pytest.raises(ValueError, match="k must be between 1 and the operator size 51"):
        hessian_eigenvalues(model, (x, y), k=52)
    with pytest.raises(ValueError, match="k must be between 1"):
        hessian_eigenvalues(model, (x, y), k=0)
    with pytest.raises(ValueError, match="method must be"):
        hessian_trace(model, (x, y), method="magic")
