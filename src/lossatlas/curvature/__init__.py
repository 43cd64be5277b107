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
from .lanczos import EigenResult, block_lanczos, lanczos, lanczos_tridiagonal, power_iteration
from .llc import LLCResult, SGLDState, default_nbeta, llc, sgld_init, sgld_step
from .plot import plot_density, plot_llc_trace
from .saddles import SaddleCheck, atlas_saddles, saddle_check
from .sharpness import max_loss_increase, sharpness
from .spectrum import (
    group_spectra,
    hessian_density,
    hessian_eigen,
    hessian_eigen_trace,
    hessian_eigenvalues,
    hessian_trace,
    hessian_trace_estimate,
    layer_groups,
)
from .terrain import terrain
from .trace import TraceEstimate, eigen_and_trace, exact_trace, hutch_plusplus, hutchinson

__all__ = [
    "EigenResult",
    "HVP",
    "LLCResult",
    "LinearOperator",
    "MatrixOperator",
    "SGLDState",
    "SaddleCheck",
    "SpectralDensity",
    "TraceEstimate",
    "atlas_saddles",
    "block_lanczos",
    "default_nbeta",
    "eigen_and_trace",
    "exact_trace",
    "group_spectra",
    "hessian_density",
    "hessian_eigen",
    "hessian_eigen_trace",
    "hessian_eigenvalues",
    "hessian_trace",
    "hessian_trace_estimate",
    "hutch_plusplus",
    "hutchinson",
    "lanczos",
    "lanczos_tridiagonal",
    "layer_groups",
    "llc",
    "max_loss_increase",
    "plot_density",
    "plot_llc_trace",
    "power_iteration",
    "saddle_check",
    "sgld_init",
    "sgld_step",
    "sharpness",
    "slq",
    "spectral_density",
    "terrain",
]
