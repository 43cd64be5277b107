"""Tests of lossatlas.population: loading checkpoints, labels, selection, storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lossatlas.checkpoints import CheckpointError
from lossatlas.models import create
from lossatlas.population import Population, natural_key
from lossatlas.space import ParamSpace

KW = {"in_features": 4, "hidden": (6,), "num_classes": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a busy machine) with one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(seed: int, **kw):
    torch.manual_seed(seed)
    return create("mlp", **{**KW, **kw})


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> tuple[Path, list]:
    """A directory with a .pt, a .safetensors (with sidecar) and a Lightning .ckpt."""
    models = [tiny(i) for i in range(3)]
    torch.save(models[0].state_dict(), tmp_path / "A_seed0_epoch001.pt")
    save_file(
        {k: v.contiguous() for k, v in models[1].state_dict().items()},
        str(tmp_path / "variantB-s1-e2.safetensors"),
    )
    (tmp_path / "variantB-s1-e2.json").write_text(
        json.dumps({"variant": "B", "seed": 1, "epoch": 2, "lr": 0.1})
    )
    lightning = {
        "state_dict": {f"model.{k}": v for k, v in models[2].state_dict().items()},
        "epoch": 3,
        "global_step": 30,
    }
    torch.save(lightning, tmp_path / "epoch=3-step=30.ckpt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    return tmp_path, models


def test_from_directory_vectors_labels_order(ckpt_dir):
    d, models = ckpt_dir
    pop = Population.from_checkpoints(d, "mlp", KW)
    names = [Path(p).name for p in pop.paths]
    assert names == ["A_seed0_epoch001.pt", "epoch=3-step=30.ckpt", "variantB-s1-e2.safetensors"]
    space = ParamSpace(models[0])
    order = [0, 2, 1]
    for row, m in zip(pop.as_points(), (models[i] for i in order), strict=True):
        assert torch.equal(row, space.flatten(m))
    assert pop.labels[0] == {"variant": "A", "seed": 0, "epoch": 1}
    assert pop.labels[1]["epoch"] == 3 and pop.labels[1]["step"] == 30
    assert pop.labels[2] == {"variant": "B", "seed": 1, "epoch": 2, "lr": 0.1}
    assert len(pop) == 3 and pop.dim == space.dim
    # deterministic: a second load gives the same order and values
    again = Population.from_checkpoints(d, "mlp", KW)
    assert again.paths == pop.paths and torch.equal(again.as_points(), pop.as_points())
    # model(i) holds the i-th weights
    assert torch.equal(space.flatten(pop.model(2)), pop.vector(2))


def test_from_glob_and_list(ckpt_dir):
    d, models = ckpt_dir
    pop = Population.from_checkpoints(str(d / "*.safetensors"), "mlp", KW)
    assert len(pop) == 1 and pop.labels[0]["variant"] == "B"
    (d / "sub").mkdir()
    torch.save(models[1].state_dict(), d / "sub" / "Z_seed0_epoch000.pt")
    pop = Population.from_checkpoints(str(d / "**" / "*.pt"), "mlp", KW)
    assert [Path(p).name for p in pop.paths] == ["A_seed0_epoch001.pt", "Z_seed0_epoch000.pt"]
    listed = [d / "variantB-s1-e2.safetensors", d / "A_seed0_epoch001.pt"]
    pop = Population.from_checkpoints(listed, "lossatlas.models.mlp:mlp", KW)
    assert [Path(p).name for p in pop.paths] == [p.name for p in listed]  # list order kept


def test_mismatched_architecture_names_file_and_tensor(ckpt_dir):
    d, _ = ckpt_dir
    torch.save(tiny(5, hidden=(7,)).state_dict(), d / "wide_seed0_epoch009.pt")
    with pytest.raises(CheckpointError) as err:
        Population.from_checkpoints(d, "mlp", KW)
    msg = str(err.value)
    assert "wide_seed0_epoch009.pt" in msg and "layers.0.weight" in msg
    assert "\n" not in msg
    torch.save(tiny(5, hidden=(6, 6)).state_dict(), d / "wide_seed0_epoch009.pt")
    with pytest.raises(CheckpointError, match=r"wide_seed0_epoch009\.pt.*layers\.2"):
        Population.from_checkpoints(d, "mlp", KW)


def test_nan_weights_error_names_file(ckpt_dir):
    d, _ = ckpt_dir
    state = tiny(7).state_dict()
    state["layers.1.bias"][0] = float("nan")
    torch.save(state, d / "diverged.pt")
    with pytest.raises(CheckpointError) as err:
        Population.from_checkpoints(d, "mlp", KW)
    assert "diverged.pt" in str(err.value) and "layers.1.bias" in str(err.value)
    pop = Population.from_checkpoints(d, "mlp", KW, nonfinite="skip")
    assert len(pop) == 3 and all("diverged" not in p for p in pop.paths)


def test_empty_sources_and_bad_factory(tmp_path, ckpt_dir):
    d, _ = ckpt_dir
    pattern = str(tmp_path / "nothing_here_*.pt")
    with pytest.raises(FileNotFoundError, match="nothing_here_"):
        Population.from_checkpoints(pattern, "mlp", KW)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        Population.from_checkpoints(empty, "mlp", KW)
    with pytest.raises(ValueError, match="no_such_module_xyz:make"):
        Population.from_checkpoints(d, "no_such_module_xyz:make")
    with pytest.raises(ValueError, match="lossatlas.models.mlp:nope"):
        Population.from_checkpoints(d, "lossatlas.models.mlp:nope")
    with pytest.raises(KeyError, match="mlpp"):
        Population.from_checkpoints(d, "mlpp")


def _labelled_population() -> Population:
    models, labels = [], []
    for variant in ("A", "B"):
        for seed in (0, 1):
            for epoch in (4, 0, 2):  # stored out of order on purpose
                models.append(tiny(len(models)))
                labels.append({"variant": variant, "seed": seed, "epoch": epoch,
                               "step": epoch * 10})
    return Population.from_models(models, labels)


def test_labels_select_final_trajectories():
    pop = _labelled_population()
    assert len(pop) == 12 and pop.variants == ["A", "B"]
    table = pop.label_table()
    assert list(table)[:4] == ["variant", "seed", "epoch", "step"]
    assert table["epoch"][:3] == [4, 0, 2]
    sub = pop.select(variant="B", epoch=[0, 4])
    assert len(sub) == 4 and set(sub.label_table()["epoch"]) == {0, 4}
    assert torch.equal(sub.as_points()[0], pop.as_points()[6])
    assert len(pop.select(epoch=lambda e: e >= 2)) == 8
    with pytest.raises(ValueError, match="no model matches"):
        pop.select(variant="Z")
    traj = pop.trajectories()
    assert list(traj) == ["A/seed0", "A/seed1", "B/seed0", "B/seed1"]
    assert [pop.labels[i]["epoch"] for i in traj["A/seed1"]] == [0, 2, 4]
    final = pop.final()
    assert len(final) == 4 and all(lab["epoch"] == 4 for lab in final.labels)
    m = pop.model(5)
    assert torch.equal(ParamSpace(m).flatten(m), pop.vector(5))


def test_safetensors_round_trip(tmp_path, ckpt_dir):
    d, _ = ckpt_dir
    pop = Population.from_checkpoints(d, "mlp", KW)
    path = pop.to_safetensors(tmp_path / "out" / "pop.safetensors")
    assert not any(p.name.endswith(".tmp") for p in path.parent.iterdir())
    back = Population.from_safetensors(path)  # factory from the stored spec
    assert torch.equal(back.as_points(), pop.as_points())
    assert back.labels == pop.labels and back.paths == pop.paths
    assert torch.equal(ParamSpace(back.model(1)).flatten(back.model(1)), pop.vector(1))
    with pytest.raises(CheckpointError, match=r"pop\.safetensors.*layers\.0\.weight"):
        Population.from_safetensors(path, "mlp", {**KW, "hidden": (5,)})
    with pytest.raises(CheckpointError, match="not a population file"):
        Population.from_safetensors(d / "variantB-s1-e2.safetensors", "mlp", KW)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-20])
    for mmap in (False, True):
        with pytest.raises(CheckpointError, match=r"cut\.safetensors could not be read"):
            Population.from_safetensors(tmp_path / "cut.safetensors", "mlp", KW, mmap=mmap)


def test_constructor_checks_and_natural_key():
    space = ParamSpace(tiny(0))
    with pytest.raises(ValueError, match=r"Tensor\[N, "):
        Population(space, torch.zeros(2, space.dim + 1), [{}, {}])
    with pytest.raises(ValueError, match="label dicts"):
        Population(space, torch.zeros(2, space.dim), [{}])
    with pytest.raises(ValueError, match="no model factory"):
        Population(space, torch.zeros(1, space.dim), [{}]).model(0)
    assert sorted(["e10", "e9", "e100"], key=natural_key) == ["e9", "e10", "e100"]


def test_streamed_into_a_mapped_population_file(tmp_path, ckpt_dir):
    """from_checkpoints(out=) writes one checkpoint at a time; the mapped population
    reads the same vectors, labels and models as the in-memory one."""
    d, _ = ckpt_dir
    state = tiny(7).state_dict()
    state["layers.1.bias"][0] = float("inf")
    torch.save(state, d / "diverged.pt")
    mem = Population.from_checkpoints(d, "mlp", KW, nonfinite="skip")
    mapped = Population.from_checkpoints(d, "mlp", KW, nonfinite="skip",
                                         out=tmp_path / "pop.safetensors")
    assert mapped.is_mapped and not mem.is_mapped and len(mapped) == 3
    assert torch.equal(mapped.as_points(), mem.as_points())
    assert mapped.labels == mem.labels and mapped.paths == mem.paths
    assert torch.equal(mapped.vector(2), mem.vector(2))
    m = mapped.model(1)
    assert torch.equal(ParamSpace(m).flatten(m), mem.vector(1))
    sub = mapped.subset([2, 0])
    assert sub.is_mapped and torch.equal(sub.as_points(), mem.as_points()[[2, 0]])
    back = Population.from_safetensors(tmp_path / "pop.safetensors", mmap=True)
    assert back.is_mapped and torch.equal(back.as_points(), mem.as_points())
    assert back.labels == mem.labels
    copy = sub.to_safetensors(tmp_path / "sub.safetensors")
    assert torch.equal(Population.from_safetensors(copy).as_points(), mem.as_points()[[2, 0]])
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_failed_stream_leaves_no_file(tmp_path, ckpt_dir):
    d, _ = ckpt_dir
    torch.save(tiny(0, hidden=(5,)).state_dict(), d / "zz_other.pt")
    with pytest.raises(CheckpointError, match="zz_other.pt"):
        Population.from_checkpoints(d, "mlp", KW, out=tmp_path / "out" / "pop.safetensors")
    assert list((tmp_path / "out").iterdir()) == []


def test_stream_reused_only_for_the_same_checkpoints_and_options(tmp_path, ckpt_dir):
    d, _ = ckpt_dir
    out = tmp_path / "streamed" / "pop.safetensors"  # outside the checkpoint directory
    Population.from_checkpoints(d, "mlp", KW, out=out)
    stamp = out.stat().st_mtime_ns
    (d / "variantB-s1-e2.json").write_text(json.dumps({"variant": "B2", "seed": 1}))
    again = Population.from_checkpoints(d, "mlp", KW, out=out)
    assert out.stat().st_mtime_ns == stamp  # reused ...
    assert "B2" in again.variants  # ... with the labels read afresh
    state = tiny(7).state_dict()
    state["layers.1.bias"][0] = float("nan")
    torch.save(state, d / "zz_diverged.pt")
    skipped = Population.from_checkpoints(d, "mlp", KW, nonfinite="skip", out=out)
    assert len(skipped) == 3 and out.stat().st_mtime_ns != stamp  # new source: rewritten
    with pytest.raises(CheckpointError, match="zz_diverged.pt"):  # other option: not reused
        Population.from_checkpoints(d, "mlp", KW, out=out)


# ------------------------------------------------------- a run directory never runs code
def _tiny_run(out: Path, model="mlp") -> Path:
    """A two-epoch run of one variant on 120 blobs (3 checkpoints)."""
    from lossatlas.train import train_population

    train_population(model, "blobs", out_dir=out, data_kwargs={"num_samples": 120},
                     variants=[{"name": "A", "lr": 0.05, "epochs": 2}],
                     model_kwargs={"hidden": (5,)}, device="cpu")
    return out


def _poison(run: Path, marker: Path, key: str = "model") -> Path:
    """Make ``run/train.json`` name ``os:system`` as its ``key`` factory, with a command
    that creates ``marker``."""
    manifest = run / "train.json"
    info = json.loads(manifest.read_text())
    info[key] = "os:system"
    info[f"{key}_kwargs"] = {"command": f"touch '{marker}'"}
    manifest.write_text(json.dumps(info))
    return manifest


def test_a_run_naming_a_spec_is_refused_unless_trusted(tmp_path):
    from lossatlas.population import UntrustedRunError, load_population

    run = _tiny_run(tmp_path / "run")
    marker = tmp_path / "marker"
    manifest = _poison(run, marker)
    for load in (lambda: Population.from_run(run), lambda: load_population(run),
                 lambda: load_population(str(run), model_kwargs={"hidden": (5,)})):
        with pytest.raises(UntrustedRunError) as info:
            load()
        text = str(info.value)
        assert "\n" not in text
        for needle in (str(manifest), "'os:system'", "--model os:system", "--trust-run",
                       "trust_run=True"):
            assert needle in text, text
        assert not marker.exists()
    # a model the caller names wins: the run's is never called
    pop = load_population(run, "mlp", {"in_features": 2, "hidden": (5,), "num_classes": 3})
    assert len(pop) == 3 and not marker.exists()
    # the marker works: trusted, the run's factory does run (and returns no nn.Module)
    with pytest.raises(TypeError, match="os:system"):
        load_population(run, trust_run=True)
    assert marker.exists()


def test_a_run_naming_a_registered_model_loads_without_a_flag(tmp_path):
    from lossatlas.population import is_train_run, load_population

    run = _tiny_run(tmp_path / "run")
    pop = load_population(run)
    assert is_train_run(run) and not is_train_run(run / "checkpoints")
    assert len(pop) == 3 and pop.factory_spec == "mlp"
    assert pop.factory_kwargs["hidden"] == [5]
    # the same factory named again gets the run's arguments (updated by the caller's)
    again = load_population(run, "mlp")
    assert torch.equal(again.as_points(), pop.as_points())
    with pytest.raises(CheckpointError, match="layers"):
        load_population(run, "mlp", {"hidden": (7,)})
    # a checkpoint folder is not a run, and needs a model
    with pytest.raises(ValueError, match="not a training run"):
        load_population(run / "checkpoints")
    assert len(load_population(run / "checkpoints", "mlp", pop.factory_kwargs)) == 3


_PROBE = '''
from lossatlas.models import create

CALLS = []


def net(in_features=40, hidden=(8,), num_classes=10):
    CALLS.append({"in_features": in_features, "hidden": hidden, "num_classes": num_classes})
    return create("mlp", in_features=in_features, hidden=hidden, num_classes=num_classes)
'''


def test_a_run_naming_an_importable_factory_needs_trust_or_its_name(tmp_path, monkeypatch):
    import sys

    from lossatlas.population import UntrustedRunError, load_population

    (tmp_path / "lossatlas_trust_probe.py").write_text(_PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lossatlas_trust_probe", raising=False)
    spec = "lossatlas_trust_probe:net"
    run = _tiny_run(tmp_path / "run", model=spec)
    assert json.loads((run / "train.json").read_text())["model"] == spec
    monkeypatch.delitem(sys.modules, "lossatlas_trust_probe")  # as in a fresh process
    with pytest.raises(UntrustedRunError, match=f"--model {spec}"):
        load_population(run)
    assert "lossatlas_trust_probe" not in sys.modules  # not even imported
    trusted = load_population(run, trust_run=True)
    probe = sys.modules["lossatlas_trust_probe"]
    assert len(trusted) == 3 and probe.CALLS and probe.CALLS[-1]["hidden"] == [5]
    named = Population.from_run(run, factory=spec)  # the caller names the same factory
    assert torch.equal(named.as_points(), trusted.as_points())


def test_check_run_factory_allows_only_names_and_lossatlas_own_specs(tmp_path):
    from lossatlas.population import UntrustedRunError, check_run_factory

    where = tmp_path / "train.json"
    check_run_factory("resnet20", where)  # a registered name: looked up, never imported
    check_run_factory("modular", where, "data")
    check_run_factory("lossatlas.dynamics.grokking:modular_mlp", where)  # run_grokking's
    check_run_factory("mine:net", where, trust_run=True)
    for spec, kind in (("lossatlas.dynamics.grokking:os.system", "model"),
                       ("lossatlas.store:atomic_write_json", "model"),
                       ("evil.py:make", "data")):
        with pytest.raises(UntrustedRunError, match=f"{kind} factory '{spec}'"):
            check_run_factory(spec, where, kind)
    with pytest.raises(ValueError, match="train.json names the model factory"):
        check_run_factory({"module": "os"}, where)
