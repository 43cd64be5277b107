"""MemoryBudget: every size the atlas's stages use, from the budget and [N, D]."""

import doctest

import pytest
import torch

from lossatlas import budget as budget_module
from lossatlas.budget import DECODE_BYTES, MemoryBudget


def test_sizes_under_a_budget():
    b = MemoryBudget.parse("64MiB", models=100, width=10_000)
    assert b.bytes == 64 * 2**20
    # a quarter of the budget in float32 vectors of D parameters
    assert b.rows_per_chunk() == 64 * 2**20 // (16 * 10_000) == 419
    # a float64 block of N rows and its two temporaries in 1/8 of the budget
    assert b.block_size() == 64 * 2**20 // (64 * 100)
    assert b.evaluator_share("cpu") == 16 * 2**20
    assert b.evaluator_share("cuda") is None  # the budget is for host memory
    assert b.chunk_points(torch.device("cpu"), 64) == 419
    assert not b.basis_on_disk()  # 4 MB of basis against a 16 MiB quarter
    assert MemoryBudget.parse("1MB", models=100, width=10_000).basis_on_disk()
    assert MemoryBudget(1, 2, 3).block_size() == 1024  # never below 1024 columns


def test_sizes_without_a_budget():
    b = MemoryBudget.parse(None, models=10, width=2**20)
    assert b.bytes is None and b.block_size() is None and not b.basis_on_disk()
    assert b.evaluator_share("cpu") is None
    assert b.rows_per_chunk() == DECODE_BYTES // (4 * 2**20) == 256
    # compute_field's default (4 evaluator chunks, at least 256), capped at 1 GiB of vectors
    assert b.chunk_points(torch.device("cpu"), 100) == 256
    assert b.chunk_points(torch.device("cpu"), 30) == 256
    assert MemoryBudget(None, 10, 2**24).chunk_points(torch.device("cpu"), 8) == 16


def test_bad_budget_names_the_option():
    with pytest.raises(ValueError, match="Atlas: memory_budget"):
        MemoryBudget.parse("lots", 3, 4, "Atlas: memory_budget")


def test_docstring_example():
    assert doctest.testmod(budget_module).failed == 0
