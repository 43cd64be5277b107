"""Connectivity between models: barriers along straight paths, trained curves,
layer-wise barriers and per-layer noise tolerance.

Every result is a labelled xarray object whose ``attrs`` record the barrier
definition (``"entezari"``, ``"midpoint"`` or ``"mean"``) and how BatchNorm
statistics were handled (``bn``).
"""

from .barriers import (
    DEFINITIONS,
    METRICS,
    barrier,
    barrier_curve,
    barrier_from_values,
    barrier_matrix,
    make_evaluator,
)
from .curves import CURVES, CurveResult, curve_points, evaluate_curve, train_curve
from .layerwise import (
    LAYER_NOISE_NAME,
    default_groups,
    layer_noise_tolerance,
    layerwise_barriers,
    layerwise_profile,
    write_layer_noise,
)

__all__ = [
    "CURVES",
    "DEFINITIONS",
    "LAYER_NOISE_NAME",
    "METRICS",
    "CurveResult",
    "barrier",
    "barrier_curve",
    "barrier_from_values",
    "barrier_matrix",
    "curve_points",
    "default_groups",
    "evaluate_curve",
    "layer_noise_tolerance",
    "layerwise_barriers",
    "layerwise_profile",
    "make_evaluator",
    "train_curve",
    "write_layer_noise",
]
