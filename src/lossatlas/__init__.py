"""lossatlas: map the loss landscape of a population of PyTorch models.

The main objects: :class:`ParamSpace` (model <-> flat vector), :class:`Evaluator`
(loss and metrics of many parameter points at once), point sources and
:func:`compute_field` (slices and maps as labelled xarray fields), :class:`Run`
(a resumable run directory), :class:`Population` (models of one architecture) and
:class:`Atlas` (the global map: embedding, refined loss field, merge tree); the
pipelines the CLI runs (:func:`build_atlas`, :func:`population_barriers`,
:func:`population_terrain`, :func:`run_demo`); :class:`LossatlasError`, the base of
the errors lossatlas raises about its input.
Subpackages: ``surfaces`` (directions and slices), ``manifold`` (embeddings),
``topology`` (persistence, merge trees), ``connectivity``, ``symmetry``,
``curvature``, ``models`` and ``data`` (built-in registries).
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Where each public name lives. Imported on first use (PEP 562), so that
#: ``import lossatlas.cli`` and ``lossatlas --help`` load no torch, xarray or zarr.
_EXPORTS = {
    "Atlas": "atlas",
    "TensorData": "batches", "as_tensor_data": "batches", "num_samples": "batches",
    "to_device": "batches",
    "CheckpointError": "checkpoints", "load_for_model": "checkpoints",
    "load_state_dict": "checkpoints", "match_state_dict": "checkpoints",
    "read_labels": "checkpoints", "save_state_dict": "checkpoints",
    "DatasetSplits": "data", "load_data": "data",
    "run_demo": "demo",
    "LossatlasError": "errors",
    "Evaluator": "evaluate",
    "population_barriers": "connectivity.population",
    "connect_population": "connectivity.population",
    "population_terrain": "curvature.population", "write_terrain": "curvature.population",
    "build_atlas": "pipeline",
    "compute_field": "fields", "log10_loss": "scale",
    "AffineSource": "points", "ExplicitSource": "points", "LatentSource": "points",
    "MappedSource": "points", "PointSource": "points", "grid_axes": "points",
    "Population": "population", "UntrustedRunError": "population",
    "PopulationSourceError": "population", "load_population": "population",
    "Recorder": "recorder",
    "FactoryError": "registry", "Registry": "registry", "UnknownNameError": "registry",
    "resolve_factory": "registry",
    "ParamSpace": "space",
    "Run": "store",
    "train_population": "train",
    "VectorFile": "vectors", "VectorFileWriter": "vectors",
}

_SUBPACKAGES = ("data", "models", "surfaces", "manifold", "topology", "connectivity",
                "symmetry", "curvature", "dynamics", "report", "studies", "distributed",
                "kernels", "batchnorm")


def __getattr__(name: str):
    """Import public names and subpackages on first use (``lossatlas.Atlas``,
    ``lossatlas.curvature.hessian_trace``)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lossatlas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from . import data, models  # noqa: F401
    from .atlas import Atlas  # noqa: F401
    from .evaluate import Evaluator  # noqa: F401
    from .population import Population  # noqa: F401
    from .space import ParamSpace  # noqa: F401
    from .store import Run  # noqa: F401

__all__ = [
    "AffineSource",
    "Atlas",
    "CheckpointError",
    "DatasetSplits",
    "Evaluator",
    "ExplicitSource",
    "FactoryError",
    "LossatlasError",
    "LatentSource",
    "MappedSource",
    "ParamSpace",
    "PointSource",
    "Population",
    "PopulationSourceError",
    "Recorder",
    "Registry",
    "Run",
    "TensorData",
    "UnknownNameError",
    "UntrustedRunError",
    "VectorFile",
    "VectorFileWriter",
    "as_tensor_data",
    "build_atlas",
    "compute_field",
    "connect_population",
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
    "population_barriers",
    "population_terrain",
    "read_labels",
    "resolve_factory",
    "run_demo",
    "save_state_dict",
    "to_device",
    "train_population",
    "write_terrain",
]
