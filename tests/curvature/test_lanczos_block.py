"""Block Lanczos and the Krylov-aware Hutch++ trace against dense eigendecompositions."""

import pytest
import torch

from lossatlas.curvature import HVP, MatrixOperator, hutch_plusplus
from lossatlas.curvature.lanczos import _rows_dot, block_lanczos
from lossatlas.curvature.spectrum import hessian_eigen_trace
from lossatlas.curvature.trace import eigen_and_trace


def _matrix(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with 5 outliers over a bulk in [-0.5, 1], and its eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    Qm = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
    bulk = torch.rand(n - 5, generator=g, dtype=torch.float64) * 1.5 - 0.5
    lam = torch.cat([torch.tensor([50.0, 40.0, 30.0, 20.0, 10.0], dtype=torch.float64), bulk])
    return Qm @ torch.diag(lam) @ Qm.T, lam


def test_block_lanczos_matches_the_dense_hessian(problem):
    model, x, y, H = problem
    evals, evecs = torch.linalg.eigh(H)
    res, basis = block_lanczos(HVP(model, (x, y)), 5, block_size=4, tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, evals.flip(0)[:5], rtol=1e-8, atol=1e-12)
    assert bool(res.converged.all()) and res.num_hvp == basis.Q.shape[0]
    assert res.num_hvp % 4 == 0 or res.num_hvp == H.shape[0]
    for i in range(5):
        cos = (res.eigenvectors[i] @ evecs[:, -1 - i]).abs()
        assert float(cos) > 1 - 1e-8
    # the basis is orthonormal and T = Q H Q^T
    Q = basis.Q
    torch.testing.assert_close(Q @ Q.T, torch.eye(len(Q), dtype=Q.dtype), atol=1e-10, rtol=0)
    torch.testing.assert_close(basis.T, Q @ H @ Q.T, atol=1e-10, rtol=0)


def test_block_lanczos_smallest_and_degenerate():
    g = torch.Generator().manual_seed(3)
    Qm = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))[0]
    lam = torch.cat([torch.tensor([5.0, 5.0, 3.0, -7.0]), torch.linspace(-1, 1, 36)]).double()
    A = Qm @ torch.diag(lam) @ Qm.T
    top, _ = block_lanczos(MatrixOperator(A), 4, block_size=3, max_hvp=40, tol=1e-10)
    torch.testing.assert_close(top.eigenvalues, torch.tensor([5.0, 5.0, 3.0, 1.0]).double())
    low, _ = block_lanczos(MatrixOperator(A), 2, block_size=3, max_hvp=40, tol=1e-10,
                           which="smallest")
    torch.testing.assert_close(low.eigenvalues, torch.tensor([-7.0, -1.0]).double())
    # an invariant start block (rank deficient products) is refilled with fresh directions
    E = torch.zeros(40, 40, dtype=torch.float64)
    E[:3, :3] = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    res, basis = block_lanczos(MatrixOperator(E), 3, block_size=2, max_hvp=12, tol=1e-12)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.0, 1.0]).double())
    Q = basis.Q
    torch.testing.assert_close(Q @ Q.T, torch.eye(len(Q), dtype=Q.dtype), atol=1e-10, rtol=0)


def test_block_lanczos_rejects_bad_arguments(problem):
    model, x, y, _ = problem
    H = HVP(model, (x, y))
    with pytest.raises(ValueError, match="block_size"):
        block_lanczos(H, 2, block_size=0)
    with pytest.raises(ValueError, match="k must be"):
        block_lanczos(H, 0)
    with pytest.raises(ValueError, match="start must have shape"):
        block_lanczos(H, 2, block_size=2, start=torch.zeros(3, H.dim))
    with pytest.raises(ValueError, match="num_probes"):
        eigen_and_trace(H, 2, 2)
    with pytest.raises(ValueError, match="block_size"):
        eigen_and_trace(H, 2, 9, block_size=0)


def test_smaller_blocks_make_a_deeper_space_for_the_same_products():
    A, lam = _matrix(300)
    wide, _ = eigen_and_trace(MatrixOperator(A), 5, 99, tol=1.0, block_size=33)  # 2 blocks
    op = MatrixOperator(A)
    deep, tr = eigen_and_trace(op, 5, 99, tol=1.0)  # the default: 6 blocks of 11
    assert wide.num_hvp == deep.num_hvp == 66 and op.num_matvecs == 99
    assert deep.num_iter == 6 and tr.num_hvp == 33
    err = [float(((r.eigenvalues - lam[:5]) / lam[:5]).abs().max()) for r in (wide, deep)]
    assert err[1] < 1e-9 < err[0]


def test_eigen_and_trace_exact_when_the_space_is_everything(problem):
    model, x, y, H = problem
    eig, tr = hessian_eigen_trace(model, (x, y), k=3, num_probes=99, tol=1e-10)
    torch.testing.assert_close(eig.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:3],
                               rtol=1e-8, atol=1e-12)
    assert eig.eigenvectors.shape == (3, H.shape[0])
    assert tr.trace == pytest.approx(float(torch.trace(H)), rel=1e-10)
    assert tr.std == 0.0 and tr.method == "krylov-hutch++"


def test_krylov_trace_is_unbiased_and_beats_hutch_plus_plus():
    A, lam = _matrix()
    op = MatrixOperator(A)
    est, stds, ref_std = [], [], []
    for seed in range(40):
        eig, tr = eigen_and_trace(op, 5, 30, tol=1e-3, seed=seed)
        if seed == 0:
            # residuals 1e-3 x 50: eigenvalue errors ~ residual^2 / gap
            torch.testing.assert_close(eig.eigenvalues, lam[:5], rtol=1e-6, atol=0)
            assert bool(eig.converged.all()) and tr.num_hvp == 10
            assert eig.num_hvp % 5 == 0 and eig.num_hvp >= 20
        est.append(tr.trace)
        stds.append(tr.std)
        ref_std.append(hutch_plusplus(op, 30, seed=seed).std)
    est_t = torch.tensor(est, dtype=torch.float64)
    # unbiased: the mean of 40 independent estimates within 4 standard errors
    se = float(est_t.std()) / len(est) ** 0.5
    assert abs(float(est_t.mean()) - float(lam.sum())) < 4 * se
    # the reported standard error is the spread of the estimates
    assert float(torch.tensor(stds).mean()) == pytest.approx(float(est_t.std()), rel=0.5)
    # same 30 products: the deflated part is smaller than Hutch++'s (a 20-vector Krylov
    # space against a 10-vector sketch)
    assert float(torch.tensor(stds).mean()) < float(torch.tensor(ref_std).mean())


def test_sliced_row_products_equal_the_plain_product():
    g = torch.Generator().manual_seed(5)
    A = torch.randn(3, 1000, generator=g, dtype=torch.float64)
    B = torch.randn(7, 1000, generator=g, dtype=torch.float64)
    torch.testing.assert_close(_rows_dot(A, B, sliced=True), A @ B.T)
    torch.testing.assert_close(_rows_dot(A, B[:, :1000], sliced=True), A @ B.T)
    torch.testing.assert_close(_rows_dot(A[:, :992], B[:, :992], sliced=True),
                               A[:, :992] @ B[:, :992].T)
