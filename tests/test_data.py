"""Tests of the built-in datasets in lossatlas.data."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lossatlas
from lossatlas import data
from lossatlas.data import DatasetSplits, load_data
from lossatlas.registry import FactoryError

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


def test_mnist1d_default_offline(no_network: None) -> None:
    data._mnist1d_arrays.cache_clear()
    state = np.random.get_state()
    d = data.mnist1d()
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


# ------------------------------------------------------------ user data factories
USER_MODULE = """
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lossatlas.data import blobs, moons


def digits_data(n=50, classes=4):
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.arange(n) % classes)


def pair(n=30):
    return np.random.default_rng(0).normal(size=(n, 6)), np.arange(n) % 3


def tokens(n=12):
    ids = torch.arange(n * 5).reshape(n, 5)
    items = [({"input_ids": ids[i], "attention_mask": torch.ones(5)}, i % 2) for i in range(n)]
    return DataLoader(items, batch_size=5)


class Items(Dataset):
    def __len__(self):
        return 9

    def __getitem__(self, i):
        return torch.full((6,), float(i)), i % 3


def items():
    return Items()


def regression(n=20):
    return torch.randn(n, 6), torch.randn(n)


def splits():
    return moons(num_samples=100, seed=1)


def splits6():
    return blobs(num_samples=100, num_features=6)


def wide(n=10):
    return torch.randn(n, 7), torch.zeros(n, dtype=torch.long)


def broken(n=5):
    raise ValueError(f"cannot build {n} samples")


def odict():
    return {"x": 1}


def triple():
    return torch.zeros(3, 6), torch.zeros(3), torch.zeros(3)


def not_pairs():
    return [1, 2, 3]


def two_sets():
    return digits_data(10), digits_data(5)


class Bad(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return i


def bad_items():
    return Bad()
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``mine_data.py`` in the working directory (not on sys.path); its module name."""
    (tmp_path / "mine_data.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p) != str(tmp_path)
                                      and p not in ("", ".")])
    yield "mine_data"
    sys.modules.pop("mine_data", None)


def test_tensor_dataset_factory_is_both_splits(user_module: str) -> None:
    d = load_data("mine_data:digits_data")
    assert isinstance(d, DatasetSplits) and d.test_is_train
    assert d.x_test is d.x_train and d.y_test is d.y_train
    assert d.num_train == d.num_test == 50 and d.input_shape == (6,) and d.num_classes == 4
    assert d.name == d.spec == "mine_data:digits_data" and d.test_spec is None
    assert d.describe() == {
        "training data": "mine_data:digits_data (a TensorDataset of 50 samples)",
        "test data": "the training data (mine_data:digits_data gave one set; no held-out "
                     "test data)",
    }
    small = load_data("mine_data:digits_data", {"n": 12, "classes": None})
    assert small.num_train == 12 and small.meta == {"n": 12}
    moved = small.to("cpu")
    assert moved.x_test is moved.x_train  # still one copy
    assert lossatlas.load_data is load_data


def test_pair_loader_and_dataset_factories(user_module: str) -> None:
    p = load_data("mine_data:pair", {"n": 30})
    assert p.x_train.dtype == torch.float32 and p.y_train.dtype == torch.int64
    assert p.returned == "an (X, y) pair of 30 samples" and p.num_classes == 3
    t = load_data("mine_data:tokens")
    assert t.input_shape == {"input_ids": (5,), "attention_mask": (5,)}
    assert torch.equal(t.x_train["input_ids"], torch.arange(60).reshape(12, 5))
    assert t.returned == "a DataLoader of 12 samples" and t.num_classes == 2
    i = load_data("mine_data:items")
    assert i.returned == "an Items of 9 samples" and i.x_train[4, 0] == 4.0
    r = load_data("mine_data:regression")
    assert r.num_classes is None and r.y_train.is_floating_point()


def test_separate_test_factory(user_module: str) -> None:
    d = load_data("mine_data:digits_data", {"n": 40}, "mine_data:digits_data", {"n": 8})
    assert not d.test_is_train and (d.num_train, d.num_test) == (40, 8)
    assert not torch.equal(d.x_train[:8], d.x_test)
    assert d.test_source == "mine_data:digits_data (a TensorDataset of 8 samples)"
    s = load_data("mine_data:pair", None, "mine_data:splits6")  # a DatasetSplits' test split
    assert s.test_returned == "test split of a DatasetSplits, 20 samples"
    assert s.x_test.shape == (20, 6) and s.num_train == 30 and s.num_classes == 3
    assert torch.equal(s.x_test, data.blobs(num_samples=100, num_features=6).x_test)
    held = load_data("blobs", {"num_samples": 100, "num_features": 6}, "mine_data:pair")
    assert (held.name, held.spec, held.num_train, held.num_test) == ("blobs", "blobs", 80, 30)
    assert held.describe() == {"training data": "blobs (train split, 80 samples)",
                               "test data": "mine_data:pair (an (X, y) pair of 30 samples)"}


def test_separate_test_factory_must_match_shapes(user_module: str) -> None:
    with pytest.raises(ValueError) as info:
        load_data("mine_data:digits_data", test_spec="mine_data:wide")
    msg = str(info.value)
    assert "test data factory 'mine_data:wide'" in msg and "(7,)" in msg
    assert "data factory 'mine_data:digits_data' gives (6,)" in msg


def test_splits_factory_records_spec(user_module: str) -> None:
    d = load_data("mine_data:splits")
    assert d.name == "moons" and d.spec == "mine_data:splits" and not d.test_is_train
    assert d.describe() == {"training data": "mine_data:splits (train split, 80 samples)",
                            "test data": "mine_data:splits (test split, 20 samples)"}
    m = data.create("moons", num_samples=100, seed=None)
    assert m.spec == "moons" and m.train_source == "moons (train split, 80 samples)"


def test_factory_errors_name_the_factory(user_module: str) -> None:
    with pytest.raises(FactoryError) as info:
        load_data("mine_data:broken", {"n": 3})
    assert str(info.value) == "data factory 'mine_data:broken' raised ValueError: cannot build 3 samples"
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(FactoryError, match="test data factory 'mine_data:broken' raised"):
        load_data("mine_data:digits_data", test_spec="mine_data:broken")
    with pytest.raises(FactoryError, match="data factory 'moons' raised TypeError"):
        load_data("moons", {"colour": "red"})
    with pytest.raises(TypeError) as info:
        load_data("mine_data:odict")
    msg = str(info.value)
    assert "data factory 'mine_data:odict' returned a dict; expected a lossatlas.data.DatasetSplits" in msg
    assert "DataLoader yielding (x, y) batches" in msg
    with pytest.raises(TypeError, match=r"'mine_data:triple' returned a tuple of \(Tensor, "
                                        r"Tensor, Tensor\); expected a lossatlas"):
        load_data("mine_data:triple")
    with pytest.raises(TypeError, match=r"'mine_data:not_pairs' returned a list of \(int, int, int"):
        load_data("mine_data:not_pairs")
    with pytest.raises(TypeError, match=r"'mine_data:two_sets' returned a tuple of \(TensorDataset, "
                                        r"TensorDataset\); expected"):
        load_data("mine_data:two_sets")
    with pytest.raises(TypeError, match=r"data factory 'mine_data:bad_items' \(returned a Bad\): "
                                        "item 0 is int"):
        load_data("mine_data:bad_items")
    with pytest.raises(FactoryError, match="Did you mean 'digits_data'"):
        load_data("mine_data:digit_data")
    with pytest.raises(KeyError, match="Did you mean 'moons'"):
        load_data("moon")
    with pytest.raises(TypeError, match="spec must be a dataset name"):
        load_data(3)  # type: ignore[arg-type]


def test_callable_and_file_specs(user_module: str, tmp_path: Path) -> None:
    def mine(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(n, 2), torch.ones(n, dtype=torch.long)

    d = load_data(mine, {"n": 6})
    assert d.num_train == 6 and d.spec.endswith(":test_callable_and_file_specs.<locals>.mine")
    f = load_data(f"{tmp_path / 'mine_data.py'}:items")
    assert f.num_train == 9 and f.spec.endswith("mine_data.py:items")


def test_builtin_through_load_data_unchanged() -> None:
    a, b = data.moons(num_samples=100), load_data("moons", {"num_samples": 100})
    assert equal(a, b) and b.name == "moons" and b.num_classes == 2
    assert isinstance(data.ACCEPTED, str)


def test_dict_inputs_in_splits() -> None:
    x = {"ids": torch.zeros(4, 3, dtype=torch.long), "mask": torch.ones(4, 3)}
    d = DatasetSplits(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long),
                      num_classes=1, input_shape={"ids": (3,), "mask": (3,)}, name="toks")
    assert d.num_train == 4 and d.to("cpu").x_train["ids"].shape == (4, 3)
    with pytest.raises(ValueError, match="x_test has sample shape"):
        dataclasses.replace(d, x_test={"ids": torch.zeros(4, 2), "mask": torch.ones(4, 2)})
    with pytest.raises(ValueError, match="x\\['mask'\\] has 3 samples"):
        dataclasses.replace(d, x_test={"ids": torch.zeros(4, 3), "mask": torch.ones(3, 3)})


# ------------------------------------------------------------ the command line
def test_cli_load_data(user_module: str) -> None:
    from lossatlas.cli import UsageError, _load_data

    splits, (x, y) = _load_data("mine_data:digits_data", ["n=20"], "test", 5)
    assert splits.test_is_train and x.shape == (5, 6) and torch.equal(x, splits.x_train[:5])
    splits, (x, y) = _load_data("mine_data:digits_data", ["n=20"], "test", None,
                                "mine_data:digits_data", ["n=7"])
    assert splits.num_test == 7 and len(y) == 7 and splits.test_spec == "mine_data:digits_data"
    _, (x, y) = _load_data("mine_data:tokens", None, "train", 3)
    assert x["input_ids"].shape == (3, 5) and y.tolist() == [0, 1, 0]
    with pytest.raises(UsageError, match="--split must be 'train' or 'test'"):
        _load_data("mine_data:digits_data", None, "val", None)
    with pytest.raises(UsageError, match="--samples must be >= 1"):
        _load_data("mine_data:digits_data", None, "train", 0)
    with pytest.raises(UsageError, match="--test-data-arg expects key=value"):
        _load_data("mine_data:digits_data", None, "train", None, "mine_data:pair", ["n"])


def test_cli_runs_with_a_tensor_dataset_factory(user_module: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lossatlas.checkpoints import save_state_dict
    from lossatlas.cli import app
    from lossatlas.models import create as create_model

    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        model = create_model("mlp", in_features=6, hidden=(8,), num_classes=4)
        paths.append(tmp_path / f"m{seed}.pt")
        save_state_dict(model.state_dict(), paths[-1])
    args = ["surface", "interp", *map(str, paths), "--model", "mlp", "--model-arg",
            "hidden=[8]", "--data", "mine_data:digits_data", "--steps", "3",
            "--out", str(tmp_path / "run"), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["points"] == 3
    bad = [("mine_data:odict" if a == "mine_data:digits_data" else a) for a in args]
    res = CliRunner().invoke(app, bad)
    assert res.exit_code == 1
    assert "error: data factory 'mine_data:odict' returned a dict" in res.output


def test_readme_example_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Your own model and data" module works as the README says."""
    from lossatlas.registry import resolve_factory

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Your own model and data", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "mine.py").write_text(code)
    assert "--model mine:make_cnn --data mine:digits_data" in section
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p) != str(tmp_path)
                                      and p not in ("", ".")])
    monkeypatch.delitem(sys.modules, "mine", raising=False)
    try:
        d = load_data("mine:digits_data")
        assert d.train_source == "mine:digits_data (a TensorDataset of 1797 samples)"
        assert d.input_shape == (1, 8, 8) and d.num_classes == 10 and d.test_is_train
        model = resolve_factory("mine:make_cnn")(num_classes=d.num_classes)
        assert model(d.x_train[:2]).shape == (2, 10)
    finally:
        sys.modules.pop("mine", None)
