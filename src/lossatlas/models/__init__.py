"""Built-in models: MLP, small 1-D/2-D CNNs, CIFAR ResNet-20/56, a modular-arithmetic
transformer. All are plain `nn.Module`s that work with `torch.func.functional_call` and
`vmap` over stacked parameters, and provide ``example_input(batch_size)``."""

from lossatlas.models._factory import MODELS, create, list_models
from lossatlas.models.cnn import CNN1d, CNN2d
from lossatlas.models.mlp import MLP
from lossatlas.models.resnet import CifarResNet
from lossatlas.models.transformer import ModularTransformer

__all__ = [
    "MODELS",
    "CNN1d",
    "CNN2d",
    "CifarResNet",
    "MLP",
    "ModularTransformer",
    "create",
    "list_models",
]
