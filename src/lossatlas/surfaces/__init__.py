"""Directions and low-dimensional slices of the loss landscape, and their figures.

Directions are plain ``Tensor[D]`` / ``Tensor[k, D]`` in a model's
:class:`~lossatlas.space.ParamSpace`; slices are affine point sources wrapped in
a :class:`Slice`; :func:`slice_field` evaluates one into a labelled field.

Example
-------
>>> s = random_slice(model, dim=2, resolution=41, span=1.0)
>>> ds = slice_field(Evaluator(model, (X, y)), s)
>>> save_figure(plot_contour(ds), "slice.png")
"""

from .directions import (
    NORMALIZATIONS,
    as_directions,
    flat_params,
    hessian_directions,
    interpolation_direction,
    normalize_direction,
    orthogonalize,
    random_direction,
)
from .plot import plot_contour, plot_curve, plot_surface, plot_trajectory, save_figure
from .slices import (
    DISTANCE_UNITS,
    Slice,
    direction_slice,
    hessian_slice,
    interpolation,
    pca_plane,
    plane,
    random_slice,
    slice_field,
)

__all__ = [
    "DISTANCE_UNITS",
    "NORMALIZATIONS",
    "Slice",
    "as_directions",
    "direction_slice",
    "flat_params",
    "hessian_directions",
    "hessian_slice",
    "interpolation",
    "interpolation_direction",
    "normalize_direction",
    "orthogonalize",
    "pca_plane",
    "plane",
    "plot_contour",
    "plot_curve",
    "plot_surface",
    "plot_trajectory",
    "random_direction",
    "random_slice",
    "save_figure",
    "slice_field",
]
