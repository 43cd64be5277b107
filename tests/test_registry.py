"""Tests of lossatlas.registry: registration, creation, listing, factory specs."""

from __future__ import annotations

import pytest

from lossatlas import data, models
from lossatlas.registry import FactoryError, Registry, UnknownNameError, resolve_factory


def make_registry() -> Registry:
    reg = Registry("widget")

    @reg.register()
    def small(size: int = 3, color: str = "red") -> tuple[int, str]:
        return size, color

    @reg.register("large_widget")
    def _large(size: int = 30) -> int:
        return size

    return reg


def test_register_create_and_list() -> None:
    reg = make_registry()
    assert reg.create("small") == (3, "red")
    assert reg.create("small", size=5) == (5, "red")
    assert reg.create("large_widget") == 30
    assert reg.list() == ["large_widget", "small"]
    assert reg.list("lar*") == ["large_widget"]
    assert reg.list("*a*") == ["large_widget", "small"]
    assert "small" in reg and len(reg) == 2


def test_create_drops_none_kwargs() -> None:
    reg = make_registry()
    assert reg.create("small", size=None, color=None) == (3, "red")


def test_unknown_name_lists_close_matches_and_available() -> None:
    reg = make_registry()
    with pytest.raises(KeyError) as info:
        reg.create("smal")
    msg = str(info.value)
    assert "unknown widget 'smal'" in msg and "Did you mean 'small'" in msg
    assert "large_widget" in msg
    with pytest.raises(ValueError):  # also a ValueError
        reg.get("nothing")
    assert issubclass(UnknownNameError, KeyError)


def test_duplicate_and_colon_names_refused() -> None:
    reg = make_registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("small")(lambda: 0)
    with pytest.raises(ValueError, match="may not contain ':'"):
        reg.register("a:b")(lambda: 0)


def test_resolve_factory_ok() -> None:
    fn = resolve_factory("lossatlas.models.mlp:mlp")
    assert fn is models.mlp.mlp
    assert resolve_factory("collections:OrderedDict.fromkeys")(["a"]) == {"a": None}


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            "foo.bar:make",
            "cannot import module 'foo.bar' from factory spec 'foo.bar:make' "
            "(No module named 'foo')",
        ),
        ("lossatlas.registry:nope", "module 'lossatlas.registry' has no attribute 'nope'"),
        ("lossatlas.registry:__all__", "is not callable"),
        ("lossatlas.registry", "must have the form 'package.module:function'"),
        ("a:b:c", "exactly one ':'"),
        (":make", "non-empty"),
    ],
)
def test_resolve_factory_errors(spec: str, needle: str) -> None:
    with pytest.raises(FactoryError) as info:
        resolve_factory(spec)
    msg = str(info.value)
    assert needle in msg and spec in msg and "\n" not in msg


def test_create_with_factory_spec() -> None:
    model = models.create("lossatlas.models.mlp:MLP", in_features=8, hidden=(4,), num_classes=3)
    assert isinstance(model, models.MLP) and model.layers[0].in_features == 8
    splits = data.create("lossatlas.data:moons", num_samples=100, seed=None)
    assert splits.name == "moons" and splits.num_train + splits.num_test == 100


def test_create_checks_return_types() -> None:
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        models.create("collections:OrderedDict")
    with pytest.raises(TypeError, match="expected lossatlas.data.DatasetSplits"):
        data.create("collections:OrderedDict")


def test_builtin_listings() -> None:
    assert {"mlp", "cnn", "cnn2d", "resnet20", "resnet56", "transformer"} <= set(
        models.list_models()
    )
    assert models.list_models("resnet*") == ["resnet20", "resnet56"]
    assert {"digits", "mnist1d", "modular", "moons", "blobs"} <= set(data.list_datasets())
