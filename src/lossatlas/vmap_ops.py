"""Which operations of a model run slowly under ``vmap`` over weights on the CPU.

``vmap`` over points (or SGLD chains) gives every operation a batch of weights. On the
CPU two common ones then lose their fast kernels: convolutions become grouped
convolutions over the points, and ``scaled_dot_product_attention`` takes its math path
(the fused CPU kernel has no batching rule); attention written out with a softmax loses
less but still some. Measured on 2 cores, one point at a time is 1.1-4x faster for such
models (``BENCHMARKS.md``, "the tiny GPT"); the Evaluator and
:func:`lossatlas.curvature.llc` then loop instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["slow_under_vmap_on_cpu"]

#: The operations, by what they are called in messages. A softmax inside a model is
#: attention written out (``softmax(q k^T) v``): its batched products of activations ran
#: 1.1-2.1x faster one point at a time (``ModularTransformer``, 1-2 layers, 2 cores).
_SLOW = {F.scaled_dot_product_attention: "attention", F.softmax: "softmax",
         torch.softmax: "softmax", torch.Tensor.softmax: "softmax",
         F.conv1d: "convolutions", F.conv2d: "convolutions", F.conv3d: "convolutions"}


class _SeesOps(TorchFunctionMode):
    """Notes which of :data:`_SLOW` are called inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _SLOW:
            self.seen.add(_SLOW[func])
        return func(*args, **(kwargs or {}))


def slow_under_vmap_on_cpu(model: nn.Module, x) -> list[str]:
    """What ``model`` computes on inputs ``x`` that runs faster one point at a time on the
    CPU, sorted: ``"attention"`` (an ``nn.MultiheadAttention`` or
    ``scaled_dot_product_attention``), ``"convolutions"`` and ``"softmax"`` (attention
    written out; the smallest loss of the three); found by running the
    model once on ``x`` (a tensor; anything else is not run) without gradients. The
    model should be in eval mode (a train-mode BatchNorm would update its statistics)."""
    seen = set()
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        seen.add("attention")
    if isinstance(x, Tensor):
        mode = _SeesOps()
        try:
            with torch.no_grad(), mode:
                model(x)
        except Exception:  # noqa: BLE001 - a model that fails here fails later, with context
            pass
        seen |= mode.seen
    return sorted(seen)
