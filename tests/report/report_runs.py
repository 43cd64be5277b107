"""Variants of the small run for the report tests (copies; the session run is not changed)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

EVIL = "<script>alert(1)</script>"


def copy_run(src: Path, dst: Path, keep: tuple[str, ...] | None = None) -> Path:
    """Copy a run without its report outputs; ``keep`` limits the top-level entries."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name in ("report.html", "summary.json") or (keep is not None and p.name not in keep):
            continue
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst / p.name)
    return dst


def with_evil_labels(src: Path, dst: Path) -> Path:
    """The run with variant A renamed to ``<script>alert(1)</script>`` everywhere its
    name is stored (checkpoint sidecars, population.json, metrics, topology), and the
    same text as the stored BatchNorm policy, loss and data description."""
    copy_run(src, dst)
    for side in (dst / "train" / "checkpoints").glob("A_*.json"):
        lab = json.loads(side.read_text())
        lab["variant"] = EVIL
        side.write_text(json.dumps(lab))
    mpath = dst / "train" / "metrics.json"
    metrics = json.loads(mpath.read_text())
    runs = metrics["runs"]
    rec = runs.pop("A_seed0")
    rec["variant"] = EVIL
    runs[f"{EVIL}_seed0"] = rec
    mpath.write_text(json.dumps(metrics))
    ppath = dst / "population.json"  # the labels the Atlas stored with the run
    if ppath.exists():
        pop = json.loads(ppath.read_text())
        for lab in pop["labels"]:
            if lab.get("variant") == "A":
                lab["variant"] = EVIL
        pop.update(bn="recompute", bn_text=EVIL, loss=EVIL)
        ppath.write_text(json.dumps(pop))
    (dst / "atlas_summary.json").write_text(json.dumps(
        {"data": {"training data": EVIL, "test data": EVIL, "loss measured on": EVIL}}))
    fpath = dst / "faithfulness.json"
    if fpath.exists():
        faith = json.loads(fpath.read_text())
        faith.update(bn="recompute", bn_text=EVIL)
        faith["per_model"]["eval_mode_loss"] = faith["per_model"]["true_loss"]
        fpath.write_text(json.dumps(faith))
    tpath = dst / "topology.json"
    topo = json.loads(tpath.read_text())
    for b in topo["basins"]:
        if "A" in b["variants"]:
            b["variants"][EVIL] = b["variants"].pop("A")
    tpath.write_text(json.dumps(topo))
    return dst


def _save(ds: xr.Dataset, path: Path) -> None:
    with warnings.catch_warnings():  # zarr: string coordinates have no v3 spec yet
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", consolidated=False)


def with_all_results(src: Path, dst: Path, bn: str | None = None) -> Path:
    """The run plus stored results of the other stages in the formats the report reads
    (barrier matrices, a curve, terrain, a re-basined overlay, dynamics, branches); with
    ``bn``, ``connectivity.json`` and ``terrain.json`` that name that BatchNorm policy."""
    copy_run(src, dst)
    if bn is not None:
        (dst / "connectivity.json").write_text(json.dumps({"bn": bn, "units": "nats"}))
        (dst / "terrain.json").write_text(json.dumps({"bn": bn, "models": []}))
    n = len(json.loads((dst / "topology.json").read_text())["model_basin"])
    names = [f"m{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.5, (n, n))
    b = (b + b.T) / 2
    np.fill_diagonal(b, 0)
    real = np.load(src / "barriers.npz")  # measured on the run's final models (conftest)
    final = [str(v) for v in real["names"]]
    for name, mat in (("barriers", real["before"]), ("barriers_aligned", real["after"])):
        da = xr.DataArray(mat, dims=("model_i", "model_j"),
                          coords={"model_i": final, "model_j": final}, name="loss_barrier",
                          attrs={"units": "nats (mean loss per sample)"})
        _save(da.to_dataset(), dst / "fields" / f"{name}.zarr")
    t = np.linspace(0, 1, 11)
    _save(xr.Dataset({"loss": ("t", 1 + np.sin(np.pi * t))}, coords={"t": t}),
          dst / "fields" / "curve_bezier.zarr")
    _save(xr.Dataset({"top_eigenvalue": ("model", rng.uniform(1, 5, n)),
                      "trace": ("model", rng.uniform(10, 50, n)),
                      "llc": ("model", rng.uniform(5, 9, n)),
                      "eigenvalues": (("model", "rank"), rng.uniform(0, 5, (n, 3)))},
                     coords={"model": names, "rank": np.arange(3)}),
          dst / "fields" / "terrain.zarr")
    ov = json.loads((dst / "overlays" / "interp_path.json").read_text()) \
        if (dst / "overlays" / "interp_path.json").exists() else None
    if ov is not None:
        ov["name"] = "rebasin_B_to_A"
        (dst / "overlays" / "rebasin_B_to_A.json").write_text(json.dumps(ov))
    (dst / "dynamics.json").write_text(json.dumps(
        {"transitions": {"A_seed0": [{"epoch": 2, "metric": "test_accuracy"}]},
         "defect": {"A_seed0": {"x": [0, 2, 4], "y": [0.1, 0.5, 0.2]}}}))
    # the format of lossatlas.dynamics.branches_report
    (dst / "branches.json").write_text(json.dumps(
        {"models": [{"variant": "A"}, {"variant": "B"}, {"variant": "C"}],
         "branch": [0, 0, 1], "basin": [0, 0, 0], "num_branches": {"0": 2},
         "separation": {"0": {"ratio": 3.5, "silhouette": 0.6, "max_merge": 0.3}},
         "distances": b[:3, :3].tolist(), "metric": "disagreement"}))
    (dst / "symmetry.json").write_text(json.dumps(
        {"method": "weight matching", "pairs": [{"a": "B", "b": "A", "distance_before": 3.2,
                                                  "distance_after": 1.1}]}))
    from validation_runs import add_validation_results  # Table 2, re-basin

    return add_validation_results(dst)
