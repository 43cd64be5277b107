"""lossatlas: map the loss landscape of a population of PyTorch models.

The main objects: :class:`ParamSpace` (model <-> flat vector), :class:`Evaluator`
(loss and metrics of many parameter points at once), point sources and
:func:`compute_field` (slices and maps as labelled xarray fields), :class:`Run`
(a resumable run directory), :class:`Population` (models of one architecture) and
:class:`Atlas` (the global map: embedding, refined loss field, merge tree).
Subpackages: ``surfaces`` (directions and slices), ``manifold`` (embeddings),
``topology`` (persistence, merge trees), ``connectivity``, ``symmetry``,
``curvature``, ``models`` and ``data`` (built-in registries).
"""

from . import data, models
from .atlas import Atlas
from .batches import TensorData, as_tensor_data, num_samples, to_device
from .checkpoints import (
    CheckpointError,
    load_for_model,
    load_state_dict,
    match_state_dict,
    read_labels,
    save_state_dict,
)
from .data import DatasetSplits, load_data
from .evaluate import Evaluator
from .fields import compute_field, log10_loss
from .points import (
    AffineSource,
    ExplicitSource,
    LatentSource,
    MappedSource,
    PointSource,
    grid_axes,
)
from .population import Population, UntrustedRunError, load_population
from .recorder import Recorder
from .registry import FactoryError, Registry, UnknownNameError, resolve_factory
from .space import ParamSpace
from .store import Run
from .train import train_population
from .vectors import VectorFile, VectorFileWriter

__version__ = "0.1.0"

_SUBPACKAGES = ("surfaces", "manifold", "topology", "connectivity", "symmetry", "curvature",
                "dynamics", "report", "studies", "distributed", "kernels")


def __getattr__(name: str):
    """Import subpackages on first use (``lossatlas.curvature.hessian_trace`` works)."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lossatlas' has no attribute {name!r}")


__all__ = [
    "AffineSource",
    "Atlas",
    "CheckpointError",
    "DatasetSplits",
    "Evaluator",
    "ExplicitSource",
    "FactoryError",
    "LatentSource",
    "MappedSource",
    "ParamSpace",
    "PointSource",
    "Population",
    "Recorder",
    "Registry",
    "Run",
    "TensorData",
    "UnknownNameError",
    "UntrustedRunError",
    "VectorFile",
    "VectorFileWriter",
    "as_tensor_data",
    "compute_field",
    "data",
    "grid_axes",
    "load_data",
    "load_for_model",
    "load_population",
    "load_state_dict",
    "log10_loss",
    "match_state_dict",
    "models",
    "num_samples",
    "read_labels",
    "resolve_factory",
    "save_state_dict",
    "to_device",
    "train_population",
]
