"""A small name -> factory registry (models, datasets, methods) and factory specs.

A `Registry` maps names to factory functions registered with a decorator; `create`
builds an object by name, dropping ``None`` keyword arguments so that CLI defaults
never override a factory's own defaults. A name of the form ``"package.module:function"``
(or ``"path/to/file.py:function"``) is resolved with `resolve_factory` instead, so users
bring their own factories::

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
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from .errors import LossatlasError

__all__ = ["FactoryError", "Registry", "UnknownNameError", "resolve_factory"]


class UnknownNameError(KeyError, ValueError, LossatlasError):
    """A name that is not in a registry (catch as `KeyError` or `ValueError`)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FactoryError(ValueError, LossatlasError):
    """A factory spec that cannot be resolved, or a factory that raised when called."""


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__


def _file_module(spec: str, file_part: str) -> ModuleType:
    """Import ``file_part`` (a ``.py`` path, relative to the working directory) under a
    module name unique to its resolved path; a second call returns the same module. The
    file's directory is appended to ``sys.path`` so that it can import its neighbours,
    as when run as a script."""
    path = Path(file_part).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_file():
        raise FactoryError(
            f"lossatlas: factory spec {spec!r}: file {file_part!r} not found "
            f"(looked for {str(path)!r})"
        )
    path = path.resolve()
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"lossatlas_factory_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise FactoryError(f"lossatlas: factory spec {spec!r}: cannot load {str(path)!r} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # any error raised while importing the file
        del sys.modules[name]
        raise FactoryError(
            f"lossatlas: cannot import file {file_part!r} from factory spec {spec!r} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    return module


def _not_found(spec: str, module_name: str, exc: ModuleNotFoundError, cwd: str) -> NoReturn:
    """Raise the `FactoryError` for a module found neither installed nor in ``cwd``."""
    attr = spec.rpartition(":")[2].strip()
    raise FactoryError(
        f"lossatlas: cannot import module {module_name!r} from factory spec {spec!r} "
        f"({_first_line(exc)}); searched the installed packages and the current "
        f"directory {cwd!r}; for a file elsewhere give 'path/to/file.py:{attr}'"
    ) from exc


def _import_module(spec: str, module_name: str) -> ModuleType:
    """Import ``module_name``; when it is not found, retry with the working directory on
    ``sys.path`` (as ``python -m`` would have it), and name the directory searched."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        itself = module_name == missing or module_name.startswith(missing + ".")
        cwd = os.getcwd()
        if not itself:
            raise FactoryError(
                f"lossatlas: cannot import module {module_name!r} from factory spec {spec!r} "
                f"({_first_line(exc)})"
            ) from exc
        on_path = any(os.path.abspath(p or os.curdir) == cwd for p in sys.path)
        if not on_path:
            sys.path.append(cwd)
            importlib.invalidate_caches()
            try:
                return importlib.import_module(module_name)
            except Exception as again:
                sys.path.remove(cwd)  # only kept when the module came from there
                if isinstance(again, ModuleNotFoundError) and again.name == missing:
                    return _not_found(spec, module_name, again, cwd)
                raise FactoryError(
                    f"lossatlas: cannot import module {module_name!r} from factory spec "
                    f"{spec!r} ({type(again).__name__}: {_first_line(again)})"
                ) from again
        return _not_found(spec, module_name, exc, cwd)
    except Exception as exc:  # any error raised while importing
        raise FactoryError(
            f"lossatlas: cannot import module {module_name!r} from factory spec {spec!r} "
            f"({type(exc).__name__}: {_first_line(exc)})"
        ) from exc


def _public_callables(obj: Any) -> list[str]:
    names = []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            if callable(getattr(obj, name)):
                names.append(name)
        except Exception:  # a property that raises
            continue
    return names


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Return the callable named by ``"package.module:function"`` or ``"file.py:function"``.

    The part after ``:`` may be dotted (``"pkg.mod:Class.build"``). A module that is not
    installed is looked for in the current working directory too (as with ``python -m``);
    a path ending in ``.py`` is imported from that file. Raises `FactoryError` with a
    one-line message naming the spec if the module or file cannot be imported, the
    attribute is missing (with the closest public callables of the module), or it is not
    callable.
    """
    if not isinstance(spec, str):
        raise FactoryError(
            f"lossatlas: factory spec {spec!r} must be a string 'package.module:function'"
        )
    file_part, _, file_attr = spec.rpartition(":")
    if file_part.strip().endswith(".py"):
        module_name, attr_path = file_part.strip(), file_attr.strip()
        if not attr_path:
            raise FactoryError(
                f"lossatlas: factory spec {spec!r} must have the form 'file.py:function' "
                "(function non-empty)"
            )
        obj: Any = _file_module(spec, module_name)
    else:
        if spec.count(":") != 1:
            raise FactoryError(
                f"lossatlas: factory spec {spec!r} must have the form "
                "'package.module:function' (exactly one ':')"
            )
        module_name, attr_path = (part.strip() for part in spec.split(":"))
        if not module_name or not attr_path:
            raise FactoryError(
                f"lossatlas: factory spec {spec!r} must have the form "
                "'package.module:function' (module and function both non-empty)"
            )
        obj = _import_module(spec, module_name)
    owner = module_name
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            where = getattr(obj, "__file__", None) if owner == module_name else None
            where_text = f" (file {where!r})" if where else ""
            options = _public_callables(obj)
            close = difflib.get_close_matches(attr, options, n=3, cutoff=0.5)
            if close:
                hint = f". Did you mean {', '.join(map(repr, close))}?"
            elif options:
                more = ", ..." if len(options) > 12 else ""
                hint = f". Public callables: {', '.join(options[:12])}{more}"
            else:
                hint = ""
            raise FactoryError(
                f"lossatlas: factory spec {spec!r}: module {owner!r} has no attribute "
                f"{attr!r}{where_text}{hint}"
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
