"""Shared fixtures of the manifold tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The networks here are tiny: one intra-op thread is fastest, and immune to
    oversubscribed CI machines. Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def curve_population(n: int = 40, d: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-D nonlinear curve (an arc with harmonics, spanning 6 dimensions) mapped into R^d
    by a random linear map: Tensor[n, d] and the curve parameter Tensor[n]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0.0, 2.5, n)
    feats = torch.stack(
        [
            torch.cos(t),
            torch.sin(t),
            torch.cos(2 * t),
            torch.sin(2 * t),
            torch.cos(3 * t),
            torch.sin(3 * t),
        ],
        dim=1,
    )
    A = torch.randn(6, d, generator=g)
    return feats @ A + 0.5, t
