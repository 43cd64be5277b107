"""Permutation specifications derived automatically from a model's torch.fx graph.

Hidden units of a network can be permuted without changing its function: the
output units of a Linear/Conv layer, together with every tensor that is indexed
by them (its bias, the BatchNorm / LayerNorm parameters and running statistics
of those units, and the input columns of the next layer). A
:class:`PermutationSpec` lists, per permutation group, the ``(tensor name,
axis)`` pairs that one permutation acts on.

:func:`permutation_spec` finds the groups by tracing the model with torch.fx on
an example input and propagating "this axis is indexed by group g" through the
graph:

- Linear / Conv (and ConvTranspose) outputs start a new group; their inputs
  consume the group flowing in (weight axis 1, or axis 0 for ConvTranspose).
  After a flatten (Conv -> Linear) each channel maps to a block of ``h * w``
  consecutive input columns of the Linear.
- BatchNorm and LayerNorm over the permuted axis permute their weight, bias
  (and running statistics) with the group; element-wise activations, dropout,
  identity, softmax, pooling, reductions over other axes, transposes and
  reshapes that keep each unit a contiguous block pass the group through.
- GroupNorm: only whole channel groups may move (permuting channels across its groups
  changes their statistics), so a group reaching a GroupNorm of ``g`` groups becomes
  ``g`` units of ``C / g`` consecutive channels each (its axes' blocks grow by ``C /
  g``); the norm's weight and bias move with them. (Permutations inside a channel
  group are a symmetry too, not represented.)
- An ``nn.Embedding``'s columns start a group; a model tensor (or a slice of one that
  keeps the group's axis whole, ``pos_embed[:T]``) added to or multiplying a permuted
  tensor along the group's axis (a learned position table, a layer scale) moves with
  the group.
- ``nn.TransformerEncoderLayer`` (a torch.fx leaf): its feed-forward hidden units are a
  group; a group on the model axis flowing in (the residual stream) passes through,
  moving the attention's input columns, its output projection's rows, the
  feed-forward layers' columns / rows and both LayerNorms; its attention heads are a
  group (query, key and value rows of a head and its output columns move together).
  Permutations inside a head are not represented.
- Residual additions (and element-wise products, concatenation along another
  axis) of two permuted tensors TIE their groups (union-find), so ResNets with
  identity and projection shortcuts share one permutation per stage.
- Groups whose units pass only through odd operations (tanh, softsign,
  symmetric hardtanh, dropout, identity, average pooling, sums, products with
  tensors that are not permuted) to the next Linear/Conv also have the
  sign-flip symmetry: negating a unit's incoming weights and bias and its
  outgoing weights leaves the function unchanged (``spec.odd``). A permutation
  together with signs is a signed permutation (``apply_permutation(...,
  signs=)``).
- Sign flips through a norm layer. A BatchNorm or LayerNorm is not odd
  (``gamma * n + beta`` with ``beta != 0``), so flipping a unit's producer is
  not a symmetry by itself; but flipping the norm's ``gamma_i`` and ``beta_i``
  negates its output ``y_i = gamma_i n_i + beta_i`` exactly, whatever came
  before (BatchNorm in train or eval mode: ``n_i`` is untouched; LayerNorm: the
  statistics over the units are untouched, whereas flipping one unit before a
  LayerNorm changes them). So a group whose every path from its producer
  passes through one norm layer with an affine weight, and only through odd
  operations after it, has the sign-flip symmetry acting on the norm's weight
  and bias and the readers' input axes (``spec.sign_from``,
  :meth:`PermutationSpec.signed_axes`); the producer and the running
  statistics keep their signs. (For a BatchNorm, flipping the producer, the
  running mean and ``gamma_i`` leaves ``y_i`` unchanged: the norm-scale
  symmetry below with a scale of -1, which needs no odd activation.)
- A Linear/Conv whose output goes straight into a BatchNorm (and nowhere else)
  is invariant to a positive scale of each output unit, one into a LayerNorm to
  a positive scale of the whole layer (up to the norm's ``eps``): recorded in
  ``spec.norm_scales`` for the canonical form (:mod:`~lossatlas.symmetry.rescale`).
- Whatever reaches the model's output is never permuted. An operation the
  rules do not cover (attention scores, ``matmul``, a reshape that splits the
  units, a sum with a computed unpermuted tensor, an unknown module) FIXES the group flowing into it (it is
  left unpermuted) with a warning naming the operation, or raises with
  ``strict=True``. A spec is never silently wrong; :func:`check_spec` verifies
  it numerically.
"""

from __future__ import annotations

import copy
import logging
import math
import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from ..errors import InputTypeError, MissingKeyError, UnsupportedModelError
from ._inputs import resolve_example_input
from ._trace import trace

__all__ = [
    "Axis",
    "PermutationSpec",
    "SpecWarning",
    "apply_permutation",
    "check_spec",
    "identity_permutation",
    "permutation_spec",
    "permute_model",
    "NormScale",
    "random_permutation",
    "random_signs",
    "scale_axis",
    "spec_discrepancy",
]

log = logging.getLogger(__name__)


class SpecWarning(UserWarning):
    """A permutation group was left unpermuted because of an unsupported operation."""


@dataclass(frozen=True)
class Axis:
    """One tensor axis acted on by a permutation group.

    ``tensor[name]`` along ``axis`` has ``segments * n * block`` entries; unit ``i`` of
    the group owns entries ``i * block : (i + 1) * block`` of each of the ``segments``
    equal parts of the axis (``segments=3``: an attention's packed query / key / value
    projection, whose heads are permuted alike in the three). ``role`` is ``"in"`` for
    the producing layer (the unit's incoming weights and bias), ``"out"`` for a
    consuming layer (the unit's outgoing weights), ``"norm"`` for normalisation
    parameters and statistics.
    """

    name: str
    axis: int
    block: int = 1
    role: str = "in"
    segments: int = 1


@dataclass(frozen=True)
class NormScale:
    """A layer whose output goes straight into a normalisation layer (and nowhere else).

    ``kind="unit"`` (BatchNorm): scaling output unit ``i`` of ``producer`` (its
    weight slice along ``axis`` and its bias) by ``c_i > 0`` together with the
    norm's running mean by ``c_i`` and running variance by ``c_i ** 2`` leaves the
    function unchanged (up to the norm's ``eps``). ``kind="layer"`` (LayerNorm):
    the same for one common scale ``c`` of the whole producer.
    """

    producer: str
    norm: str
    kind: str
    axis: int = 0


@dataclass
class PermutationSpec:
    """Permutation groups of a model.

    Attributes
    ----------
    groups : dict group name -> list[Axis]
        The tensors (parameters and float buffers) each group permutes.
    sizes : dict group name -> int
        Number of units ``n`` in each group.
    producers : dict group name -> list[str]
        Modules whose outputs are the group's units.
    consumers : dict group name -> list[tuple[str, int, int]]
        ``(module name, input axis, block)`` of the Linear/Conv layers reading
        the group (their inputs are the group's activations).
    rescalable : set of group names
        Groups whose units are positively homogeneous between one producer and
        its consumers (ReLU-like, no normalisation, not tied): the ReLU rescaling
        symmetry acts on them.
    odd : set of group names
        Groups whose units pass only through odd operations (tanh-like) to their
        consumers, or only through odd operations after one BatchNorm / LayerNorm
        with an affine weight that every path passes through: the sign-flip
        symmetry acts on them (on the axes :meth:`signed_axes` lists).
    norm_scales : list of NormScale
        Layers made scale-invariant by a BatchNorm / LayerNorm right after them.
    sign_from : dict group name -> norm module name
        Odd groups whose sign flip starts after a norm layer: it multiplies the
        norm's weight and bias and the readers' input axes, not the producer.
    fixed : dict producer module -> reason
        Groups left unpermuted and why (the model output, an unsupported op).
    graph : torch.fx.Graph
        The traced graph (specialised to the example input's shapes).
    """

    groups: dict[str, list[Axis]]
    sizes: dict[str, int]
    producers: dict[str, list[str]] = field(default_factory=dict)
    consumers: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)
    rescalable: set[str] = field(default_factory=set)
    fixed: dict[str, str] = field(default_factory=dict)
    graph: fx.Graph | None = None
    odd: set[str] = field(default_factory=set)
    norm_scales: list[NormScale] = field(default_factory=list)
    sign_from: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.groups)

    def __repr__(self) -> str:
        body = ", ".join(f"{g}: {self.sizes[g]}" for g in self.groups)
        return f"PermutationSpec({len(self)} groups: {body}; fixed: {list(self.fixed)})"

    def signed_axes(self, group: str) -> list[Axis]:
        """The axes a sign flip of ``group``'s units multiplies by -1: all of them, or, for
        a group in ``sign_from``, its norm layer's weight and bias and the readers' inputs."""
        norm = self.sign_from.get(group)
        if norm is None:
            return list(self.groups[group])
        return [ax for ax in self.groups[group]
                if ax.role == "out" or ax.name in (f"{norm}.weight", f"{norm}.bias")]

    def axes_of(self) -> dict[str, list[tuple[str, Axis]]]:
        """Tensor name -> the ``(group, Axis)`` pairs acting on it."""
        out: dict[str, list[tuple[str, Axis]]] = {}
        for g, axes in self.groups.items():
            for ax in axes:
                out.setdefault(ax.name, []).append((g, ax))
        return out

    def validate(self, state: Mapping[str, Tensor], where: str = "state dict") -> None:
        """Check every listed tensor exists in ``state`` with ``segments * n * block`` entries
        on its axis."""
        for g, axes in self.groups.items():
            n = self.sizes[g]
            for ax in axes:
                if ax.name not in state:
                    raise MissingKeyError(
                        f"PermutationSpec: group {g!r} permutes {ax.name!r}, which is missing "
                        f"from the {where}"
                    )
                size = state[ax.name].shape[ax.axis]
                if size != ax.segments * n * ax.block:
                    raise ValueError(
                        f"PermutationSpec: group {g!r} expects {ax.name!r} to have "
                        f"{ax.segments} x {n} x {ax.block} entries on axis {ax.axis}, found "
                        f"{size} in the {where}"
                    )


# ----------------------------------------------------------------- tracing rules
@dataclass(frozen=True)
class _P:
    """The permuted axis of a tensor in the graph: group id, axis, block."""

    g: int
    axis: int
    block: int = 1


_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.CELU, nn.SELU,
    nn.Softplus, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.ReLU6, nn.LogSigmoid,
    nn.Softsign, nn.Tanhshrink, nn.Dropout, nn.AlphaDropout, nn.Identity, nn.Softmax,
    nn.LogSoftmax,
)
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Identity)
# odd: f(-x) = -f(x) (nn.Hardtanh also when its bounds are symmetric, see _is_odd)
_ODD_MODULES = (nn.Tanh, nn.Softsign, nn.Tanhshrink, nn.Dropout, nn.Identity)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_ELEMENTWISE_NAMES = {
    "relu", "relu_", "gelu", "tanh", "tanh_", "sigmoid", "sigmoid_", "silu", "elu", "celu", "selu",
    "softplus", "mish", "hardswish", "hardsigmoid", "hardtanh", "relu6", "leaky_relu",
    "logsigmoid", "softsign", "dropout", "alpha_dropout", "softmax", "log_softmax", "abs",
    "neg", "exp", "square", "sqrt", "contiguous", "clone", "float", "double", "half",
    "bfloat16", "to", "type_as", "detach", "sign",
}
_HOMOGENEOUS_NAMES = {"relu", "relu_", "leaky_relu", "dropout", "contiguous", "clone", "float",
                      "double", "half", "bfloat16", "to", "type_as", "detach"}
_ODD_NAMES = {"tanh", "tanh_", "softsign", "dropout", "neg", "sign", "contiguous", "clone",
              "float", "double", "half", "bfloat16", "to", "type_as", "detach"}
_POOL_NAMES = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d",
}
_REDUCE_NAMES = {"mean", "sum", "amax", "amin", "nanmean", "nansum"}
_RESHAPE_NAMES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}
_BINARY = {
    operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
    torch.add: "add", torch.sub: "sub", torch.mul: "mul", torch.div: "div",
    operator.iadd: "add", operator.imul: "mul",
}
_BINARY_METHODS = {"add": "add", "add_": "add", "sub": "sub", "mul": "mul", "mul_": "mul",
                   "div": "div", "__add__": "add", "__radd__": "add", "__mul__": "mul"}
_SHAPE_QUERIES = {"size", "dim", "numel", "nelement"}


def _name_of(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _is_odd(mod: nn.Module) -> bool:
    if isinstance(mod, nn.Hardtanh):  # includes ReLU6 (bounds 0, 6): not odd
        return float(mod.min_val) == -float(mod.max_val)
    return isinstance(mod, _ODD_MODULES)


class _Builder:
    """Walks the graph once, assigning groups to tensor axes (union-find over groups)."""

    FIXED = 0

    def __init__(self, gm: fx.GraphModule, strict: bool):
        self.gm = gm
        self.strict = strict
        self.modules = dict(gm.named_modules())
        self.parent: list[int] = [0]
        self.size: list[int] = [0]
        self.creator: list[str] = ["(fixed)"]
        self.entries: list[tuple[int, Axis]] = []
        self.by_tensor_axis: dict[tuple[str, int], int] = {}
        self.consumers: list[tuple[int, str, int, int]] = []
        self.nonhom: set[int] = set()
        self.nonodd: set[int] = set()
        self.nonodd_at: list[tuple[int, int]] = []  # (group, node position) of non-odd ops
        self.sign_norms: list[tuple[int, str, int]] = []  # (group, norm module, position)
        self.pos = 0
        self.norm_scales: list[NormScale] = []
        self.tied: set[int] = set()
        self.reasons: dict[int, str] = {}
        self.state: dict[fx.Node, _P | None] = {}
        # the model's tensors (not the constants tracing made of tensors built in forward)
        self.tensor_names = {k for k in gm.state_dict() if not k.startswith("_tensor_constant")}
        # channels per unit of a group whose units are GroupNorm groups (root -> factor)
        self.factor: dict[int, int] = {}
        # model tensors read directly in forward (get_attr), with their number of readers,
        # and those whose one reader moves them with a group (moves_with)
        self.direct_reads: dict[str, int] = {}
        for nd in gm.graph.nodes:
            if nd.op == "get_attr" and str(nd.target) in self.tensor_names:
                name = str(nd.target)
                self.direct_reads[name] = self.direct_reads.get(name, 0) + len(nd.users)
        self.moved: set[str] = set()

    # union-find
    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] and self.size[rb] and self.size[ra] != self.size[rb]:
            raise UnsupportedModelError(
                f"permutation_spec: cannot tie groups of {self.creator[ra]} ({self.size[ra]} "
                f"units) and {self.creator[rb]} ({self.size[rb]} units): sizes differ"
            )
        lo, hi = min(ra, rb), max(ra, rb)
        self.parent[hi] = lo
        self.tied.update((ra, rb))
        fa, fb = self.factor.pop(ra, 1), self.factor.pop(rb, 1)
        if max(fa, fb) > 1:
            f = math.lcm(fa, fb)
            if lo != self.FIXED and self.size[lo] % f:
                self.fix(_P(lo, 1), f"GroupNorm groups of {fa} and {fb} channels tied "
                                    f"across {self.size[lo]} channels")
            else:
                self.factor[lo] = f
        return lo

    def coarsen(self, g: int, per: int) -> bool:
        """Make group ``g``'s units blocks of ``per`` consecutive channels (a GroupNorm's
        groups: only whole groups may move). False if its channels do not split so."""
        r = self.find(g)
        f = math.lcm(self.factor.get(r, 1), per)
        if r == self.FIXED or self.size[r] % f:
            return False
        self.factor[r] = f
        return True

    def new_group(self, n: int, creator: str) -> int:
        self.parent.append(len(self.parent))
        self.size.append(n)
        self.creator.append(creator)
        return len(self.parent) - 1

    def fix(self, p: _P | None, reason: str, expected: bool = False) -> None:
        if p is None:
            return
        root = self.find(p.g)
        if root == self.FIXED:
            return
        if not expected:
            msg = f"permutation_spec: units of {self.creator[root]} are left unpermuted: {reason}"
            if self.strict:
                raise NotImplementedError(
                    msg + " (strict=True; pass strict=False to leave such groups unpermuted)"
                )
            warnings.warn(msg, SpecWarning, stacklevel=4)
        self.reasons[root] = reason
        self.parent[root] = self.FIXED

    def add(self, g: int, name: str, axis: int, block: int, role: str,
            segments: int = 1) -> None:
        if name not in self.tensor_names:
            return
        key = (name, axis)
        if key in self.by_tensor_axis:  # shared weights: the same axis in two places
            g = self.union(self.by_tensor_axis[key], g)
        self.by_tensor_axis[key] = g
        self.entries.append((g, Axis(name, axis, block, role, segments)))

    # helpers
    def shape(self, node: Any) -> tuple[int, ...] | None:
        return node.meta.get("shape") if isinstance(node, fx.Node) else None

    def st(self, node: Any) -> _P | None:
        return self.state.get(node) if isinstance(node, fx.Node) else None

    def tensor_inputs(self, node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n))
        return out

    def fix_inputs(self, node: fx.Node, what: str) -> None:
        for inp in self.tensor_inputs(node):
            self.fix(self.st(inp), what)

    # ------------------------------------------------------------------ rules
    def run(self) -> None:
        for pos, node in enumerate(self.gm.graph.nodes):
            self.pos = pos
            self.state[node] = self.visit(node)
        # a module's tensor also read directly in forward (a tied embedding used as an
        # output matrix through F.linear) would be permuted under that reader too
        for name in sorted(set(self.direct_reads) - self.moved):
            for g, ax in self.entries:
                if ax.name == name:
                    self.fix(_P(g, ax.axis), f"{name} is also read directly in forward")

    def not_odd(self, g: int) -> None:
        """Group ``g`` passes through an operation that is not odd (at the current node)."""
        self.nonodd.add(g)
        self.nonodd_at.append((g, self.pos))

    def sole_path_from(self, x: Any, g: int) -> bool:
        """Whether ``x`` is reached from group ``g``'s producer (its only user) through
        element-wise operations that each have one user: then every path of the group's
        units from its producer passes through the node that reads ``x``."""
        while isinstance(x, fx.Node) and len(x.users) == 1:
            if x.op == "call_module":
                mod = self.modules[str(x.target)]
                if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)):
                    return str(x.target) == self.creator[g]
                if not isinstance(mod, _ELEMENTWISE_MODULES):
                    return False
            elif not (x.op in ("call_function", "call_method")
                      and _name_of(x.target) in _ELEMENTWISE_NAMES
                      and len(self.tensor_inputs(x)) == 1):
                return False
            x = x.args[0] if x.args else None
        return False

    def note_sign_norm(self, x: Any, s: _P, target: str, mod: nn.Module) -> None:
        """A norm layer on group ``s``: the sign flip can start after it when the norm has
        an affine weight and every path of the group passes through it (its weight and
        bias absorb the flip; see the module docstring); otherwise it is not odd."""
        if getattr(mod, "weight", None) is not None and self.sole_path_from(x, s.g):
            self.nonodd.add(s.g)  # not odd before the norm; the flip starts after it
            self.sign_norms.append((s.g, target, self.pos))
        else:
            self.not_odd(s.g)

    def visit(self, node: fx.Node) -> _P | None:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            for inp in self.tensor_inputs(node):
                self.fix(self.st(inp), "it reaches the model output", expected=True)
            return None
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)])
        name = _name_of(node.target)
        if node.op == "call_function" and node.target is getattr:
            return None
        if node.op == "call_method" and name in _SHAPE_QUERIES:
            return None
        if node.op == "call_function" and node.target is operator.getitem:
            return self.visit_getitem(node)
        x = node.args[0] if node.args else None
        s = self.st(x)
        if (node.op == "call_function" and node.target in _BINARY) or (
            node.op == "call_method" and name in _BINARY_METHODS
        ):
            op = _BINARY.get(node.target) or _BINARY_METHODS[name]
            return self.visit_binary(node, op)
        if name in _ELEMENTWISE_NAMES and (
            node.op == "call_method"
            or (getattr(node.target, "__module__", None) or "torch").startswith("torch")
        ):
            self.only_first_input(node, f"{name}")
            if s is not None and name not in _HOMOGENEOUS_NAMES:
                self.nonhom.add(s.g)
            if s is not None and name not in _ODD_NAMES:
                self.not_odd(s.g)
            return s
        if name in _POOL_NAMES:
            return self.visit_pool(node, s, name)
        if name in _REDUCE_NAMES:
            return self.visit_reduce(node, s)
        if name in _RESHAPE_NAMES:
            return self.visit_reshape(node, s, name)
        if name in ("transpose", "swapaxes", "swapdims", "permute", "movedim", "t"):
            return self.visit_transpose(node, s, name)
        if name == "cat":
            return self.visit_cat(node)
        self.fix_inputs(node, f"unsupported operation {name!r} (node {node.name})")
        return None

    def only_first_input(self, node: fx.Node, what: str) -> None:
        for inp in self.tensor_inputs(node)[1:]:
            self.fix(self.st(inp), f"{what} with a permuted second operand (node {node.name})")

    def visit_module(self, node: fx.Node, mod: nn.Module) -> _P | None:
        target = str(node.target)
        x = node.args[0] if node.args else None
        s, shape = self.st(x), self.shape(x)
        out_shape = self.shape(node)
        if len(self.tensor_inputs(node)) > 1 and not isinstance(mod, nn.Linear):
            self.fix_inputs(node, f"module {target} ({type(mod).__name__}) with several inputs")
            return None
        if isinstance(mod, nn.Linear):
            if s is not None:
                if shape is None or s.axis != len(shape) - 1:
                    self.fix(s, f"Linear {target} reads the last axis, the group is on axis "
                                f"{s.axis}")
                else:
                    self.add(s.g, f"{target}.weight", 1, s.block, "out")
                    self.consumers.append((s.g, target, s.axis, s.block))
            g = self.new_group(mod.out_features, target)
            self.add(g, f"{target}.weight", 0, 1, "in")
            self.add(g, f"{target}.bias", 0, 1, "in")
            return _P(g, len(out_shape) - 1) if out_shape else None
        if isinstance(mod, nn.modules.conv._ConvNd):
            spatial = len(mod.kernel_size)
            cax = len(shape) - spatial - 1 if shape else 1
            transposed = bool(mod.transposed)
            w_in, w_out = (0, 1) if transposed else (1, 0)
            if mod.groups != 1:
                depthwise = mod.groups == mod.in_channels == mod.out_channels and not transposed
                if depthwise and (s is None or (s.axis == cax and s.block == 1)):
                    if s is None:
                        return None
                    self.add(s.g, f"{target}.weight", 0, 1, "norm")
                    self.add(s.g, f"{target}.bias", 0, 1, "norm")
                    self.nonhom.add(s.g)
                    self.not_odd(s.g)
                    return s
                self.fix(s, f"grouped convolution {target} (groups={mod.groups})")
                return None
            if s is not None:
                if s.axis != cax or s.block != 1:
                    self.fix(s, f"{type(mod).__name__} {target} reads channel axis {cax}, the "
                                f"group is on axis {s.axis} (block {s.block})")
                else:
                    self.add(s.g, f"{target}.weight", w_in, 1, "out")
                    self.consumers.append((s.g, target, s.axis, 1))
            g = self.new_group(mod.out_channels, target)
            self.add(g, f"{target}.weight", w_out, 1, "in")
            self.add(g, f"{target}.bias", 0, 1, "in")
            return _P(g, cax)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if s is None:
                return None
            if s.axis != 1 or s.block != 1:
                self.fix(s, f"BatchNorm {target} normalises axis 1, the group is on axis {s.axis}")
                return None
            for p in ("weight", "bias", "running_mean", "running_var"):
                self.add(s.g, f"{target}.{p}", 0, 1, "norm")
            self.nonhom.add(s.g)
            self.note_sign_norm(x, s, target, mod)
            self.note_norm_scale(x, target, "unit")
            return s
        if isinstance(mod, nn.Embedding):  # a new group: the embedding's columns
            g = self.new_group(mod.embedding_dim, target)
            self.add(g, f"{target}.weight", 1, 1, "in")
            return _P(g, len(out_shape) - 1) if out_shape else None
        if isinstance(mod, nn.GroupNorm):
            if s is None:
                return None
            per = mod.num_channels // mod.num_groups
            if s.axis != 1 or s.block != 1 or not self.coarsen(s.g, per):
                self.fix(s, f"GroupNorm {target} normalises groups of {per} channels on axis "
                            f"1, the group is on axis {s.axis} (block {s.block})")
                return None
            for p in ("weight", "bias"):
                self.add(s.g, f"{target}.{p}", 0, 1, "norm")
            self.nonhom.add(s.g)
            self.not_odd(s.g)
            return s
        if isinstance(mod, nn.TransformerEncoderLayer):
            return self.visit_encoder_layer(target, mod, s, shape)
        if isinstance(mod, nn.LayerNorm):
            self.note_norm_scale(x, target, "layer")
            if s is None or shape is None:
                return s
            k = len(mod.normalized_shape)
            first = len(shape) - k
            if s.axis >= first:
                for p in ("weight", "bias"):
                    self.add(s.g, f"{target}.{p}", s.axis - first, s.block, "norm")
                self.note_sign_norm(x, s, target, mod)
            else:  # the group's rows are normalised with an unflipped bias
                self.not_odd(s.g)
            self.nonhom.add(s.g)
            return s
        if isinstance(mod, _ELEMENTWISE_MODULES) or (
            isinstance(mod, nn.PReLU) and mod.num_parameters == 1
        ):
            if s is not None and not isinstance(mod, _HOMOGENEOUS_MODULES):
                self.nonhom.add(s.g)
            if s is not None and not _is_odd(mod):
                self.not_odd(s.g)
            return s
        if isinstance(mod, _POOL_MODULES):
            return self.visit_pool(node, s, type(mod).__name__)
        if isinstance(mod, (nn.Flatten, nn.Unflatten)):
            return self.visit_reshape(node, s, type(mod).__name__)
        if s is None and any(True for _ in mod.parameters()):
            # nothing flows in to fix, but the module's own units are never permuted
            msg = (f"permutation_spec: the parameters of {target} ({type(mod).__name__}) are "
                   "left unpermuted: unsupported module")
            if self.strict:
                raise NotImplementedError(msg + " (strict=True; pass strict=False to leave "
                                          "them unpermuted)")
            warnings.warn(msg, SpecWarning, stacklevel=3)
        self.fix(s, f"unsupported module {target} ({type(mod).__name__})")
        return None

    def visit_encoder_layer(self, target: str, mod: nn.TransformerEncoderLayer,
                            s: _P | None, shape: tuple[int, ...] | None) -> _P | None:
        """An ``nn.TransformerEncoderLayer`` (a torch.fx leaf): its feed-forward hidden
        units are a new group; a group on the model axis flowing in passes through (the
        attention's input columns, its output projection's rows, the FFN's input columns
        and output rows and both LayerNorms move with it: the residual stream's units).
        The attention heads are a group too (blocks of ``head_dim`` rows moved alike in
        the query, key and value projections, and the output projection's columns)."""
        if s is not None and (shape is None or s.axis != len(shape) - 1 or s.block != 1):
            self.fix(s, f"{target} reads the last axis, the group is on axis {s.axis}")
            s = None
        if s is not None:
            for name, axis, role in (
                ("self_attn.in_proj_weight", 1, "out"), ("linear1.weight", 1, "out"),
                ("self_attn.out_proj.weight", 0, "in"), ("self_attn.out_proj.bias", 0, "in"),
                ("linear2.weight", 0, "in"), ("linear2.bias", 0, "in"),
                ("norm1.weight", 0, "norm"), ("norm1.bias", 0, "norm"),
                ("norm2.weight", 0, "norm"), ("norm2.bias", 0, "norm"),
            ):
                self.add(s.g, f"{target}.{name}", axis, 1, role)
            self.nonhom.add(s.g)
            self.not_odd(s.g)
        attn = mod.self_attn
        if attn._qkv_same_embed_dim and attn.bias_k is None and attn.num_heads > 1:
            # heads: the same permutation of head_dim-row blocks in the query, key and
            # value parts of the packed projection, and of the output's input columns
            h = self.new_group(attn.num_heads, f"{target}.self_attn")
            hd = attn.head_dim
            self.add(h, f"{target}.self_attn.in_proj_weight", 0, hd, "in", segments=3)
            self.add(h, f"{target}.self_attn.in_proj_bias", 0, hd, "in", segments=3)
            self.add(h, f"{target}.self_attn.out_proj.weight", 1, hd, "out")
            self.nonhom.add(h)
            self.not_odd(h)
        g = self.new_group(mod.linear1.out_features, f"{target}.linear1")
        self.add(g, f"{target}.linear1.weight", 0, 1, "in")
        self.add(g, f"{target}.linear1.bias", 0, 1, "in")
        self.add(g, f"{target}.linear2.weight", 1, 1, "out")
        self.consumers.append((g, f"{target}.linear2", len(shape) - 1 if shape else -1, 1))
        self.nonhom.add(g)  # conservative: no rescaling or sign claims inside the layer
        self.not_odd(g)
        return s

    def note_norm_scale(self, x: Any, norm: str, kind: str) -> None:
        """Record a Linear/Conv whose output feeds only the norm layer ``norm``."""
        if not (isinstance(x, fx.Node) and x.op == "call_module" and len(x.users) == 1):
            return
        prod = self.modules[str(x.target)]
        if isinstance(prod, nn.modules.conv._ConvNd) and prod.transposed:
            return
        if isinstance(prod, (nn.Linear, nn.modules.conv._ConvNd)):
            self.norm_scales.append(NormScale(str(x.target), norm, kind, 0))

    def visit_pool(self, node: fx.Node, s: _P | None, name: str) -> _P | None:
        if s is None:
            return None
        shape, out = self.shape(node.args[0]), self.shape(node)
        spatial = 1 if "1d" in name else 2 if "2d" in name else 3
        if (shape is None or out is None or len(shape) != len(out) or s.block != 1
                or s.axis != len(shape) - spatial - 1 or shape[s.axis] != out[s.axis]):
            self.fix(s, f"pooling {name} (node {node.name}) over the permuted axis")
            return None
        if "max" in name.lower():  # max(-x) = -min(x)
            self.not_odd(s.g)
        return s

    def visit_reduce(self, node: fx.Node, s: _P | None) -> _P | None:
        if s is None:
            return None
        shape, out = self.shape(node.args[0]), self.shape(node)
        if shape is None or out is None:
            self.fix(s, f"reduction {node.target} (node {node.name}) of unknown shape")
            return None
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        nd = len(shape)
        dims = (set(range(nd)) if dim is None
                else {d % nd for d in (dim if isinstance(dim, (tuple, list)) else [dim])})
        if s.axis in dims:
            # reducing over the units: invariant to permuting them, but not to flipping
            # or rescaling some of them (no later layer absorbs it)
            self.nonhom.add(s.g)
            self.not_odd(s.g)
            return None
        if _name_of(node.target) in ("amax", "amin"):
            self.not_odd(s.g)
        axis = s.axis if keep else s.axis - sum(d < s.axis for d in dims)
        return _P(s.g, axis, s.block)

    def visit_reshape(self, node: fx.Node, s: _P | None, name: str) -> _P | None:
        if s is None:
            return None
        shape, out = self.shape(node.args[0]), self.shape(node)
        if shape is None or out is None:
            self.fix(s, f"{name} (node {node.name}) of unknown shape")
            return None
        outer = math.prod(shape[: s.axis])
        inner = math.prod(shape[s.axis + 1 :])
        unit = s.block * inner  # contiguous elements per unit within one outer slice
        for k in range(len(out)):
            if math.prod(out[:k]) != outer or out[k] == 1 and k + 1 < len(out):
                continue
            inner_out = math.prod(out[k + 1 :])
            if inner_out and unit % inner_out == 0 and out[k] * inner_out == shape[s.axis] * inner:
                return _P(s.g, k, unit // inner_out)
        self.fix(s, f"{name} (node {node.name}) splits or mixes the permuted units "
                    f"({shape} -> {out})")
        return None

    def visit_transpose(self, node: fx.Node, s: _P | None, name: str) -> _P | None:
        if s is None:
            return None
        shape = self.shape(node.args[0])
        if shape is None:
            self.fix(s, f"{name} (node {node.name}) of unknown shape")
            return None
        nd = len(shape)
        args = list(node.args[1:])
        if name == "t":
            args = [0, 1]
        if name == "permute":
            dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            dims = [d % nd for d in dims]
            return _P(s.g, dims.index(s.axis), s.block)
        if name == "movedim":
            src, dst = args[0] % nd, args[1] % nd
            order = [d for d in range(nd) if d != src]
            order.insert(dst, src)
            return _P(s.g, order.index(s.axis), s.block)
        d0 = (args[0] if args else node.kwargs.get("dim0")) % nd
        d1 = (args[1] if len(args) > 1 else node.kwargs.get("dim1")) % nd
        axis = d1 if s.axis == d0 else d0 if s.axis == d1 else s.axis
        return _P(s.g, axis, s.block)

    def visit_getitem(self, node: fx.Node) -> _P | None:
        x, idx = node.args
        s, shape = self.st(x), self.shape(x)
        if s is None:
            return None
        if shape is None:  # indexing a tuple output
            self.fix(s, f"indexing (node {node.name})")
            return None
        items = list(idx) if isinstance(idx, tuple) else [idx]
        if any(isinstance(i, (fx.Node, Tensor, list)) for i in items):
            self.fix(s, f"advanced indexing (node {node.name})")
            return None
        n_consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in items:
            if i is Ellipsis:
                expanded += [slice(None)] * (len(shape) - n_consumed)
            else:
                expanded.append(i)
        expanded += [slice(None)] * (len(shape) - sum(i is not None for i in expanded))
        in_ax = out_ax = 0
        for i in expanded:
            if i is None:
                out_ax += 1
                continue
            if in_ax == s.axis:
                if isinstance(i, slice) and i == slice(None):
                    return _P(s.g, out_ax, s.block)
                self.fix(s, f"indexing the permuted axis (node {node.name})")
                return None
            in_ax += 1
            if isinstance(i, slice):
                out_ax += 1
        return None

    def visit_binary(self, node: fx.Node, op: str) -> _P | None:
        a = node.args[0]
        b = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        out = self.shape(node)
        sa, sb = self.st(a), self.st(b)
        if out is None:
            self.fix_inputs(node, f"{op} (node {node.name}) of unknown shape")
            return None

        def aligned(p: _P | None, operand: Any) -> _P | None:
            if p is None:
                return None
            return _P(p.g, p.axis + len(out) - len(self.shape(operand)), p.block)

        pa, pb = aligned(sa, a), aligned(sb, b)
        if pa is not None and pb is not None:
            if (pa.axis, pa.block) != (pb.axis, pb.block):
                self.fix(pa, f"{op} of two tensors permuted on different axes (node {node.name})")
                self.fix(pb, f"{op} of two tensors permuted on different axes (node {node.name})")
                return None
            g = self.union(pa.g, pb.g)
            if op != "add" and op != "sub":
                self.nonhom.add(g)
                self.not_odd(g)  # a product of two flipped units is even
            return _P(g, pa.axis, pa.block)
        p, other = (pa, b) if pa is not None else (pb, a)
        if p is None:
            return None
        oshape = self.shape(other)
        if self.moves_with(other, p, len(out), oshape):
            self.nonhom.add(p.g)  # conservative: no rescaling or sign claims with it
            self.not_odd(p.g)
            return p
        if oshape is not None:  # a tensor that is not permuted with the group
            k = p.axis - (len(out) - len(oshape))
            if k >= 0 and oshape[k] != 1:
                self.fix(p, f"{op} with an unpermuted tensor {getattr(other, 'name', other)} "
                            f"(node {node.name})")
                return None
        if not (op in ("mul", "div") and isinstance(other, (int, float)) and other > 0):
            self.nonhom.add(p.g)
        if op not in ("mul", "div"):  # -x + c != -(x + c)
            self.not_odd(p.g)
        return p

    def moves_with(self, other: Any, p: _P, rank: int, oshape: tuple[int, ...] | None) -> bool:
        """Whether ``other`` is one of the model's tensors (a ``get_attr``, or a slice of
        one: a learned position table, a layer scale) spanning the group's axis in a sum
        or product: it then moves with the group (its axis added to the group)."""
        if not isinstance(other, fx.Node) or oshape is None:
            return False
        k = p.axis - (rank - len(oshape))
        found = self.model_tensor_axis(other, k) if k >= 0 and oshape[k] != 1 else None
        if found is None:
            return False
        self.add(p.g, found[0], found[1], p.block, "in")
        self.moved.add(found[0])
        return True

    def model_tensor_axis(self, node: fx.Node, k: int) -> tuple[str, int] | None:
        """``(name, axis)`` of the model tensor whose axis ``k`` is ``node``'s axis ``k``:
        ``node`` a ``get_attr`` of it or a basic slice of one that leaves axis ``k``
        whole (``pos_embed[:T]``); else None."""
        if node.op == "get_attr":  # its one reader in the graph is this sum or product
            name = str(node.target)
            return (name, k) if self.direct_reads.get(name) == 1 else None
        if node.op != "call_function" or node.target is not operator.getitem \
                or len(node.users) != 1:
            return None
        base, idx = node.args
        items = list(idx) if isinstance(idx, tuple) else [idx]
        if not isinstance(base, fx.Node) or not all(isinstance(i, slice) for i in items):
            return None  # an integer, None or Ellipsis would shift the axes
        if k < len(items) and items[k] != slice(None):
            return None
        return self.model_tensor_axis(base, k)

    def visit_cat(self, node: fx.Node) -> _P | None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        states = [self.st(t) for t in tensors]
        shape = self.shape(node)
        if shape is None or all(p is None for p in states):
            return None
        dim %= len(shape)
        first = next(p for p in states if p is not None)
        ok = all(p is not None and (p.axis, p.block) == (first.axis, first.block)
                 for p in states) and first.axis != dim
        if not ok:
            for p in states:
                self.fix(p, f"concatenation (node {node.name}) along or across the permuted axis")
            return None
        g = first.g
        for p in states[1:]:
            g = self.union(g, p.g)
        self.nonhom.add(g)
        return _P(g, first.axis, first.block)

    # ----------------------------------------------------------------- result
    def spec(self) -> PermutationSpec:
        roots: dict[int, str] = {}
        groups: dict[str, list[Axis]] = {}
        sizes: dict[str, int] = {}
        producers: dict[str, list[str]] = {}
        for g in range(1, len(self.parent)):
            r = self.find(g)
            if r == self.FIXED:
                continue
            if r not in roots:
                roots[r] = self.creator[r]
                groups[roots[r]], sizes[roots[r]], producers[roots[r]] = [], self.size[r], []
            producers[roots[r]].append(self.creator[g])
        for r, f in self.factor.items():  # GroupNorm groups: units of f channels
            if r in roots:
                sizes[roots[r]] //= f
        seen: set[tuple[str, str, int]] = set()
        for g, ax in self.entries:
            r = self.find(g)
            if r in roots and (roots[r], ax.name, ax.axis) not in seen:
                seen.add((roots[r], ax.name, ax.axis))
                f = self.factor.get(r, 1)
                groups[roots[r]].append(ax if f == 1 else Axis(ax.name, ax.axis, ax.block * f,
                                                                 ax.role, ax.segments))
        consumers: dict[str, list[tuple[str, int, int]]] = {}
        for g, mod, axis, block in self.consumers:
            r = self.find(g)
            if r in roots:
                consumers.setdefault(roots[r], []).append(
                    (mod, axis, block * self.factor.get(r, 1)))
        bad = {self.find(g) for g in self.nonhom} | {self.find(g) for g in self.tied}
        rescalable = {name for r, name in roots.items() if r not in bad}
        not_odd = {self.find(g) for g in self.nonodd}
        odd = {name for r, name in roots.items() if r not in not_odd}
        tied = {self.find(g) for g in self.tied}
        sign_from: dict[str, str] = {}
        for r, name in roots.items():
            norms = [(t, pos) for g, t, pos in self.sign_norms if self.find(g) == r]
            if len(norms) != 1 or r in tied:
                continue
            target, at = norms[0]
            if not any(self.find(g) == r and pos > at for g, pos in self.nonodd_at):
                odd.add(name)
                sign_from[name] = target
        fixed = {self.creator[g]: self.reasons.get(g, "tied to a fixed group")
                 for g in range(1, len(self.parent)) if self.find(g) == self.FIXED}
        return PermutationSpec(groups, sizes, producers, consumers, rescalable, fixed,
                               self.gm.graph, odd=odd, norm_scales=list(self.norm_scales),
                               sign_from=sign_from)


def permutation_spec(
    model: nn.Module,
    example_input: Tensor | tuple | None = None,
    strict: bool = False,
    data: Any = None,
) -> PermutationSpec:
    """The permutation symmetry groups of ``model``, found from its torch.fx graph.

    Parameters
    ----------
    model : nn.Module
        Traced in eval mode on ``example_input`` (its values are not used).
    example_input : Tensor or tuple of Tensors, optional
        A small batch of inputs. Default: the first samples of ``data`` when
        given, else ``model.example_input(2)`` when the model provides it, else
        a batch inferred from the model's first Linear / Conv / Embedding layer
        (:func:`~lossatlas.symmetry.infer_example_input`).
    strict : bool
        Raise NotImplementedError on an operation the rules do not cover instead
        of leaving the group that flows into it unpermuted (with a SpecWarning).
    data : (X, y) pair, Dataset, DataLoader or TensorData, optional
        Only to take an example input from when ``example_input`` is None.

    Returns
    -------
    PermutationSpec
    """
    if not isinstance(model, nn.Module):
        raise InputTypeError(f"permutation_spec: expected an nn.Module, got {type(model).__name__}")
    example_input = resolve_example_input(model, example_input, data, who="permutation_spec")
    gm = trace(model, example_input)
    builder = _Builder(gm, strict)
    builder.run()
    spec = builder.spec()
    spec.validate(model.state_dict(), f"state dict of {type(model).__name__}")
    log.info("permutation_spec: %r", spec)
    return spec


# ------------------------------------------------------------- permutations
def _unit_index(perm: Tensor, block: int, segments: int = 1) -> Tensor:
    """Entry indices of the units ``perm`` in order (each of ``block`` entries), repeated
    in each of ``segments`` consecutive parts of ``len(perm) * block`` entries."""
    idx = perm if block == 1 else (
        perm[:, None] * block + torch.arange(block, device=perm.device)).reshape(-1)
    if segments == 1:
        return idx
    part = len(perm) * block
    return (torch.arange(segments, device=perm.device)[:, None] * part + idx).reshape(-1)


def permute_axis(t: Tensor, axis: int, perm: Tensor, block: int = 1,
                 segments: int = 1) -> Tensor:
    """``t`` with units along ``axis`` reordered: new unit ``i`` is old unit ``perm[i]``
    (in each of ``segments`` equal parts of the axis)."""
    return t.index_select(axis, _unit_index(perm.to(t.device), block, segments))


def scale_axis(t: Tensor, axis: int, c: Tensor, block: int = 1, segments: int = 1) -> Tensor:
    """``t`` with unit ``i`` along ``axis`` (``block`` entries each, in each of
    ``segments`` parts) multiplied by ``c[i]``."""
    c = torch.as_tensor(c).to(t.device, t.dtype).repeat_interleave(block).repeat(segments)
    shape = [1] * t.ndim
    shape[axis] = -1
    return t * c.reshape(shape)


def identity_permutation(spec: PermutationSpec) -> dict[str, Tensor]:
    """``{group: arange(n)}`` for every group."""
    return {g: torch.arange(n) for g, n in spec.sizes.items()}


def random_permutation(
    spec: PermutationSpec, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """A uniformly random permutation ``LongTensor[n]`` for every group."""
    return {g: torch.randperm(n, generator=generator) for g, n in spec.sizes.items()}


def random_signs(
    spec: PermutationSpec, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Uniformly random signs ``Tensor[n]`` of +-1 (float) for every group in ``spec.odd``."""
    return {g: (2 * torch.randint(0, 2, (spec.sizes[g],), generator=generator) - 1).float()
            for g in spec.groups if g in spec.odd}


def _check_signs(spec: PermutationSpec, signs: Mapping[str, Tensor], who: str
                 ) -> dict[str, Tensor]:
    out = {}
    for g, sg in signs.items():
        if g not in spec.odd:
            raise MissingKeyError(
                f"{who}: group {g!r} has no sign-flip symmetry (its units pass through a "
                f"non-odd operation, e.g. ReLU or a norm layer); odd groups: "
                f"{sorted(spec.odd)[:6]}"
            )
        sg = torch.as_tensor(sg)
        if sg.shape != (spec.sizes[g],) or not bool((sg.abs() == 1).all()):
            raise ValueError(
                f"{who}: signs of group {g!r} must be a Tensor[{spec.sizes[g]}] of +-1, got "
                f"shape {tuple(sg.shape)}"
            )
        out[g] = sg
    return out


def apply_permutation(
    spec: PermutationSpec, state_dict: Mapping[str, Tensor], perms: Mapping[str, Tensor],
    signs: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """A state dict with every group's units reordered by ``perms`` (and sign-flipped).

    ``perms[g]`` is a LongTensor[n]: unit ``i`` of the result is unit
    ``perms[g][i]`` of ``state_dict``. ``signs[g]`` (Tensor[n] of +-1, groups in
    ``spec.odd`` only) then multiplies unit ``i`` of the result, i.e. its incoming
    weights, bias and outgoing weights: a signed permutation. Groups missing from
    ``perms`` / ``signs`` stay as they are; tensors that no group touches are shared
    with ``state_dict`` (not copied).
    """
    signs = _check_signs(spec, signs or {}, "apply_permutation")
    unknown = set(perms) - set(spec.groups)
    if unknown:
        raise MissingKeyError(
            f"apply_permutation: no group named {sorted(unknown)[:3]}; groups are "
            f"{list(spec.groups)[:6]}"
        )
    out = dict(state_dict)
    for g, axes in spec.groups.items():
        if g not in perms:
            continue
        p = torch.as_tensor(perms[g]).long()
        if p.shape != (spec.sizes[g],):
            raise ValueError(
                f"apply_permutation: permutation of group {g!r} has shape {tuple(p.shape)}, "
                f"expected ({spec.sizes[g]},)"
            )
        for ax in axes:
            out[ax.name] = permute_axis(out[ax.name], ax.axis, p, ax.block, ax.segments)
    for g, sg in signs.items():
        for ax in spec.signed_axes(g):
            out[ax.name] = scale_axis(out[ax.name], ax.axis, sg, ax.block, ax.segments)
    return out


def permute_model(model: nn.Module, spec: PermutationSpec, perms: Mapping[str, Tensor],
                  signs: Mapping[str, Tensor] | None = None) -> nn.Module:
    """A deep copy of ``model`` with its units permuted by ``perms`` and flipped by
    ``signs`` (same function; see :func:`apply_permutation`)."""
    new = copy.deepcopy(model)
    new.load_state_dict(apply_permutation(spec, model.state_dict(), perms, signs))
    return new


def spec_discrepancy(
    model: nn.Module,
    spec: PermutationSpec,
    x: Tensor | tuple,
    generator: torch.Generator | None = None,
) -> float:
    """Max abs difference of outputs (eval mode) between ``model`` and a randomly
    permuted copy (by ``spec``, with random sign flips of the ``spec.odd`` groups) on
    inputs ``x``; 0 up to rounding for a correct spec."""
    inputs = x if isinstance(x, tuple) else (x,)
    gen = generator or torch.Generator().manual_seed(0)
    was = model.training
    model.eval()
    try:
        perms = random_permutation(spec, gen)
        permuted = permute_model(model, spec, perms, random_signs(spec, gen)).eval()
        with torch.no_grad():
            ref, out = model(*inputs), permuted(*inputs)
    finally:
        model.train(was)
    return float((ref - out).abs().max())


def check_spec(
    model: nn.Module,
    spec: PermutationSpec,
    x: Tensor | tuple,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> bool:
    """Whether random permutations by ``spec`` leave ``model``'s function unchanged.

    True when the max abs output difference on ``x`` is below
    ``tol * (1 + max |output|)``. A spec that misses a tensor of a group, or
    groups units wrongly, changes the outputs and gives False.
    """
    inputs = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        was = model.training
        model.eval()
        scale = float(model(*inputs).abs().max())
        model.train(was)
    diff = spec_discrepancy(model, spec, x, generator)
    ok = diff <= tol * (1.0 + scale)
    if not ok:
        log.warning("check_spec: outputs change by %.3g under a permutation (scale %.3g)",
                    diff, scale)
    return ok

