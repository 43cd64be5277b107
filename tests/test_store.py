"""Stored results are reused only when computed from the same inputs; one run, one population."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from lossatlas.checkpoints import save_state_dict
from lossatlas.cli import app
from lossatlas.models import create

runner = CliRunner()
MODEL = ["--model", "mlp", "--model-arg", "hidden=[16]", "--data", "blobs",
         "--data-arg", "num_features=40", "--data-arg", "num_classes=10"]


@pytest.fixture()
def ckpts(tmp_path):
    d = tmp_path / "ckpts"
    d.mkdir()
    paths = []
    for seed in range(4):
        torch.manual_seed(seed)
        m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
        p = d / f"V{seed % 2}_seed{seed}.pt"
        save_state_dict(m.state_dict(), p)
        paths.append(p)
    return paths


def _ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fails(result, *needles) -> str:
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error:"), line
    for n in needles:
        assert n in line, line
    return line


def _interp(a, b, out, *extra):
    return runner.invoke(app, ["surface", "interp", str(a), str(b), *MODEL, "--steps", "5",
                               "--out", str(out), "--json", *extra])


def test_interp_of_other_checkpoints_is_not_the_stored_field(ckpts, tmp_path):
    """surface interp A B, then F G into the same --out, used to return A-B's field."""
    out = tmp_path / "s"
    first = _ok(_interp(ckpts[0], ckpts[1], out))
    _fails(_interp(ckpts[2], ckpts[3], out), "'interp'", "different points", "--overwrite")
    again = _ok(_interp(ckpts[2], ckpts[3], out, "--overwrite"))
    fresh = _ok(_interp(ckpts[2], ckpts[3], tmp_path / "fresh"))
    assert again["min_loss"] == fresh["min_loss"] != first["min_loss"]
    # the same request is still reused, bitwise
    assert _ok(_interp(ckpts[2], ckpts[3], out))["min_loss"] == again["min_loss"]


def test_random_slice_at_another_resolution_is_not_the_stored_field(ckpts, tmp_path):
    """surface random --resolution 3, then --resolution 5, used to return the 3x3 field."""
    def random(res, *extra):
        return runner.invoke(app, ["surface", "random", str(ckpts[0]), *MODEL, "--resolution",
                                   str(res), "--out", str(tmp_path), "--json", *extra])

    assert _ok(random(3))["shape"] == "3x3"
    _fails(random(5), "a different grid (3x3, now 5x5)", "--overwrite")
    assert _ok(random(5, "--overwrite"))["shape"] == "5x5"


@pytest.mark.parametrize("change", [["--samples", "100"], ["--split", "test"]])
def test_a_slice_on_other_data_is_not_the_stored_field(ckpts, tmp_path, change):
    _ok(_interp(ckpts[0], ckpts[1], tmp_path, "--samples", "200"))
    line = _fails(_interp(ckpts[0], ckpts[1], tmp_path, *(change if "--samples" in change
                                                         else ["--samples", "200", *change])))
    assert ("sample count (200, now 100)" if "--samples" in change else "the data") in line


def test_bn_policy_is_part_of_the_fingerprint(tmp_path):
    from lossatlas import Evaluator
    from lossatlas.fields import compute_field
    from lossatlas.store import Run, StaleResultError
    from lossatlas.surfaces import interpolation

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8),
                              torch.nn.Linear(8, 3))
    xy = (torch.randn(64, 5), torch.randint(0, 3, (64,)))
    run = Run(tmp_path)
    own = Evaluator(net, xy, bn="own")
    compute_field(own, interpolation(net, net, points=3, space=own.space).source, run, "f")
    rec = Evaluator(net, xy, bn="recompute")
    src = interpolation(net, net, points=3, space=rec.space).source
    with pytest.raises(StaleResultError, match="BatchNorm policy"):
        compute_field(rec, src, run, "f")


def test_data_fingerprint_covers_input_trees():
    from lossatlas.batches import TensorData
    from lossatlas.fingerprint import _data_digest

    x = {"ids": torch.arange(12).reshape(4, 3), "mask": torch.ones(4, 3)}
    y = torch.zeros(4, dtype=torch.long)
    base = _data_digest(TensorData(x, y))
    assert _data_digest(TensorData({k: v.clone() for k, v in x.items()}, y.clone())) == base
    x2 = {**x, "mask": x["mask"].clone()}
    x2["mask"][0, 0] = 0
    assert _data_digest(TensorData(x2, y)) != base
    assert _data_digest(TensorData(x, y + 1)) != base


ATLAS = [*MODEL, "--method", "pca", "--resolution", "6", "--budget", "60", "--json"]


def _atlas(pop, out, *extra):
    return runner.invoke(app, ["atlas", "--population", str(pop), *ATLAS, "--out", str(out),
                               *extra])


@pytest.mark.parametrize("change", [["--samples", "100"], ["--split", "test"]])
def test_atlas_on_other_data_does_not_reuse_the_old_fields(ckpts, tmp_path, change):
    """atlas re-run with another --samples or --split used to reuse the loss fields
    computed on the old data."""
    base = ["--samples", "200"]
    first = _ok(_atlas(ckpts[0].parent, tmp_path, *base))
    now = change if "--samples" in change else [*base, *change]
    line = _fails(_atlas(ckpts[0].parent, tmp_path, *now), "--overwrite")
    assert ("sample count (200, now 100)" if "--samples" in change else "the data") in line
    redone = _ok(_atlas(ckpts[0].parent, tmp_path, *now, "--overwrite"))
    fresh = _ok(_atlas(ckpts[0].parent, tmp_path / "fresh", *now))
    assert redone["field_error_decades_median"] == fresh["field_error_decades_median"]
    assert redone["reconstruction_mse"] == first["reconstruction_mse"]  # same population


def test_atlas_of_another_population_is_refused(ckpts, tmp_path):
    _ok(_atlas(ckpts[0].parent, tmp_path))
    three = tmp_path / "three"
    three.mkdir()
    for p in ckpts[:3]:
        (three / p.name).write_bytes(p.read_bytes())
    _fails(_atlas(three, tmp_path), "holds results of another population",
           "models 4", "now models 3", "--overwrite")
    (tmp_path / "terrain.json").write_text("{}")  # an earlier population's result
    _ok(_atlas(three, tmp_path, "--overwrite"))
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["population"]["models"] == 3
    assert not (tmp_path / "terrain.json").exists()  # the run was started afresh


def _rewrite_in_place(path, seed):
    """Other weights in ``path``, its size and modification time kept."""
    st = path.stat()
    torch.manual_seed(seed)
    m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
    (path.parent.parent / "tmp").mkdir(exist_ok=True)
    tmp = path.parent.parent / "tmp" / path.name  # torch.save records the file's name
    save_state_dict(m.state_dict(), tmp)
    assert tmp.stat().st_size == st.st_size
    path.write_bytes(tmp.read_bytes())
    tmp.unlink()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_population_file_notices_a_checkpoint_changed_in_place(ckpts, tmp_path):
    from lossatlas import Population
    from lossatlas.checkpoints import load_state_dict

    kw = {"in_features": 40, "hidden": (16,), "num_classes": 10}
    out = tmp_path / "pop.safetensors"
    Population.from_checkpoints(ckpts[0].parent, "mlp", kw, out=out)
    _rewrite_in_place(ckpts[1], 99)
    pop = Population.from_checkpoints(ckpts[0].parent, "mlp", kw, out=out)
    i = pop.paths.index(str(ckpts[1]))
    want = pop.space.flatten(load_state_dict(ckpts[1]), source="test")
    torch.testing.assert_close(pop.vector(i), want, rtol=0, atol=0)


def test_atlas_under_a_memory_budget_notices_a_checkpoint_changed_in_place(ckpts, tmp_path):
    out = tmp_path / "run"
    budget = ["--memory-budget", "64MB"]
    _ok(_atlas(ckpts[0].parent, out, *budget))
    _rewrite_in_place(ckpts[1], 99)
    _fails(_atlas(ckpts[0].parent, out, *budget), "another population", "--overwrite")
    redone = _ok(_atlas(ckpts[0].parent, out, *budget, "--overwrite"))
    fresh = _ok(_atlas(ckpts[0].parent, tmp_path / "fresh", *budget))
    assert redone["reconstruction_mse"] == fresh["reconstruction_mse"]


def test_hessian_then_llc_into_one_run_keep_both(ckpts, tmp_path):
    """hessian --population then llc --population into one --out used to leave terrain.json
    with only the LLC (eigenvalues lost)."""
    from lossatlas.report.rundir import RunView

    def folder(name, paths):
        d = tmp_path / name
        d.mkdir()
        for p in paths:
            (d / p.name).write_bytes(p.read_bytes())
        return str(d)

    pop, other = folder("two", ckpts[:2]), folder("other", ckpts[2:])
    common = [*MODEL, "--samples", "100", "--out", str(tmp_path / "run"), "--json"]
    llc = ["llc", "--chains", "1", "--draws", "5", *common]
    _ok(runner.invoke(app, ["hessian", "--population", pop, "--top", "2", *common]))
    _ok(runner.invoke(app, [*llc, "--population", pop]))
    table = json.loads((tmp_path / "run" / "terrain.json").read_text())
    assert len(table["eigenvalues"]) == 2 and len(table["eigenvalues"][0]) == 2
    assert len(table["llc_mean"]) == 2
    ds = RunView(tmp_path / "run").field("terrain")
    assert {"eigenvalues", "top_eigenvalue", "llc_mean"} <= set(ds.data_vars)
    assert ds.attrs["k"] == 2  # the setting the eigenvalues were computed with
    # hessian again at another rank replaces the eigenvalues, keeps the LLC
    _ok(runner.invoke(app, ["hessian", "--population", pop, "--top", "3", *common]))
    table = json.loads((tmp_path / "run" / "terrain.json").read_text())
    assert len(table["eigenvalues"][0]) == 3 and len(table["llc_mean"]) == 2
    # another population into the same run is refused, or starts afresh with --overwrite
    _fails(runner.invoke(app, [*llc, "--population", other]), "another population",
           "--overwrite")
    _ok(runner.invoke(app, [*llc, "--population", other, "--overwrite"]))
    assert "eigenvalues" not in json.loads((tmp_path / "run" / "terrain.json").read_text())


def test_the_report_shows_what_align_writes(ckpts, tmp_path):
    """align --out RUN wrote align.json while the report read symmetry.json: the Symmetry
    section was always absent."""
    from lossatlas.report import write_report

    _ok(_interp(ckpts[0], ckpts[1], tmp_path))
    out = _ok(runner.invoke(app, ["align", str(ckpts[0]), str(ckpts[1]), *MODEL, "--samples",
                                  "100", "--steps", "3", "--out", str(tmp_path), "--json"]))
    write_report(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "symmetry" in summary["sections"]
    assert summary["symmetry"]["distance_aligned"] == pytest.approx(out["distance_aligned"])


def test_a_second_writer_into_a_run_in_use_fails_clearly(ckpts, tmp_path):
    """Concurrent writers into one --out were last-writer-wins; now the second stops with a
    one-line error naming the holder, and a SIGKILLed holder leaves no lock behind."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lossatlas.store import Run\n"
         f"with Run({str(tmp_path)!r}).locked():\n    print('held', flush=True)\n"
         "    time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _fails(_interp(ckpts[0], ckpts[1], tmp_path), f"run directory {tmp_path} is in use",
               f"(pid {holder.pid})")
        assert not (tmp_path / "fields" / "interp.zarr").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    _ok(_interp(ckpts[0], ckpts[1], tmp_path))
    # the same process may open the run as often as it likes
    from lossatlas.store import Run, release_locks

    Run(tmp_path).update("a", 1)
    Run(tmp_path).update("b", 2)
    release_locks()


def test_connect_of_another_population_into_an_atlas_run_is_refused(ckpts, tmp_path):
    """A 3-model atlas beside a barrier matrix of another population: refused."""
    def folder(name, paths):
        d = tmp_path / name
        d.mkdir()
        for p in paths:
            (d / p.name).write_bytes(p.read_bytes())
        return str(d)

    run = tmp_path / "run"
    _ok(_atlas(ckpts[0].parent, run, "--samples", "100"))
    other = folder("other", ckpts[:3])
    connect = ["connect", *MODEL, "--samples", "100", "--out", str(run), "--json"]
    _fails(runner.invoke(app, [*connect, "--population", other]), "another population")
    assert not (run / "connectivity.json").exists()
    _ok(runner.invoke(app, [*connect, "--population", str(ckpts[0].parent)]))  # the same one
    assert (run / "connectivity.json").exists() and (run / "topology.json").exists()


def test_a_field_without_a_record_of_its_data_is_not_reused(tmp_path):
    """A field stored before fingerprints (no "evaluator" in its meta.json) is refused; one
    begun from Python without an evaluator adopts the first one that resumes it."""
    from lossatlas import Evaluator
    from lossatlas.fields import compute_field
    from lossatlas.store import Run, StaleResultError
    from lossatlas.surfaces import interpolation

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    ev = Evaluator(net, (torch.randn(32, 5), torch.randint(0, 3, (32,))))
    src = interpolation(net, torch.nn.Sequential(*[torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                                   torch.nn.Linear(8, 3)]),
                        points=4, space=ev.space).source
    run = Run(tmp_path)
    compute_field(ev, src, run, "old")
    meta_file = run.field_path("old").with_suffix(".progress") / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["evaluator"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StaleResultError, match="older lossatlas"):
        compute_field(ev, src, run, "old")
    run.begin_field("new", src, ["loss", "accuracy"], 2)
    compute_field(ev, src, run, "new", chunk_points=2)
    assert run.field_fingerprint("new")["evaluator"]["samples"] == 32
