"""A small name -> factory registry (models, datasets, methods) and factory specs.

A `Registry` maps names to factory functions registered with a decorator; `create`
builds an object by name, dropping ``None`` keyword arguments so that CLI defaults
never override a factory's own defaults. A name of the form ``"package.module:function"``
is resolved with `resolve_factory` instead, so users bring their own factories::

    MODELS = Registry("model")

    @MODELS.register()
    def mlp(in_features: int = 40) -> nn.Module: ...

    MODELS.create("mlp", in_features=64)
    MODELS.create("mypkg.nets:make_net", width=2)
    MODELS.list("resnet*")
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FactoryError", "Registry", "UnknownNameError", "resolve_factory"]


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry (catch as `KeyError` or `ValueError`)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FactoryError(ValueError):
    """A ``"package.module:function"`` factory spec that cannot be resolved."""


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Return the callable named by ``"package.module:function"``.

    The part after ``:`` may be dotted (``"pkg.mod:Class.build"``). Raises `FactoryError`
    with a one-line message naming the spec if the module cannot be imported, the
    attribute is missing, or it is not callable.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise FactoryError(
            f"lossatlas: factory spec {spec!r} must have the form 'package.module:function' "
            "(exactly one ':')"
        )
    module_name, attr_path = (part.strip() for part in spec.split(":"))
    if not module_name or not attr_path:
        raise FactoryError(
            f"lossatlas: factory spec {spec!r} must have the form 'package.module:function' "
            "(module and function both non-empty)"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FactoryError(
            f"lossatlas: cannot import module {module_name!r} from factory spec {spec!r} ({reason})"
        ) from exc
    owner = module_name
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise FactoryError(
                f"lossatlas: factory spec {spec!r}: module {owner!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, attr)
        owner = f"{owner}.{attr}"
    if not callable(obj):
        raise FactoryError(
            f"lossatlas: factory spec {spec!r} names a {type(obj).__name__}, which is not "
            "callable; point it at a function or class"
        )
    return obj


class Registry:
    """Names -> factory functions for one kind of object (``"model"``, ``"dataset"``, ...).

    Parameters
    ----------
    kind : str
        What the registry holds; used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a factory under ``name`` (default: the function's name)."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = name if name is not None else fn.__name__
            if key in self._factories and self._factories[key] is not fn:
                raise ValueError(f"{self.kind} registry: name {key!r} is already registered")
            if ":" in key:
                raise ValueError(
                    f"{self.kind} registry: name {key!r} may not contain ':' (reserved for "
                    "'package.module:function' factory specs)"
                )
            self._factories[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``, or resolved from a ``"pkg.mod:fn"`` spec."""
        if ":" in name:
            return resolve_factory(name)
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._factories), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.list())}; "
                "or give a factory as 'package.module:function'"
            ) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the factory ``name`` (or ``"pkg.mod:fn"``) with ``kwargs``; ``None`` values
        are dropped so the factory's defaults apply."""
        factory = self.get(name)
        return factory(**{k: v for k, v in kwargs.items() if v is not None})

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted registered names matching the fnmatch ``pattern`` (e.g. ``"resnet*"``)."""
        return sorted(n for n in self._factories if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.list()})"
