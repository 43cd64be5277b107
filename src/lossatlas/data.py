"""Built-in datasets, generated or loaded locally (no downloads at run time).

Every factory returns a frozen `DatasetSplits` with train and test tensors and is
deterministic for its ``seed`` argument:

=============  ==========================================  ==============  =========
name           inputs                                      classes         default n
=============  ==========================================  ==============  =========
``digits``     scikit-learn 8x8 digits, standardised       10              1437/360
``mnist1d``    MNIST-1D signals of length 40               10              4000/1000
``modular``    tokens ``a, b, p`` (LongTensor ``[N, 3]``)  p (97)          2823/6586
``moons``      two interleaving half circles, 2-D          2               800/200
``blobs``      isotropic Gaussian blobs                    3               800/200
=============  ==========================================  ==============  =========

``create("pkg.mod:fn", **kw)`` calls a user factory, which should return a
`DatasetSplits` too.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossatlas.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "blobs",
    "create",
    "digits",
    "list_datasets",
    "mnist1d",
    "modular",
    "moons",
]

DATASETS = Registry("dataset")


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """Train and test tensors of one dataset.

    Attributes
    ----------
    x_train, x_test : Tensor[N, *input_shape]
        Inputs: float32, or int64 tokens for sequence data (``modular``).
    y_train, y_test : Tensor[N]
        Integer labels (int64) in ``[0, num_classes)``.
    num_classes : int
    input_shape : tuple[int, ...]
        Shape of one input, without the batch axis.
    name : str
    meta : dict
        Factory arguments and other facts (e.g. ``{"p": 97}``).
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"DatasetSplits {self.name!r}: x_{split} has {x.shape[0]} rows but "
                    f"y_{split} has {y.shape[0]}"
                )
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"DatasetSplits {self.name!r}: x_{split} has sample shape "
                    f"{tuple(x.shape[1:])}, input_shape says {tuple(self.input_shape)}"
                )

    @property
    def num_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.y_test.shape[0])

    def to(self, device: torch.device | str) -> DatasetSplits:
        """A copy with all tensors on ``device``."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


def create(name: str, **kwargs: Any) -> DatasetSplits:
    """Build a dataset by registered name or ``"package.module:function"`` spec; ``None``
    keyword arguments are dropped so the factory's defaults apply."""
    data = DATASETS.create(name, **kwargs)
    if not isinstance(data, DatasetSplits):
        raise TypeError(
            f"data.create: factory {name!r} returned {type(data).__name__}, expected "
            "lossatlas.data.DatasetSplits"
        )
    return data


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching the fnmatch ``pattern``."""
    return DATASETS.list(pattern)


def _check_fraction(fn: str, option: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"data.{fn}: {option} must be in (0, 1), got {value}")


def _splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    test_fraction: float,
    seed: int,
    num_classes: int,
    standardise: bool,
    meta: dict[str, Any],
) -> DatasetSplits:
    """Stratified split of numpy arrays, optional per-feature standardisation with train
    statistics, conversion to float32 / int64 tensors."""
    from sklearn.model_selection import train_test_split

    _check_fraction(name, "test_fraction", test_fraction)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    if standardise:
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
    """scikit-learn's 8x8 digits (1797 images), standardised per pixel with train
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
    """scikit-learn's two moons: inputs ``[N, 2]`` (not standardised), 2 classes."""
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
