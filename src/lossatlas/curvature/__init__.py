"""Terrain: local curvature and complexity at points of the loss landscape.

Hessian-vector products (:class:`HVP`, ``torch.func`` forward-over-reverse,
batched over probe vectors), top eigenpairs (Lanczos, deflated power
iteration), traces (Hutchinson, Hutch++), spectral densities (stochastic
Lanczos quadrature), sharpness (epsilon and adaptive) and the local learning
coefficient (SGLD), for one model or a population (:func:`terrain`).
Eigenvalues are in units of loss per squared parameter.
"""

from .density import SpectralDensity, slq, spectral_density
from .hvp import HVP, LinearOperator, MatrixOperator
from .lanczos import EigenResult, lanczos, lanczos_tridiagonal, power_iteration
from .spectrum import (
    group_spectra,
    hessian_density,
    hessian_eigen,
    hessian_eigenvalues,
    hessian_trace,
    hessian_trace_estimate,
    layer_groups,
)
from .trace import TraceEstimate, exact_trace, hutch_plusplus, hutchinson

__all__ = [
    "HVP",
    "EigenResult",
    "LinearOperator",
    "MatrixOperator",
    "SpectralDensity",
    "TraceEstimate",
    "exact_trace",
    "group_spectra",
    "hessian_density",
    "hessian_eigen",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_trace_estimate",
    "hutch_plusplus",
    "hutchinson",
    "lanczos",
    "lanczos_tridiagonal",
    "layer_groups",
    "power_iteration",
    "slq",
    "spectral_density",
]
