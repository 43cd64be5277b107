"""Shared tiny problems for the curvature tests (fp64, CPU)."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from lossatlas.space import ParamSpace


def tiny_mlp(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def tiny_data(n: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    # float32-representable values: as_tensor_data turns float64 inputs into float32
    x = torch.randn(n, 4, generator=g).float().double()
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def full_hessian(model: nn.Module, x, y, loss_fn=None) -> torch.Tensor:
    """The exact Hessian [D, D] of the mean loss on the flat parameter vector."""
    space = ParamSpace(model)
    w0 = space.flatten(model)
    loss_fn = loss_fn or nn.functional.cross_entropy

    def f(w):
        return loss_fn(functional_call(model, space.unflatten(w), (x,)), y)

    return torch.autograd.functional.hessian(f, w0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny problems run much faster on one thread (and on a shared CPU)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def problem():
    model = tiny_mlp()
    x, y = tiny_data()
    H = full_hessian(model, x, y)
    return model, x, y, H
