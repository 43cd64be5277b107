"""Interpolated models and their renormalisation: BatchNorm reset and REPAIR.

Averaging two aligned networks shrinks the variance of hidden activations
("variance collapse", Jordan et al. 2022), which inflates barriers. Two fixes:

- :func:`reset_bn`: re-estimate BatchNorm running statistics on data (the same
  thing ``Evaluator(bn="recompute")`` does at every point).
- :func:`repair`: REPAIR. For the interpolated model at ``alpha``, make every
  channel's activation mean and standard deviation equal the interpolation
  ``(1 - alpha) * stat_a + alpha * stat_b`` of the endpoints' statistics. The
  correction is folded into existing parameters, nothing is inserted: into the
  BatchNorm affine parameters (``weight``, ``bias``) for networks with
  BatchNorm, otherwise into the weight and bias of each hidden Linear/Conv layer
  (statistics of its pre-activation outputs). Layers are corrected in forward
  order, each measured after the corrections before it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from ..batches import as_tensor_data

__all__ = ["interpolate", "interpolate_state", "repair", "reset_bn"]

_NORM = nn.modules.batchnorm._BatchNorm
_LAYER = (nn.Linear, nn.modules.conv._ConvNd)


def interpolate_state(
    state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], alpha: float
) -> dict[str, Tensor]:
    """``(1 - alpha) * a + alpha * b`` for float tensors; integer buffers come from ``a``."""
    if set(state_a) != set(state_b):
        raise ValueError(
            f"interpolate_state: the state dicts differ, e.g. {sorted(set(state_a) ^ set(state_b))[:3]}"
        )
    return {
        k: torch.lerp(v, state_b[k].to(v.dtype), float(alpha)) if v.is_floating_point() else v.clone()
        for k, v in state_a.items()
    }


def interpolate(model_a: nn.Module, model_b: nn.Module, alpha: float) -> nn.Module:
    """A copy of ``model_a`` holding ``(1 - alpha) * w_a + alpha * w_b`` (buffers too)."""
    out = copy.deepcopy(model_a)
    out.load_state_dict(interpolate_state(model_a.state_dict(), model_b.state_dict(), alpha))
    return out


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def reset_bn(
    model: nn.Module, data, batch_size: int | None = None, inplace: bool = False
) -> nn.Module:
    """Re-estimate every BatchNorm layer's running mean/variance on ``data``.

    The statistics are those of train-mode BatchNorm over all samples of ``data`` at
    once (per-channel mean and biased variance of each layer's input, exact whatever
    ``batch_size``), the same rule as ``Evaluator(bn="recompute")``, which computes
    them. Returns the model (a copy unless ``inplace``), in eval mode.
    """
    from ..evaluate import Evaluator
    from ..space import ParamSpace

    if not any(isinstance(m, _NORM) for m in model.modules()):
        raise ValueError(f"reset_bn: {type(model).__name__} has no BatchNorm layer")
    model = model if inplace else copy.deepcopy(model)
    dev = _device_of(model)
    ev = Evaluator(model, data, bn="recompute", device=dev, batch_size=batch_size)
    stats = ev.statistics(ParamSpace(model).flatten(model))
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in stats.items():
            buffers[name].copy_(value[0].to(buffers[name]))
    return model.eval()


def _channel_stats(model: nn.Module, name: str, x_all, batch_size: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std ``[C]`` of module ``name``'s output (channel axis 1)."""
    mod = dict(model.named_modules())[name]
    s = s2 = None
    count = 0

    def hook(_m, _i, out):  # noqa: ANN001
        nonlocal s, s2, count
        o = out.detach().double().movedim(1, 0).reshape(out.shape[1], -1)
        s = o.sum(1) if s is None else s + o.sum(1)
        s2 = (o * o).sum(1) if s2 is None else s2 + (o * o).sum(1)
        count += o.shape[1]

    h = mod.register_forward_hook(hook)
    dev = _device_of(model)
    try:
        with torch.no_grad():
            for x, _ in x_all.batches(batch_size):
                model(x.to(dev))
    finally:
        h.remove()
    mean = s / count
    std = (s2 / count - mean**2).clamp_min(0).sqrt()
    return mean, std


def _targets(model: nn.Module, x: Tensor) -> tuple[list[str], str]:
    """Names of the layers REPAIR corrects, in forward order, and which kind."""
    if any(isinstance(m, _NORM) for m in model.modules()):
        kind, cls = "batchnorm", _NORM
    else:
        kind, cls = "layer", _LAYER
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
             for m in model.modules() if isinstance(m, cls)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    seen: list[str] = []
    for n in order:
        if n not in seen:
            seen.append(n)
    if kind == "layer":
        seen = seen[:-1]  # the output layer's logits are left alone
        mods = dict(model.named_modules())
        seen = [n for n in seen if getattr(mods[n], "bias", None) is not None]
    return seen, kind


def repair(
    model_a: nn.Module,
    model_b: nn.Module,
    alpha: float,
    data,
    batch_size: int = 256,
    max_samples: int | None = 2048,
    reset: Literal["auto", True, False] = "auto",
    eps: float = 1e-8,
) -> nn.Module:
    """The interpolated model at ``alpha`` with REPAIRed channel statistics.

    Parameters
    ----------
    model_a, model_b : nn.Module of one architecture, already aligned (e.g.
        ``model_b = weight_matching(model_a, model_b)``)
    alpha : float in [0, 1]
    data : (X, y) tensors, Dataset or DataLoader (targets unused)
    max_samples : int, optional
        Statistics use at most this many samples.
    reset : "auto", True or False
        Reset BatchNorm statistics of the interpolated model first ("auto":
        when it has BatchNorm).

    Returns
    -------
    nn.Module in eval mode (a new model).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"repair: alpha must be in [0, 1], got {alpha}")
    td = as_tensor_data(data, "repair data")
    if max_samples is not None:
        td = td.subset(int(max_samples))
    models = [copy.deepcopy(m).eval() for m in (model_a, model_b)]
    mid = interpolate(models[0], models[1], alpha).eval()
    dev = _device_of(mid)
    names, kind = _targets(mid, td.x[:2].to(dev))
    if reset is True or (reset == "auto" and kind == "batchnorm"):
        mid = reset_bn(mid, td, batch_size, inplace=True)
    stats = {}
    for name in names:
        (ma, sa), (mb, sb) = (_channel_stats(m, name, td, batch_size) for m in models)
        stats[name] = ((1 - alpha) * ma + alpha * mb, (1 - alpha) * sa + alpha * sb)
    mods = dict(mid.named_modules())
    for name in names:
        mean, std = _channel_stats(mid, name, td, batch_size)
        t_mean, t_std = stats[name]
        scale = t_std / (std + eps)
        shift = t_mean - scale * mean  # y' = scale * y + shift
        mod = mods[name]
        with torch.no_grad():
            if kind == "batchnorm":
                if mod.affine:
                    mod.weight.mul_(scale.to(mod.weight.dtype))
                    mod.bias.mul_(scale.to(mod.bias.dtype)).add_(shift.to(mod.bias.dtype))
            else:
                w = mod.weight
                axis = 1 if getattr(mod, "transposed", False) else 0
                shape = [1] * w.ndim
                shape[axis] = -1
                w.mul_(scale.to(w.dtype).reshape(shape))
                mod.bias.mul_(scale.to(w.dtype)).add_(shift.to(w.dtype))
    return mid.eval()
