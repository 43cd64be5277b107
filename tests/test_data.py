"""Tests of the built-in datasets in lossatlas.data."""

from __future__ import annotations

import dataclasses
import socket
import time

import numpy as np
import pytest
import torch

from lossatlas import data
from lossatlas.data import DatasetSplits

SMALL = {
    "digits": {},
    "mnist1d": {"num_samples": 500},
    "modular": {"p": 13},
    "moons": {"num_samples": 200},
    "blobs": {"num_samples": 300},
}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a connection or resolve a host fail."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def equal(a: DatasetSplits, b: DatasetSplits) -> bool:
    return all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("x_train", "y_train", "x_test", "y_test")
    )


@pytest.mark.parametrize("name", data.list_datasets())
def test_splits_contract(name: str) -> None:
    d = data.create(name, **SMALL.get(name, {}))
    assert isinstance(d, DatasetSplits) and d.name == name
    assert d.x_train.shape[1:] == d.input_shape == d.x_test.shape[1:]
    assert d.x_train.dtype in (torch.float32, torch.int64)
    assert d.y_train.dtype == d.y_test.dtype == torch.int64
    assert d.num_train > 0 and d.num_test > 0
    labels = torch.cat([d.y_train, d.y_test])
    assert labels.min() >= 0 and labels.max() < d.num_classes
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", data.list_datasets())
def test_deterministic_for_seed(name: str) -> None:
    kw = SMALL.get(name, {})
    a, b = data.create(name, seed=1, **kw), data.create(name, seed=1, **kw)
    c = data.create(name, seed=2, **kw)
    assert equal(a, b)
    assert not equal(a, c)


@pytest.mark.parametrize("name", ["digits", "mnist1d", "moons", "blobs"])
def test_class_balance(name: str) -> None:
    d = data.create(name, **SMALL.get(name, {}))
    counts = torch.bincount(d.y_train, minlength=d.num_classes).float()
    assert counts.min() > 0.6 * counts.mean()
    assert counts.max() < 1.4 * counts.mean()


def test_digits() -> None:
    d = data.digits()
    assert d.input_shape == (64,) and d.num_classes == 10
    assert (d.num_train, d.num_test) == (1437, 360)
    mean, std = d.x_train.mean(0), d.x_train.std(0)
    varying = std > 0
    assert mean.abs().max() < 1e-4 and torch.allclose(std[varying], torch.ones(()), atol=1e-2)
    img = data.create("digits", image=True)
    assert img.input_shape == (1, 8, 8) and img.x_test.shape == (360, 1, 8, 8)
    torch.testing.assert_close(img.x_train.flatten(1), d.x_train)


def test_mnist1d_default_offline_and_fast(no_network: None) -> None:
    data._mnist1d_arrays.cache_clear()
    state = np.random.get_state()
    start = time.perf_counter()
    d = data.mnist1d()
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    assert (d.num_train, d.num_test) == (4000, 1000)
    assert d.input_shape == (40,) and d.x_train.dtype == torch.float32
    assert d.num_classes == 10 and d.meta["seed"] == 42
    assert abs(float(torch.cat([d.x_train, d.x_test]).std()) - 1.0) < 1e-3
    # global numpy RNG untouched by the package's set_seed
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(state[1:2], after[1:2], strict=True))
    # fresh generation (no cache) is identical
    data._mnist1d_arrays.cache_clear()
    assert equal(d, data.mnist1d())


def test_mnist1d_num_samples_and_errors() -> None:
    d = data.mnist1d(num_samples=1000, train_split=0.5)
    assert (d.num_train, d.num_test) == (500, 500)
    with pytest.raises(ValueError, match="train_split"):
        data.mnist1d(train_split=1.5)


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_modular_labels_correct(op: str) -> None:
    p = 17
    d = data.modular(p=p, op=op)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    a, b, eq = x.unbind(1)
    expected = {"add": (a + b) % p, "sub": (a - b) % p, "mul": (a * b) % p}[op]
    assert torch.equal(y, expected)
    assert (eq == p).all() and x.dtype == torch.int64 and d.num_classes == p
    pairs = {(int(i), int(j)) for i, j in zip(a, b, strict=True)}
    assert len(pairs) == p * p  # every pair exactly once across the splits


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_modular_train_fraction(fraction: float) -> None:
    d = data.modular(train_fraction=fraction)
    assert d.num_train == round(fraction * 97 * 97)
    assert d.num_train + d.num_test == 97 * 97
    with pytest.raises(ValueError, match="train_fraction must be in"):
        data.modular(train_fraction=0.0)


def test_moons_and_blobs_options() -> None:
    m = data.moons(num_samples=500, noise=0.0)
    assert m.num_classes == 2 and m.input_shape == (2,) and m.num_train == 400
    b = data.blobs(num_samples=400, num_classes=4, num_features=5)
    assert b.num_classes == 4 and b.input_shape == (5,)
    assert set(torch.cat([b.y_train, b.y_test]).tolist()) == {0, 1, 2, 3}


def test_to_and_validation() -> None:
    d = data.moons(num_samples=100)
    assert equal(d.to("cpu"), d)
    with pytest.raises(ValueError, match="x_train has 80 rows but y_train has 79"):
        dataclasses.replace(d, y_train=d.y_train[:-1])


def test_unknown_dataset_message() -> None:
    with pytest.raises(KeyError, match="Did you mean 'moons'"):
        data.create("moon")
