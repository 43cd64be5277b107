"""The CLI's newer options and verbs (issues #17, #19): each run through typer's CliRunner
on a tiny MLP, its printed / written numbers checked against the library function called
directly with the same arguments; the studies' argument plumbing through monkeypatched
library functions (their own tests train them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from typer.testing import CliRunner

from lossatlas.checkpoints import load_state_dict, save_state_dict
from lossatlas.cli import app
from lossatlas.data import create as create_data
from lossatlas.models import create

runner = CliRunner()
MODEL = ["--model", "mlp", "--model-arg", "hidden=[16]", "--data", "blobs",
         "--data-arg", "num_features=40", "--data-arg", "num_classes=10"]


def _mlp(**kw) -> torch.nn.Module:
    return create("mlp", in_features=40, hidden=(16,), num_classes=10, **kw)


def _xy(n: int | None = None):
    splits = create_data("blobs", num_features=40, num_classes=10)
    x, y = splits.x_train, splits.y_train
    return (x, y) if n is None else (x[:n], y[:n])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _stages(run) -> dict:
    return json.loads((run / "run.json").read_text())["stages"]


@pytest.fixture()
def checkpoints(tmp_path):
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        p = tmp_path / f"m{seed}.pt"
        save_state_dict(_mlp().state_dict(), p)
        paths.append(p)
    return paths


def _loaded(path, **kw) -> torch.nn.Module:
    m = _mlp(**kw)
    m.load_state_dict(load_state_dict(path))
    return m


def test_hessian_bottom_density_and_saddle_check(checkpoints, tmp_path):
    from lossatlas.curvature import hessian_density, hessian_eigen, saddle_check

    run = tmp_path / "run"
    out = _json(runner.invoke(app, ["hessian", str(checkpoints[0]), *MODEL, "--k", "1",
                                    "--bottom", "2", "--density", "--saddle-check",
                                    "--saddle-tol", "0.05", "--samples", "50", "--out",
                                    str(run), "--json"]))
    m, xy = _loaded(checkpoints[0]), _xy(50)
    low = hessian_eigen(m, xy, k=2, which="smallest", device="cpu")
    assert out["smallest_eigenvalues"] == pytest.approx(low.eigenvalues.tolist(), rel=1e-4,
                                                        abs=1e-6)
    assert out["smallest_eigenvalues"][0] <= out["smallest_eigenvalues"][1]
    # a random init is no minimum: negative curvature, in the density's mass and the verdict
    mass = hessian_density(m, xy, device="cpu").negative_mass()
    assert out["negative_mass"] == pytest.approx(mass, rel=1e-4, abs=1e-6) and mass > 0
    sc = saddle_check(m, xy, k=2, tol=0.05, device="cpu")
    assert out["saddle_verdict"] == ("saddle" if sc.is_saddle else "minimum")
    assert out["saddle_min_eigenvalues"] == pytest.approx(sc.min_eigenvalues.tolist(),
                                                          rel=1e-4, abs=1e-6)
    assert out["saddle_negative_count"] == sc.negative_count
    stored = json.loads((run / "hessian.json").read_text())
    assert stored["negative_mass"] == out["negative_mass"]
    assert _stages(run)["hessian"]["seconds"] >= 0
    # the summary table (no --json) shows the new numbers
    res = runner.invoke(app, ["hessian", str(checkpoints[0]), *MODEL, "--k", "1", "--bottom",
                              "1", "--samples", "20", "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "smallest_eigenvalues" in res.stdout
    # bad values are one line naming the option
    for bad in (["--bottom", "0"], ["--saddle-tol", "-1"]):
        res = runner.invoke(app, ["hessian", str(checkpoints[0]), *MODEL, *bad])
        assert res.exit_code == 1 and bad[0] in res.output


def test_llc_records_its_stage(checkpoints, tmp_path):
    _json(runner.invoke(app, ["llc", str(checkpoints[0]), *MODEL, "--chains", "1", "--draws",
                              "5", "--samples", "100", "--out", str(tmp_path), "--json"]))
    assert _stages(tmp_path)["llc"]["draws"] == 5


def test_surface_hessian_is_the_library_slice(checkpoints, tmp_path):
    from lossatlas.evaluate import Evaluator
    from lossatlas.store import Run
    from lossatlas.surfaces import hessian_slice
    from lossatlas.surfaces.slices import slice_field

    out = _json(runner.invoke(app, ["surface", "hessian", str(checkpoints[0]), *MODEL,
                                    "--dim", "1", "--which", "smallest", "--resolution", "5",
                                    "--span", "0.5", "--samples", "50", "--out",
                                    str(tmp_path / "cli"), "--json"]))
    m, xy = _loaded(checkpoints[0]), _xy(50)
    ev = Evaluator(m, xy, device="cpu")
    sl = hessian_slice(m, xy, dim=1, resolution=5, span=0.5, which="smallest",
                       space=ev.space, device="cpu", seed=0)
    assert out["eigenvalues"] == pytest.approx(sl.info["eigenvalues"], rel=1e-4, abs=1e-6)
    ref = slice_field(ev, sl, Run(tmp_path / "direct"), "h", progress=False)
    got = xr.open_zarr(tmp_path / "cli" / "fields" / "hessian_smallest1d.zarr",
                       consolidated=False)
    np.testing.assert_allclose(got["loss"].values, ref["loss"].values, rtol=1e-4, atol=1e-6)
    assert out["min_loss"] == pytest.approx(float(ref["loss"].min()), rel=1e-4)
    res = runner.invoke(app, ["surface", "hessian", str(checkpoints[0]), *MODEL, "--which",
                              "middle", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "--which" in res.output


def test_align_signs_recovers_a_sign_flipped_permuted_copy(tmp_path):
    from lossatlas.symmetry import (
        permutation_spec,
        permute_model,
        random_permutation,
        random_signs,
        weight_matching,
    )

    torch.manual_seed(0)
    a = _mlp(activation="tanh")
    spec = permutation_spec(a, _xy(2)[0])
    g = torch.Generator().manual_seed(1)
    b = permute_model(a, spec, random_permutation(spec, g), random_signs(spec, g))
    save_state_dict(a.state_dict(), tmp_path / "a.pt")
    save_state_dict(b.state_dict(), tmp_path / "b.pt")
    out = _json(runner.invoke(app, ["align", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                                    *MODEL, "--model-arg", "activation=tanh", "--signs",
                                    "--points", "5", "--out", str(tmp_path), "--json"]))
    assert out["distance_none"] > 1.0 and out["distance_aligned"] == pytest.approx(0, abs=1e-5)
    assert out["loss_barrier_aligned"] == pytest.approx(0, abs=1e-5)
    saved = load_state_dict(tmp_path / "b_aligned.safetensors")
    direct = weight_matching(a, b, spec=spec, signs=True).state_dict()
    for k, v in direct.items():
        torch.testing.assert_close(saved[k], v)
    res = runner.invoke(app, ["align", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), *MODEL,
                              "--signs", "--method", "activation", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--signs" in res.output


def test_connect_layer_noise_is_the_library_profile(checkpoints, tmp_path):
    from lossatlas.connectivity import layerwise_profile

    out = _json(runner.invoke(app, ["connect", str(checkpoints[0]), str(checkpoints[1]),
                                    *MODEL, "--curve", "linear", "--points", "5",
                                    "--samples", "200", "--layer-noise", "--noise-scales",
                                    "0.1,1.0", "--noise-draws", "2", "--out", str(tmp_path),
                                    "--json"]))
    a, b, xy = _loaded(checkpoints[0]), _loaded(checkpoints[1]), _xy(200)
    ref = layerwise_profile(a, b, xy, scales=(0.1, 1.0), num_draws=2, device="cpu")
    stored = xr.open_zarr(tmp_path / "fields" / "layer_noise.zarr", consolidated=False)
    np.testing.assert_allclose(stored["loss_rise"].values, ref["loss_rise"].values,
                               rtol=1e-4, atol=1e-6)
    for g in ref["group"].values:
        row = out["layers"][str(g)]
        assert row["barrier_a"] == pytest.approx(float(ref["barrier"].sel(group=g, anchor="a")),
                                                 rel=1e-4, abs=1e-6)
        tol = float(ref["tolerance"].sel(group=g, model="b"))
        assert row["tolerance_b"] == pytest.approx(tol, rel=1e-4, abs=1e-6, nan_ok=True)
    assert _stages(tmp_path)["connect"]["layer_noise"] is True
    # connect.json holds the rows too; without --json they are a printed table
    written = json.loads((tmp_path / "connect.json").read_text())["layers"]
    assert written.keys() == out["layers"].keys()
    assert [r["barrier_a"] for r in written.values()] == [r["barrier_a"]
                                                         for r in out["layers"].values()]
    res = runner.invoke(app, ["connect", str(checkpoints[0]), str(checkpoints[1]), *MODEL,
                              "--curve", "linear", "--points", "5", "--samples", "200",
                              "--layer-noise", "--noise-scales", "0.1,1.0", "--noise-draws",
                              "2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "per layer: barrier (loss) and noise tolerance" in res.output
    assert "tolerance_b" in res.output
    res = runner.invoke(app, ["connect", str(checkpoints[0]), str(checkpoints[1]), *MODEL,
                              "--layer-noise", "--noise-scales", "0.1,x", "--out",
                              str(tmp_path)])
    assert res.exit_code == 1 and "--noise-scales" in res.output


def test_atlas_check_saddles(checkpoints, tmp_path):
    for seed in range(3, 5):
        torch.manual_seed(seed)
        save_state_dict(_mlp().state_dict(), checkpoints[0].parent / f"m{seed}.pt")
    run = tmp_path / "atlas"
    # threshold 0: every local minimum of the map is a basin, so the map has saddles
    out = _json(runner.invoke(app, ["atlas", "--population", str(checkpoints[0].parent / "m*.pt"),
                                    *MODEL, "--samples", "200", "--method", "pca",
                                    "--resolution", "6", "--budget", "60", "--threshold", "0",
                                    "--check-saddles", "--saddle-k", "2", "--saddle-tol", "0.05",
                                    "--out", str(run), "--json"]))
    ds = xr.open_zarr(run / "fields" / "saddles.zarr", consolidated=False)
    assert out["saddles"] == ds.sizes["saddle"] == len(out["saddle_table"]) > 0
    assert ds.sizes["rank"] == 2 and out["saddles"] == out["basins"] - 1
    assert out["true_saddles"] == int(ds["is_saddle"].values.sum())
    for row, eig, big in zip(out["saddle_table"], ds["min_eigenvalue"].values[:, 0],
                             ds["max_eigenvalue"].values, strict=True):
        assert row["min_eigenvalue"] == pytest.approx(float(eig))
        # the verdict, recomputed: a negative eigenvalue below -tol x the largest magnitude
        assert row["is_saddle"] == bool(eig < -0.05 * max(abs(big), abs(eig)))
    assert _stages(run)["saddles"]["saddles"] == out["saddles"]


@pytest.mark.parametrize("argv,target,expected", [
    (["induction-heads", "--preset", "tiny", "--seed", "3", "--steps", "7"],
     "lossatlas.studies.run_induction_heads", {"config": "tiny", "seed": 3, "steps": 7}),
    (["batch-size", "--batch-sizes", "4,16"], "lossatlas.studies.run_batch_size",
     {"batch_sizes": (4, 16), "seeds": (0,)}),
    (["double-descent", "--widths", "2,4", "--surfaces"], "lossatlas.studies.run_double_descent",
     {"widths": (2, 4), "surfaces": True}),
    (["grokking-law", "--moduli", "7,11", "--weight-decays", "0.5,2", "--steps", "9"],
     "lossatlas.dynamics.lead_time_sweep",
     {"moduli": (7, 11), "weight_decays": (0.5, 2.0), "steps": 9}),
    (["rebasin", "--pairs", "3", "--seed", "2"], "lossatlas.symmetry.rebasin_study.run_rebasin",
     {"pairs": 3, "seed": 2}),
])
def test_study_verbs_call_the_library(monkeypatch, tmp_path, argv, target, expected):
    import importlib

    module, name = target.rsplit(".", 1)
    calls = []

    def fake(out_dir, *args, **kwargs):
        calls.append((out_dir, args, kwargs))
        runs = [{"p": 7, "weight_decay": 0.5, "seed": 0, "onset_step": 100, "lead_time": 40}]
        models = [{"batch_size": 4, "seed": 0, "lambda_max": 2.5, "sharpness": 0.1}]
        return {"runs": runs, "models": models, "final_loss": 0.25,
                "law": {"exponent": 1.5, "exponent_ci": [1.0, 2.0], "onsets": [1.0]}}

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    out = _json(runner.invoke(app, ["study", *argv, "--out", str(tmp_path), "--json"]))
    ((out_dir, args, kwargs),) = calls
    given = {**({"config": args[0]} if args else {}), **kwargs}
    assert out_dir == tmp_path and {k: given[k] for k in expected} == expected
    assert given["progress"] is False  # --json: no bars on stdout's side
    assert out["final_loss"] == 0.25
    if name == "lead_time_sweep":
        assert out["law_exponent"] == 1.5 and out["law_exponent_ci"] == [1.0, 2.0]
    # the table without --json: the sweep's numbers are on screen
    res = runner.invoke(app, ["study", *argv, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert calls[-1][2]["progress"] is True
    if name == "run_batch_size":
        assert "lambda_max" in res.stdout and "2.5" in res.stdout


def test_no_progress_turns_bars_off(monkeypatch, tmp_path):
    seen = []

    def fake(out_dir, **kwargs):
        import os

        seen.append((kwargs["progress"], os.environ.get("LOSSATLAS_PROGRESS")))
        return {"models": []}

    monkeypatch.setattr("lossatlas.studies.run_batch_size", fake)
    env = {"LOSSATLAS_PROGRESS": None}  # restored by the runner after each call
    for argv in (["study"], ["--no-progress", "study"]):
        res = runner.invoke(app, [*argv, "batch-size", "--out", str(tmp_path)], env=env)
        assert res.exit_code == 0, res.output
    assert seen == [(True, None), (False, "0")]
    res = runner.invoke(app, ["study", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "grokking-law" in res.output


@pytest.mark.parametrize("key", ["saddles", "hessian-slices", "layer-noise", "induction-heads",
                                 "batch-size", "grokking-lead-time", "double-descent",
                                 "rebasin"])
def test_report_hints_are_commands_the_cli_parses(key):
    """The report's absent-section hints name these verbs with options they have."""
    import shlex

    from lossatlas.report.commands import fill_hint
    from lossatlas.report.sections import SECTIONS

    ctx = {"run": "r", "population": "p", "data": "--data blobs", "model": "--model mlp",
           "a": "a.pt", "b": "b.pt"}
    command = fill_hint(SECTIONS[key].hint, ctx).split(" (and ")[0]
    argv = shlex.split(command)
    assert argv[0] == "lossatlas" and "--out" in argv
    res = runner.invoke(app, [*argv[1:], "--help"])  # parsing refuses an unknown option
    assert res.exit_code == 0, (command, res.output)
