"""Example inputs for tracing a model, inferred when the caller gives none.

Tracing a model (permutation specs, matching, rescaling, aligned distances)
needs a small batch of inputs of the right shape; its values do not matter.
:func:`infer_example_input` takes one, in this order, from

1. ``data`` (its first samples), when given;
2. ``model.example_input(n)``, when the model has that method;
3. the model's layers: the first ``Linear``, ``Conv1d/2d/3d`` (or transposed
   convolution) or ``Embedding`` in ``model.modules()`` order whose input shape
   runs through the whole model, checked by a forward pass in eval mode without
   gradients. A convolution's spatial size is the first of 32, 28, 64, 16, 8
   (then larger / smaller fallbacks) that the network accepts, so a CNN whose
   Linear head was built for 28x28 images gets 28x28.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._compat import renamed_argument
from ..batches import TensorData, as_tensor_data
from ..errors import InputTypeError

__all__ = ["infer_example_input", "resolve_example_input"]

# spatial sizes tried for a convolution's input, in order (per spatial dimension)
SPATIAL_SIZES = (32, 28, 64, 16, 8)
_EXTRA_SIZES = {1: (128, 256, 1024), 2: (224, 4, 1), 3: (4, 1)}
# sequence lengths tried for token ids of an Embedding
SEQUENCE_LENGTHS = (16, 8, 32, 4, 1)
_SEED = 0


def _first_samples(data: Any, n: int, who: str) -> Tensor:
    """The inputs of the first ``n`` samples of ``data`` without materialising the rest."""
    if isinstance(data, Tensor):  # inputs alone
        return data[:n]
    if isinstance(data, TensorData):
        return data.x[:n]
    if isinstance(data, DataLoader):
        try:
            batch = next(iter(data))
        except StopIteration:
            raise ValueError(f"{who}: the DataLoader yielded no batches") from None
        return as_tensor_data(batch, who).x[:n]
    if isinstance(data, Dataset):
        size = len(data)  # type: ignore[arg-type]
        return as_tensor_data(Subset(data, range(min(n, size))), who).x[:n]
    return as_tensor_data(data, who).x[:n]


def _run(model: nn.Module, x: Tensor) -> None:
    """One forward pass in eval mode without gradients; every module's mode is restored."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for m, was in modes:
            m.training = was


def _describe(layer: nn.Module) -> str:
    return f"{type(layer).__name__}({layer.extra_repr()})"


def _candidates(layer: nn.Module, n: int) -> Iterator[Tensor]:
    """Inputs shaped for ``layer`` being the model's first layer (CPU, seeded)."""
    gen = torch.Generator().manual_seed(_SEED)
    weight = getattr(layer, "weight", None)
    dtype = weight.dtype if isinstance(weight, Tensor) and weight.is_floating_point() else None
    dtype = dtype or torch.get_default_dtype()
    if isinstance(layer, nn.Embedding):
        for length in SEQUENCE_LENGTHS:
            yield torch.randint(0, layer.num_embeddings, (n, length), generator=gen)
    elif isinstance(layer, nn.Linear):
        yield torch.randn(n, layer.in_features, generator=gen, dtype=dtype)
    elif isinstance(layer, nn.modules.conv._ConvNd):
        dims = len(layer.kernel_size)
        for size in SPATIAL_SIZES + _EXTRA_SIZES.get(dims, ()):
            yield torch.randn(n, layer.in_channels, *([size] * dims), generator=gen, dtype=dtype)


def _usable(layer: nn.Module) -> bool:
    if not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd, nn.Embedding)):
        return False
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
        return False  # a lazy layer does not know its input size yet
    return True


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@renamed_argument("where", "who")
def infer_example_input(
    model: nn.Module, data: Any = None, batch_size: int = 2, *, who: str = "infer_example_input"
) -> Tensor | tuple[Tensor, ...]:
    """A small batch of inputs for ``model``, e.g. to trace it.

    Parameters
    ----------
    model : nn.Module
    data : (X, y) pair, Dataset, DataLoader, TensorData or a tensor of inputs, optional
        When given, its first ``batch_size`` inputs are returned as they are
        (only the first batch of a DataLoader, only the first items of a Dataset
        are read).
    batch_size : int
        Samples in the returned batch.
    who : str
        The caller named in error messages.

    Returns
    -------
    Tensor (or the tuple of positional inputs ``model.example_input`` gives):
    the first samples of ``data``; else ``model.example_input(batch_size)``;
    else a seeded random batch shaped for the model's first usable layer, on the
    device of the model's parameters: ``float [n, in_features]`` for a Linear,
    ``float [n, in_channels, s, s]`` for a Conv2d (``s`` the first spatial size
    the network accepts; Conv1d / Conv3d alike), ``long [n, 16]`` token ids in
    ``[0, num_embeddings)`` for an Embedding.

    Raises
    ------
    TypeError if ``model`` is not an nn.Module or ``data`` is of an unsupported type.
    ValueError naming the model class when no input can be inferred (no usable
    layer, or no inferred shape runs through the model): pass
    ``example_input=`` or ``data=``.
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"{who}: expected an nn.Module, got {type(model).__name__}")
    n = int(batch_size)
    if n < 1:
        raise ValueError(f"{who}: batch_size must be >= 1, got {batch_size}")
    if data is not None:
        x = _first_samples(data, n, f"{who} data")
        if len(x) == 0:
            raise ValueError(f"{who}: data holds no samples to take an example input from")
        return x
    if callable(getattr(model, "example_input", None)):
        return model.example_input(n)
    name = type(model).__name__
    hint = "pass example_input=<a small batch of inputs> (or data=)"
    layers = [m for m in model.modules() if _usable(m)]
    if not layers:
        raise ValueError(
            f"{who}: cannot infer an example input for {name}: it has no example_input() "
            f"method and no Linear, Conv or Embedding layer to shape one after; {hint}"
        )
    device = _device_of(model)
    failures: list[str] = []
    tried: set[tuple] = set()
    for layer in layers:
        last: str | None = None
        for x in _candidates(layer, n):
            key = (tuple(x.shape), x.dtype)
            if key in tried:
                continue
            tried.add(key)
            x = x.to(device)
            try:
                _run(model, x)
            except Exception as err:  # noqa: BLE001 - any failure rules this shape out
                last = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                continue
            return x
        if last is not None:
            failures.append(f"{_describe(layer)} -> {last}")
    shown = "; ".join(failures[:3]) + (f"; ... ({len(failures) - 3} more)"
                                       if len(failures) > 3 else "")
    raise ValueError(
        f"{who}: cannot infer an example input for {name}: no input shaped after its "
        f"Linear/Conv/Embedding layers runs through it ({shown}); {hint}"
    )


@renamed_argument("where", "who")
def resolve_example_input(
    model: nn.Module, example_input: Tensor | tuple | None = None, data: Any = None,
    *, who: str = "example_input",
) -> Tensor | tuple:
    """``example_input`` when given, else :func:`infer_example_input` ``(model, data)``.

    The one place the symmetry functions turn their ``example_input=`` / ``data=``
    arguments into the batch they trace on: an explicit ``example_input`` wins,
    then ``data``, then the model's own ``example_input()``, then inference.
    """
    if example_input is not None:
        return example_input
    return infer_example_input(model, data, who=who)
