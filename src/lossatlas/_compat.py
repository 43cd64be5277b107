"""Deprecated ways of reading results, kept working for one release."""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from .errors import InputTypeError, MissingKeyError

__all__ = ["DeprecatedDictAccess", "legacy_plot_path", "renamed_argument", "save_legacy_plot"]


class DeprecatedDictAccess:
    """Mixin for a result dataclass that used to be a ``dict``: ``result["key"]``,
    ``"key" in result``, ``result.get``, ``keys``, ``values``, ``items`` and iteration
    still work (over the dataclass's fields) but warn with a ``DeprecationWarning``
    pointing to the attribute; :meth:`to_dict` is the dict the function used to return.
    """

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (values as they are, not copied)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def _deprecated(self, how: str, key: object = None) -> None:
        attr = key if isinstance(key, str) and key in self._names() else self._names()[0]
        warnings.warn(
            f"{type(self).__name__}: dict-style access ({how}) is deprecated; read the "
            f"attribute (result.{attr}) or call result.to_dict()",
            DeprecationWarning,
            stacklevel=3,
        )

    def __getitem__(self, key: str) -> Any:
        self._deprecated(f"result[{key!r}]", key)
        if not isinstance(key, str) or key not in self._names():
            raise MissingKeyError(
                f"{type(self).__name__}: no field {key!r}; the fields are {self._names()}"
            )
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        self._deprecated(f"{key!r} in result", key)
        return key in self._names()

    def __iter__(self) -> Iterator[str]:
        self._deprecated("iteration")
        return iter(self._names())

    def get(self, key: str, default: Any = None) -> Any:
        """``getattr(result, key, default)`` for a field name (deprecated)."""
        self._deprecated(f"result.get({key!r})", key)
        return getattr(self, key) if key in self._names() else default

    def keys(self) -> list[str]:
        """The field names (deprecated)."""
        self._deprecated("result.keys()")
        return self._names()

    def values(self) -> list[Any]:
        """The field values (deprecated)."""
        self._deprecated("result.values()")
        return list(self.to_dict().values())

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs of the fields (deprecated)."""
        self._deprecated("result.items()")
        return list(self.to_dict().items())

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]


def legacy_plot_path(who: str, ax: Any, path: str | os.PathLike | None) -> tuple[Any, Any]:
    """``(ax, path)`` of a ``plot_*`` call, where an old call gave the file as the
    second positional argument (now ``ax``): that file moves to ``path``."""
    if isinstance(ax, (str, os.PathLike)):
        if path is not None:
            raise InputTypeError(f"{who}: ax={ax!r} is a file name; pass an Axes (or None)")
        return None, ax
    return ax, path


def save_legacy_plot(who: str, ax: Any, path: str | os.PathLike | None, **save_kwargs: Any) -> None:
    """Write ``ax``'s figure to ``path`` when an old call asked the ``plot_*`` function to
    save (deprecated: plot functions only draw; save with
    :func:`lossatlas.plotting.save_figure`)."""
    if path is None:
        return
    from .plotting import save_figure

    warnings.warn(
        f"{who}: path= is deprecated (plot functions only draw); call "
        f"lossatlas.plotting.save_figure(ax, path) on the Axes it returns",
        DeprecationWarning,
        stacklevel=3,
    )
    save_figure(ax, path, **save_kwargs)


def renamed_argument(old: str, new: str) -> Callable:
    """Decorator: the keyword argument ``old`` of a public function is now ``new``.

    A call passing ``old=`` still works for one release: the value is passed as
    ``new`` with a ``DeprecationWarning``; passing both is an error. Positional calls
    are unaffected (the parameter keeps its place).
    """

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__qualname__}: give {new}= only ({old}= is its "
                                    "deprecated name)")
                warnings.warn(f"{fn.__qualname__}: {old}= is deprecated; use {new}=",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap
