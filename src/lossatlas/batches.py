"""User data in any common form -> inputs and targets as tensors, iterated in batches.

Inputs ``x`` are one tensor ``[N, ...]`` or an *input tree*: a dict, tuple or list of
tensors (nested freely) sharing the leading sample axis, e.g. a DataLoader's
``({"input_ids": [B, T], "attention_mask": [B, T]}, labels)`` batches. Targets ``y``
are one tensor ``[N, ...]``. The module functions (`num_samples`, `to_device`,
`index_inputs`, `map_inputs`, ...) work on both forms; a tensor takes the shortest path.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ._compat import renamed_argument
from .errors import InputTypeError

__all__ = [
    "Inputs",
    "TensorData",
    "as_tensor_data",
    "concat_inputs",
    "index_inputs",
    "input_leaves",
    "input_nbytes",
    "is_xy_pair",
    "map_inputs",
    "num_samples",
    "sample_shape",
    "stack_inputs",
    "to_device",
]

Inputs: TypeAlias = "Tensor | Mapping[str, Any] | tuple[Any, ...] | list[Any]"
"""A tensor, or a dict / tuple / list of tensors (nested) with one leading sample axis."""


def map_inputs(fn: Callable[[Tensor], Tensor], x: Inputs) -> Inputs:
    """``fn`` applied to every tensor of ``x``; returns the same structure (mappings
    come back as dicts, named tuples as their own type)."""
    if isinstance(x, Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: map_inputs(fn, v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
        return type(x)(*(map_inputs(fn, v) for v in x))
    if isinstance(x, (tuple, list)):
        return type(x)(map_inputs(fn, v) for v in x)
    raise InputTypeError(
        f"data: inputs must be a tensor or a dict / tuple / list of tensors, found a "
        f"{type(x).__name__}"
    )


def input_leaves(x: Inputs, name: str = "x") -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` for every tensor of ``x`` in order, named like ``x['input_ids']``
    or ``x[1]``; raises `TypeError` naming a leaf that is not a tensor."""
    if isinstance(x, Tensor):
        return [(name, x)]
    if isinstance(x, Mapping):
        return [leaf for k, v in x.items() for leaf in input_leaves(v, f"{name}[{k!r}]")]
    if isinstance(x, (tuple, list)):
        return [leaf for i, v in enumerate(x) for leaf in input_leaves(v, f"{name}[{i}]")]
    raise InputTypeError(
        f"data: input {name} is a {type(x).__name__}; inputs must be tensors, or dicts / "
        "tuples / lists of tensors"
    )


def num_samples(x: Inputs) -> int:
    """The leading (sample) size of ``x``; for an input tree, checks that every tensor
    has the same one and raises `ValueError` naming the first that differs."""
    if isinstance(x, Tensor):
        if x.dim() == 0:
            raise ValueError("data: input x is a 0-d tensor; it needs a leading sample axis")
        return int(x.shape[0])
    leaves = input_leaves(x)
    if not leaves:
        raise ValueError(f"data: the inputs x (a {type(x).__name__}) hold no tensors")
    first_name, first = leaves[0]
    n = None
    for name, t in leaves:
        if t.dim() == 0:
            raise ValueError(f"data: input {name} is a 0-d tensor; it needs a leading sample axis")
        if n is None:
            n = int(t.shape[0])
        elif t.shape[0] != n:
            raise ValueError(
                f"data: input {name} has {t.shape[0]} samples but {first_name} has {n}; every "
                "input tensor needs the same leading (sample) size"
            )
    assert n is not None
    return n


def sample_shape(x: Inputs) -> Any:
    """Shape of one sample: ``tuple(x.shape[1:])`` for a tensor, the same tree of such
    tuples for an input tree (``{"input_ids": (T,), ...}``)."""
    if isinstance(x, Tensor):
        return tuple(x.shape[1:])
    if isinstance(x, Mapping):
        return {k: sample_shape(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(sample_shape(v) for v in x)
    input_leaves(x)  # raises the TypeError naming the leaf
    raise AssertionError("unreachable")


def to_device(x: Inputs, device: torch.device | str, non_blocking: bool = False) -> Inputs:
    """``x`` (a tensor or an input tree) with every tensor moved to ``device``."""
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=non_blocking)
    return map_inputs(lambda t: t.to(device, non_blocking=non_blocking), x)


def index_inputs(x: Inputs, index: slice | Tensor | Sequence[int]) -> Inputs:
    """The samples ``index`` of ``x`` along the leading axis: views for a slice, copies
    for an index tensor or list."""
    if not isinstance(index, (slice, Tensor)):
        index = torch.as_tensor(index, dtype=torch.long)
    if isinstance(x, Tensor):
        return x[index]
    return map_inputs(lambda t: t[index], x)


def input_nbytes(x: Inputs) -> int:
    """Bytes held by the tensors of ``x``."""
    return sum(t.numel() * t.element_size() for _, t in input_leaves(x))


def _combine(parts: list, op: Callable[[list[Tensor]], Tensor], what: str, who: str,
             name: str = "x") -> Inputs:
    """Join matching input trees leaf by leaf with ``op`` (``torch.cat`` / ``torch.stack``);
    errors name the input and the ``what`` (item / batch) that does not match."""
    first = parts[0]
    for i, p in enumerate(parts):
        kind_first = "tensor" if isinstance(first, Tensor) else type(first).__name__
        kind = "tensor" if isinstance(p, Tensor) else type(p).__name__
        same = isinstance(p, Tensor) if isinstance(first, Tensor) else (
            isinstance(p, Mapping) if isinstance(first, Mapping) else
            isinstance(p, (tuple, list)) and not isinstance(p, Mapping))
        if not same:
            raise InputTypeError(
                f"{who}: input {name} is a {kind} in {what} {i} but a {kind_first} in {what} 0"
            )
        if isinstance(first, Mapping) and list(p.keys()) != list(first.keys()):
            raise ValueError(
                f"{who}: input {name} has keys {list(p.keys())} in {what} {i} but "
                f"{list(first.keys())} in {what} 0"
            )
        if isinstance(first, (tuple, list)) and len(p) != len(first):
            raise ValueError(
                f"{who}: input {name} has {len(p)} entries in {what} {i} but {len(first)} "
                f"in {what} 0"
            )
    if isinstance(first, Tensor):
        try:
            return op(parts)
        except RuntimeError as exc:
            shapes = sorted({tuple(p.shape) for p in parts})[:3]
            raise ValueError(
                f"{who}: cannot join input {name} across {what}s (shapes {shapes}, ...): "
                f"{str(exc).splitlines()[0]}"
            ) from exc
    if isinstance(first, Mapping):
        return {k: _combine([p[k] for p in parts], op, what, who, f"{name}[{k!r}]")
                for k in first}
    joined = [_combine([p[j] for p in parts], op, what, who, f"{name}[{j}]")
              for j in range(len(first))]
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*joined)
    return type(first)(joined)


@renamed_argument("where", "who")
def concat_inputs(parts: list[Inputs], who: str = "data") -> Inputs:
    """Input trees of the same structure concatenated along the sample axis (batches ->
    one set)."""
    return _combine(parts, torch.cat, "batch", who)


@renamed_argument("where", "who")
def stack_inputs(parts: list[Inputs], who: str = "data") -> Inputs:
    """Input trees of single samples stacked into one with a new sample axis (items ->
    one set)."""
    return _combine(parts, torch.stack, "item", who)


@dataclass
class TensorData:
    """Inputs ``x`` (a tensor ``[N, ...]`` or an input tree of such tensors) and targets
    ``y`` ``[N, ...]``."""

    x: Inputs
    y: Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0] if isinstance(self.x, Tensor) else num_samples(self.x)
        if n != self.y.shape[0]:
            raise ValueError(f"data: inputs have {n} samples but targets have {self.y.shape[0]}")
        if n == 0:
            raise ValueError("data: the dataset is empty")

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def is_tree(self) -> bool:
        """True when ``x`` is a dict / tuple / list of tensors rather than one tensor."""
        return not isinstance(self.x, Tensor)

    @property
    def nbytes(self) -> int:
        """Bytes held by the inputs and the targets."""
        x_bytes = (self.x.numel() * self.x.element_size() if isinstance(self.x, Tensor)
                   else input_nbytes(self.x))
        return x_bytes + self.y.numel() * self.y.element_size()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TensorData:
        """A copy with every tensor on ``device``."""
        return TensorData(
            to_device(self.x, device, non_blocking=non_blocking),
            self.y.to(device, non_blocking=non_blocking),
        )

    def pin(self) -> TensorData:
        """Page-locked copies (host side), for asynchronous copies to a GPU; ``self`` when
        no GPU is present or the data are not on the CPU."""
        if self.y.device.type != "cpu" or not torch.cuda.is_available():
            return self
        if isinstance(self.x, Tensor):
            if self.x.device.type != "cpu":
                return self
            return TensorData(self.x.pin_memory(), self.y.pin_memory())
        if any(t.device.type != "cpu" for _, t in input_leaves(self.x)):
            return self
        return TensorData(map_inputs(Tensor.pin_memory, self.x), self.y.pin_memory())

    def batches(self, batch_size: int | None = None) -> Iterator[tuple[Inputs, Tensor]]:
        """Consecutive ``(x, y)`` slices (views) of at most ``batch_size`` samples."""
        n = len(self)
        bs = n if batch_size is None else max(1, int(batch_size))
        if isinstance(self.x, Tensor):
            for i in range(0, n, bs):
                yield self.x[i : i + bs], self.y[i : i + bs]
            return
        for i in range(0, n, bs):
            yield index_inputs(self.x, slice(i, i + bs)), self.y[i : i + bs]

    def head(self, n: int) -> TensorData:
        """The first ``n`` samples (views)."""
        return TensorData(index_inputs(self.x, slice(0, n)), self.y[:n])

    def subset(self, n: int | Tensor | Sequence[int]) -> TensorData:
        """The first ``n`` samples (views) for an int, else the samples at the indices
        ``n`` (copies)."""
        if isinstance(n, numbers.Integral):
            return self.head(int(n))
        index = n if isinstance(n, Tensor) else torch.as_tensor(n, dtype=torch.long)
        return TensorData(index_inputs(self.x, index), self.y[index])


def _is_numeric_seq(v: Any) -> bool:
    """A (nested) list / tuple of numbers, to be read as one tensor."""
    while isinstance(v, (list, tuple)) and v and not isinstance(v, Mapping):
        v = v[0]
    return isinstance(v, (numbers.Number, np.number, np.bool_))


def _as_input_tensors(x: Any, who: str, name: str = "x") -> Inputs:
    """Arrays, numbers and numeric lists inside ``x`` -> tensors (float64 from numpy or
    Python -> float32, torch's default); dicts / tuples / lists of them kept as trees."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Mapping):
        return {k: _as_input_tensors(v, who, f"{name}[{k!r}]") for k, v in x.items()}
    if isinstance(x, (tuple, list)) and not _is_numeric_seq(x):
        if not x:
            raise ValueError(f"{who}: input {name} is an empty {type(x).__name__}")
        parts = [_as_input_tensors(v, who, f"{name}[{i}]") for i, v in enumerate(x)]
        return type(x)(*parts) if hasattr(x, "_fields") else type(x)(parts)
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputTypeError(
            f"{who}: input {name} is a {type(x).__name__}, which is not a tensor, array or "
            "number"
        ) from exc
    return t.float() if t.dtype == torch.float64 else t


def is_xy_pair(data: Any) -> bool:
    """True for a 2-tuple / list read as ``(X, y)``: targets that are a tensor, an array or
    a list of numbers (not a list of ``(x, y)`` items, nor a pair of datasets)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    y = data[1]
    if isinstance(y, (list, tuple)):
        return bool(y) and _is_numeric_seq(y)
    return not isinstance(y, (Mapping, Dataset, DataLoader, TensorData))


def _split_items(items: list, who: str, what: str) -> tuple[list, list]:
    """``(x, y)`` items or batches -> lists of input trees and target tensors."""
    xs, ys = [], []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InputTypeError(
                f"{who}: {what} {i} is {type(item).__name__}; expected an (input, target) pair"
            )
        xs.append(_as_input_tensors(item[0], who))
        ys.append(torch.as_tensor(item[1]))
    return xs, ys


@renamed_argument("where", "who")
def as_tensor_data(data: Any, who: str = "data") -> TensorData:
    """Normalise ``data`` to :class:`TensorData`.

    Accepts a ``(X, y)`` pair of tensors (or arrays; ``X`` may be a dict / tuple of
    them), a map-style ``Dataset`` of ``(x, y)`` items, a ``DataLoader`` yielding
    ``(x, y)`` batches (iterated once and concatenated in memory), or a
    :class:`TensorData`. Errors start with ``who``.
    """
    if isinstance(data, TensorData):
        return data
    if isinstance(data, DataLoader):
        xs, ys = _split_items(list(data), who, "batch")
        if not xs:
            raise ValueError(f"{who}: the DataLoader yielded no batches")
        return TensorData(concat_inputs(xs, who), torch.cat(ys))
    if is_xy_pair(data):
        x = data[0]
        if isinstance(x, (Tensor, np.ndarray)) or not isinstance(x, (Mapping, tuple, list)):
            from_numpy = not isinstance(x, Tensor)
            x = torch.as_tensor(x)
            if from_numpy and x.dtype == torch.float64:
                x = x.float()  # numpy's default float64 -> torch's default float32
        else:
            x = _as_input_tensors(x, who)
        return TensorData(x, torch.as_tensor(data[1]))
    if isinstance(data, IterableDataset):
        raise InputTypeError(
            f"{who}: an IterableDataset ({type(data).__name__}) has no length; wrap it in a "
            "DataLoader(dataset, batch_size=...)"
        )
    if isinstance(data, Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise InputTypeError(
                f"{who}: the Dataset {type(data).__name__} has no __len__; give it one or "
                "wrap it in a DataLoader"
            ) from exc
        if n == 0:
            raise ValueError(f"{who}: the Dataset is empty")
        xs, ys = _split_items([data[i] for i in range(n)], who, "item")
        return TensorData(stack_inputs(xs, who), torch.stack(ys))
    raise InputTypeError(
        f"{who}: expected an (X, y) tensor pair, a Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )
