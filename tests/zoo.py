"""A model zoo for the tests: one small population per architecture family.

Each family is a factory (importable as ``zoo:NAME``-style specs through
:func:`spec`), a dataset, and a training recipe; :func:`population_dir` trains
``variants x checkpoints`` models in seconds on a CPU and writes them to disk as
``VARIANT_seedS_epochE.pt`` state dicts (read back with ``weights_only=True``), like
a user's checkpoint folder. Registered like timm's models, so a test parametrised
over :data:`FAMILIES` covers every family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn

__all__ = ["FAMILIES", "Family", "data", "population_dir", "spec"]


# ----------------------------------------------------------------------------- data
def digits_flat() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as float vectors [1797, 64] in [0, 1] and labels."""
    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)


def digits_image() -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as images [1797, 1, 8, 8]."""
    x, y = digits_flat()
    return x.view(-1, 1, 8, 8), y


def tokens(n: int = 512, length: int = 8, vocab: int = 12, seed: int = 0
           ) -> tuple[Tensor, Tensor]:
    """A synthetic sequence task: tokens [n, length]; the label is the most frequent
    token of the first half modulo 4 (attention must pool over positions)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, length), generator=g)
    y = torch.mode(x[:, : length // 2], dim=1).values % 4
    return x, y


# ----------------------------------------------------------------------------- models
def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def mlp_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def gn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


class Block(nn.Module):
    """A residual block: conv-BN-ReLU-conv-BN plus the identity, then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class TinyResNet(nn.Module):
    """A stem, two residual blocks with BatchNorm, global pooling and a head."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(Block(width), Block(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def resnet() -> nn.Module:
    return TinyResNet()


class TokenTransformer(nn.Module):
    """Token embedding + positions, one ``nn.TransformerEncoderLayer`` (LayerNorm,
    dropout 0.1), mean pooling, a linear head."""

    def __init__(self, vocab: int = 12, length: int = 8, d: int = 16, classes: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(length, d) * 0.1)
        self.layer = nn.TransformerEncoderLayer(d, 2, 32, dropout=0.1, batch_first=True)
        self.head = nn.Linear(d, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layer(self.embed(x) + self.pos).mean(1))


def transformer() -> nn.Module:
    return TokenTransformer()


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Family:
    """One architecture family of the zoo."""

    name: str
    factory: Callable[[], nn.Module]
    data: Callable[[], tuple[Tensor, Tensor]]
    lrs: tuple[float, ...]          # one variant per learning rate
    epochs: int
    batchnorm: bool = False


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("mlp", mlp, digits_flat, (0.05, 0.2, 0.5), 6),
    Family("mlp_dropout", mlp_dropout, digits_flat, (0.05, 0.2, 0.5), 6),
    Family("bn_cnn", bn_cnn, digits_image, (0.02, 0.1, 0.3), 4, batchnorm=True),
    Family("resnet", resnet, digits_image, (0.02, 0.1, 0.3), 4, batchnorm=True),
    Family("gn_cnn", gn_cnn, digits_image, (0.02, 0.1, 0.3), 4),
    Family("transformer", transformer, tokens, (0.003, 0.01, 0.03), 12),
]}


def spec(name: str) -> str:
    """The ``module:function`` spec of a family's factory (with tests/ on sys.path)."""
    return f"zoo:{FAMILIES[name].factory.__name__}"


def data(name: str) -> tuple[Tensor, Tensor]:
    return FAMILIES[name].data()


def population_dir(name: str, out: Path, checkpoints: int = 3, seed: int = 0) -> Path:
    """Train one run per learning rate of family ``name`` (SGD with momentum for the
    vision families, Adam for the transformer), saving ``checkpoints`` state dicts per
    run evenly over training as ``out/lrK_seedS_epochE.pt``. Returns ``out``."""
    fam = FAMILIES[name]
    x, y = fam.data()
    out.mkdir(parents=True, exist_ok=True)
    save_at = {max(1, math.ceil(fam.epochs * (k + 1) / checkpoints)) for k in range(checkpoints)}
    for v, lr in enumerate(fam.lrs):
        torch.manual_seed(seed * 100 + v)
        model = fam.factory()
        opt = (torch.optim.Adam(model.parameters(), lr=lr) if name == "transformer"
               else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
        g = torch.Generator().manual_seed(seed * 100 + v)
        for epoch in range(1, fam.epochs + 1):
            model.train()
            for idx in torch.randperm(len(x), generator=g).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            if epoch in save_at:
                torch.save(model.state_dict(), out / f"lr{v}_seed{seed}_epoch{epoch}.pt")
    return out
