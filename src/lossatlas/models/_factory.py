"""The model registry shared by the built-in model files."""

from __future__ import annotations

from typing import Any

from torch import nn

from lossatlas.registry import Registry

from ..errors import InputTypeError

__all__ = ["MODELS", "create", "list_models"]

MODELS = Registry("model")


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by registered name (``"mlp"``, ``"resnet20"``, ...) or from a
    ``"package.module:function"`` factory spec; ``None`` keyword arguments are dropped."""
    model = MODELS.create(name, **kwargs)
    if not isinstance(model, nn.Module):
        raise InputTypeError(
            f"models.create: factory {name!r} returned {type(model).__name__}, expected a "
            "torch.nn.Module"
        )
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the fnmatch ``pattern``."""
    return MODELS.list(pattern)
