"""Tiny models and data shared by the surfaces tests (CPU, fp32)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def mlp(seed: int = 0, d_in: int = 6, hidden: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 3),
    )


def data(n: int = 64, d_in: int = 6, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def train_trajectory(model: nn.Module, x, y, steps: int = 12, lr: float = 0.5) -> list[nn.Module]:
    """Full-batch SGD; a copy of the model before the first and after every step."""
    model = copy.deepcopy(model)
    params = list(model.parameters())
    out = [copy.deepcopy(model)]
    for _ in range(steps):  # plain SGD by hand (torch.optim's first step is slow to import)
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(lr * g)
        out.append(copy.deepcopy(model))
    return out
