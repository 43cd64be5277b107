"""Shared helpers of the symmetry tests: quick training on small data, one thread."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models run fastest (and predictably on a busy machine) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def train_quick(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300,
                lr: float = 1e-3, batch_size: int = 128, seed: int = 0) -> nn.Module:
    """Adam on random mini-batches; returns the model in eval mode."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(old)
    return model.eval()


@pytest.fixture(scope="session")
def train():
    """The quick training function (fixtures avoid importing this conftest by name)."""
    return train_quick


@pytest.fixture(scope="session")
def digits():
    from lossatlas import data

    return data.create("digits")
