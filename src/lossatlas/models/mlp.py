"""Multi-layer perceptron (the MNIST-1D benchmark's "MLP 40-512-512-10" by default)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lossatlas.models._factory import MODELS

__all__ = ["ACTIVATIONS", "MLP", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    """An activation module by name (one of `ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class MLP(nn.Module):
    """Fully connected network ``in_features -> hidden... -> num_classes``.

    Input ``Tensor[N, ...]`` is flattened to ``[N, in_features]``; output logits
    ``Tensor[N, num_classes]``. Parameters are ``layers.{i}.weight`` / ``layers.{i}.bias``,
    the last layer being the classifier.
    """

    def __init__(
        self,
        in_features: int = 40,
        hidden: Sequence[int] = (512, 512),
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = [int(in_features), *(int(h) for h in hidden), int(num_classes)]
        self.in_features = widths[0]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random input ``Tensor[batch_size, in_features]`` (float32)."""
        return torch.randn(batch_size, self.in_features)


@MODELS.register()
def mlp(
    in_features: int = 40,
    hidden: Sequence[int] = (512, 512),
    num_classes: int = 10,
    activation: str = "relu",
) -> MLP:
    """MLP, default 40-512-512-10 (~289k parameters)."""
    return MLP(in_features, hidden, num_classes, activation)
