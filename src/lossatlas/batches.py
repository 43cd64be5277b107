"""User data in any common form -> one pair of tensors, iterated in batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["TensorData", "as_tensor_data"]


@dataclass
class TensorData:
    """Inputs ``x`` [N, ...] and targets ``y`` [N, ...] held as two tensors."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"data: inputs have {self.x.shape[0]} samples but targets have {self.y.shape[0]}"
            )
        if self.x.shape[0] == 0:
            raise ValueError("data: the dataset is empty")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size() + self.y.numel() * self.y.element_size()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TensorData:
        return TensorData(
            self.x.to(device, non_blocking=non_blocking),
            self.y.to(device, non_blocking=non_blocking),
        )

    def pin(self) -> TensorData:
        """Page-locked copies (host side), for asynchronous copies to a GPU."""
        if self.x.device.type != "cpu" or not torch.cuda.is_available():
            return self
        return TensorData(self.x.pin_memory(), self.y.pin_memory())

    def batches(self, batch_size: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive ``(x, y)`` slices (views) of at most ``batch_size`` samples."""
        n = len(self)
        bs = n if batch_size is None else max(1, int(batch_size))
        for i in range(0, n, bs):
            yield self.x[i : i + bs], self.y[i : i + bs]

    def subset(self, n: int) -> TensorData:
        """The first ``n`` samples (views)."""
        return TensorData(self.x[:n], self.y[:n])


def _stack_items(items: list, where: str) -> TensorData:
    xs, ys = [], []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(
                f"{where}: item {i} is {type(item).__name__}; expected an (input, target) pair"
            )
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    return xs, ys


def as_tensor_data(data, where: str = "data") -> TensorData:
    """Normalise ``data`` to :class:`TensorData`.

    Accepts a ``(X, y)`` pair of tensors (or arrays), a map-style ``Dataset`` of
    ``(x, y)`` items, a ``DataLoader`` yielding ``(x, y)`` batches (iterated once
    and concatenated in memory), or a :class:`TensorData`.
    """
    if isinstance(data, TensorData):
        return data
    if isinstance(data, DataLoader):
        xs, ys = _stack_items(list(data), where)
        if not xs:
            raise ValueError(f"{where}: the DataLoader yielded no batches")
        return TensorData(torch.cat(xs), torch.cat(ys))
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple):
        from_numpy = not isinstance(data[0], torch.Tensor)
        x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
        if from_numpy and x.dtype == torch.float64:
            x = x.float()  # numpy's default float64 -> torch's default float32
        return TensorData(x, y)
    if isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(f"{where}: the Dataset is empty")
        xs, ys = _stack_items([data[i] for i in range(n)], where)
        return TensorData(torch.stack(xs), torch.stack(ys))
    raise TypeError(
        f"{where}: expected an (X, y) tensor pair, a Dataset or a DataLoader, "
        f"got {type(data).__name__}"
    )
