"""Spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .hvp import LinearOperator
from .lanczos import _generator, _tridiagonal, lanczos_tridiagonal

__all__ = ["SpectralDensity", "slq", "spectral_density"]


@dataclass
class SpectralDensity:
    """A Gaussian-broadened eigenvalue density.

    Attributes
    ----------
    grid : Tensor[G]
        Eigenvalue axis (loss per squared parameter).
    density : Tensor[G]
        Density on ``grid``, integrating to 1 (fraction of eigenvalues per unit).
    nodes, weights : Tensor[R, J]
        Quadrature nodes (Ritz values) and weights of each of ``R`` runs; the
        weights of a run sum to 1.
    sigma : float
        Standard deviation of the Gaussian kernel.
    """

    grid: Tensor
    density: Tensor
    nodes: Tensor
    weights: Tensor
    sigma: float

    def moment(self, p: int) -> float:
        """``sum_runs sum_i w_i theta_i^p / R``: estimates ``tr(H^p) / n`` (no broadening)."""
        return float((self.weights * self.nodes**p).sum(1).mean())

    def mass_below(self, x: float, broadened: bool = False) -> Tensor:
        """Per-run spectral mass below ``x``, Tensor[R] (fractions in [0, 1]).

        Without broadening: ``sum_i w_i [theta_i < x]``, each run an unbiased
        estimate of ``#{eigenvalues < x} / n`` once its Lanczos run resolves the
        spectrum there. With ``broadened``: the integral of the Gaussian-broadened
        density below ``x``, ``sum_i w_i Phi((x - theta_i) / sigma)``.
        """
        if broadened:
            cdf = 0.5 * torch.erfc(-(x - self.nodes) / (self.sigma * math.sqrt(2.0)))
            return (self.weights * cdf).sum(1)
        return (self.weights * (self.nodes < x)).sum(1)

    def negative_mass(self, tol: float = 0.0, broadened: bool = False) -> float:
        """Fraction of the spectrum at eigenvalues below ``-tol`` (mean over runs).

        The negative-eigenvalue mass of the Hessian: 0 at a minimum, positive at a
        saddle or a point of negative curvature. ``tol`` (loss per squared
        parameter, >= 0) leaves out Ritz values within rounding of 0; see
        :meth:`mass_below` for ``broadened``. The standard error is
        ``mass_below(-tol).std() / sqrt(R)``.
        """
        if not tol >= 0:
            raise ValueError(f"SpectralDensity.negative_mass: tol must be >= 0, got {tol}")
        return float(self.mass_below(-float(tol), broadened).mean())


def slq(
    op: LinearOperator,
    num_iter: int = 80,
    num_runs: int = 10,
    *,
    seed: int | None = 0,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Nodes and weights Tensor[R, J] of ``num_runs`` Lanczos quadratures from Rademacher
    start vectors (run together: one batched operator call per step; memory ``R J n``;
    a bar over the steps when ``progress``, ``None``: auto)."""
    if int(num_iter) < 1 or int(num_runs) < 1:
        raise ValueError(f"slq: num_iter and num_runs must be >= 1, got {num_iter} and {num_runs}")
    gen = _generator(seed, op.device)
    r = torch.randint(0, 2, (int(num_runs), op.dim), device=op.device, generator=gen)
    V0 = (2 * r - 1).to(op.dtype)
    alphas, betas, _, _ = lanczos_tridiagonal(op, V0, int(num_iter), generator=gen,
                                              progress=progress, desc="density (SLQ)")
    theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas).double())
    return theta.cpu(), (S[:, 0, :] ** 2).cpu()


def spectral_density(
    op: LinearOperator,
    num_iter: int = 80,
    num_runs: int = 10,
    *,
    sigma: float | None = None,
    grid: Tensor | None = None,
    num_points: int = 2000,
    seed: int | None = 0,
    progress: bool | None = None,
) -> SpectralDensity:
    """Eigenvalue density of ``op`` by stochastic Lanczos quadrature.

    Parameters
    ----------
    num_iter : int
        Lanczos steps per run (quadrature exact for polynomials of degree < 2 num_iter).
    num_runs : int
        Independent runs averaged.
    sigma : float, optional
        Gaussian broadening; default 1% of the Ritz value range.
    grid : Tensor[G], optional
        Default: ``num_points`` points from the smallest Ritz value - 6 sigma to the
        largest + 6 sigma.
    progress : bool, optional
        A bar over the Lanczos steps (``None``: auto, see :mod:`lossatlas.progress`).
    """
    nodes, weights = slq(op, num_iter, num_runs, seed=seed, progress=progress)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else max(1e-3 * abs(hi), 1e-6)
    if sigma <= 0:
        raise ValueError(f"spectral_density: sigma must be positive, got {sigma}")
    if grid is None:
        grid = torch.linspace(lo - 6 * sigma, hi + 6 * sigma, int(num_points), dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    z = (grid[None, None, :] - nodes[:, :, None]) / sigma  # [R, J, G]
    kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    density = (weights[:, :, None] * kernel).sum(1).mean(0)
    return SpectralDensity(grid, density, nodes, weights, float(sigma))
