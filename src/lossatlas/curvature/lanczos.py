"""Top eigenpairs of a symmetric operator: Lanczos (full reorthogonalisation) and
deflated power iteration (as PyHessian)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..progress import progress_bar
from .hvp import LinearOperator

__all__ = ["BlockKrylov", "EigenResult", "block_krylov", "block_lanczos", "lanczos",
           "lanczos_tridiagonal", "power_iteration"]

log = logging.getLogger(__name__)


@dataclass
class EigenResult:
    """Eigenpairs of a Hessian (or any symmetric operator).

    Attributes
    ----------
    eigenvalues : Tensor[k]
        Largest first (algebraic, for Lanczos; smallest first with
        ``which="smallest"``; in order found for power iteration); units of loss
        per squared parameter.
    eigenvectors : Tensor[k, n]
        Unit rows; for an :class:`HVP` these are in its operator space (use
        ``hvp.embed`` for the full ``ParamSpace`` layout).
    residuals : Tensor[k]
        ``|H v - lambda v|`` bounds (Ritz residuals).
    converged : Tensor[k] (bool)
    num_iter : int
        Lanczos steps (or power iterations in total).
    num_hvp : int
        Operator applications.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    converged: Tensor
    num_iter: int
    num_hvp: int


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def _orthogonalise(w: Tensor, Q: Tensor, j: int) -> Tensor:
    """Remove from ``w`` [m, n] its components along ``Q[:, :j]`` [m, j, n] (twice)."""
    if j == 0:
        return w
    B = Q[:, :j]
    for _ in range(2):
        w = w - torch.einsum("mj,mjn->mn", torch.einsum("mjn,mn->mj", B, w), B)
    return w


def lanczos_tridiagonal(
    op: LinearOperator,
    V0: Tensor,
    num_iter: int,
    *,
    reorthogonalize: bool = True,
    generator: torch.Generator | None = None,
    stop=None,
    progress: bool | None = None,
    desc: str = "lanczos",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Run ``m`` independent Lanczos recurrences in lock-step (one batched operator
    call per step).

    Parameters
    ----------
    op : LinearOperator on vectors of length ``n``
    V0 : Tensor[m, n]
        Start vectors (normalised here).
    num_iter : int
        Steps ``J`` (at most ``n``).
    reorthogonalize : bool
        Full Gram-Schmidt against all previous basis vectors (memory ``m J n``).
    stop : callable(alphas [m, j], betas [m, j], j) -> bool, optional
        Called after each step; ``True`` ends the run early.
    progress : bool, optional
        A bar over the steps (``None``: auto, see :mod:`lossatlas.progress`).

    Returns
    -------
    alphas : Tensor[m, j] (diagonal), betas : Tensor[m, j] (``betas[:, i]`` couples
    steps ``i`` and ``i + 1``; the last is the residual norm), Q : Tensor[m, j, n]
    (basis; empty along ``j`` without reorthogonalisation), and j.
    """
    m, n = V0.shape
    num_iter = min(int(num_iter), n)
    dev, dt = V0.device, V0.dtype
    Q = torch.zeros(m, num_iter if reorthogonalize else 0, n, device=dev, dtype=dt)
    alphas = torch.zeros(m, num_iter, device=dev, dtype=dt)
    betas = torch.zeros(m, num_iter, device=dev, dtype=dt)
    v = V0 / V0.norm(dim=1, keepdim=True)
    v_prev = torch.zeros_like(v)
    beta = torch.zeros(m, device=dev, dtype=dt)
    j = 0
    bar = progress_bar(total=num_iter, desc=desc, unit="step", progress=progress)
    for j in range(num_iter):
        bar.update(1)
        if reorthogonalize:
            Q[:, j] = v
        w = op(v).to(dt) - beta[:, None] * v_prev
        alpha = (w * v).sum(1)
        w = w - alpha[:, None] * v
        if reorthogonalize:
            w = _orthogonalise(w, Q, j + 1)
        beta = w.norm(dim=1)
        alphas[:, j] = alpha
        betas[:, j] = beta
        if stop is not None and stop(alphas[:, : j + 1], betas[:, : j + 1], j + 1):
            break
        if j + 1 == num_iter:
            break
        # Invariant subspace found in a run: restart it with a fresh orthogonal vector
        # (beta = 0 decouples the tridiagonal blocks).
        scale = alphas[:, : j + 1].abs().amax(1).clamp_min(1e-30)
        broke = beta <= 1e3 * torch.finfo(dt).eps * scale
        if bool(broke.any()):
            r = torch.randn(m, n, device=dev, dtype=dt, generator=generator)
            if reorthogonalize:
                r = _orthogonalise(r, Q, j + 1)
            w = torch.where(broke[:, None], r / r.norm(dim=1, keepdim=True), w)
            beta = torch.where(broke, torch.zeros_like(beta), beta)
            betas[:, j] = beta
            norm = torch.where(broke, torch.ones_like(beta), beta)
        else:
            norm = beta
        v_prev, v = v, w / norm[:, None]
    bar.close()
    J = j + 1
    return alphas[:, :J], betas[:, :J], Q[:, :J], J


def _tridiagonal(alphas: Tensor, betas: Tensor) -> Tensor:
    """Symmetric tridiagonal matrices [m, J, J] from alphas [m, J], betas [m, J]."""
    J = alphas.shape[1]
    T = torch.diag_embed(alphas)
    if J > 1:
        off = torch.diag_embed(betas[:, : J - 1], offset=1)
        T = T + off + off.transpose(1, 2)
    return T


def lanczos(
    op: LinearOperator,
    k: int = 5,
    *,
    num_iter: int | None = None,
    tol: float = 1e-6,
    seed: int | None = 0,
    progress: bool | None = None,
    which: Literal["largest", "smallest"] = "largest",
) -> EigenResult:
    """The ``k`` largest (or smallest) algebraic eigenpairs of ``op`` by Lanczos with
    full reorthogonalisation.

    Parameters
    ----------
    op : LinearOperator (e.g. :class:`HVP`) on vectors of length ``n``
    k : int
        Eigenpairs wanted, ``1 <= k <= n``.
    num_iter : int, optional
        Maximum Lanczos steps; default ``min(n, max(4 k, k + 40))``. Memory: ``num_iter x n``.
    tol : float
        Stop when every wanted Ritz residual ``|beta_J s_J,i|`` is below
        ``tol x max |theta|`` (eigenvalue errors are about residual^2 / gap).
    seed : int, optional
        Seed of the random start vector.
    progress : bool, optional
        A bar over the Lanczos steps (``None``: auto).
    which : "largest" or "smallest"
        Which end of the spectrum: the ``k`` largest eigenvalues, largest first
        (default), or the ``k`` smallest, smallest first (the most negative
        curvature of a Hessian). The Krylov space converges at both ends of the
        spectrum alike, so no shift or negation of ``op`` is needed.
    """
    n = op.dim
    if which not in ("largest", "smallest"):
        raise ValueError(f"lanczos: which must be 'largest' or 'smallest', got {which!r}")
    if not 1 <= int(k) <= n:
        raise ValueError(f"lanczos: k must be between 1 and the operator size {n}, got k={k}")
    k = int(k)
    J = min(n, max(4 * k, k + 40)) if num_iter is None else min(int(num_iter), n)
    if J < k:
        raise ValueError(f"lanczos: num_iter={num_iter} must be at least k={k}")
    gen = _generator(seed, op.device)
    v0 = torch.randn(1, n, device=op.device, dtype=op.dtype, generator=gen)

    def converged(a: Tensor, b: Tensor, j: int) -> bool:
        if j < k or (j % 5 and j < J):
            return False
        # the small tridiagonal problem on the CPU (a GPU eigh of it costs milliseconds)
        theta, S = torch.linalg.eigh(_tridiagonal(a.cpu(), b.cpu())[0])
        wanted = S[-1, -k:] if which == "largest" else S[-1, :k]
        res = (b[0, -1].cpu() * wanted).abs()
        return bool((res <= tol * theta.abs().max().clamp_min(1e-30)).all())

    alphas, betas, Q, J = lanczos_tridiagonal(op, v0, J, generator=gen, stop=converged,
                                              progress=progress)
    theta, S = torch.linalg.eigh(_tridiagonal(alphas.cpu(), betas.cpu())[0])
    theta, S = theta.to(op.device), S.to(op.device)
    order = torch.argsort(theta, descending=which == "largest")[:k]
    vals = theta[order]
    vecs = S[:, order].T @ Q[0]  # [k, n]
    res = (betas[0, -1] * S[-1, order]).abs()
    ok = res <= tol * theta.abs().max().clamp_min(1e-30)
    if not bool(ok.all()):
        log.info("lanczos: %d of %d eigenpairs above tol after %d steps", int((~ok).sum()), k, J)
    return EigenResult(vals, vecs, res, ok, J, J)


@dataclass
class BlockKrylov:
    """An orthonormal basis of a block Krylov space of a symmetric operator ``H``.

    Attributes
    ----------
    Q : Tensor[J * b, n]
        Orthonormal rows spanning ``S, H S, ..., H^(J-1) S`` (``b`` vectors a block).
    HQ : Tensor[J * b, n]
        ``H`` applied to each row of ``Q``.
    T : Tensor[J * b, J * b] (float64, CPU)
        ``Q H Q^T`` (symmetrised): its eigenvalues are the Ritz values.
    num_hvp : int
        Operator applications (``J * b``).
    """

    Q: Tensor
    HQ: Tensor
    T: Tensor
    num_hvp: int


def _ritz(basis: BlockKrylov, k: int, which: str) -> tuple[Tensor, Tensor, Tensor, float]:
    """The ``k`` wanted Ritz values [k], their coordinates in ``basis.Q`` [J b, k] (both
    float64, CPU), their exact residual norms ``|H u - theta u|`` [k] (CPU) and the
    largest ``|theta|`` (the scale residuals are compared with)."""
    theta, S = torch.linalg.eigh(basis.T)
    order = torch.argsort(theta, descending=which == "largest")[:k]
    vals, coords = theta[order], S[:, order]
    C = coords.T.to(basis.Q.device, basis.Q.dtype)  # [k, J b]
    res = (C @ basis.HQ - vals.to(C)[:, None] * (C @ basis.Q)).norm(dim=1)  # [k, n] rows
    return vals, coords, res.double().cpu(), float(theta.abs().max().clamp_min(1e-30))


def _rows_dot(A: Tensor, B: Tensor, sliced: bool | None = None) -> Tensor:
    """``A @ B.T`` for A [a, n], B [m, n] with small ``a, m`` and long rows: on CUDA
    (``sliced=None``) as a batched product over 32 slices of the rows, summed (a single
    GEMM with such a long reduction runs on a few thread blocks); plain ``@`` elsewhere."""
    n = A.shape[1]
    if sliced is None:
        sliced = A.device.type == "cuda" and n >= (1 << 15)
    if not sliced or n < 32:
        return A @ B.T
    c = 32
    L = n // c
    head = torch.bmm(A[:, : c * L].reshape(A.shape[0], c, L).transpose(0, 1),
                     B[:, : c * L].reshape(B.shape[0], c, L).permute(1, 2, 0)).sum(0)
    return head + A[:, c * L :] @ B[:, c * L :].T if c * L < n else head


def _project_out(W: Tensor, Q: Tensor | None) -> Tensor:
    """``W`` [b, n] minus its components along the orthonormal rows of ``Q`` (twice)."""
    if Q is None or not len(Q):
        return W
    for _ in range(2):
        W = W - _rows_dot(W, Q) @ Q
    return W


def _orthonormal_block(W: Tensor, Q: Tensor | None, gen: torch.Generator | None,
                       depth: int = 0) -> Tensor:
    """``W`` [b, n] made orthonormal and orthogonal to the rows of ``Q``: projections
    (classical Gram-Schmidt twice), then SVQB twice (the eigendecomposition of the small
    Gram matrix ``W W^T`` in float64: ``b x b`` work, no QR of a tall matrix); directions
    lost to rank deficiency (an invariant subspace) are replaced by random ones
    orthogonal to both."""
    scale = W.norm(dim=1).max().clamp_min(1e-30)
    W = _project_out(W, Q)
    floor = 1e3 * torch.finfo(W.dtype).eps * float(scale)
    keep = W
    for sweep in range(2):
        G = _rows_dot(keep, keep).double().cpu()
        lam, U = torch.linalg.eigh((G + G.T) / 2)
        ok = lam > (floor if sweep == 0 else 1e-3) ** 2  # the 2nd sweep: near-orthonormal rows
        C = (U[:, ok] / lam[ok].sqrt()).T.to(W.device, W.dtype)  # [r, b]
        keep = C @ keep
    missing = W.shape[0] - keep.shape[0]
    if missing == 0 or depth >= 2:
        return keep.contiguous()
    against = keep if Q is None or not len(Q) else torch.cat([Q, keep])
    fresh = torch.randn(missing, W.shape[1], device=W.device, dtype=W.dtype, generator=gen)
    return torch.cat([keep, _orthonormal_block(fresh, against, gen, depth + 1)]).contiguous()


def block_krylov(
    op: LinearOperator,
    V0: Tensor,
    max_blocks: int,
    *,
    stop=None,
    generator: torch.Generator | None = None,
    progress: bool | None = None,
    desc: str = "block lanczos",
) -> BlockKrylov:
    """A block Krylov basis of ``op`` from the start block ``V0`` [b, n]: one operator
    call of ``b`` vectors a step (batched products), full reorthogonalisation.

    ``stop(basis) -> bool`` is called after each block (after the first); ``True`` ends
    the run. At most ``max_blocks`` blocks (and ``n`` basis vectors). Memory:
    ``2 x J b x n`` (the basis and its products, kept for exact Ritz residuals).
    """
    b, n = V0.shape
    max_blocks = max(1, int(max_blocks))
    V = _orthonormal_block(V0[:n], None, generator)
    Qs: list[Tensor] = []
    HQs: list[Tensor] = []
    T = torch.zeros(0, 0, dtype=torch.float64)
    basis = BlockKrylov(V[:0], V[:0], T, 0)
    bar = progress_bar(total=max_blocks, desc=desc, unit="block", progress=progress)
    for j in range(max_blocks):
        bar.update(1)
        W = op(V).to(V.dtype)
        Qs.append(V)
        HQs.append(W)
        Q, HQ = torch.cat(Qs), torch.cat(HQs)
        # the new rows and columns of Q H Q^T, symmetrised (float64 on the CPU: tiny)
        new = _rows_dot(Q, W).double().cpu()  # [J b, b]
        m, c = T.shape[0], W.shape[0]
        T2 = torch.zeros(m + c, m + c, dtype=torch.float64)
        T2[:m, :m] = T
        T2[:, m:] = new
        T2[m:, :] = new.T
        T = (T2 + T2.T) / 2
        basis = BlockKrylov(Q, HQ, T, Q.shape[0])
        if j + 1 == max_blocks or Q.shape[0] >= n:
            break
        if stop is not None and stop(basis):
            break
        # the last block may be partial: the basis then spans the whole space
        V = _orthonormal_block(W[: n - Q.shape[0]], Q, generator)
    bar.close()
    return basis


def block_lanczos(
    op: LinearOperator,
    k: int = 5,
    *,
    block_size: int = 8,
    max_hvp: int | None = None,
    tol: float = 1e-6,
    seed: int | None = 0,
    progress: bool | None = None,
    which: Literal["largest", "smallest"] = "largest",
    min_blocks: int = 1,
    start: Tensor | None = None,
) -> tuple[EigenResult, BlockKrylov]:
    """The ``k`` largest (or smallest) algebraic eigenpairs of ``op`` from a block
    Krylov space (block Lanczos with full reorthogonalisation, Rayleigh-Ritz on the
    whole basis): ``block_size`` vectors go through the operator in one call, so a step
    costs little more than one product on a device that one vector does not fill.

    Parameters
    ----------
    block_size : int
        Vectors per step, ``b >= 1``.
    max_hvp : int, optional
        Most operator applications; default ``max(4 k, k + 40)`` rounded up to blocks.
    tol : float
        Stop when every wanted Ritz pair's residual ``|H u - theta u|`` (computed
        exactly from the stored products) is below ``tol x max |theta|``.
    min_blocks : int
        Blocks computed at least (a caller that reuses the basis may want more).
    start : Tensor[b, n], optional
        The start block (default: Gaussian from ``seed``).

    Returns
    -------
    (EigenResult, BlockKrylov): the eigenpairs (``num_iter`` = blocks, ``num_hvp`` =
    products) and the basis with ``Q H Q^T`` for reuse (e.g. a trace estimate).
    """
    n = op.dim
    if which not in ("largest", "smallest"):
        raise ValueError(f"block_lanczos: which must be 'largest' or 'smallest', got {which!r}")
    if not 1 <= int(k) <= n:
        raise ValueError(f"block_lanczos: k must be between 1 and the operator size {n}, "
                         f"got k={k}")
    if int(block_size) < 1:
        raise ValueError(f"block_lanczos: block_size must be >= 1, got {block_size}")
    k, b = int(k), min(int(block_size), n)
    budget = max(4 * k, k + 40) if max_hvp is None else int(max_hvp)
    max_blocks = max(1, -(-budget // b))
    gen = _generator(seed, op.device)
    if start is None:
        start = torch.randn(b, n, device=op.device, dtype=op.dtype, generator=gen)
    elif start.shape != (b, n):
        raise ValueError(f"block_lanczos: start must have shape [{b}, {n}], got "
                         f"{tuple(start.shape)}")

    def converged(basis: BlockKrylov) -> bool:
        if basis.Q.shape[0] < k or basis.Q.shape[0] < min_blocks * b:
            return False
        _, _, res, scale = _ritz(basis, k, which)
        return bool((res <= tol * scale).all())

    basis = block_krylov(op, start.to(op.device, op.dtype), max_blocks, stop=converged,
                         generator=gen, progress=progress)
    kk = min(k, basis.Q.shape[0])
    vals, coords, res, scale = _ritz(basis, kk, which)
    ok = res <= tol * scale
    if not bool(ok.all()):
        log.info("block_lanczos: %d of %d eigenpairs above tol after %d products",
                 int((~ok).sum()), kk, basis.num_hvp)
    vecs = coords.T.to(basis.Q.device, basis.Q.dtype) @ basis.Q
    J = -(-basis.Q.shape[0] // b)
    result = EigenResult(vals.to(op.device, op.dtype), vecs, res.to(op.dtype), ok, J,
                         basis.num_hvp)
    return result, basis


def power_iteration(
    op: LinearOperator,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int | None = 0,
    progress: bool | None = None,
) -> EigenResult:
    """The ``k`` eigenpairs of largest magnitude by deflated power iteration, as
    PyHessian's ``hessian.eigenvalues`` (stop when the Rayleigh quotient changes by
    less than ``tol`` relative; ``max_iter`` per eigenpair; a bar over the pairs when
    ``progress``, ``None``: auto)."""
    n = op.dim
    if not 1 <= int(k) <= n:
        raise ValueError(f"power_iteration: k must be between 1 and {n}, got k={k}")
    gen = _generator(seed, op.device)
    found: list[Tensor] = []
    vals, res, ok = [], [], []
    total = 0
    for _ in progress_bar(range(int(k)), desc="power iteration", unit="pair",
                          progress=progress):
        v = torch.randn(n, device=op.device, dtype=op.dtype, generator=gen)
        v = v / v.norm()
        lam = None
        conv = False
        for _ in range(max_iter):
            for u in found:
                v = v - (u @ v) * u
            v = v / v.norm()
            hv = op(v)
            total += 1
            new = float(hv @ v)
            r = hv - new * v
            v = hv / hv.norm().clamp_min(1e-30)
            if lam is not None and abs(new - lam) / (abs(lam) + 1e-12) < tol:
                lam, conv = new, True
                break
            lam = new
        found.append(v)
        vals.append(lam)
        res.append(float(r.norm()))
        ok.append(conv)
    return EigenResult(
        torch.tensor(vals, dtype=op.dtype),
        torch.stack(found),
        torch.tensor(res, dtype=op.dtype),
        torch.tensor(ok),
        total,
        total,
    )
