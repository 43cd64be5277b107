"""Built-in datasets, generated or loaded locally (no downloads at run time).

Every factory returns a frozen `DatasetSplits` with train and test tensors and is
deterministic for its ``seed`` argument:

=============  ==========================================  ==============  =========
name           inputs                                      classes         default n
=============  ==========================================  ==============  =========
``digits``     scikit-learn 8x8 digits, standardized       10              1437/360
``mnist1d``    MNIST-1D signals of length 40               10              4000/1000
``modular``    tokens ``a, b, p`` (LongTensor ``[N, 3]``)  p (97)          2823/6586
``moons``      two interleaving half circles, 2-D          2               800/200
``blobs``      isotropic Gaussian blobs                    3               800/200
=============  ==========================================  ==============  =========

`load_data` (and `create`) also call user factories, ``"pkg.mod:fn"`` or
``"path/to/file.py:fn"``, which may return a `DatasetSplits`, a map-style ``Dataset`` of
``(x, y)`` items, an ``(X, y)`` pair of tensors or arrays, or a ``DataLoader`` of
``(x, y)`` batches; inputs ``x`` may be dicts or tuples of tensors. One set is the train
split and, unless a second (test) factory is given, the test split too::

    splits = load_data("mine:digits_data")                  # a TensorDataset -> both splits
    splits = load_data("mine:train_set", test_spec="mine:test_set")
    splits.describe()   # {"training data": "mine:train_set (a TensorDataset of 1437 samples)", ...}
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lossatlas.batches import (
    Inputs,
    TensorData,
    as_tensor_data,
    is_xy_pair,
    num_samples,
    sample_shape,
    to_device,
)
from lossatlas.registry import FactoryError, Registry

from .errors import InputTypeError

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "blobs",
    "create",
    "digits",
    "list_datasets",
    "load_data",
    "mnist1d",
    "modular",
    "moons",
]

DATASETS = Registry("dataset")

ACCEPTED = (
    "a lossatlas.data.DatasetSplits, a map-style Dataset of (x, y) items, an (X, y) pair of "
    "tensors or arrays, or a DataLoader yielding (x, y) batches"
)


def _is_set_pair(obj: Any) -> bool:
    """A ``(train, test)`` pair of sets (not an ``(X, y)`` pair of tensors)."""
    return (isinstance(obj, (tuple, list)) and len(obj) == 2 and not is_xy_pair(obj)
            and all(isinstance(v, (Dataset, DataLoader, TensorData)) or is_xy_pair(v)
                    for v in obj))


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train and test tensors of one dataset.

    Attributes
    ----------
    x_train, x_test : Tensor[N, *input_shape], or a dict / tuple of such tensors
        Inputs: float32, or int64 tokens for sequence data (``modular``).
    y_train, y_test : Tensor[N]
        Integer labels (int64) in ``[0, num_classes)`` for classification data.
    num_classes : int or None
        None when the targets are not integer class labels (user data only).
    input_shape : tuple[int, ...]
        Shape of one input, without the batch axis (a dict / tuple of shapes when the
        inputs are a dict / tuple of tensors).
    name : str
    meta : dict
        Factory arguments and other facts (e.g. ``{"p": 97}``).
    spec : str or None
        The data spec that built it (``"mnist1d"``, ``"mine:digits_data"``), set by
        `load_data`.
    returned : str
        What a user factory returned, in words (``"a TensorDataset of 1797 samples"``);
        empty for a `DatasetSplits`.
    test_spec, test_returned : str or None, str
        The same for a separate test factory, when one was given.
    test_is_train : bool
        True when the factory gave one set, used as both splits (``x_test is x_train``).
    """

    x_train: Inputs
    y_train: Tensor
    x_test: Inputs
    y_test: Tensor
    num_classes: int | None
    input_shape: Any
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    spec: str | None = None
    returned: str = ""
    test_spec: str | None = None
    test_returned: str = ""
    test_is_train: bool = False

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if isinstance(x, Tensor):
                n, shape, expected = x.shape[0], tuple(x.shape[1:]), tuple(self.input_shape)
            else:
                n, shape, expected = num_samples(x), sample_shape(x), self.input_shape
            if n != y.shape[0]:
                raise ValueError(
                    f"DatasetSplits {self.name!r}: x_{split} has {n} rows but "
                    f"y_{split} has {y.shape[0]}"
                )
            if shape != expected:
                raise ValueError(
                    f"DatasetSplits {self.name!r}: x_{split} has sample shape "
                    f"{shape}, input_shape says {expected}"
                )

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])

    @property
    def train_source(self) -> str:
        """Where the train split came from, e.g. ``"mine:digits_data (a TensorDataset of
        1797 samples)"`` or ``"mnist1d (train split, 4000 samples)"``."""
        spec = self.spec or self.name
        if self.returned:
            return f"{spec} ({self.returned})"
        return f"{spec} (train split, {self.num_train} samples)"

    @property
    def test_source(self) -> str:
        """Where the test split came from; says so when it is the training data."""
        spec = self.spec or self.name
        if self.test_is_train:
            return f"the training data ({spec} gave one set; no held-out test data)"
        if self.test_spec is not None:
            return f"{self.test_spec} ({self.test_returned})"
        return f"{spec} (test split, {self.num_test} samples)"

    def describe(self) -> dict[str, str]:
        """``{"training data": train_source, "test data": test_source}`` for summaries."""
        return {"training data": self.train_source, "test data": self.test_source}

    def to(self, device: torch.device | str) -> DatasetSplits:
        """A copy with all tensors on ``device`` (one copy when the splits share data)."""
        x_train, y_train = to_device(self.x_train, device), self.y_train.to(device)
        if self.test_is_train:
            x_test, y_test = x_train, y_train
        else:
            x_test, y_test = to_device(self.x_test, device), self.y_test.to(device)
        return dataclasses.replace(
            self, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
        )


def _spec_label(spec: str | Callable[..., Any]) -> str:
    """The spec as written, or ``module:qualname`` for a callable."""
    if isinstance(spec, str):
        return spec.strip()
    module = getattr(spec, "__module__", None) or "?"
    return f"{module}:{getattr(spec, '__qualname__', type(spec).__name__)}"


def _call_factory(
    spec: str | Callable[..., Any], kwargs: Mapping[str, Any] | None, role: str
) -> Any:
    """Resolve and call one data factory; ``None`` arguments are dropped. A factory that
    raises is reported as a `FactoryError` naming it."""
    if isinstance(spec, str):
        factory = DATASETS.get(spec.strip())
    elif callable(spec):
        factory = spec
    else:
        raise InputTypeError(
            f"load_data: {role} spec must be a dataset name, a 'package.module:function' or "
            f"'file.py:function' spec, or a callable; got {type(spec).__name__}"
        )
    label = _spec_label(spec)
    try:
        return factory(**{k: v for k, v in (kwargs or {}).items() if v is not None})
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc).strip() else ""
        raise FactoryError(
            f"{role} factory {label!r} raised {type(exc).__name__}" + (f": {reason}" if reason else "")
        ) from exc


def _kind(obj: Any) -> str:
    """What a factory returned, in words: ``"a TensorDataset"``, ``"an (X, y) pair"``,
    ``"a tuple of (TensorDataset, TensorDataset)"``."""
    if is_xy_pair(obj):
        return "an (X, y) pair"
    if isinstance(obj, (tuple, list)):
        parts = ", ".join(type(v).__name__ for v in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a {type(obj).__name__} of ({parts})"
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _tensor_data(obj: Any, label: str, role: str) -> tuple[TensorData, str]:
    """A factory's single set -> `TensorData` and its description; errors name the
    factory, what it returned and what is accepted."""
    kind = _kind(obj)
    if not (isinstance(obj, (Dataset, DataLoader, TensorData)) or is_xy_pair(obj)):
        hint = ("; a (train, test) pair of sets is not one set: return a DatasetSplits, or "
                "give the test set's factory as --test-data" if _is_set_pair(obj) else "")
        raise InputTypeError(f"{role} factory {label!r} returned {kind}; expected {ACCEPTED}{hint}")
    where = f"{role} factory {label!r} (returned {kind})"
    try:
        td = as_tensor_data(obj, who=where)
    except ValueError as e:  # TensorData's own checks (empty, mismatched) say only "data:"
        text = str(e)
        if text.startswith("data: "):
            raise ValueError(f"{where}: {text[len('data: '):]}") from e
        raise
    return td, f"{kind} of {len(td)} samples"


def _num_classes(*ys: Tensor) -> int | None:
    """``max + 1`` over integer targets; None for float / bool / complex targets."""
    if any(y.is_floating_point() or y.is_complex() or y.dtype == torch.bool for y in ys):
        return None
    return max(int(y.max()) for y in ys) + 1


def load_data(
    spec: str | Callable[..., Any],
    kwargs: Mapping[str, Any] | None = None,
    test_spec: str | Callable[..., Any] | None = None,
    test_kwargs: Mapping[str, Any] | None = None,
) -> DatasetSplits:
    """Call a data factory and return its data as a `DatasetSplits`.

    ``spec`` is a built-in name (``"mnist1d"``), a ``"package.module:function"`` or
    ``"path/to/file.py:function"`` spec, or a callable; it is called with ``kwargs``
    (``None`` values dropped) and may return a `DatasetSplits`, a map-style ``Dataset``
    of ``(x, y)`` items, an ``(X, y)`` pair of tensors or arrays, or a ``DataLoader``
    yielding ``(x, y)`` batches (read once into memory). Inputs may be dicts or tuples
    of tensors.

    A single set is the train split and, without ``test_spec``, the test split as well
    (``test_is_train=True``, shared tensors). ``test_spec`` (called with
    ``test_kwargs``) gives the test split: its single set, or the test split of a
    `DatasetSplits`. ``num_classes`` is ``max label + 1`` for integer targets, else None.
    The result records ``spec``, ``test_spec`` and what each returned (`describe`).

    Raises `FactoryError` naming the factory when it cannot be resolved or raises, and
    `TypeError` / `ValueError` naming it when what it returned is not usable.
    """
    label = _spec_label(spec)
    obj = _call_factory(spec, kwargs, "data")
    test_obj, test_label = None, None
    if test_spec is not None:
        test_label = _spec_label(test_spec)
        test_obj = _call_factory(test_spec, test_kwargs, "test data")
    meta = {k: v for k, v in (kwargs or {}).items() if v is not None}

    if isinstance(obj, DatasetSplits):
        base, returned = obj, ""
        x_tr, y_tr = obj.x_train, obj.y_train
    else:
        base = None
        train, returned = _tensor_data(obj, label, "data")
        x_tr, y_tr = train.x, train.y

    if test_obj is None:
        if base is not None:
            return dataclasses.replace(base, spec=label)
        x_te, y_te, test_returned = x_tr, y_tr, ""
    elif isinstance(test_obj, DatasetSplits):
        x_te, y_te = test_obj.x_test, test_obj.y_test
        test_returned = f"test split of a DatasetSplits, {test_obj.num_test} samples"
    else:
        test, test_returned = _tensor_data(test_obj, test_label or "", "test data")
        x_te, y_te = test.x, test.y
    if test_obj is not None and sample_shape(x_te) != sample_shape(x_tr):
        raise ValueError(
            f"test data factory {test_label!r} gives inputs of sample shape "
            f"{sample_shape(x_te)} but data factory {label!r} gives {sample_shape(x_tr)}"
        )
    common = {
        "x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te, "spec": label,
        "returned": returned, "test_spec": test_label, "test_returned": test_returned,
        "test_is_train": test_obj is None,
    }
    if base is not None:
        return dataclasses.replace(base, **common)
    return DatasetSplits(
        num_classes=_num_classes(y_tr, y_te),
        input_shape=sample_shape(x_tr),
        name=label,
        meta=meta,
        **common,
    )


def create(name: str, **kwargs: Any) -> DatasetSplits:
    """Build a dataset by registered name or factory spec (`load_data` with ``kwargs``);
    ``None`` keyword arguments are dropped so the factory's defaults apply."""
    return load_data(name, kwargs)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the fnmatch ``pattern``."""
    return DATASETS.list(pattern)


def _check_fraction(who: str, option: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"data.{who}: {option} must be in (0, 1), got {value}")


def _splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    test_fraction: float,
    seed: int,
    num_classes: int,
    standardize: bool,
    meta: dict[str, Any],
) -> DatasetSplits:
    """Stratified split of numpy arrays, optional per-feature standardization with train
    statistics, conversion to float32 / int64 tensors."""
    from sklearn.model_selection import train_test_split

    _check_fraction(name, "test_fraction", test_fraction)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return DatasetSplits(
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.as_tensor(y_tr, dtype=torch.int64),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.as_tensor(y_te, dtype=torch.int64),
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
        name=name,
        meta={"seed": seed, "test_fraction": test_fraction, **meta},
    )


@DATASETS.register()
def digits(image: bool = False, test_fraction: float = 0.2, seed: int = 0) -> DatasetSplits:
    """scikit-learn's 8x8 digits (1797 images), standardized per pixel with train
    statistics; inputs ``[N, 64]``, or ``[N, 1, 8, 8]`` with ``image=True``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    splits = _splits(
        "digits", bunch.data, bunch.target, test_fraction, seed, 10, True, {"image": image}
    )
    if not image:
        return splits
    return dataclasses.replace(
        splits,
        x_train=splits.x_train.reshape(-1, 1, 8, 8),
        x_test=splits.x_test.reshape(-1, 1, 8, 8),
        input_shape=(1, 8, 8),
    )


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(
    num_samples: int, train_split: float, seed: int, shuffle_seq: bool
) -> tuple[np.ndarray, ...]:
    """Generate MNIST-1D with the `mnist1d` package's `make_dataset` (its default
    configuration, no download); the global `random` / `numpy.random` states that it
    seeds are restored afterwards."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError("data.mnist1d needs the 'mnist1d' package: pip install mnist1d") from exc
    args = get_dataset_args()
    args.num_samples, args.train_split = num_samples, train_split
    args.seed, args.shuffle_seq = seed, shuffle_seq
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


@DATASETS.register()
def mnist1d(
    num_samples: int = 5000,
    train_split: float = 0.8,
    seed: int = 42,
    shuffle_seq: bool = False,
) -> DatasetSplits:
    """MNIST-1D (Greydanus 2020), generated locally: signals ``[N, 40]``, 10 classes.

    Defaults are the package's (5000 samples, 80 % train -> 4000/1000, seed 42, the
    published configuration); ``num_samples`` is rounded down to a multiple of 10.
    Takes ~2 s; results are cached per argument set within a process.
    """
    if num_samples < 10:
        raise ValueError(f"data.mnist1d: num_samples must be >= 10, got {num_samples}")
    _check_fraction("mnist1d", "train_split", train_split)
    x_tr, y_tr, x_te, y_te = _mnist1d_arrays(
        int(num_samples), float(train_split), int(seed), bool(shuffle_seq)
    )
    return DatasetSplits(
        x_train=torch.tensor(x_tr, dtype=torch.float32),
        y_train=torch.tensor(y_tr, dtype=torch.int64),
        x_test=torch.tensor(x_te, dtype=torch.float32),
        y_test=torch.tensor(y_te, dtype=torch.int64),
        num_classes=10,
        input_shape=tuple(x_tr.shape[1:]),
        name="mnist1d",
        meta={
            "num_samples": num_samples,
            "train_split": train_split,
            "seed": seed,
            "shuffle_seq": shuffle_seq,
        },
    )


_MODULAR_OPS = {
    "add": lambda a, b, p: (a + b) % p,
    "sub": lambda a, b, p: (a - b) % p,
    "mul": lambda a, b, p: (a * b) % p,
}


@DATASETS.register()
def modular(
    p: int = 97, train_fraction: float = 0.3, seed: int = 0, op: str = "add"
) -> DatasetSplits:
    """All pairs ``(a, b)`` in ``[0, p)^2`` labelled ``a op b mod p`` (grokking).

    Inputs are ``LongTensor[N, 3]`` rows ``(a, b, p)`` (token ``p`` is ``'='``);
    labels in ``[0, p)``. A random ``round(train_fraction * p**2)`` pairs (seeded) are
    the train split, the rest the test split. ``op``: ``"add"``, ``"sub"``, ``"mul"``.
    """
    if p < 2:
        raise ValueError(f"data.modular: p must be >= 2, got {p}")
    if op not in _MODULAR_OPS:
        raise ValueError(f"data.modular: op must be one of {sorted(_MODULAR_OPS)}, got {op!r}")
    _check_fraction("modular", "train_fraction", train_fraction)
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.stack([a, b, torch.full_like(a, p)], dim=1)  # [p*p, 3] int64
    y = _MODULAR_OPS[op](a, b, p)
    n_train = min(max(round(train_fraction * p * p), 1), p * p - 1)
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    train, test = perm[:n_train], perm[n_train:]
    return DatasetSplits(
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=p,
        input_shape=(3,),
        name="modular",
        meta={"p": p, "train_fraction": train_fraction, "seed": seed, "op": op},
    )


@DATASETS.register()
def moons(
    num_samples: int = 1000, noise: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> DatasetSplits:
    """scikit-learn's two moons: inputs ``[N, 2]`` (not standardized), 2 classes."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=num_samples, noise=noise, random_state=seed)
    return _splits(
        "moons", x, y, test_fraction, seed, 2, False, {"num_samples": num_samples, "noise": noise}
    )


@DATASETS.register()
def blobs(
    num_samples: int = 1000,
    num_classes: int = 3,
    num_features: int = 2,
    cluster_std: float = 1.0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """Isotropic Gaussian blobs (scikit-learn ``make_blobs``, centres in [-10, 10]):
    inputs ``[N, num_features]``, ``num_classes`` classes of equal size."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(
        n_samples=num_samples,
        n_features=num_features,
        centers=num_classes,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return _splits(
        "blobs",
        x,
        y,
        test_fraction,
        seed,
        num_classes,
        False,
        {"num_samples": num_samples, "num_features": num_features, "cluster_std": cluster_std},
    )
