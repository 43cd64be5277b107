"""Tests of lossatlas.checkpoints: formats, matching, errors, labels."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lossatlas import models
from lossatlas.checkpoints import (
    CheckpointError,
    load_for_model,
    load_state_dict,
    match_state_dict,
    parse_labels,
    read_labels,
    save_state_dict,
)


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create("mlp", in_features=6, hidden=(5,), num_classes=3)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path: Path, model: torch.nn.Module, suffix: str) -> None:
    state = model.state_dict()
    path = save_state_dict(state, tmp_path / "sub" / f"m{suffix}")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    loaded = load_state_dict(path)
    if suffix == ".safetensors":  # safetensors stores keys sorted
        loaded = {k: loaded[k] for k in state}
    assert_same(loaded, state)


def test_save_safetensors_shared_and_views(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    state = {"a": w, "b": w, "c": w[1]}
    loaded = load_state_dict(save_state_dict(state, tmp_path / "s.safetensors"))
    assert_same(loaded, {k: v.clone() for k, v in state.items()})


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_wrapped_state_dicts(tmp_path: Path, model: torch.nn.Module, key: str) -> None:
    state = model.state_dict()
    path = tmp_path / "w.bin"
    torch.save({key: state, "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    assert_same(load_state_dict(path), state)


def test_lightning_ckpt_prefix_stripped(tmp_path: Path, model: torch.nn.Module) -> None:
    state = model.state_dict()
    path = tmp_path / "epoch=3-step=500.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "epoch": 3,
            "global_step": 500,
            "pytorch-lightning_version": "2.4.0",
        },
        path,
    )
    assert_same(load_state_dict(path), state)
    assert list(load_state_dict(path, strip_prefix=False))[0] == "model.layers.0.weight"
    assert_same(load_for_model(path, model), state)


def test_strip_prefix_options(tmp_path: Path, model: torch.nn.Module) -> None:
    cnn = models.create("cnn", channels=(2,))
    state = {f"wrapper.inner.{k}": v for k, v in cnn.state_dict().items()}
    path = save_state_dict(state, tmp_path / "x.pt")
    assert list(load_state_dict(path)) == list(state)  # no stripping for .pt
    assert_same(load_state_dict(path, strip_prefix=True), cnn.state_dict())
    mlp_state = {f"wrapper.inner.{k}": v for k, v in model.state_dict().items()}
    path = save_state_dict(mlp_state, tmp_path / "y.pt")
    assert_same(load_state_dict(path, strip_prefix="wrapper.inner."), model.state_dict())
    # True strips every shared level, here including the model's own 'layers.'
    assert list(load_state_dict(path, strip_prefix=True))[0] == "0.weight"
    assert_same(load_for_model(path, model), model.state_dict())


@pytest.mark.parametrize("prefix", ["", "module.", "model.", "net.", "_orig_mod.", "module.model."])
def test_match_strips_known_prefixes(model: torch.nn.Module, prefix: str) -> None:
    state = {f"{prefix}{k}": v for k, v in reversed(model.state_dict().items())}
    matched = match_state_dict(state, model, "a.pt")
    assert_same(matched, model.state_dict())  # model order
    model.load_state_dict(matched)


def test_match_strips_common_unknown_prefix(model: torch.nn.Module) -> None:
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    assert_same(match_state_dict(state, model), model.state_dict())


def test_match_shape_mismatch_names_tensor_and_file(model: torch.nn.Module) -> None:
    state = dict(model.state_dict())
    state["layers.0.weight"] = torch.zeros(7, 6)
    with pytest.raises(CheckpointError) as info:
        match_state_dict(state, model, "runs/a.pt")
    assert str(info.value).startswith(
        "checkpoint runs/a.pt: tensor 'layers.0.weight' has shape (7, 6), model expects (5, 6)"
    )


def test_match_missing_and_unexpected(model: torch.nn.Module) -> None:
    state = dict(model.state_dict())
    del state["layers.1.bias"]
    state["head.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as info:
        match_state_dict(state, model, "runs/b.pt")
    msg = str(info.value)
    assert msg.startswith("checkpoint runs/b.pt:") and "\n" not in msg
    assert "'layers.1.bias' is missing" in msg and "'head.bias' is not in the model" in msg


def test_corrupt_pt_names_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert msg.startswith(f"checkpoint {path} could not be read: ") and "\n" not in msg
    assert isinstance(info.value, ValueError)


def test_truncated_pt_and_safetensors(tmp_path: Path, model: torch.nn.Module) -> None:
    for suffix in (".pt", ".safetensors"):
        path = save_state_dict(model.state_dict(), tmp_path / f"t{suffix}")
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
        with pytest.raises(CheckpointError, match="could not be read") as info:
            load_state_dict(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_empty_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "e.safetensors"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"checkpoint {path} could not be read"):
        load_state_dict(path)


class Arbitrary:
    def __init__(self) -> None:
        self.x = 1


def test_weights_only_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "obj": Arbitrary()}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg and "weights_only=True" in msg and "\n" not in msg
    path2 = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path2)
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(path2)


def test_no_state_dict_inside(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no state dict found .*'epoch'"):
        load_state_dict(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_state_dict(path)


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt not found"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown suffix '.h5'; supported: .pt"):
        load_state_dict(tmp_path / "w.h5")
    with pytest.raises(CheckpointError, match="suffix must be"):
        save_state_dict({}, tmp_path / "w.ckpt")


def test_save_is_atomic_on_failure(tmp_path: Path) -> None:
    path = save_state_dict({"a": torch.ones(2)}, tmp_path / "a.pt")
    with pytest.raises(TypeError, match="value of 'b' is a str"):
        save_state_dict({"a": torch.zeros(2), "b": "x"}, path)  # type: ignore[dict-item]
    assert torch.equal(load_state_dict(path)["a"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_ordered_dict_and_safetensors_direct(tmp_path: Path) -> None:
    path = tmp_path / "d.safetensors"
    save_file({"x": torch.arange(3.0)}, str(path))
    assert torch.equal(load_state_dict(path)["x"], torch.arange(3.0))
    od = collections.OrderedDict(y=torch.ones(1))
    torch.save(od, tmp_path / "o.pt")
    assert list(load_state_dict(tmp_path / "o.pt")) == ["y"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("variantA_seed3_epoch10.pt", {"variant": "A", "seed": 3, "epoch": 10}),
        ("A-s3-e10.pt", {"variant": "A", "seed": 3, "epoch": 10}),
        ("step_1000.pt", {"step": 1000}),
        ("epoch=3-step=500.ckpt", {"epoch": 3, "step": 500}),
        ("resnet20_seed0_ep5.safetensors", {"variant": "resnet20", "seed": 0, "epoch": 5}),
        ("variant_B-seed-7.pt", {"variant": "B", "seed": 7}),
        ("run_lr=0.01_it200.pth", {"variant": "run", "lr": 0.01, "step": 200}),
        ("model_s_final.pt", {"variant": "model_s_final"}),
        ("final.pt", {"variant": "final"}),
    ],
)
def test_parse_labels(name: str, expected: dict) -> None:
    assert parse_labels(name) == expected


def test_read_labels_sidecar_and_directory(tmp_path: Path) -> None:
    assert read_labels(tmp_path / "A-s3-e10.pt") == {"variant": "A", "seed": 3, "epoch": 10}
    (tmp_path / "labels.json").write_text(json.dumps({"A-s3-e10.pt": {"seed": 4, "lr": 0.1}}))
    assert read_labels(tmp_path / "A-s3-e10.pt") == {
        "variant": "A",
        "seed": 4,
        "epoch": 10,
        "lr": 0.1,
    }
    (tmp_path / "A-s3-e10.json").write_text(json.dumps({"epoch": 11, "note": "x"}))
    labels = read_labels(tmp_path / "A-s3-e10.pt")
    assert labels == {"variant": "A", "seed": 4, "epoch": 11, "lr": 0.1, "note": "x"}


def test_read_labels_population_list(tmp_path: Path) -> None:
    rows = {"models": [{"path": "ckpts/m1.pt", "variant": "wide", "seed": 1}]}
    (tmp_path / "population.json").write_text(json.dumps(rows))
    assert read_labels(tmp_path / "m1.pt") == {"variant": "wide", "seed": 1}
    (tmp_path / "m2.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="expected a JSON object"):
        read_labels(tmp_path / "m2.pt")
    (tmp_path / "m3.json").write_text("{bad json")
    with pytest.raises(CheckpointError, match="m3.json could not be read"):
        read_labels(tmp_path / "m3.pt")
