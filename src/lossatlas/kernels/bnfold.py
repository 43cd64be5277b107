"""BatchNorm folding: eval-mode BatchNorm after a convolution (or Linear) folded into it per point.

For a layer ``y = BN(conv(x; w, b))`` in eval mode, with ``s = gamma / sqrt(var + eps)``::

    w' = w * s            (over the output-channel axis)
    b' = beta + (b - mean) * s

so ``conv(x; w', b')`` gives the same output with one pass less over every
activation. :func:`fold_batchnorm` rewrites the model once (``torch.fx``): each
foldable BatchNorm node is removed and its convolution gets a bias; a
:class:`FoldPlan` then maps a point's tensors to the rewritten model's tensors
(:meth:`FoldPlan.apply`), with or without a leading point axis.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

__all__ = ["FoldPair", "FoldPlan", "fold_batchnorm"]

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class FoldPair:
    """One folded layer: tensor-name prefixes (``"layer1.0.conv1."``) and the BN's eps."""

    conv: str
    bn: str
    eps: float
    conv_bias: bool
    affine: bool


@dataclass(frozen=True)
class FoldPlan:
    """The folded layers of a rewritten model."""

    pairs: tuple[FoldPair, ...]

    @property
    def removed(self) -> set[str]:
        """Names of the original tensors that the folded model no longer has."""
        out = set()
        for p in self.pairs:
            out |= {p.bn + k for k in ("weight", "bias", "running_mean", "running_var",
                                       "num_batches_tracked")}
        return out

    def apply(self, batched: Mapping[str, Tensor], fixed: Mapping[str, Tensor]
              ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Tensors of the folded model from those of the original one.

        Parameters
        ----------
        batched : dict name -> Tensor[P, *shape]
            Tensors that differ per point.
        fixed : dict name -> Tensor[*shape]
            Tensors shared by every point.

        Returns
        -------
        (batched, fixed) for the folded model: a folded weight or bias is batched
        when any tensor it is computed from is.
        """
        b_out = {k: v for k, v in batched.items() if k not in self.removed}
        f_out = {k: v for k, v in fixed.items() if k not in self.removed}

        def get(name: str) -> tuple[Tensor | None, bool]:
            if name in batched:
                return batched[name], True
            if name in fixed:
                return fixed[name], False
            return None, False

        for p in self.pairs:
            w, wb = get(p.conv + "weight")
            b, bb = get(p.conv + "bias") if p.conv_bias else (None, False)
            mean, mb = get(p.bn + "running_mean")
            var, vb = get(p.bn + "running_var")
            gamma, gb = get(p.bn + "weight") if p.affine else (None, False)
            beta, betab = get(p.bn + "bias") if p.affine else (None, False)
            assert w is not None and mean is not None and var is not None
            scale = torch.rsqrt(var + p.eps)
            if gamma is not None:
                scale = gamma * scale  # [..., C]
            w_lead = 1 if wb else 0
            # [..., C] -> [..., C, 1, ...]: broadcasts over the weight's trailing axes.
            new_w = w * scale.reshape(*scale.shape, *([1] * (w.dim() - w_lead - 1)))
            new_b = (-mean if b is None else b - mean) * scale
            if beta is not None:
                new_b = new_b + beta
            if wb or bb or mb or vb or gb or betab:
                n = next(t.shape[0] for t, f in ((w, wb), (b, bb), (mean, mb), (var, vb),
                                                 (gamma, gb), (beta, betab)) if f)
                if new_w.dim() == w.dim() - w_lead:
                    new_w = new_w.expand(n, *new_w.shape)
                if new_b.dim() == 1:
                    new_b = new_b.expand(n, -1)
                b_out[p.conv + "weight"], b_out[p.conv + "bias"] = new_w, new_b
                f_out.pop(p.conv + "weight", None)
                f_out.pop(p.conv + "bias", None)
            else:
                f_out[p.conv + "weight"], f_out[p.conv + "bias"] = new_w, new_b
        return b_out, f_out


def fold_batchnorm(model: nn.Module) -> tuple[fx.GraphModule | None, FoldPlan | None, str]:
    """Rewrite ``model`` (eval mode) with every foldable BatchNorm removed.

    A BatchNorm is foldable when it has running statistics and its input is the
    output of a Conv1d/2d/3d or Linear used by nothing else.

    Returns
    -------
    (folded model, plan, reason) or ``(None, None, reason)`` when there is no
    BatchNorm to fold or the model cannot be traced. The user's model is not changed.
    """
    if model.training:
        return None, None, "the model is in training mode"
    if not any(isinstance(m, _BATCHNORMS) for m in model.modules()):
        return None, None, "no BatchNorm layer"
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as err:  # noqa: BLE001 - any tracing failure means "cannot fold"
        return None, None, f"torch.fx cannot trace it ({type(err).__name__}: {err})"
    modules = dict(gm.named_modules())
    pairs: list[FoldPair] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or type(modules[node.target]) not in _BATCHNORMS:
            continue
        bn = modules[node.target]
        src = node.args[0] if node.args else None
        if (not isinstance(src, fx.Node) or src.op != "call_module" or len(node.args) != 1
                or node.kwargs or len(src.users) != 1):
            continue
        conv = modules[src.target]
        if type(conv) not in _FOLDABLE or bn.running_mean is None:
            continue
        if isinstance(conv, nn.Linear) and not isinstance(bn, nn.BatchNorm1d):
            continue
        had_bias = conv.bias is not None
        if not had_bias:
            out_ch = conv.weight.shape[0]
            conv.bias = nn.Parameter(torch.zeros(out_ch, dtype=conv.weight.dtype,
                                                 device=conv.weight.device), requires_grad=False)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
        pairs.append(FoldPair(f"{src.target}.", f"{node.target}.", float(bn.eps), had_bias,
                              bn.affine))
    if not pairs:
        return None, None, "no BatchNorm directly after a convolution or Linear layer"
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval(), FoldPlan(tuple(pairs)), f"{len(pairs)} BatchNorm layers folded"
