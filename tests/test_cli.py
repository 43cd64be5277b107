"""The command line: summaries, --json, and one-line errors naming the culprit."""

import json

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from lossatlas.checkpoints import save_state_dict
from lossatlas.cli import app
from lossatlas.models import create

runner = CliRunner()
MODEL = ["--model", "mlp", "--model-arg", "hidden=[16]", "--data", "blobs",
         "--data-arg", "num_features=40", "--data-arg", "num_classes=10"]


@pytest.fixture()
def checkpoints(tmp_path):
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
        p = tmp_path / f"m{seed}.pt"
        save_state_dict(m.state_dict(), p)
        paths.append(p)
    return paths


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_surface_interp_json(checkpoints, tmp_path):
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(checkpoints[1]),
                              *MODEL, "--steps", "7", "--out", str(tmp_path / "run"), "--json"])
    out = _json(res)
    assert out["points"] == 7 and out["nonfinite"] == 0
    assert (tmp_path / "run" / "interp.png").exists()


def test_surface_random_and_plane(checkpoints, tmp_path):
    out = _json(runner.invoke(app, ["surface", "random", str(checkpoints[0]), *MODEL,
                                    "--resolution", "5", "--out", str(tmp_path), "--json"]))
    assert out["shape"] == "5x5"
    out = _json(runner.invoke(app, ["surface", "plane", *map(str, checkpoints), *MODEL,
                                    "--resolution", "4", "--out", str(tmp_path), "--json"]))
    assert out["points"] == 16


def test_summary_table_without_json(checkpoints, tmp_path):
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(checkpoints[1]),
                              *MODEL, "--steps", "4", "--out", str(tmp_path)])
    assert res.exit_code == 0 and "surface interp" in res.output and "points" in res.output


def _error(result, *needles):
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in result.output, result.output


def test_corrupt_checkpoint(checkpoints, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(bad), *MODEL,
                              "--out", str(tmp_path / "r")])
    _error(res, "bad.pt")


def test_wrong_architecture(checkpoints, tmp_path):
    m = create("mlp", in_features=40, hidden=(8,), num_classes=10)
    wrong = tmp_path / "wrong.pt"
    save_state_dict(m.state_dict(), wrong)
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(wrong), *MODEL,
                              "--out", str(tmp_path / "r")])
    _error(res, "wrong.pt", "layers.0.weight")


def test_nan_weights(tmp_path):
    for i in range(3):
        m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
        sd = m.state_dict()
        if i == 1:
            sd["layers.0.weight"][0, 0] = float("nan")
        save_state_dict(sd, tmp_path / f"c{i}.pt")
    res = runner.invoke(app, ["surface", "pca", str(tmp_path), *MODEL, "--out",
                              str(tmp_path / "r")])
    _error(res, "c1.pt")


def test_missing_factory(checkpoints, tmp_path):
    res = runner.invoke(app, ["surface", "random", str(checkpoints[0]), "--model",
                              "no_such_pkg.models:make", "--data", "blobs",
                              "--out", str(tmp_path)])
    _error(res, "no_such_pkg.models:make")


def test_bad_option_values(checkpoints, tmp_path):
    res = runner.invoke(app, ["surface", "random", str(checkpoints[0]), *MODEL,
                              "--precision", "fp8", "--out", str(tmp_path)])
    _error(res, "precision")
    res = runner.invoke(app, ["surface", "random", str(checkpoints[0]), *MODEL,
                              "--split", "valid", "--out", str(tmp_path)])
    _error(res, "--split")


def test_list_models():
    res = runner.invoke(app, ["list", "models"])
    assert res.exit_code == 0 and "resnet20" in res.output


def test_connect_linear_and_align(checkpoints, tmp_path):
    out = _json(runner.invoke(app, ["connect", str(checkpoints[0]), str(checkpoints[1]), *MODEL,
                                    "--curve", "linear", "--points", "9",
                                    "--out", str(tmp_path), "--json"]))
    # the printed barrier is the one of the stored curve (independently recomputed)
    line = xr.open_zarr(tmp_path / "fields" / "line.zarr", consolidated=False)
    t, v = line["t"].values, line["loss"].values
    assert out["line_barrier"] == pytest.approx(
        float(np.max(v - ((1 - t) * v[0] + t * v[-1]))), rel=1e-6, abs=1e-9)
    out = _json(runner.invoke(app, ["align", str(checkpoints[0]), str(checkpoints[1]), *MODEL,
                                    "--steps", "5", "--repair", "--out", str(tmp_path), "--json"]))
    assert out["distance_aligned"] <= out["distance_none"] + 1e-6
    # the printed midpoint losses, recomputed: the aligned B read back, the midpoint of
    # the two state dicts (and its REPAIRed version), cross-entropy on the same data
    from lossatlas.checkpoints import load_state_dict
    from lossatlas.data import create as create_data
    from lossatlas.symmetry import repair

    splits = create_data("blobs", num_features=40, num_classes=10)
    x, y = splits.x_train, splits.y_train
    a, b = create("mlp", in_features=40, hidden=(16,), num_classes=10), create(
        "mlp", in_features=40, hidden=(16,), num_classes=10)
    a.load_state_dict(load_state_dict(checkpoints[0]))
    b.load_state_dict(load_state_dict(tmp_path / "m1_aligned.safetensors"))
    mid = create("mlp", in_features=40, hidden=(16,), num_classes=10)
    mid.load_state_dict({k: (v + b.state_dict()[k]) / 2 for k, v in a.state_dict().items()})
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(mid(x), y).item()
        fixed = torch.nn.functional.cross_entropy(repair(a, b, 0.5, (x, y))(x), y).item()
    assert out["midpoint_loss_aligned"] == pytest.approx(plain, rel=1e-5)
    assert out["midpoint_loss_repaired"] == pytest.approx(fixed, rel=1e-5)


def test_hessian_and_llc(checkpoints, tmp_path):
    out = _json(runner.invoke(app, ["hessian", str(checkpoints[0]), *MODEL, "--top", "2",
                                    "--trace", "--samples", "200", "--out", str(tmp_path),
                                    "--json"]))
    assert len(out["eigenvalues"]) == 2 and out["eigenvalues"][0] >= out["eigenvalues"][1]
    out = _json(runner.invoke(app, ["llc", str(checkpoints[0]), *MODEL, "--chains", "2",
                                    "--draws", "20", "--samples", "200", "--out",
                                    str(tmp_path), "--json"]))
    # the printed estimate is the estimator's (seeded) on the same model and data, with
    # the CLI's settings; d/2 for this 826-parameter MLP is the printed reference
    from lossatlas.checkpoints import load_state_dict
    from lossatlas.curvature import llc
    from lossatlas.data import create as create_data

    m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
    m.load_state_dict(load_state_dict(checkpoints[0]))
    splits = create_data("blobs", num_features=40, num_classes=10)
    ref = llc(m, (splits.x_train[:200], splits.y_train[:200]), num_chains=2, num_draws=20,
              epsilon=1e-3, gamma=100.0, batch_size=32, device="cpu")
    assert out["llc_mean"] == pytest.approx(float(ref.llc_mean), rel=1e-4, abs=1e-6)
    assert out["parameters"] == 826 and out["regular_model_llc (d/2)"] == 413
    res = runner.invoke(app, ["hessian", *MODEL, "--out", str(tmp_path)])
    _error(res, "checkpoint")


def test_train_dynamics_and_branches(tmp_path):
    run = tmp_path / "pop"
    out = _json(runner.invoke(app, ["train", "--out", str(run), "--model", "mlp", "--model-arg",
                                    "hidden=[16]", "--data", "blobs", "--data-arg",
                                    "num_features=8", "--epochs", "4", "--every", "1",
                                    "--lr", "0.05,0.2", "--json"]))
    assert out["checkpoints"] == 10 and out["variants"] == 2
    out = _json(runner.invoke(app, ["dynamics", str(run), "--no-defect", "--json"]))
    assert out["runs"] == 2 and (run / "dynamics.json").exists()
    out = _json(runner.invoke(app, ["branches", str(run), "--data", "blobs", "--data-arg",
                                    "num_features=8", "--json"]))
    stored = json.loads((run / "branches.json").read_text())
    # two models: one or two branches, and the printed count is the stored one
    assert out["models"] == 2 and 1 <= out["branches"] <= 2
    assert out["branches"] == sum(stored["num_branches"].values())
    # the final checkpoints alone, in a plain folder, read as checkpoints of --model
    import shutil

    folder = tmp_path / "finals"
    folder.mkdir()
    finals = sorted((run / "checkpoints").glob("*_epoch004.safetensors"))
    assert len(finals) == 2
    for p in finals:  # the checkpoint and its sidecar (the variant's labels)
        for f in (p, p.with_suffix(".json")):
            if f.exists():
                shutil.copy(f, folder / f.name)
    again = _json(runner.invoke(app, ["branches", str(folder), "--model", "mlp", "--model-arg",
                                      "hidden=[16]", "--model-arg", "in_features=8",
                                      "--model-arg", "num_classes=3", "--data", "blobs",
                                      "--data-arg", "num_features=8", "--json"]))
    assert again["models"] == len(finals) and again["branches"] == out["branches"]
    _error(runner.invoke(app, ["dynamics", str(tmp_path / "missing")]), "missing")


def test_study_and_ot_align(checkpoints, tmp_path):
    out = _json(runner.invoke(app, ["study", "double-descent", "--widths", "2,4", "--steps",
                                    "50", "--out", str(tmp_path / "dd"), "--json"]))
    stored = json.loads((tmp_path / "dd" / "double_descent.json").read_text())
    assert [r["width"] for r in out["models"]] == [2, 4] == [r["width"] for r in
                                                              stored["models"]]
    assert all(r["steps"] <= 50 for r in stored["models"])  # --steps reached the sweep
    assert out["peak_test_error"] == stored["peak_test_error"]
    _error(runner.invoke(app, ["study", "nope"]), "nope")
    out = _json(runner.invoke(app, ["align", str(checkpoints[0]), str(checkpoints[1]), *MODEL,
                                    "--method", "ot", "--steps", "5", "--out", str(tmp_path),
                                    "--json"]))
    # OT alignment permutes hidden units: the distance cannot grow, the function is kept
    assert out["distance_aligned"] <= out["distance_none"] + 1e-6
    # the barrier after OT alignment, recomputed from the saved aligned model
    from lossatlas.checkpoints import load_state_dict
    from lossatlas.connectivity import barrier
    from lossatlas.data import create as create_data

    a, b = (create("mlp", in_features=40, hidden=(16,), num_classes=10) for _ in range(2))
    a.load_state_dict(load_state_dict(checkpoints[0]))
    b.load_state_dict(load_state_dict(tmp_path / "m1_aligned.safetensors"))
    splits = create_data("blobs", num_features=40, num_classes=10)
    direct = barrier(a, b, (splits.x_train, splits.y_train), points=25, device="cpu")
    assert out["loss_barrier_aligned"] == pytest.approx(direct, rel=1e-4, abs=1e-6)


def test_absurd_sizes_are_refused_before_any_work(checkpoints, tmp_path):
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(checkpoints[1]),
                              *MODEL, "--steps", str(2**40), "--out", str(tmp_path)])
    _error(res, "--points")  # --steps: the deprecated name of --points
    res = runner.invoke(app, ["surface", "interp", str(checkpoints[0]), str(checkpoints[1]),
                              *MODEL, "--extrapolate", "nan", "--out", str(tmp_path)])
    _error(res, "--extrapolate")
    res = runner.invoke(app, ["atlas", "--population", str(tmp_path), *MODEL,
                              "--resolution", "10000000", "--out", str(tmp_path / "a")])
    _error(res, "--resolution")
    res = runner.invoke(app, ["surface", "random", str(checkpoints[0]), "--model", "mlp",
                              "--model-arg", "hidden=abc", "--data", "blobs",
                              "--out", str(tmp_path)])
    _error(res, "--model-arg")


def test_atlas_with_a_memory_budget_streams_the_population(checkpoints, tmp_path):
    """--memory-budget: the checkpoints go into RUN/population.safetensors (reused on a
    re-run), the basis stays on disk, and the atlas equals the unbudgeted one."""
    for seed in range(3, 5):
        torch.manual_seed(seed)
        m = create("mlp", in_features=40, hidden=(16,), num_classes=10)
        save_state_dict(m.state_dict(), checkpoints[0].parent / f"m{seed}.pt")
    src = str(checkpoints[0].parent / "m*.pt")
    common = ["atlas", "--population", src, *MODEL, "--method", "pca", "--resolution", "6",
              "--budget", "60", "--json"]
    plain = _json(runner.invoke(app, [*common, "--out", str(tmp_path / "plain")]))
    run = tmp_path / "budget"
    lean = _json(runner.invoke(app, [*common, "--memory-budget", "64kB", "--out", str(run)]))
    stream = run / "population.safetensors"
    assert stream.exists() and (run / "embedding" / "map.components.safetensors").exists()
    for key in ("samples", "basins", "basins_with_models"):
        assert lean[key] == plain[key]
    assert lean["reconstruction_mse"] == pytest.approx(plain["reconstruction_mse"], abs=1e-9)
    stamp = stream.stat().st_mtime_ns
    _json(runner.invoke(app, [*common, "--memory-budget", "64kB", "--out", str(run)]))
    assert stream.stat().st_mtime_ns == stamp  # reused, not rewritten
    _error(runner.invoke(app, [*common, "--memory-budget", "lots", "--out", str(run)]),
           "--memory-budget")


_FLAT_CNN = '''
import torch
from torch import nn


class FlatCNN(nn.Module):
    """Flat 40-feature rows viewed as 5x8 images: its input cannot be inferred from
    its layers, so tracing it needs the data."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 5 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv(x.view(x.shape[0], 1, 5, 8)))
        return self.fc(x.flatten(1))
'''


def test_align_and_connect_align_trace_a_custom_class_on_the_data(tmp_path, monkeypatch):
    """A custom class without example_input(): `align` and `connect --align` trace it on
    the loaded data instead of asking for an example input."""
    (tmp_path / "lossatlas_cli_flatcnn.py").write_text(_FLAT_CNN)
    monkeypatch.syspath_prepend(str(tmp_path))
    from lossatlas_cli_flatcnn import FlatCNN

    ckpts = tmp_path / "ckpts"
    for seed in range(3):
        torch.manual_seed(seed)
        save_state_dict(FlatCNN().state_dict(), ckpts / f"c{seed}.pt")
    flat = ["--model", "lossatlas_cli_flatcnn:FlatCNN", "--data", "blobs", "--data-arg",
            "num_features=40", "--data-arg", "num_samples=120"]
    out = _json(runner.invoke(app, ["align", str(ckpts / "c0.pt"), str(ckpts / "c1.pt"), *flat,
                                    "--steps", "3", "--out", str(tmp_path / "al"), "--json"]))
    assert out["distance_aligned"] < out["distance_none"]
    out = _json(runner.invoke(app, ["connect", "--population", str(ckpts / "c*.pt"), *flat,
                                    "--align", "--out", str(tmp_path / "co"), "--json"]))
    assert out["models"] == 3
    after = xr.open_zarr(tmp_path / "co" / "fields" / "barriers_aligned.zarr",
                         consolidated=False)["loss_barrier"].values
    # the printed mean is over the stored matrix's entries (diagonal zeros included)
    assert out["mean_barrier_after"] == pytest.approx(float(np.mean(after)), rel=1e-6)


# ------------------------------------------------------- a run directory never runs code
BLOBS8 = ["--data", "blobs", "--data-arg", "num_features=8", "--data-arg", "num_samples=120"]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A tiny `lossatlas train` run: 2 variants x 3 checkpoints of an mlp (hidden 6)."""
    run = tmp_path_factory.mktemp("trusted") / "run"
    out = _json(runner.invoke(app, ["train", "--out", str(run), "--model", "mlp",
                                    "--model-arg", "hidden=[6]", *BLOBS8, "--epochs", "2",
                                    "--every", "1", "--lr", "0.05,0.2", "--json"]))
    assert out["checkpoints"] == 6
    return run


def _poisoned(clean_run, tmp_path, key="model"):
    """A copy of the run whose train.json names os:system (creating a marker) as its
    `key` factory; returns the run, its manifest and the marker."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    marker = tmp_path / f"marker-{key}"
    info = json.loads((run / "train.json").read_text())
    info.update({key: "os:system", f"{key}_kwargs": {"command": f"touch '{marker}'"}})
    (run / "train.json").write_text(json.dumps(info))
    return run, run / "train.json", marker


def _population_verbs(run, tmp_path):
    """Every verb that reads a train run, as argument lists."""
    return {
        "atlas": ["atlas", "--population", str(run), *BLOBS8, "--method", "pca",
                  "--resolution", "5", "--budget", "40", "--out", str(tmp_path / "atlas")],
        "connect": ["connect", "--population", str(run), *BLOBS8, "--out",
                    str(tmp_path / "connect")],
        "hessian": ["hessian", "--population", str(run), *BLOBS8, "--top", "1", "--out",
                    str(tmp_path / "hessian")],
        "llc": ["llc", "--population", str(run), *BLOBS8, "--chains", "1", "--draws", "4",
                "--out", str(tmp_path / "llc")],
        "branches": ["branches", str(run), *BLOBS8],
        "dynamics": ["dynamics", str(run), "--no-defect"],
    }


def test_a_run_naming_a_foreign_model_factory_runs_no_code(clean_run, tmp_path):
    run, manifest, marker = _poisoned(clean_run, tmp_path)
    for verb, args in _population_verbs(run, tmp_path).items():
        res = runner.invoke(app, args)
        _error(res, str(manifest), "'os:system'", "--model os:system", "--trust-run")
        assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1, (verb,
                                                                              res.output)
        assert not marker.exists(), verb
    # a built-in --model the checkpoints fit wins over the run's: the verb proceeds
    mine = ["--model", "mlp", "--model-arg", "hidden=[6]"]
    for verb, args in _population_verbs(run, tmp_path).items():
        if verb in ("atlas", "connect", "hessian", "llc"):
            out = _json(runner.invoke(app, [*args, *mine, "--json"]))
            assert out["models"] == (6 if verb == "atlas" else 2), verb
            assert not marker.exists(), verb
    # the marker works: with --trust-run the run's factory does run (and fails)
    res = runner.invoke(app, [*_population_verbs(run, tmp_path)["hessian"], "--trust-run"])
    _error(res, "os:system")
    assert marker.exists()


def test_a_run_naming_a_foreign_data_factory_runs_no_code(clean_run, tmp_path):
    run, manifest, marker = _poisoned(clean_run, tmp_path, key="data")
    for args in (["dynamics", str(run), "--no-defect"], ["branches", str(run)]):
        _error(runner.invoke(app, args), str(manifest), "data factory 'os:system'",
               "--data os:system", "--trust-run")
        assert not marker.exists()
    out = _json(runner.invoke(app, ["branches", str(run), *BLOBS8, "--json"]))  # --data wins
    assert out["models"] == 2 and not marker.exists()


def test_a_run_naming_a_builtin_model_needs_no_flag(clean_run, tmp_path):
    args = _population_verbs(clean_run, tmp_path)
    for verb in ("atlas", "llc"):
        out = _json(runner.invoke(app, [*args[verb], "--json"]))
        assert out["models"] == (6 if verb == "atlas" else 2)
    # no --model on a checkpoint folder: mlp, as before (hidden 6 does not fit its default)
    folder = ["llc", "--population", str(clean_run / "checkpoints"), *BLOBS8, "--chains", "1",
              "--draws", "4"]
    _error(runner.invoke(app, [*folder, "--out", str(tmp_path / "l2")]), "checkpoint")
    out = _json(runner.invoke(app, [*folder, "--model-arg", "hidden=[6]", "--out",
                                    str(tmp_path / "l3"), "--json"]))
    assert out["models"] == 2


def test_atlas_holdout_is_the_library_split(clean_run, tmp_path):
    """--holdout passes a fraction to pipeline.build_atlas: the map is fitted to the kept
    models, the held-out ones overlaid, the run claimed for the whole population."""
    from lossatlas.fingerprint import population_fingerprint
    from lossatlas.population import Population

    args = _population_verbs(clean_run, tmp_path)["atlas"]
    out = _json(runner.invoke(app, [*args, "--holdout", "0.34", "--json"]))
    assert out["models"] == 4 and out["holdout_models"] == 2  # round(0.34 * 6) held out
    run = json.loads((tmp_path / "atlas" / "run.json").read_text())
    assert run["population"]["fingerprint"] == population_fingerprint(Population.open(clean_run))
    _error(runner.invoke(app, [*args, "--holdout", "1.5"]), "--holdout", "(0, 1)")


def test_numbers_on_screen(checkpoints, tmp_path):
    """The tables a researcher copies: every top-k eigenvalue, the LLC with its scale, the
    barrier matrix of a population; the printed values equal the stored JSON."""
    res = runner.invoke(app, ["hessian", str(checkpoints[0]), *MODEL, "--top", "3",
                              "--samples", "200", "--out", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    stored = json.loads((tmp_path / "h" / "hessian.json").read_text())
    for v in stored["eigenvalues"]:
        assert f"{v:.4g}" in res.output
    res = runner.invoke(app, ["llc", str(checkpoints[0]), *MODEL, "--chains", "2", "--draws",
                              "10", "--samples", "200", "--json", "--out", str(tmp_path / "l")])
    out = _json(res)
    d = sum(t.numel() for t in create("mlp", in_features=40, hidden=(16,),
                                      num_classes=10).parameters())
    assert out["parameters"] == d and out["regular_model_llc (d/2)"] == d / 2
    assert out["nbeta"] == pytest.approx(32 / np.log(32)) and out["samples"] == 200
    pop = tmp_path / "pop"
    pop.mkdir()
    for i, p in enumerate(checkpoints):
        (pop / f"V{i}_seed0_epoch1.pt").write_bytes(p.read_bytes())
    res = runner.invoke(app, ["connect", "--population", str(pop), *MODEL, "--samples",
                              "200", "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    conn = json.loads((tmp_path / "c" / "connectivity.json").read_text())
    assert "barrier" in res.output
    rows = [ln for ln in res.output.splitlines() if ln.strip("│ ").startswith("V")]
    assert len(rows) == 3  # one printed row per model of the matrix
    for i, row in enumerate(rows):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[0] == f"V{i}"
        assert cells[1:] == [f"{v:.4g}" for v in conn["before"][i]]
