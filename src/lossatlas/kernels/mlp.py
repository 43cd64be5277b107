"""MLP fast path: a plain chain of Linear layers and elementwise activations, P points at once.

A model qualifies when its traced graph (``torch.fx``) is a single chain
``input -> [flatten] -> Linear -> act* -> Linear -> ... -> Linear`` with no
branch, no skip connection and only elementwise activations between layers
(ReLU, GELU, Tanh, Sigmoid, SiLU, LeakyReLU, Identity, Dropout in eval mode).
For P points the forward is then, in a feature-major layout:

- first layer: ONE GEMM over all points, ``W1 stacked [P*h, in] @ x.T [in, n]``
  (the input is shared by every point);
- later layers: batched GEMMs, ``baddbmm(b [P, h, 1], W [P, h, k], A [P, k, n])``;
- logits ``[P, C, n]``, returned as the view ``[P, n, C]``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["MLPPlan", "detect_mlp", "mlp_logits"]

log = logging.getLogger(__name__)

# Elementwise activations: module type -> (name, function of a tensor). In-place where safe.
_ACT_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.GELU: "gelu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.LeakyReLU: "leaky_relu",
    nn.Identity: "identity",
    nn.Dropout: "identity",  # the Evaluator runs models in eval mode
}
_ACT_FUNCTIONS: dict[object, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    F.gelu: "gelu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.silu: "silu",
    F.dropout: "identity",
}
_ACT_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}


def _apply(name: str, h: Tensor, arg: float | str | None) -> Tensor:
    if name == "relu":
        return torch.relu_(h)
    if name == "gelu":
        return F.gelu(h, approximate=arg or "none")
    if name == "tanh":
        return torch.tanh_(h)
    if name == "sigmoid":
        return torch.sigmoid_(h)
    if name == "silu":
        return F.silu(h, inplace=True)
    if name == "leaky_relu":
        return F.leaky_relu_(h, float(arg if arg is not None else 0.01))
    return h


@dataclass(frozen=True)
class MLPPlan:
    """What the fast path runs: Linear layers and the activations after each.

    Attributes
    ----------
    linears : list of (weight name, bias name or None, in_features, out_features)
        Names as in the model's ``state_dict``.
    acts : list (one per linear) of tuples of (activation name, argument)
        Applied after that layer, in order; the last layer's are usually empty.
    flatten : bool
        The input is flattened to ``[n, in_features]`` first.
    """

    linears: list[tuple[str, str | None, int, int]]
    acts: list[tuple[tuple[str, float | str | None], ...]]
    flatten: bool

    @property
    def widths(self) -> list[int]:
        """``[in, h1, ..., out]``."""
        return [self.linears[0][2], *(out for _, _, _, out in self.linears)]


def _act_of_module(m: nn.Module) -> tuple[str, float | str | None] | None:
    for cls, name in _ACT_MODULES.items():
        if type(m) is cls:
            if name == "gelu":
                return name, m.approximate  # type: ignore[attr-defined]
            if name == "leaky_relu":
                return name, m.negative_slope  # type: ignore[attr-defined]
            return name, None
    return None


def _is_flatten(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """``x.flatten(1)``, ``torch.flatten(x, 1)``, ``nn.Flatten()`` or ``x.view(x.size(0), -1)``."""
    if node.op == "call_module":
        m = modules[node.target]  # type: ignore[index]
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if node.op == "call_method" and node.target == "flatten" or (
        node.op == "call_function" and node.target is torch.flatten
    ):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start == 1 and end == -1
    return False


def detect_mlp(model: nn.Module) -> tuple[MLPPlan | None, str]:
    """The :class:`MLPPlan` of ``model``, or ``(None, reason)`` when it is not a plain chain.

    ``model`` must be in eval mode (Dropout is treated as the identity).
    """
    if model.training:
        return None, "the model is in training mode"
    if isinstance(model, nn.Linear):
        w, b = model.weight, model.bias
        plan = MLPPlan([("weight", "bias" if b is not None else None, w.shape[1], w.shape[0])],
                       [()], False)
        return plan, "a single Linear layer"
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means "not a plain chain"
        return None, f"torch.fx cannot trace it ({type(err).__name__})"
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    linears: list[tuple[str, str | None, int, int]] = []
    acts: list[list[tuple[str, float | str | None]]] = [[]]
    flatten = False
    prev: fx.Node | None = None
    for node in nodes:
        if node.op == "placeholder":
            if prev is not None:
                return None, "the model takes more than one input"
            prev = node
            continue
        if node.op == "output":
            if node.args[0] is not prev:
                return None, "the output is not the end of the chain"
            break
        if prev is None or len(node.all_input_nodes) != 1 or node.all_input_nodes[0] is not prev:
            return None, f"node {node.name!r} does not take the previous node's output alone"
        if len(prev.users) != 1:
            return None, f"node {prev.name!r} feeds more than one node (skip connection?)"
        if node.op == "call_module":
            m = modules[node.target]  # type: ignore[index]
            if type(m) is nn.Linear:
                if node.args[0] is not prev or len(node.args) != 1 or node.kwargs:
                    return None, f"unexpected call of Linear {node.target!r}"
                prefix = f"{node.target}."
                linears.append((prefix + "weight", prefix + "bias" if m.bias is not None else None,
                                m.in_features, m.out_features))
                acts.append([])
            elif (a := _act_of_module(m)) is not None:
                if a[0] != "identity":
                    acts[-1].append(a)
            elif _is_flatten(node, modules):
                if linears:
                    return None, "flatten after the first Linear layer"
                flatten = True
            else:
                return None, f"module {node.target!r} ({type(m).__name__}) is not Linear/activation"
        elif node.op == "call_function" and node.target in _ACT_FUNCTIONS:
            name = _ACT_FUNCTIONS[node.target]
            extra = [a for a in node.args[1:]] + [
                v for k, v in node.kwargs.items() if k not in ("inplace", "training", "p")
            ]
            if name == "gelu":
                extra = [node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")]
                acts[-1].append((name, extra[0]))
            elif name == "identity":
                if node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True):
                    return None, "F.dropout with training=True"
            else:
                if extra:
                    return None, f"activation {node.name!r} has extra arguments"
                acts[-1].append((name, None))
        elif node.op == "call_method" and node.target in _ACT_METHODS and len(node.args) == 1:
            acts[-1].append((_ACT_METHODS[node.target], None))  # type: ignore[index]
        elif _is_flatten(node, modules):
            if linears:
                return None, "flatten after the first Linear layer"
            flatten = True
        elif node.op == "call_function" and node.target is operator.getitem:
            return None, "indexing inside the forward"
        else:
            return None, f"operation {node.op} {node.target!r} is not part of a plain MLP"
        prev = node
    if not linears:
        return None, "no Linear layer"
    if acts[0]:
        return None, "an activation before the first Linear layer"
    for (_, _, _, out), (_, _, nxt, _) in zip(linears[:-1], linears[1:], strict=True):
        if out != nxt:
            return None, "consecutive Linear layers with mismatched widths"
    return MLPPlan(linears, [tuple(a) for a in acts[1:]], flatten), "a plain Linear/activation chain"


def mlp_logits(
    plan: MLPPlan,
    batched: Mapping[str, Tensor],
    fixed: Mapping[str, Tensor],
    n_points: int,
    x: Tensor,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Logits of ``n_points`` MLPs on shared inputs.

    Parameters
    ----------
    plan : MLPPlan
    batched : dict name -> Tensor[P, *shape]
        Tensors that differ per point (from ``ParamSpace.unflatten``).
    fixed : dict name -> Tensor[*shape]
        Tensors shared by every point (not in the parameter space).
    n_points : int
        P.
    x : Tensor[n, *in_shape]
    dtype : compute dtype (e.g. ``torch.bfloat16``); default: that of the weights.

    Returns
    -------
    Tensor[P, n, out] (a transposed view of a contiguous ``[P, out, n]`` tensor).
    """
    P = n_points
    n = x.shape[0]

    def get(name: str | None, shape: tuple[int, ...]) -> Tensor | None:
        if name is None:
            return None
        if name in batched:
            t = batched[name]
        else:
            t = fixed[name].expand(P, *shape)
        return t if dtype is None else t.to(dtype)

    xf = x.reshape(n, -1) if plan.flatten or x.dim() != 2 else x
    if dtype is not None:
        xf = xf.to(dtype)
    h: Tensor | None = None
    for i, ((wn, bn, k, o), acts) in enumerate(zip(plan.linears, plan.acts, strict=True)):
        w = get(wn, (o, k))  # [P, o, k]
        b = get(bn, (o,))  # [P, o]
        assert w is not None
        if i == 0:
            w2 = w.reshape(P * o, k)
            if b is None:
                h = torch.mm(w2, xf.t())
            else:
                h = torch.addmm(b.reshape(P * o, 1), w2, xf.t())
            h = h.view(P, o, n)
        else:
            assert h is not None
            h = torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h)
        for name, arg in acts:
            h = _apply(name, h, arg)
    assert h is not None
    return h.transpose(1, 2)

