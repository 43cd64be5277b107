"""lossatlas: map the loss landscape of a population of PyTorch models.

The main objects: :class:`ParamSpace` (model <-> flat vector), :class:`Evaluator`
(loss and metrics of many parameter points at once), point sources and
:func:`compute_field` (slices and maps as labelled xarray fields), :class:`Run`
(a resumable run directory).
"""

from .batches import TensorData, as_tensor_data
from .evaluate import Evaluator
from .fields import compute_field, log10_loss
from .points import AffineSource, ExplicitSource, MappedSource, PointSource, grid_axes
from .space import ParamSpace
from .store import Run

__version__ = "0.1.0"

__all__ = [
    "AffineSource",
    "Evaluator",
    "ExplicitSource",
    "MappedSource",
    "ParamSpace",
    "PointSource",
    "Run",
    "TensorData",
    "as_tensor_data",
    "compute_field",
    "grid_axes",
    "log10_loss",
]
