"""Tests of lossatlas.train: determinism, checkpoints, metrics, labels, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lossatlas import data as data_mod
from lossatlas.population import Population
from lossatlas.train import (
    default_demo_variants,
    expand_variants,
    merge_manifest,
    plan_runs,
    read_metrics,
    train_population,
)

MODEL_KW = {"hidden": (16,)}
VARIANTS = [
    {"name": "A", "lr": 0.05, "batch_size": 32, "epochs": 5},
    {"name": "B", "optimizer": "adam", "lr": 0.03, "batch_size": 64, "weight_decay": 1e-4,
     "epochs": 5},
]


@pytest.fixture(scope="module")
def blobs():
    return data_mod.create("blobs", num_samples=400, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) with one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _train(out: Path, blobs, **kw):
    args = {"variants": VARIANTS, "seeds": (0,), "checkpoint_every": 2,
            "model_kwargs": MODEL_KW, "device": "cpu", **kw}
    return train_population("mlp", blobs, out_dir=out, **args)


@pytest.fixture(scope="module")
def run(tmp_path_factory, blobs):
    out = tmp_path_factory.mktemp("run")
    return out, _train(out, blobs)


def _files(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "checkpoints").glob("*.safetensors"))}


def test_checkpoints_every_k_epochs_and_labels(run):
    out, pop = run
    names = list(_files(out))
    want = [f"{v}_seed0_epoch{e:03d}.safetensors" for v in "AB" for e in (0, 2, 4, 5)]
    assert names == want
    assert len(pop) == 8 and pop.variants == ["A", "B"]
    lab = pop.labels[3]
    assert lab["variant"] == "A" and lab["seed"] == 0 and lab["epoch"] == 5
    assert lab["step"] == 5 * 10  # 320 training samples / batch 32 = 10 steps per epoch
    assert lab["lr"] == 0.05 and lab["batch_size"] == 32 and lab["optimizer"] == "sgd"
    assert pop.labels[7]["step"] == 5 * 5  # ceil(320 / 64)
    assert pop.trajectories() == {"A/seed0": [0, 1, 2, 3], "B/seed0": [4, 5, 6, 7]}
    # same init for the variants of one seed, different after training
    assert torch.equal(pop.vector(0), pop.vector(4))
    assert not torch.equal(pop.vector(3), pop.vector(7))


def test_metrics_per_epoch_and_learning(run):
    out, _ = run
    metrics = read_metrics(out)
    assert set(metrics["runs"]) == {"A_seed0", "B_seed0"}
    for rec in metrics["runs"].values():
        rows = rec["epochs"]
        assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4, 5]
        for r in rows:
            for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
                assert isinstance(r[k], float)
        assert rows[-1]["test_accuracy"] > max(0.8, rows[0]["test_accuracy"] + 0.2)
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    lines = (out / "metrics" / "A_seed0.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2, 3, 4, 5]
    manifest = json.loads((out / "train.json").read_text())
    assert manifest["model"] == "mlp"
    assert manifest["model_kwargs"] == {"hidden": [16], "in_features": 2, "num_classes": 3}
    assert json.loads((out / "run.json").read_text())["stages"]["train"]["trained"]


def test_same_seed_bit_identical_different_seed_differs(run, tmp_path, blobs):
    out, _ = run
    again = tmp_path / "again"
    _train(again, blobs, variants=VARIANTS[:1])
    other = tmp_path / "other"
    _train(other, blobs, variants=VARIANTS[:1], seeds=(1,))
    for name, path in _files(again).items():
        assert path.read_bytes() == (out / "checkpoints" / name).read_bytes(), name
    a = load_file(str(again / "checkpoints" / "A_seed0_epoch005.safetensors"))
    b = load_file(str(other / "checkpoints" / "A_seed1_epoch005.safetensors"))
    assert not torch.equal(a["layers.0.weight"], b["layers.0.weight"])


def test_population_loads_back(run):
    out, pop = run
    back = Population.from_run(out)
    assert torch.equal(back.as_points(), pop.as_points())
    assert back.labels == pop.labels
    final = back.final()
    assert [(lab["variant"], lab["epoch"]) for lab in final.labels] == [("A", 5), ("B", 5)]
    again = Population.from_checkpoints(out / "checkpoints", "mlp",
                                        {"in_features": 2, "hidden": (16,), "num_classes": 3})
    assert again.labels == pop.labels


def test_resume_skips_completed_runs(tmp_path, blobs):
    out = tmp_path / "resume"
    _train(out, blobs, variants=VARIANTS[:1])
    files = _files(out)
    stamps = {n: p.stat().st_mtime_ns for n, p in files.items()}
    metrics_before = read_metrics(out)["runs"]["A_seed0"]
    pop = _train(out, blobs)  # A is done; only B is trained
    assert {n: p.stat().st_mtime_ns for n, p in files.items()} == stamps
    assert len(pop) == 8 and pop.variants == ["A", "B"]
    stages = json.loads((out / "run.json").read_text())["stages"]["train"]
    assert stages["skipped"] == ["A_seed0"] and stages["trained"] == ["B_seed0"]
    metrics = read_metrics(out)["runs"]
    assert metrics["A_seed0"] == metrics_before and "B_seed0" in metrics
    # an unfinished run (final checkpoint missing) is trained again, identically
    final = out / "checkpoints" / "B_seed0_epoch005.safetensors"
    data = final.read_bytes()
    final.unlink()
    _train(out, blobs)
    assert final.read_bytes() == data
    assert len((out / "metrics" / "B_seed0.jsonl").read_text().splitlines()) == 6
    with pytest.raises(ValueError, match="lr=0.05.*lr=0.2"):
        _train(out, blobs, variants=[{**VARIANTS[0], "lr": 0.2}])
    with pytest.raises(ValueError, match="model_kwargs"):
        _train(out, blobs, model_kwargs={"hidden": (8,)})


def test_extra_step_checkpoints(tmp_path, blobs):
    out = tmp_path / "steps"
    pop = _train(out, blobs, variants=[{"name": "S", "lr": 0.05, "batch_size": 64, "epochs": 3}],
                 checkpoint_every=3, recorder={"steps": "log", "num": 8})
    steps = [lab["step"] for lab in pop.labels]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 15
    inside = [lab for lab in pop.labels if lab["step"] % 5]
    assert inside and all(lab["epoch"] == lab["step"] / 5 for lab in inside)
    assert any(p.endswith("_step0000001.safetensors") for p in pop.paths)


def test_variant_expansion_and_errors(tmp_path, blobs):
    grid = expand_variants(grid={"lr": [0.1, 0.01], "batch_size": [32, 64]}, epochs=2)
    assert [v["name"] for v in grid] == ["lr0.1-bs32", "lr0.1-bs64", "lr0.01-bs32", "lr0.01-bs64"]
    assert all(v["epochs"] == 2 and v["optimizer"] == "sgd" for v in grid)
    demo = expand_variants(default_demo_variants())
    assert [v["name"] for v in demo] == list("ABCDEFG")
    assert len({(v["lr"], v["batch_size"], v["weight_decay"], v["optimizer"]) for v in demo}) == 7
    with pytest.raises(ValueError, match="not both"):
        expand_variants(VARIANTS, grid={"lr": [0.1]})
    with pytest.raises(ValueError, match="'learning_rate'"):
        expand_variants([{"name": "X", "learning_rate": 0.1}])
    with pytest.raises(ValueError, match="repeated"):
        expand_variants([{"name": "X"}, {"name": "X"}])
    with pytest.raises(ValueError, match="optimizer"):
        expand_variants([{"name": "X", "optimizer": "lbfgs"}])
    with pytest.raises(ValueError, match="checkpoint_every"):
        _train(tmp_path / "bad", blobs, checkpoint_every=0)
    with pytest.raises(ValueError, match="no_such_mod_xyz:f"):
        train_population("no_such_mod_xyz:f", blobs, out_dir=tmp_path / "bad")


def test_plan_lists_variants_then_seeds_with_their_checkpoints(tmp_path):
    plan = plan_runs(VARIANTS, seeds=(3, 1), checkpoint_every=2)
    assert [r.key for r in plan] == ["A_seed3", "A_seed1", "B_seed3", "B_seed1"]
    assert plan[2].variant == expand_variants(VARIANTS)[1] and plan[2].epochs == 5
    files = plan[0].checkpoint_files(tmp_path)
    assert [f.name for f in files] == [f"A_seed3_epoch{e:03d}.safetensors" for e in (0, 2, 4, 5)]
    assert all(f.parent == tmp_path / "checkpoints" for f in files)
    assert not plan[0].finished(tmp_path)
    default = plan_runs(epochs=3)  # the demo variants, seed 0, every epoch
    assert [r.key for r in default] == [f"{v}_seed0" for v in "ABCDEFG"]
    assert len(default[0].checkpoint_files(tmp_path)) == 4
    with pytest.raises(ValueError, match="distinct"):
        plan_runs(VARIANTS, seeds=(1, 1))
    with pytest.raises(ValueError, match="checkpoint_every"):
        plan_runs(VARIANTS, checkpoint_every=1.5)


def test_plan_knows_which_runs_are_finished(run):
    out, _ = run
    extra = [*VARIANTS, {"name": "C", "lr": 0.05, "epochs": 5}]
    plan = plan_runs(extra, checkpoint_every=2)
    assert [r.finished(out) for r in plan] == [True, True, False]
    for r in plan[:2]:  # the files planned are the files written
        assert all(f.is_file() for f in r.checkpoint_files(out))
    assert sorted(f.name for r in plan[:2] for f in r.checkpoint_files(out)) == list(_files(out))
    longer = plan_runs([{**VARIANTS[0], "epochs": 6}], checkpoint_every=2)
    assert not longer[0].finished(out)  # its final checkpoint (epoch 6) is not there


def test_merge_manifest_keeps_earlier_variants_seeds_and_timings(tmp_path):
    old = {"model": "mlp", "model_kwargs": {"hidden": [16]}, "data": "blobs",
           "data_kwargs": {}, "checkpoint_every": 1,
           "variants": [{"name": "A", "lr": 1.0}, {"name": "Z", "lr": 0.5}],
           "seeds": [0, 5], "timings": {"Z_seed0": 1.5}}
    config = {"model": "mlp", "model_kwargs": {"hidden": (16,)}, "data": "blobs",
              "data_kwargs": {}, "checkpoint_every": 2, "device": "cpu"}
    plan = plan_runs(VARIANTS, seeds=(1, 0), checkpoint_every=2)
    merged = merge_manifest(old, config, plan, tmp_path)
    assert [v["name"] for v in merged["variants"]] == ["A", "Z", "B"]
    assert merged["variants"][0] == expand_variants(VARIANTS)[0]  # this call's A
    assert merged["seeds"] == [0, 1, 5] and merged["timings"] == {"Z_seed0": 1.5}
    assert merged["checkpoint_every"] == 2 and merged["device"] == "cpu"
    assert old["variants"][0] == {"name": "A", "lr": 1.0}  # not modified
    assert merge_manifest({}, config, plan, tmp_path)["seeds"] == [0, 1]
    with pytest.raises(ValueError, match=f"{tmp_path}.*data='blobs'.*data='mnist1d'"):
        merge_manifest(old, {**config, "data": "mnist1d"}, plan, tmp_path)
