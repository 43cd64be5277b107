"""A torch.fx tracer whose proxies carry concrete values computed on an example input.

``x.dim()``, ``x.shape``, ``x.size()`` and ``len(x)`` return real numbers during
tracing, so models with shape-dependent control flow (``if x.dim() == 2: ...``)
trace; the graph is specialised to the example input's shapes. Every traced
tensor node gets ``node.meta["shape"]`` (a tuple of ints).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from ..errors import UnsupportedModelError

__all__ = ["trace"]

_MISSING = object()


class _ConcreteProxy(fx.Proxy):
    """A Proxy that also holds the value its node takes on the example input."""

    def _concrete(self) -> Any:
        value = self.__dict__.get("_value", _MISSING)
        if value is _MISSING:
            raise fx.proxy.TraceError(
                f"no concrete value for node {self.node.name} ({self.node.target})"
            )
        return value

    def size(self, dim: int | None = None) -> Any:
        v = self._concrete()
        return v.size() if dim is None else v.size(dim)

    def dim(self) -> int:
        return self._concrete().dim()

    @property
    def shape(self) -> Any:  # type: ignore[override]
        return self._concrete().shape

    @property
    def ndim(self) -> int:
        return self._concrete().ndim

    @property
    def dtype(self) -> Any:
        return self._concrete().dtype

    @property
    def device(self) -> Any:
        return self._concrete().device

    def __len__(self) -> int:
        return len(self._concrete())


def _value_of(arg: Any) -> Any:
    if isinstance(arg, _ConcreteProxy):
        return arg._concrete()
    if isinstance(arg, fx.Proxy):
        raise fx.proxy.TraceError(f"no concrete value for node {arg.node.name}")
    return arg


class _ConcreteTracer(fx.Tracer):
    def __init__(self, inputs: dict[str, Any]):
        super().__init__()
        self.inputs = inputs
        self._forwards: list[Any] = []
        self._computing = False

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def call_module(self, m: nn.Module, forward, args, kwargs):  # noqa: ANN001
        if self._computing:  # a leaf module's own forward calling a submodule
            return forward(*args, **kwargs)
        self._forwards.append(forward)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._forwards.pop()

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None,  # noqa: ANN001
                     proxy_factory_fn=None):
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        vargs = fx.node.map_aggregate(args, _value_of)
        vkwargs = fx.node.map_aggregate(kwargs, _value_of)
        self._computing = True
        try:
            value = self._compute(kind, target, vargs, vkwargs)
        finally:
            self._computing = False
        if value is not _MISSING:
            proxy.__dict__["_value"] = value
            if isinstance(value, Tensor):
                proxy.node.meta["shape"] = tuple(value.shape)
        return proxy

    def _compute(self, kind: str, target: Any, vargs: Any, vkwargs: Any) -> Any:
        with torch.no_grad():
            if kind == "placeholder":
                value = self.inputs.get(target, _MISSING)
            elif kind == "get_attr":
                value = self.root
                for atom in str(target).split("."):
                    value = getattr(value, atom)
            elif kind == "call_function":
                value = target(*vargs, **vkwargs)
            elif kind == "call_method":
                value = getattr(vargs[0], target)(*vargs[1:], **vkwargs)
            elif kind == "call_module":
                value = self._forwards[-1](*vargs, **vkwargs)
            else:
                value = _MISSING
        return value

    def create_arg(self, a: Any) -> Any:
        # a tensor made inside forward (torch.arange(...), a fixed table) becomes a
        # get_attr constant without passing through create_proxy: record its shape too,
        # so that a sum with it is seen to span the units
        out = super().create_arg(a)
        if isinstance(a, Tensor) and isinstance(out, fx.Node) and "shape" not in out.meta:
            out.meta["shape"] = tuple(a.shape)
        return out

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if self._computing:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def trace(model: nn.Module, example_input: Tensor | tuple) -> fx.GraphModule:
    """Trace ``model`` on ``example_input`` (a tensor or a tuple of positional inputs).

    Raises RuntimeError naming the model when torch.fx cannot trace it (e.g.
    control flow that depends on tensor values).
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    import inspect

    params = [
        p.name for p in inspect.signature(model.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) < len(inputs):
        raise ValueError(
            f"trace: {type(model).__name__}.forward takes {len(params)} positional inputs, "
            f"got {len(inputs)} example inputs"
        )
    concrete = dict(zip(params, inputs, strict=False))
    concrete_args = {p: None for p in params[len(inputs):]}
    tracer = _ConcreteTracer(concrete)
    was_training = model.training
    model.eval()
    try:
        graph = tracer.trace(model, concrete_args=concrete_args or None)
    except Exception as err:  # noqa: BLE001 - re-raised with the model named
        raise UnsupportedModelError(
            f"trace: torch.fx could not trace {type(model).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)
    return fx.GraphModule(model, graph)
