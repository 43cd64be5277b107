"""The atlas's host-memory budget: how big a block, a chunk, a share may be.

One small frozen dataclass answers every sizing question of the atlas's stages from the
budget (bytes, or ``None`` for no limit) and the population's shape ``[N, D]``:

>>> b = MemoryBudget.parse("64MiB", models=100, width=10_000)
>>> b.rows_per_chunk(), b.block_size(), b.basis_on_disk()
(419, 10485, False)
"""

from __future__ import annotations

import dataclasses

import torch

from .vectors import parse_bytes, return_freed_memory

__all__ = ["MemoryBudget"]

# decoded parameter vectors held at once when no memory budget is given (bytes)
DECODE_BYTES = 2**30


@dataclasses.dataclass(frozen=True)
class MemoryBudget:
    """Host memory the stages may use beyond the model and data, for a population of
    ``models`` vectors of ``width`` parameters (float32).

    Attributes
    ----------
    bytes : int or None
        The budget in bytes; ``None``: no limit (then decoded vectors take at most
        ``DECODE_BYTES``, 1 GiB, at once).
    models : int, N
    width : int, D
    """

    bytes: int | None
    models: int
    width: int

    @classmethod
    def parse(cls, value: int | str | None, models: int, width: int,
              where: str = "memory_budget") -> MemoryBudget:
        """A budget from bytes or a size string (``"512MB"``, ``"4GiB"``; ``None``: no
        limit); with a limit, memory freed so far is handed back to the system first."""
        total = None if value is None else parse_bytes(value, where)
        if total is not None:
            return_freed_memory()
        return cls(total, int(models), int(width))

    def evaluator_share(self, device: torch.device | str | None) -> int | None:
        """The evaluator's activation budget (bytes): a quarter of the budget when it
        evaluates on the CPU; ``None`` on a GPU (the budget is for host memory) or
        without a budget."""
        on_cpu = device is None and not torch.cuda.is_available() or (
            device is not None and torch.device(device).type == "cpu")
        return None if self.bytes is None or not on_cpu else self.bytes // 4

    def rows_per_chunk(self) -> int:
        """Vectors of D parameters held at once: a quarter of the budget, or without one
        at most ``DECODE_BYTES`` of them."""
        if self.bytes is None:
            return max(1, DECODE_BYTES // (4 * self.width))
        return max(1, self.bytes // (4 * 4 * self.width))

    def chunk_points(self, device: torch.device, evaluator_chunk: int) -> int:
        """Points decoded together per stored chunk of a field: under the budget on the
        CPU; else ``compute_field``'s default (4 evaluator chunks, at least 256) capped so
        the decoded vectors take at most ``DECODE_BYTES`` (on a GPU they live in device
        memory) but hold at least one evaluator chunk."""
        if self.bytes is not None and device.type == "cpu":
            return self.rows_per_chunk()
        cap = max(evaluator_chunk, DECODE_BYTES // (4 * self.width))
        return min(cap, max(evaluator_chunk * 4, 256))

    def block_size(self) -> int | None:
        """Parameters per column block of the span reduction (``None``: its default):
        a float64 block and each of its two temporaries take 1/8 of the budget."""
        if self.bytes is None:
            return None
        return max(1024, self.bytes // (8 * 8 * self.models))

    def basis_on_disk(self) -> bool:
        """Whether the span basis (about the population's size) is kept on disk: when it
        would take more than a quarter of the budget."""
        return self.bytes is not None and 4 * self.models * self.width > self.bytes // 4
