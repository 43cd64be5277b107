"""The BatchNorm policy: which statistics a BatchNorm network is evaluated with.

A network with BatchNorm is not one function of its parameters: its output also
depends on the normalisation statistics. lossatlas evaluates every point under one
named policy, the same in every stage:

- ``"recompute"`` (the default for models with BatchNorm): the statistics are
  re-estimated at every evaluated point from the evaluation data, i.e. train-mode
  BatchNorm over *all* samples at once (no running averages, whatever the batch
  size). This is the practice of mode-connectivity, SWA and REPAIR work, and the rule
  is then the same at the models and between them.
- ``"own"``: every point carries its own statistics in its vector
  (``ParamSpace(model, buffers=True)``, variances laid out as logarithms so that
  interpolated or decoded points keep positive variances); evaluated in eval mode.
- ``"none"``: the model has no BatchNorm running statistics.

This module holds the policy's names and the exact full-data statistics of
:func:`layer_moments`, computed in one pass when all samples fit in one batch and
layer by layer (one pass per BatchNorm layer, each stopping at that layer) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from ._compat import renamed_argument
from .space import batchnorm_modules, batchnorm_stat_names

__all__ = [
    "POLICIES",
    "POLICY_TEXT",
    "BNPolicy",
    "combine_moments",
    "execution_order",
    "has_batchnorm",
    "resolve_policy",
    "strip_statistics",
]

BNPolicy = Literal["own", "recompute"]
POLICIES = ("own", "recompute")

#: One line per policy, for summaries, run files and the report.
POLICY_TEXT = {
    "recompute": "BatchNorm statistics re-estimated at every point from the evaluation "
                 "data (train-mode BatchNorm over all samples at once)",
    "own": "each point's own BatchNorm statistics (eval mode; a checkpoint's stored "
           "running statistics, interpolated or decoded between models)",
    "none": "the model has no BatchNorm running statistics",
}


def has_batchnorm(model: nn.Module) -> bool:
    """True when ``model`` has BatchNorm layers that keep running statistics."""
    return bool(batchnorm_stat_names(model))


@renamed_argument("where", "who")
def resolve_policy(model: nn.Module, bn: str | None, who: str) -> str:
    """The policy in force: ``"none"`` for a model without BatchNorm statistics, else
    ``bn`` (``None`` means the default, ``"recompute"``)."""
    if bn is not None and bn not in (*POLICIES, "none"):
        raise ValueError(f"{who}: bn must be 'own' or 'recompute' (or None for the "
                         f"default, 'recompute'), got {bn!r}")
    if not has_batchnorm(model):
        return "none"
    if bn == "none":
        raise ValueError(f"{who}: bn='none' but {type(model).__name__} has BatchNorm "
                         "statistics; choose bn='recompute' or bn='own'")
    return bn or "recompute"


def strip_statistics(model: nn.Module) -> list[str]:
    """Set every BatchNorm layer's running statistics to ``None`` in place, so that the
    layer normalises with the statistics of its input batch even in eval mode (and
    updates nothing). Statistics given to ``functional_call`` are used instead.
    Returns the names of the removed buffers."""
    names = batchnorm_stat_names(model)
    for _, m in batchnorm_modules(model):
        if m.track_running_stats and m.running_mean is not None:
            m.running_mean = None
            m.running_var = None
    return names


def execution_order(model: nn.Module, run: Callable[[], object]) -> list[str]:
    """Names of the BatchNorm layers of ``model`` in the order ``run()`` calls them.

    Raises ValueError naming a layer that is called more than once (its statistics
    would be those of several inputs) or never."""
    order: list[str] = []
    handles = []
    for name, m in batchnorm_modules(model):
        handles.append(m.register_forward_pre_hook(
            lambda _m, _inp, name=name: order.append(name)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    seen = set()
    for name in order:
        if name in seen:
            raise ValueError(f"BatchNorm layer {name!r} is called more than once per forward "
                             "pass; bn='recompute' cannot define its statistics (use bn='own')")
        seen.add(name)
    missing = [n for n, _ in batchnorm_modules(model) if n not in seen]
    if missing:
        raise ValueError(f"BatchNorm layers {missing} are not called in the forward pass")
    return order


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of a BatchNorm input ``[n, C, ...]``
    (fp32, or fp64 for fp64 inputs): ``(Tensor[C], Tensor[C])``."""
    dims = [0, *range(2, x.dim())]
    x = x if x.dtype == torch.float64 else x.float()
    var, mean = torch.var_mean(x, dim=dims, unbiased=False)
    return mean, var


def combine_moments(acc: tuple[Tensor, Tensor, float] | None, mean: Tensor, var: Tensor,
                    count: float) -> tuple[Tensor, Tensor, float]:
    """Chan's parallel update of ``(mean, biased variance, count)`` with one more batch
    (float64 sums, so that many small batches give the full-batch moments)."""
    mean, var = mean.double(), var.double()
    if acc is None:
        return mean, var, float(count)
    m0, v0, n0 = acc
    n = n0 + count
    delta = mean - m0
    m = m0 + delta * (count / n)
    v = (v0 * n0 + var * count + delta.square() * (n0 * count / n)) / n
    return m, v, n


class Reached(Exception):
    """Raised by a pre-hook to stop a forward pass at a BatchNorm layer's input."""

    def __init__(self, x: Tensor):
        super().__init__("BatchNorm input reached")
        self.x = x


def stop_at(module: nn.Module):
    """A pre-hook handle that stops every forward pass at ``module``'s input."""

    def hook(_m, inp):
        raise Reached(inp[0])

    return module.register_forward_pre_hook(hook)


def record_inputs(modules: Iterable[tuple[str, nn.Module]], sink: dict[str, Tensor]):
    """Pre-hook handles that store each module's input moments in ``sink`` (by name)."""

    def make(name):
        def hook(_m, inp):
            sink[name] = moments(inp[0])

        return hook

    return [m.register_forward_pre_hook(make(n)) for n, m in modules]
