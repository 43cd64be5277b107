"""Trace of a symmetric operator: Hutchinson, Hutch++ (Meyer et al. 2021), exact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .hvp import LinearOperator
from .lanczos import _generator

__all__ = ["TraceEstimate", "exact_trace", "hutch_plusplus", "hutchinson"]


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


def _apply(op: LinearOperator, V: Tensor, probe_batch: int | None) -> Tensor:
    step = V.shape[0] if probe_batch is None else max(1, int(probe_batch))
    return torch.cat([op(V[i : i + step]) for i in range(0, V.shape[0], step)])


def _quadratic_forms(op: LinearOperator, V: Tensor, probe_batch: int | None) -> Tensor:
    return (_apply(op, V, probe_batch) * V).sum(1)


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
) -> TraceEstimate:
    """Hutchinson's estimate ``mean_i v_i^T H v_i`` with ``num_probes`` random probes.

    ``probe_batch`` probes go through the operator together (vmap; memory grows
    with it).
    """
    if int(num_probes) < 1:
        raise ValueError(f"hutchinson: num_probes must be >= 1, got {num_probes}")
    gen = _generator(seed, op.device)
    V = _probes((int(num_probes), op.dim), distribution, gen, op)
    return _summary(_quadratic_forms(op, V, probe_batch), 0.0, int(num_probes), "hutchinson")


def hutch_plusplus(
    op: LinearOperator,
    num_probes: int = 99,
    *,
    probe_batch: int | None = 10,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
    seed: int | None = 0,
) -> TraceEstimate:
    """Hutch++: the trace on a sketched top subspace exactly, Hutchinson on the rest.

    With ``num_probes = m`` operator applications: ``m/3`` to sketch ``Q = orth(H S)``,
    ``m/3`` for ``tr(Q^T H Q)``, ``m/3`` Hutchinson probes of ``(I - QQ^T) H (I - QQ^T)``.
    ``std`` is the standard error of the last part.
    """
    m = int(num_probes)
    if m < 3:
        raise ValueError(f"hutch_plusplus: num_probes must be >= 3, got {num_probes}")
    s = m // 3
    g = m - 2 * s
    gen = _generator(seed, op.device)
    S = _probes((s, op.dim), distribution, gen, op)
    G = _probes((g, op.dim), distribution, gen, op)
    HS = _apply(op, S, probe_batch)  # [s, n]
    Q = torch.linalg.qr(HS.T.double())[0].T.to(op.dtype)  # [s, n] orthonormal rows
    base = float((_apply(op, Q, probe_batch) * Q).sum())
    G = G - (G @ Q.T) @ Q
    return _summary(_quadratic_forms(op, G, probe_batch), base, s + s + g, "hutch++")


def exact_trace(op: LinearOperator, *, probe_batch: int | None = 64) -> TraceEstimate:
    """``sum_i e_i^T H e_i`` with all ``n`` unit vectors (``n`` operator applications)."""
    total = 0.0
    step = op.dim if probe_batch is None else max(1, int(probe_batch))
    diag = []
    for i in range(0, op.dim, step):
        E = torch.zeros(min(step, op.dim - i), op.dim, device=op.device, dtype=op.dtype)
        E[torch.arange(E.shape[0]), torch.arange(i, i + E.shape[0])] = 1
        diag.append(op(E).diagonal(offset=i))
    d = torch.cat(diag).double().cpu()
    total = float(d.sum())
    return TraceEstimate(total, 0.0, op.dim, "exact", d)
