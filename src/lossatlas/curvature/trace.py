"""Trace of a symmetric operator: Hutchinson, Hutch++ (Meyer et al. 2021), exact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..progress import progress_bar
from .hvp import LinearOperator
from .lanczos import EigenResult, _generator, _project_out, block_lanczos

__all__ = ["TraceEstimate", "eigen_and_trace", "exact_trace", "hutch_plusplus", "hutchinson"]


@dataclass
class TraceEstimate:
    """A trace estimate (loss per squared parameter).

    ``std`` is the standard error of the stochastic part (0 for ``exact_trace``);
    ``samples`` holds the per-probe estimates ``v^T H v`` of it (Tensor[s]).
    """

    trace: float
    std: float
    num_hvp: int
    method: str
    samples: Tensor


def _probes(shape: tuple[int, int], kind: str, gen: torch.Generator, op: LinearOperator) -> Tensor:
    if kind == "rademacher":
        r = torch.randint(0, 2, shape, device=op.device, generator=gen)
        return (2 * r - 1).to(op.dtype)
    if kind == "gaussian":
        return torch.randn(shape, device=op.device, dtype=op.dtype, generator=gen)
    raise ValueError(f"trace: distribution must be 'rademacher' or 'gaussian', got {kind!r}")


def _apply(op: LinearOperator, V: Tensor, probe_batch: int | None, bar=None) -> Tensor:
    """``op`` on the rows of V [s, n] -> [s, n], ``probe_batch`` rows at a time
    (``bar`` advanced by the rows done)."""
    step = V.shape[0] if probe_batch is None else max(1, int(probe_batch))
    out = []
    for i in range(0, V.shape[0], step):
        out.append(op(V[i : i + step]))
        if bar is not None:
            bar.update(out[-1].shape[0])
    return torch.cat(out)


def _quadratic_forms(op: LinearOperator, V: Tensor, probe_batch: int | None, bar=None) -> Tensor:
    return (_apply(op, V, probe_batch, bar) * V).sum(1)


def _summary(samples: Tensor, base: float, num_hvp: int, method: str) -> TraceEstimate:
    s = samples.detach().double().cpu()
    mean = float(s.mean()) if s.numel() else 0.0
    std = float(s.std() / math.sqrt(s.numel())) if s.numel() > 1 else float("nan")
    return TraceEstimate(base + mean, std, num_hvp, method, s)


def hutchinson(
    op: LinearOperator,
    num_probes: int = 100,
    *,
    probe_batch: int | None = 10,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = 0,
    progress: bool | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate ``mean_i v_i^T H v_i`` with ``num_probes`` random probes.

    ``probe_batch`` probes go through the operator together (vmap; memory grows
    with it). ``progress``: a bar over the probes (``None``: auto).
    """
    if int(num_probes) < 1:
        raise ValueError(f"hutchinson: num_probes must be >= 1, got {num_probes}")
    gen = _generator(seed, op.device)
    V = _probes((int(num_probes), op.dim), distribution, gen, op)
    with progress_bar(total=int(num_probes), desc="trace (Hutchinson)", unit="hvp",
                      progress=progress) as bar:
        samples = _quadratic_forms(op, V, probe_batch, bar)
    return _summary(samples, 0.0, int(num_probes), "hutchinson")


def hutch_plusplus(
    op: LinearOperator,
    num_probes: int = 99,
    *,
    probe_batch: int | None = 10,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = 0,
    progress: bool | None = None,
) -> TraceEstimate:
    """Hutch++: the trace on a sketched top subspace exactly, Hutchinson on the rest.

    With ``num_probes = m`` operator applications: ``m/3`` to sketch ``Q = orth(H S)``,
    ``m/3`` for ``tr(Q^T H Q)``, ``m/3`` Hutchinson probes of ``(I - QQ^T) H (I - QQ^T)``.
    ``std`` is the standard error of the last part. ``progress``: a bar over the
    ``m`` products (``None``: auto).
    """
    m = int(num_probes)
    if m < 3:
        raise ValueError(f"hutch_plusplus: num_probes must be >= 3, got {num_probes}")
    s = m // 3
    g = m - 2 * s
    gen = _generator(seed, op.device)
    S = _probes((s, op.dim), distribution, gen, op)
    G = _probes((g, op.dim), distribution, gen, op)
    with progress_bar(total=m, desc="trace (Hutch++)", unit="hvp", progress=progress) as bar:
        HS = _apply(op, S, probe_batch, bar)  # [s, n]
        Q = torch.linalg.qr(HS.T.double())[0].T.to(op.dtype)  # [s, n] orthonormal rows
        base = float((_apply(op, Q, probe_batch, bar) * Q).sum())
        G = G - (G @ Q.T) @ Q
        samples = _quadratic_forms(op, G, probe_batch, bar)
    return _summary(samples, base, s + s + g, "hutch++")


def eigen_and_trace(
    op: LinearOperator,
    k: int = 5,
    num_probes: int = 99,
    *,
    tol: float = 1e-6,
    block_size: int | None = None,
    max_hvp: int | None = None,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = 0,
    progress: bool | None = None,
    which: Literal["largest", "smallest"] = "largest",
) -> tuple[EigenResult, TraceEstimate]:
    """The top-``k`` eigenpairs and the trace from one block Krylov space (Krylov-aware
    Hutch++; Chen & Hallman 2023): every product is in a batch of ``block_size``
    vectors (default ``max(ceil(num_probes / 9), k)``: 11 for 99 probes).

    With ``m = num_probes`` products, as :func:`hutch_plusplus`: a block Krylov space
    ``span(S, H S, H^2 S, ...)`` of ``2 m/3`` vectors (``S``: ``b = block_size`` random
    vectors; ``2 m / (3 b)`` operator calls) serves as Hutch++'s sketch and as the
    Lanczos space of the eigenpairs; ``tr(Q^T H Q)`` comes free from it (Hutch++
    spends ``m/3`` products on it), and ``m - 2 m/3`` Hutchinson probes of
    ``(I - Q Q^T) H (I - Q Q^T)`` (in calls of ``b``) estimate the rest. Smaller blocks
    make a deeper space (better eigenpairs, more sequential calls; ``b = m/3`` is two
    calls). When the eigenpairs' residuals are not below ``tol`` after those products,
    more blocks follow (up to ``max_hvp`` products in all, default ``4 m``) and the
    larger space serves the trace too. The estimate is unbiased (``Q`` does not depend
    on the probes).

    Returns
    -------
    (EigenResult as :func:`~lossatlas.curvature.lanczos.lanczos`, TraceEstimate with
    ``method="krylov-hutch++"``, ``num_hvp`` its probes' products only; the eigen
    result's ``num_hvp`` counts the basis).
    """
    m = int(num_probes)
    if m < 3:
        raise ValueError(f"eigen_and_trace: num_probes must be >= 3, got {num_probes}")
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"eigen_and_trace: block_size must be >= 1, got {block_size}")
    b = max(-(-m // 9), int(k)) if block_size is None else int(block_size)
    g = max(m - 2 * (m // 3), 1)
    blocks = max(-(-2 * (m // 3) // b), 1)
    budget = 4 * m if max_hvp is None else int(max_hvp)
    eig, basis = block_lanczos(op, k, block_size=b, max_hvp=max(budget - g, blocks * b),
                               tol=tol, seed=seed, progress=progress, which=which,
                               min_blocks=blocks)
    gen = _generator(None if seed is None else int(seed) + 1, op.device)
    Q = basis.Q
    G = _probes((g, op.dim), distribution, gen, op)
    if Q.shape[0] >= op.dim:  # the space is everything: the trace is exact
        return eig, TraceEstimate(float(basis.T.trace()), 0.0, 0, "krylov-hutch++",
                                  torch.zeros(0, dtype=torch.float64))
    G = _project_out(G, Q)
    with progress_bar(total=g, desc="trace (Krylov Hutch++)", unit="hvp",
                      progress=progress) as bar:
        # in blocks of the basis' size: one operator shape (one CUDA graph) for the run
        samples = _quadratic_forms(op, G, b, bar)
    return eig, _summary(samples, float(basis.T.trace()), g, "krylov-hutch++")


def exact_trace(
    op: LinearOperator, *, probe_batch: int | None = 64, progress: bool | None = None
) -> TraceEstimate:
    """``sum_i e_i^T H e_i`` with all ``n`` unit vectors (``n`` operator applications;
    a bar over them when ``progress``, ``None``: auto)."""
    total = 0.0
    step = op.dim if probe_batch is None else max(1, int(probe_batch))
    diag = []
    for i in progress_bar(range(0, op.dim, step), desc="trace (exact)", unit="batch",
                          progress=progress):
        E = torch.zeros(min(step, op.dim - i), op.dim, device=op.device, dtype=op.dtype)
        E[torch.arange(E.shape[0]), torch.arange(i, i + E.shape[0])] = 1
        diag.append(op(E).diagonal(offset=i))
    d = torch.cat(diag).double().cpu()
    total = float(d.sum())
    return TraceEstimate(total, 0.0, op.dim, "exact", d)
