"""CIFAR-style ResNets of He et al. (2016): ResNet-(6n+2) with BatchNorm.

Three stages of ``n`` basic blocks with ``16, 32, 64`` channels times ``width``; the
first block of stages 2 and 3 halves the resolution. Shortcuts that change shape are
1x1 conv + BatchNorm projections ("option B"), so every tensor has a channel axis that
permutation alignment can act on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossatlas.models._factory import MODELS

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet56"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (+ shortcut) -> ReLU: ``[N, c_in, H, W] -> [N, c_out,
    H/stride, W/stride]``."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6 * num_blocks + 2) for 32x32 images.

    Input ``Tensor[N, in_channels, H, W]`` (any H, W >= 4; global average pooling);
    output logits ``Tensor[N, num_classes]``. ``width`` multiplies the channel counts
    (parameters grow about ``width**2``).
    """

    def __init__(
        self,
        num_blocks: int = 3,
        width: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_blocks < 1 or width < 1:
            raise ValueError(
                f"CifarResNet: num_blocks and width must be >= 1, got {num_blocks}, {width}"
            )
        self.in_channels = int(in_channels)
        c1, c2, c3 = 16 * width, 32 * width, 64 * width
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = self._stage(c1, c1, num_blocks, stride=1)
        self.layer2 = self._stage(c1, c2, num_blocks, stride=2)
        self.layer3 = self._stage(c2, c3, num_blocks, stride=2)
        self.linear = nn.Linear(c3, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(c_in, c_out, stride)]
        blocks += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(-2, -1)))

    def example_input(self, batch_size: int = 2) -> Tensor:
        """Random input ``Tensor[batch_size, in_channels, 32, 32]``."""
        return torch.randn(batch_size, self.in_channels, 32, 32)


@MODELS.register()
def resnet20(width: int = 1, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (3 blocks per stage), ~0.27M parameters at width 1."""
    return CifarResNet(3, width, num_classes, in_channels)


@MODELS.register()
def resnet56(width: int = 1, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (9 blocks per stage), ~0.86M parameters at width 1."""
    return CifarResNet(9, width, num_classes, in_channels)
