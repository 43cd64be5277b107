"""Tests of lossatlas.registry: registration, creation, listing, factory specs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

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
    with pytest.raises(TypeError, match="returned an OrderedDict; expected a lossatlas.data"):
        data.create("collections:OrderedDict")


def test_builtin_listings() -> None:
    assert {"mlp", "cnn", "cnn2d", "resnet20", "resnet56", "transformer"} <= set(
        models.list_models()
    )
    assert models.list_models("resnet*") == ["resnet20", "resnet56"]
    assert {"digits", "mnist1d", "modular", "moons", "blobs"} <= set(data.list_datasets())


# ------------------------------------------------- factories from the working directory and files
@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``tmp_path`` as the working directory, not on ``sys.path`` (as for the installed
    ``lossatlas`` script); modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    cwd_like = {os.path.abspath(p) for p in ("", str(tmp_path), str(Path(__file__).parents[1]))}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if os.path.abspath(p) not in cwd_like])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", None) or ""):
            del sys.modules[name]


def test_module_in_working_directory(workdir: Path) -> None:
    (workdir / "mine_cwd.py").write_text("def make_cnn(width=2):\n    return ('cnn', width)\n")
    assert importlib.util.find_spec("mine_cwd") is None  # not importable as such
    assert resolve_factory("mine_cwd:make_cnn")(width=3) == ("cnn", 3)
    assert str(workdir) in sys.path
    assert models.MODELS.get("mine_cwd:make_cnn") is resolve_factory("mine_cwd:make_cnn")


def test_unknown_function_suggests_close_names(workdir: Path) -> None:
    (workdir / "mine_hint.py").write_text(
        "def make_cnn():\n    pass\n\ndef make_mlp():\n    pass\n\n"
        "def _make_private():\n    pass\n\nWIDTH = 3\n"
    )
    with pytest.raises(FactoryError) as info:
        resolve_factory("mine_hint:make_cn")
    msg = str(info.value)
    assert "module 'mine_hint' has no attribute 'make_cn'" in msg
    assert "Did you mean 'make_cnn', 'make_mlp'?" in msg
    assert str(workdir / "mine_hint.py") in msg and "\n" not in msg
    with pytest.raises(FactoryError) as info:
        resolve_factory("mine_hint:zzz")
    msg = str(info.value)
    assert "Public callables: make_cnn, make_mlp" in msg
    assert "_make_private" not in msg and "WIDTH" not in msg


def test_unknown_module_names_the_directory_searched(workdir: Path) -> None:
    path_before = list(sys.path)
    with pytest.raises(FactoryError) as info:
        resolve_factory("nowhere_mod:make")
    msg = str(info.value)
    assert "cannot import module 'nowhere_mod'" in msg and "No module named 'nowhere_mod'" in msg
    assert f"current directory {str(workdir)!r}" in msg
    assert "'path/to/file.py:make'" in msg
    assert sys.path == path_before  # the working directory is not left behind


def test_module_in_working_directory_with_missing_import(workdir: Path) -> None:
    (workdir / "mine_dep.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(FactoryError) as info:
        resolve_factory("mine_dep:make")
    msg = str(info.value)
    assert "cannot import module 'mine_dep'" in msg
    assert "No module named 'no_such_dependency_xyz'" in msg and "searched" not in msg


def test_module_in_working_directory_that_fails(workdir: Path) -> None:
    (workdir / "mine_syntax.py").write_text("def make(:\n")
    path_before = list(sys.path)
    with pytest.raises(FactoryError) as info:
        resolve_factory("mine_syntax:make")
    msg = str(info.value)
    assert "cannot import module 'mine_syntax'" in msg and "(SyntaxError: " in msg
    assert "\n" not in msg and sys.path == path_before


def test_factory_from_file(workdir: Path) -> None:
    sub = workdir / "sub" / "dir"
    sub.mkdir(parents=True)
    (sub / "helper_sib.py").write_text("K = 7\n")
    (sub / "models_file.py").write_text(
        "from helper_sib import K\n\ndef make(scale=1):\n    return K * scale\n"
    )
    other = workdir / "other"
    other.mkdir()
    (other / "models_file.py").write_text("def make(scale=1):\n    return -scale\n")
    fn = resolve_factory("sub/dir/models_file.py:make")
    assert fn(scale=2) == 14  # imports its neighbour, as when run as a script
    assert resolve_factory(f"{sub / 'models_file.py'}:make") is fn  # same module again
    assert fn.__module__.startswith("lossatlas_factory_models_file_")
    assert resolve_factory("other/models_file.py:make")(scale=2) == -2  # same stem, own module
    assert data.DATASETS.get("./sub/dir/models_file.py:make") is fn


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("missing/file.py:make", ["file 'missing/file.py' not found", "missing/file.py"]),
        ("broken.py:make", ["cannot import file 'broken.py'", "RuntimeError: boom at import"]),
        ("good.py:", ["must have the form 'file.py:function'"]),
        ("good.py:mak", ["no attribute 'mak'", "Did you mean 'make'?", "good.py"]),
        ("good.py:VALUE", ["names a int, which is not callable"]),
    ],
)
def test_file_factory_errors(workdir: Path, spec: str, needles: list[str]) -> None:
    (workdir / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    (workdir / "good.py").write_text("VALUE = 1\n\ndef make():\n    return 1\n")
    with pytest.raises(FactoryError) as info:
        resolve_factory(spec)
    msg = str(info.value)
    assert spec in msg and "\n" not in msg
    for needle in needles:
        assert needle in msg
    assert not any(name.startswith("lossatlas_factory_broken_") for name in sys.modules)
