"""Small convolutional networks: `CNN1d` for 1-D signals (MNIST-1D), `CNN2d` for images
(optionally with BatchNorm after each convolution: ``cnn2d_bn``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lossatlas.models._factory import MODELS
from lossatlas.models.mlp import make_activation

__all__ = ["CNN1d", "CNN2d", "cnn", "cnn2d", "cnn2d_bn"]


class CNN1d(nn.Module):
    """(Conv1d -> activation -> MaxPool1d(2)) per entry of ``channels``, then Linear.

    Input ``Tensor[N, length]`` (treated as one channel) or ``Tensor[N, in_channels,
    length]``; output logits ``Tensor[N, num_classes]``. Convolutions keep the length
    ("same" padding); each pool halves it (floor).
    """

    def __init__(
        self,
        length: int = 40,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 32, 32),
        kernel_size: int = 5,
        num_classes: int = 10,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"CNN1d: kernel_size must be odd for 'same' padding, got {kernel_size}"
            )
        self.length, self.in_channels = int(length), int(in_channels)
        layers: list[nn.Module] = []
        c_in, size = self.in_channels, self.length
        for c_out in channels:
            layers += [
                nn.Conv1d(c_in, int(c_out), kernel_size, padding=kernel_size // 2),
                make_activation(activation),
                nn.MaxPool1d(2),
            ]
            c_in, size = int(c_out), size // 2
        if size < 1:
            raise ValueError(
                f"CNN1d: length {length} is too short for {len(channels)} pooling stages; "
                "use fewer channels entries"
            )
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * size, int(num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random input ``Tensor[batch_size, length]`` (or ``[batch_size, C, length]``)."""
        if self.in_channels == 1:
            return torch.randn(batch_size, self.length)
        return torch.randn(batch_size, self.in_channels, self.length)


class CNN2d(nn.Module):
    """(Conv2d 3x3 -> [BatchNorm2d] -> activation -> MaxPool2d(2)) per entry of
    ``channels``, then Linear.

    Input ``Tensor[N, in_channels, H, W]``, or flat ``Tensor[N, in_channels*H*W]``
    (reshaped); output logits ``Tensor[N, num_classes]``. With ``batchnorm=True`` every
    convolution is followed by a ``BatchNorm2d`` (running statistics kept, so the
    network's output depends on the BatchNorm policy: see ``lossatlas.batchnorm``).
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 8,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64),
        num_classes: int = 10,
        activation: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size, self.in_channels = (int(h), int(w)), int(in_channels)
        layers: list[nn.Module] = []
        c_in = self.in_channels
        for c_out in channels:
            layers += [
                nn.Conv2d(c_in, int(c_out), 3, padding=1),
                *([nn.BatchNorm2d(int(c_out))] if batchnorm else []),
                make_activation(activation),
                nn.MaxPool2d(2),
            ]
            c_in, h, w = int(c_out), h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(
                f"CNN2d: image_size {image_size} is too small for {len(channels)} pooling "
                "stages; use fewer channels entries"
            )
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * h * w, int(num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.reshape(x.shape[0], self.in_channels, *self.image_size)
        return self.head(self.features(x).flatten(1))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random input ``Tensor[batch_size, in_channels, H, W]``."""
        return torch.randn(batch_size, self.in_channels, *self.image_size)


@MODELS.register()
def cnn(
    length: int = 40,
    in_channels: int = 1,
    channels: Sequence[int] = (32, 32, 32),
    kernel_size: int = 5,
    num_classes: int = 10,
    activation: str = "relu",
) -> CNN1d:
    """1-D CNN for MNIST-1D-like signals ``[N, 40]``."""
    return CNN1d(length, in_channels, channels, kernel_size, num_classes, activation)


@MODELS.register()
def cnn2d(
    image_size: int | tuple[int, int] = 8,
    in_channels: int = 1,
    channels: Sequence[int] = (32, 64),
    num_classes: int = 10,
    activation: str = "relu",
) -> CNN2d:
    """2-D CNN, default for 8x8 digits images ``[N, 1, 8, 8]``."""
    return CNN2d(image_size, in_channels, channels, num_classes, activation)


@MODELS.register()
def cnn2d_bn(
    image_size: int | tuple[int, int] = 8,
    in_channels: int = 1,
    channels: Sequence[int] = (8, 16),
    num_classes: int = 10,
    activation: str = "relu",
) -> CNN2d:
    """Small 2-D CNN with BatchNorm after each convolution (about 2k parameters for 8x8
    digits ``[N, 1, 8, 8]``): the demo's BatchNorm population."""
    return CNN2d(image_size, in_channels, channels, num_classes, activation, batchnorm=True)
