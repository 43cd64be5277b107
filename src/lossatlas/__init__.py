"""lossatlas: map the loss landscape of a population of PyTorch models."""

__version__ = "0.1.0"
