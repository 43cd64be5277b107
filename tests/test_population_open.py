"""Population.open: one loader for a train run, a checkpoint folder, a glob, a file or a
list of files; source_kind says which; a path that is none of them is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lossatlas.errors import InputTypeError, LossatlasError
from lossatlas.models import create
from lossatlas.population import (
    Population,
    PopulationSourceError,
    load_population,
    source_kind,
)
from lossatlas.space import ParamSpace

KW = {"in_features": 2, "hidden": (5,), "num_classes": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) with one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A two-epoch run of two variants on 120 blobs (3 checkpoints each)."""
    from lossatlas.train import train_population

    out = tmp_path_factory.mktemp("open") / "run"
    train_population("mlp", "blobs", out_dir=out, data_kwargs={"num_samples": 120},
                     variants=[{"name": "A", "lr": 0.05, "epochs": 2},
                               {"name": "B", "lr": 0.1, "epochs": 2}],
                     model_kwargs={"hidden": (5,)}, device="cpu", num_threads=1)
    return out


def _on_disk(files: list[Path]) -> tuple[torch.Tensor, list[dict]]:
    """The vectors and labels of checkpoint files read without lossatlas's loaders: the
    tensors loaded into a fresh model and flattened, the labels from the sidecars."""
    model = create("mlp", **KW)
    space = ParamSpace(model)
    rows, labels = [], []
    for f in files:
        model.load_state_dict(load_file(str(f)))
        rows.append(space.flatten(model))
        labels.append(json.loads(f.with_suffix(".json").read_text()))
    return torch.stack(rows), labels


def _same(pop: Population, files: list[Path]) -> None:
    vectors, labels = _on_disk(files)
    assert [Path(p).name for p in pop.paths] == [f.name for f in files]
    assert torch.equal(pop.as_points(), vectors)
    assert pop.labels == labels


def _ckpts(run: Path, pattern: str = "*.safetensors") -> list[Path]:
    return sorted((run / "checkpoints").glob(pattern))


def test_each_form_opens_to_the_explicit_constructors_population(run):
    ckpt = run / "checkpoints"
    files = _ckpts(run)
    assert [f.name for f in files] == [f"{v}_seed0_epoch00{e}.safetensors"
                                       for v in "AB" for e in range(3)]
    cases = [
        ("run", run, None, Population.from_run(run), files),
        ("folder", ckpt, "mlp", Population.from_checkpoints(ckpt, "mlp", KW), files),
        ("glob", str(ckpt / "B_*.safetensors"), "mlp",
         Population.from_checkpoints(str(ckpt / "B_*.safetensors"), "mlp", KW), files[3:]),
        ("file", files[4], "mlp", Population.from_checkpoints(files[4], "mlp", KW), files[4:5]),
        ("list", [files[5], files[0]], "mlp",
         Population.from_checkpoints([files[5], files[0]], "mlp", KW), [files[5], files[0]]),
    ]
    for kind, source, factory, explicit, want in cases:
        assert source_kind(source) == kind
        opened = Population.open(source, factory, None if factory is None else KW)
        _same(opened, want)
        _same(explicit, want)
        assert opened.factory_spec == "mlp" and len(opened) == len(want)
    # a train run with a path string, and the compatibility name, alike
    _same(Population.open(str(run)), files)
    _same(load_population(run), files)
    # the run's factory given again: the run's arguments, updated by the caller's
    assert torch.equal(Population.open(run, "mlp").as_points(), _on_disk(files)[0])


def test_a_path_that_is_none_of_them_is_named(run, tmp_path):
    missing = tmp_path / "no_such_run"
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    half = tmp_path / "half_run"  # a manifest but no checkpoints/ folder yet
    half.mkdir()
    (half / "train.json").write_text("{}")
    pattern = str(run / "checkpoints" / "Z_*.safetensors")
    for source, needle in ((missing, "not found"), (empty, "holds no checkpoints"),
                           (half, "not a train run"), (pattern, "matches no checkpoint")):
        for call in (lambda s=source: Population.open(s, "mlp", KW),
                     lambda s=source: source_kind(s)):
            with pytest.raises(PopulationSourceError) as info:
                call()
            text = str(info.value)
            assert str(source) in text and needle in text and "\n" not in text
            assert isinstance(info.value, FileNotFoundError)
            assert isinstance(info.value, LossatlasError)
    with pytest.raises(PopulationSourceError, match="Population.open: .*no_such_run"):
        Population.open(missing)
    # a list names the missing item among the rest
    with pytest.raises(PopulationSourceError, match="gone.safetensors"):
        Population.open([_ckpts(run)[0], tmp_path / "gone.safetensors"], "mlp", KW)
    # checkpoints need a factory: the error says it is not a run
    with pytest.raises(ValueError, match="checkpoints.*not a training run.*model factory"):
        Population.open(run / "checkpoints")
    with pytest.raises(ValueError, match="empty"):
        Population.open([], "mlp", KW)
    with pytest.raises(InputTypeError, match="got int"):
        Population.open(3, "mlp", KW)
