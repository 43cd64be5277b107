"""The `Embedding` estimator interface shared by every manifold method.

An embedding maps a population of flat parameter vectors ``X : Tensor[N, D]`` to latent
codes ``Tensor[N, d]`` (`encode`) and latent points back to parameter vectors
(`decode`). It follows scikit-learn's estimator conventions:

- ``__init__`` only stores its keyword arguments under the same names;
- ``fit(X)`` validates, learns attributes whose names end in ``_`` and returns ``self``;
- ``encode`` / ``decode`` before ``fit`` raise `NotFittedError`
  (``"PCAEmbedding.decode: not fitted; call fit first"``).

Codes and decoded vectors have the population's dtype (``dtype_``): float64 input gives
float64 output, anything else float32. ``decode(C, device=None, chunk_size=None)`` works on
``device`` (default: the device of ``C``) in row chunks of ``chunk_size`` latent points, so a
large latent grid can be decoded without holding every intermediate at once.

A fitted embedding is stored with `save` as one safetensors file whose header carries the
hyper-parameters and fitted metadata as JSON (plus a human-readable ``.json`` beside it);
`load_embedding` (or ``Cls.load``) restores it. Both files are written to a temporary
file and renamed.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..checkpoints import owned_tensors
from ..errors import InputTypeError, LossatlasError
from ..store import atomic_path, atomic_write_bytes

__all__ = ["Embedding", "NotFittedError", "load_embedding", "clone"]

_FORMAT = "lossatlas.embedding"
_FORMAT_VERSION = 1
_CLASSES: dict[str, type[Embedding]] = {}


class NotFittedError(ValueError, AttributeError, LossatlasError):
    """An embedding used before `fit` (catch as `ValueError` or `AttributeError`)."""


def _as_population(X: Any, who: str, *, min_rows: int = 1) -> Tensor:
    """Validate ``X`` as a 2-D floating tensor ``[N, D]`` (numpy arrays are converted)."""
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(np.ascontiguousarray(X) if X.flags.writeable else np.array(X))
    if not isinstance(X, Tensor):
        raise InputTypeError(
            f"{who}: expected a Tensor[N, D] (or numpy array) of flat parameter vectors, "
            f"got {type(X).__name__}"
        )
    if X.ndim != 2:
        raise ValueError(f"{who}: expected a 2-D Tensor[N, D], got shape {tuple(X.shape)}")
    if X.shape[0] < min_rows:
        raise ValueError(f"{who}: need at least {min_rows} models, got {X.shape[0]}")
    if not X.is_floating_point():
        X = X.to(torch.float32)
    return X


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype is represented as float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _row_chunks(n: int, chunk_size: int | None) -> Iterator[slice]:
    step = n if not chunk_size else int(chunk_size)
    step = max(step, 1)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _json_param(value: Any) -> Any:
    if isinstance(value, Embedding):
        return {"__embedding__": type(value).__name__, "params": value._json_params()}
    if isinstance(value, tuple):
        return [_json_param(v) for v in value]
    if isinstance(value, list):
        return [_json_param(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_param(v) for k, v in value.items()}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise InputTypeError(
        f"Embedding.save: hyper-parameter value {value!r} of type {type(value).__name__} "
        "cannot be stored as JSON"
    )


def _from_json_param(value: Any) -> Any:
    if isinstance(value, dict) and "__embedding__" in value:
        return _construct(_embedding_class(value["__embedding__"]), value["params"])
    if isinstance(value, list):
        return tuple(_from_json_param(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json_param(v) for k, v in value.items()}
    return value


def _construct(cls: type[Embedding], params: dict[str, Any]) -> Embedding:
    """``cls(**params)`` from the stored (JSON) constructor arguments of `save`; a name
    the class has since renamed (``cls._renamed_params``) is read as its new name."""
    return cls(**{cls._renamed_params.get(k, k): _from_json_param(v) for k, v in params.items()})


def _embedding_class(name: str) -> type[Embedding]:
    if name not in _CLASSES:
        # the classes register on import; make sure every built-in module is imported
        import lossatlas.manifold  # noqa: F401
    try:
        return _CLASSES[name]
    except KeyError:
        raise ValueError(
            f"load_embedding: unknown embedding class {name!r}; known: {', '.join(sorted(_CLASSES))}"
        ) from None


def clone(estimator: Embedding) -> Embedding:
    """A new unfitted embedding with the same hyper-parameters (nested ones cloned too)."""
    params = {
        k: clone(v) if isinstance(v, Embedding) else copy.deepcopy(v)
        for k, v in estimator.get_params().items()
    }
    return type(estimator)(**params)


class Embedding:
    """Base class of every embedding: encode ``Tensor[N, D] -> Tensor[N, d]``, decode back.

    Subclasses implement ``fit``, ``_encode(X)`` (X validated, any device) and
    ``_decode(C)`` (C already on the target device, in the embedding's dtype), and the
    state hooks ``_state`` / ``_meta`` / ``_restore`` used by `save` and `load`.
    """

    # attribute that exists only after fit; checked by _check_fitted
    _fitted_attr: ClassVar[str] = "n_components_"
    # constructor arguments renamed since an earlier release, {old: new}: `load_embedding`
    # reads embeddings saved under the old names
    _renamed_params: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.__name__] = cls

    # -- hyper-parameters --------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same names."""
        return {name: getattr(self, name) for name in self._param_names()}

    def _json_params(self) -> dict[str, Any]:
        return {k: _json_param(v) for k, v in self.get_params().items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitted-ness -------------------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, self._fitted_attr):
            raise NotFittedError(f"{type(self).__name__}.{method}: not fitted; call fit first")

    @property
    def is_fitted(self) -> bool:
        """Whether `fit` has been called."""
        return hasattr(self, self._fitted_attr)

    # -- the estimator interface -------------------------------------------------------
    def fit(self, X: Tensor) -> Embedding:  # pragma: no cover - abstract
        """Learn the embedding from a population ``X : Tensor[N, D]``; returns ``self``."""
        raise NotImplementedError

    def _encode(self, X: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, C: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, X: Tensor) -> Tensor:
        """Latent codes of parameter vectors.

        Parameters
        ----------
        X : Tensor[N, D]
            Flat parameter vectors (D must equal ``n_features_in_``).

        Returns
        -------
        Tensor[N, d] on ``X``'s device, dtype ``dtype_``.
        """
        self._check_fitted("encode")
        X = _as_population(X, f"{type(self).__name__}.encode")
        self._check_width(X, "encode")
        return self._encode(X).to(device=X.device, dtype=self.dtype_)

    def decode(
        self, C: Tensor, device: torch.device | str | None = None, chunk_size: int | None = None
    ) -> Tensor:
        """Parameter vectors of latent points.

        Parameters
        ----------
        C : Tensor[M, d]
            Latent points (``d == n_components_``).
        device : torch.device or str, optional
            Where to compute and return the result (default: ``C``'s device).
        chunk_size : int, optional
            Decode at most this many points at a time (bounds the intermediate memory;
            the output ``Tensor[M, D]`` is still allocated whole). ``None``: all at once.

        Returns
        -------
        Tensor[M, D] on ``device``, dtype ``dtype_``.
        """
        self._check_fitted("decode")
        return self._decode_rows(C, device, chunk_size, self._decode)

    def _decode_rows(self, C: Any, device: torch.device | str | None, chunk_size: int | None,
                     fn: Any) -> Tensor:
        """`decode`'s checks and chunking around ``fn(C on the device) -> Tensor[m, D]``."""
        name = f"{type(self).__name__}.decode"
        if isinstance(C, np.ndarray):
            C = torch.from_numpy(np.ascontiguousarray(C))
        if not isinstance(C, Tensor):
            raise InputTypeError(
                f"{name}: expected a Tensor[M, d] of latent points, got {type(C)}")
        if C.ndim == 1 and self.n_components_ == C.shape[0]:
            C = C[None]
        if C.ndim != 2 or C.shape[1] != self.n_components_:
            raise ValueError(
                f"{name}: expected latent points of shape [M, {self.n_components_}], got "
                f"{tuple(C.shape)}"
            )
        device = torch.device(device) if device is not None else C.device
        C = C.to(device=device, dtype=self._latent_dtype())
        if chunk_size is None or chunk_size >= C.shape[0]:
            return fn(C).to(self.dtype_)
        if int(chunk_size) < 1:
            raise ValueError(f"{name}: chunk_size must be >= 1, got {chunk_size}")
        out = torch.empty(C.shape[0], self.n_features_in_, dtype=self.dtype_, device=device)
        for rows in _row_chunks(C.shape[0], chunk_size):
            out[rows] = fn(C[rows])
        return out

    def _latent_dtype(self) -> torch.dtype:
        return self.dtype_

    def fit_encode(self, X: Tensor) -> Tensor:
        """``fit(X)`` then the codes of the population: Tensor[N, d]."""
        return self.fit(X).encode(X)

    def reconstruction_errors(self, X: Tensor, chunk_size: int | None = 256) -> Tensor:
        """Per-model mean squared error over parameters of ``decode(encode(X))`` vs ``X``.

        X : Tensor[N, D] -> Tensor[N] (float64, on CPU).
        """
        self._check_fitted("reconstruction_errors")
        X = _as_population(X, f"{type(self).__name__}.reconstruction_errors")
        self._check_width(X, "reconstruction_errors")
        C = self.encode(X)
        errs = torch.empty(X.shape[0], dtype=torch.float64)
        for rows in _row_chunks(X.shape[0], chunk_size):
            Xr = self.decode(C[rows], device=X.device)
            diff = Xr.to(torch.float64) - X[rows].to(torch.float64)
            errs[rows] = diff.square().mean(dim=1).cpu()
        return errs

    def reconstruction_error(self, X: Tensor) -> float:
        """Mean squared error over all parameters of ``decode(encode(X))`` vs ``X``."""
        return float(self.reconstruction_errors(X).mean())

    def _check_width(self, X: Tensor, method: str) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{type(self).__name__}.{method}: expected vectors of {self.n_features_in_} "
                f"parameters (as fitted), got {X.shape[1]}"
            )

    # -- persistence --------------------------------------------------------------------
    def _state(self) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """Fitted tensors to store."""
        raise NotImplementedError

    def _meta(self) -> dict[str, Any]:
        """Fitted non-tensor values to store (JSON-able)."""
        return {
            "n_components_": int(self.n_components_),
            "n_features_in_": int(self.n_features_in_),
            "dtype_": _dtype_name(self.dtype_),
        }

    def _restore(self, state: dict[str, Tensor], meta: dict[str, Any], **options: Any) -> None:
        """Set fitted attributes from `_state` / `_meta` output."""
        self.n_components_ = int(meta["n_components_"])
        self.n_features_in_ = int(meta["n_features_in_"])
        self.dtype_ = getattr(torch, meta["dtype_"])

    def _save_files(self, path: Path) -> None:
        """Hook: write tensors kept in files of their own beside ``path`` (none here)."""

    def _header(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "class": type(self).__name__,
            "params": self._json_params(),
            "fitted": self._meta(),
        }

    def fingerprint(self) -> str:
        """A short hash of the class, hyper-parameters and fitted tensors: the ``key`` of a
        ``MappedSource`` that decodes latent grids, so a stored field resumes only with the
        same embedding."""
        self._check_fitted("fingerprint")
        h = hashlib.sha256(json.dumps(self._header(), sort_keys=True).encode())
        for name, t in sorted(self._state().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{_dtype_name(t.dtype)}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(self._files_digest().encode())
        return h.hexdigest()[:16]

    def _files_digest(self) -> str:
        """Hook: a digest of tensors kept in files of their own ("" when none)."""
        return ""

    def save(self, path: str | os.PathLike) -> Path:
        """Store the fitted embedding in ``path`` (a ``.safetensors`` file).

        The tensors go into the safetensors file; hyper-parameters and fitted metadata go
        into its header as JSON, and a copy of that JSON is written beside it
        (``path.with_suffix(".json")``, for people; `load` reads only the safetensors
        file). Both are written to a temporary file and renamed. Returns the path.
        """
        from safetensors.torch import save_file

        self._check_fitted("save")
        path = Path(path)
        header = self._header()
        self._save_files(path)
        with atomic_path(path) as tmp:  # straight to a file: no in-memory copy of the tensors
            save_file(owned_tensors(self._state()), str(tmp),
                      metadata={_FORMAT: json.dumps(header)})
        atomic_write_bytes(
            path.with_suffix(".json"), (json.dumps(header, indent=2) + "\n").encode()
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, **options: Any) -> Embedding:
        """Restore an embedding stored with `save` (see `load_embedding`)."""
        emb = load_embedding(path, **options)
        if not isinstance(emb, cls):
            raise InputTypeError(
                f"{cls.__name__}.load: {str(path)!r} holds a {type(emb).__name__}, not a "
                f"{cls.__name__}; use lossatlas.manifold.load_embedding to load any embedding"
            )
        return emb


def load_embedding(path: str | os.PathLike, **options: Any) -> Embedding:
    """Restore any embedding stored with ``Embedding.save``.

    Parameters
    ----------
    path : str or PathLike
        The ``.safetensors`` file written by `save`.
    **options
        Passed to the class's restore hook; ``allow_pickle=True`` is needed for
        `UMAPEmbedding`, whose fitted umap-learn object can only be stored pickled.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_embedding: no such file {str(path)!r}")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if _FORMAT not in metadata:
            raise ValueError(
                f"load_embedding: {str(path)!r} is a safetensors file but not a stored "
                "lossatlas embedding (no header written by Embedding.save)"
            )
        state = {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(metadata[_FORMAT])
    if header.get("version", 0) > _FORMAT_VERSION:
        raise ValueError(
            f"load_embedding: {str(path)!r} has format version {header['version']}; this "
            f"lossatlas reads up to {_FORMAT_VERSION}"
        )
    cls = _embedding_class(header["class"])
    emb = _construct(cls, header["params"])
    emb._restore(state, header["fitted"], _path=path, **options)
    return emb


def _sub_state(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix)}
